//! The one plugin-name rule of the crate, and how untrusted names are printed.
//!
//! Kong has no name pattern of its own; what it does with a name sets the rule. It
//! requires `kong.plugins.<name>.handler` (so no `.` or `/`), splits `plugins =` and
//! `pluginserver_names =` on commas (so no `,` or spaces), lower-cases plugin-server
//! names (so an upper-case name would not match its own server), and uses the name as a
//! file name on case-sensitive file systems. All of Kong's own plugins follow
//! `[a-z0-9][a-z0-9_-]*`; kplug accepts exactly that, at most 64 bytes.

use anyhow::Result;

use crate::error::Kind;

pub const NAME_RULE: &str =
    "lower-case letters, digits, '_' and '-', starting with a letter or digit, at most 64";

pub fn valid_plugin_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && matches!(b[0], b'a'..=b'z' | b'0'..=b'9')
        && b.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// [`valid_plugin_name`] as an error of kind `Usage` that prints the name escaped.
pub fn check_plugin_name(s: &str) -> Result<()> {
    if !valid_plugin_name(s) {
        crate::bail_kind!(
            Kind::Usage,
            "invalid plugin name \"{}\": {NAME_RULE}",
            escape(s.as_bytes())
        );
    }
    Ok(())
}

/// An untrusted name made safe to print: printable ASCII stays, `\` and `"` are
/// escaped, control characters and other bytes become `\n`, `\x1b`, `\xc3`….
pub fn escape(raw: &[u8]) -> String {
    raw.escape_ascii().to_string()
}

/// Text from an untrusted source (a parser message quoting a file) made safe to print:
/// only control characters are escaped (`\x1b`), quotes stay as they are.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_and_escape() {
        for ok in ["a", "rate-limiting", "my_plugin2", "0x", &"a".repeat(64)] {
            assert!(valid_plugin_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a.b",
            "a/b",
            "a b",
            "a,b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_plugin_name(bad), "{bad}");
        }
        assert_eq!(escape(b"a\x1b[31m\\b\n\"\xff"), r#"a\x1b[31m\\b\n\"\xff"#);
        assert_eq!(printable("near 'end' \u{1b}[2J"), "near 'end' \\u{1b}[2J");
        let m = format!("{}", check_plugin_name("x\x1b]0;pwn\x07").unwrap_err());
        assert!(m.contains(r"x\x1b]0;pwn\x07") && !m.contains('\x1b'), "{m}");
    }
}
