//! Where results go: JSON on stdout with `--json`, else text. Status and warnings go to
//! stderr (`crate::progress`), so stdout stays a result a script can read. JSON keys are
//! camelCase everywhere (as cosign's and the OCI specs' own JSON); the words every verb
//! shares live here.

use std::io::Write;

use crate::node::state::Receipt;

/// The exit codes, for `--help` (one per cause; `crate::error::Kind::exit_code`).
pub const EXIT_CODES: &str = "\
Exit codes:
  0        success
  1        anything else (network, disk, a registry error)
  2        usage: a bad flag or reference, or a local file you named that cannot be read
           (plugin, key, signature, kong.conf, mirror manifest)
  3        not found: tag, digest, repository, layout entry or installed plugin
  4        the registry refused the credentials
  5        integrity: content does not match its digest, or a store is corrupt
  6        refused as unsafe: archive paths, links, size limits, plugin layout
  10       the signature manifest holds no signatures (as cosign)
  11       no signatures found for the digest (as cosign)
  12       signatures found, but none verifies with the given keys (as cosign)
  130/143  interrupted by SIGINT/SIGTERM";

/// `text`, then the exit codes: the end of a verb's `--help`.
pub fn with_exit_codes(text: &str) -> String {
    format!("{text}\n\n{EXIT_CODES}")
}

/// What to do after the plugin files changed, said the same way everywhere.
pub const RELOAD_HINT: &str = "run `kong prepare && kong reload` (or restart Kong)";

/// A receipt as `install --json` and `list --json` show it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptJson<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub reference: &'a str,
    pub digest: &'a str,
    /// sha256 of the signer's public key (DER); `null` when installed unverified.
    pub signer: Option<&'a str>,
    pub verified_at: Option<&'a str>,
    pub installed_at: &'a str,
}

impl<'a> ReceiptJson<'a> {
    pub fn of(r: &'a Receipt) -> Self {
        ReceiptJson {
            name: &r.name,
            version: r.version.as_deref(),
            reference: &r.reference,
            digest: &r.digest,
            signer: r.signer.as_deref(),
            verified_at: r.verified_at.as_deref(),
            installed_at: &r.installed_at,
        }
    }
}

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
