use clap::Args;

use super::args::NodeArgs;
use super::Printer;

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(out: &Printer, a: ListArgs) -> anyhow::Result<()> {
    let (prefix, items) = crate::ops::node::list(&a.node.options())?;
    if out.is_json() {
        let v: Vec<serde_json::Value> = items
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.receipt.name, "version": l.receipt.version, "reference": l.receipt.reference,
                    "digest": l.receipt.digest, "signer": l.receipt.signer,
                    "verifiedAt": l.receipt.verified_at, "installedAt": l.receipt.installed_at,
                    "intact": l.modified.is_empty() && l.missing.is_empty(),
                    "modified": l.modified, "missing": l.missing,
                })
            })
            .collect();
        return out.json_value(&v);
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
        for l in &items {
            let r = &l.receipt;
            let status = if l.modified.is_empty() && l.missing.is_empty() {
                "ok".to_string()
            } else {
                format!("{} modified, {} missing", l.modified.len(), l.missing.len())
            };
            t.line(format!(
                "{:<24} {:<10} {:<19} {:<20} {:<20} {status}",
                r.name,
                r.version.as_deref().unwrap_or("-"),
                &r.digest[..r.digest.len().min(19)],
                r.signer
                    .as_deref()
                    .map(|s| &s[..s.len().min(20)])
                    .unwrap_or("UNVERIFIED"),
                r.installed_at,
            ));
        }
    })
}
