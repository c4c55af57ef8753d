use std::path::PathBuf;

use clap::Args;

use super::args::NodeArgs;
use super::output::ReceiptJson;
use super::Printer;

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: DIGEST is the artifact's manifest digest; SIGNER the key that verified it at install,
as sha256 of the public key (DER) — what `kplug generate-key-pair` and `kplug sign` print as
the fingerprint; with --key cosign.pub, the file name of the key it matches; UNVERIFIED for
--insecure-skip-verify. FILES is `ok` while every installed file matches its receipt.")]
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
    let (prefix, items) = crate::ops::node::list(&a.node.options())?;
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
        return out.json_value(&rows);
    }
    if items.is_empty() {
        crate::progress::note(format!(
            "no plugins installed by kplug in {}",
            prefix.plugins_dir().display()
        ));
        return Ok(());
    }
    out.result(&(), |t| {
        t.line(format!(
            "{:<24} {:<10} {:<19} {:<20} {:<20} FILES",
            "NAME", "VERSION", "DIGEST", "SIGNER", "INSTALLED"
        ));
        for row in &rows {
            let r = &row.receipt;
            let status = if row.intact {
                "ok".to_string()
            } else {
                format!(
                    "{} modified, {} missing",
                    row.modified.len(),
                    row.missing.len()
                )
            };
            let signer = match (row.signer_key, r.signer) {
                (Some(k), _) => k
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                (None, Some(s)) => s[..s.len().min(20)].to_string(),
                (None, None) => "UNVERIFIED".to_string(),
            };
            t.line(format!(
                "{:<24} {:<10} {:<19} {:<20} {:<20} {status}",
                r.name,
                r.version.unwrap_or("-"),
                &r.digest[..r.digest.len().min(19)],
                signer,
                r.installed_at,
            ));
        }
    })
}
