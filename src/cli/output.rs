//! Where results go: JSON on stdout with `--json`, else text. Status and warnings go to
//! stderr (`crate::progress`), so stdout stays a result a script can read.

use std::io::Write;

pub struct Printer {
    json: bool,
}

impl Printer {
    pub fn new(json: bool) -> Printer {
        Printer { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// The result: `value` as JSON with `--json`, else what `text` prints.
    pub fn result<T: serde::Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&mut Lines),
    ) -> anyhow::Result<()> {
        if self.json {
            return self.json_value(value);
        }
        let mut lines = Lines::default();
        text(&mut lines);
        let mut out = std::io::stdout().lock();
        for l in lines.0 {
            writeln!(out, "{l}")?;
        }
        Ok(())
    }

    /// Any serialisable value as pretty JSON on stdout.
    pub fn json_value<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
        Ok(())
    }
}

/// Text result lines, collected and then written to stdout.
#[derive(Default)]
pub struct Lines(Vec<String>);

impl Lines {
    pub fn line(&mut self, s: impl Into<String>) {
        self.0.push(s.into());
    }
}

/// cosign's check list, for stderr.
pub fn check_list(what: &str, verified: &[crate::trust::Verified]) -> String {
    let mut s = format!(
        "\nVerification for {what} --\nThe following checks were performed on each of these signatures:\n  - The cosign claims were validated\n"
    );
    if verified.iter().any(|v| v.integrated_time.is_some()) {
        s.push_str("  - Existence of the claims in the transparency log was verified offline\n");
    }
    // cosign's wording for each kind of trust.
    if verified.iter().any(|v| v.signer.starts_with("keyless ")) {
        s.push_str("  - The code-signing certificate was verified using trusted certificate authority certificates\n");
    }
    if verified.iter().any(|v| !v.signer.starts_with("keyless ")) {
        s.push_str("  - The signatures were verified against the specified public key\n");
    }
    for v in verified {
        s.push_str(&format!("  signer {} ({})", v.signer, v.kind));
        if let Some(t) = v.integrated_time {
            s.push_str(&format!(
                ", logged at {}",
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default()
            ));
        }
        s.push('\n');
    }
    s
}
