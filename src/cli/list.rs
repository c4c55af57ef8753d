use std::path::PathBuf;

use clap::Args;

use super::args::NodeArgs;
use super::output::ReceiptJson;
use super::Printer;
use crate::error::Kind;
use crate::node::state::Broken;
use crate::progress::escape;

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: DIGEST is the artifact's manifest digest; SIGNER the key that verified it at install,
as sha256 of the public key (DER) — what `kplug generate-key-pair` and `kplug sign` print as
the fingerprint; with --key cosign.pub, the file name of the key it matches; UNVERIFIED for
--insecure-skip-verify. FILES is `ok` while every installed file matches its receipt;
RECEIPT NOT TRUSTED when a receipt names a file outside its plugin (exit 5).")]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Public key file (repeatable): show it as the SIGNER of the plugins it signed.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    #[serde(flatten)]
    receipt: ReceiptJson<'a>,
    /// The --key file whose fingerprint is the signer.
    #[serde(skip_serializing_if = "Option::is_none")]
    signer_key: Option<&'a PathBuf>,
    intact: bool,
    modified: &'a [String],
    missing: &'a [String],
}

pub async fn run(out: &Printer, a: ListArgs) -> anyhow::Result<()> {
    let keys: Vec<(String, PathBuf)> = crate::ops::keys::load_public_keys(&a.keys)?
        .iter()
        .zip(&a.keys)
        .map(|(k, p)| (k.fingerprint(), p.clone()))
        .collect();
    let key_of = |signer: Option<&str>| {
        keys.iter()
            .find(|(f, _)| Some(f.as_str()) == signer)
            .map(|(_, p)| p)
    };
    let (prefix, items, broken) = crate::ops::node::list(&a.node.options())?;
    let rows: Vec<Row> = items
        .iter()
        .map(|l| Row {
            receipt: ReceiptJson::of(&l.receipt),
            signer_key: key_of(l.receipt.signer.as_deref()),
            intact: l.modified.is_empty() && l.missing.is_empty(),
            modified: &l.modified,
            missing: &l.missing,
        })
        .collect();
    if out.is_json() {
        let broken_json = broken
            .iter()
            .map(|b| serde_json::json!({"name": b.name, "intact": false, "error": b.error}));
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::to_value(r).expect("rows serialise"))
            .chain(broken_json)
            .collect();
        out.json_value(&v)?;
    } else if items.is_empty() && broken.is_empty() {
        crate::progress::note(format!(
            "no plugins installed by kplug in {}",
            prefix.plugins_dir().display()
        ));
    } else {
        out.result(&(), |t| table(t, &rows, &broken))?;
    }
    if let Some(b) = broken.first() {
        crate::bail_kind!(
            Kind::Integrity,
            "{} receipt(s) cannot be trusted; {}",
            broken.len(),
            b.error
        );
    }
    Ok(())
}

fn table(t: &mut super::output::Lines, rows: &[Row], broken: &[Broken]) {
    t.line(format!(
        "{:<24} {:<10} {:<19} {:<20} {:<20} FILES",
        "NAME", "VERSION", "DIGEST", "SIGNER", "INSTALLED"
    ));
    for row in rows {
        let r = &row.receipt;
        let status = match row.intact {
            true => "ok".to_string(),
            false => format!(
                "{} modified, {} missing",
                row.modified.len(),
                row.missing.len()
            ),
        };
        let signer = match (row.signer_key, r.signer) {
            (Some(k), _) => k
                .file_name()
                .map(|n| escape(&n.to_string_lossy()))
                .unwrap_or_default(),
            (None, Some(s)) => short(s, 20),
            (None, None) => "UNVERIFIED".to_string(),
        };
        t.line(format!(
            "{:<24} {:<10} {:<19} {:<20} {:<20} {status}",
            r.name,
            escape(r.version.unwrap_or("-")),
            short(r.digest, 19),
            signer,
            escape(r.installed_at),
        ));
    }
    for b in broken {
        t.line(format!(
            "{:<24} {:<10} {:<19} {:<20} {:<20} RECEIPT NOT TRUSTED",
            b.name, "-", "-", "-", "-"
        ));
    }
}

/// The first `n` characters of `s`, escaped (receipts are files anyone with write access
/// to the prefix can edit).
fn short(s: &str, n: usize) -> String {
    escape(&s.chars().take(n).collect::<String>())
}
