use clap::Args;

use super::node::NodeArgs;
use super::Global;
use crate::node::state;

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(g: &Global, a: ListArgs) -> anyhow::Result<()> {
    let conf = a.node.conf()?;
    let prefix = a.node.prefix(&conf)?;
    // Taking the lock also finishes or undoes a swap an earlier run left half done.
    let items = if prefix.state_dir().is_dir() {
        let _lock = state::lock(&prefix)?;
        state::list(&prefix)?
    } else {
        Vec::new()
    };
    if g.json {
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
        return super::print_json(&v);
    }
    if items.is_empty() {
        crate::progress::note(format!(
            "no plugins installed by kplug in {}",
            prefix.plugins_dir().display()
        ));
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:<19} {:<20} {:<20} FILES",
        "NAME", "VERSION", "DIGEST", "SIGNER", "INSTALLED"
    );
    for l in items {
        let r = &l.receipt;
        let status = if l.modified.is_empty() && l.missing.is_empty() {
            "ok".to_string()
        } else {
            format!("{} modified, {} missing", l.modified.len(), l.missing.len())
        };
        println!(
            "{:<24} {:<10} {:<19} {:<20} {:<20} {status}",
            r.name,
            r.version.as_deref().unwrap_or("-"),
            &r.digest[..r.digest.len().min(19)],
            r.signer
                .as_deref()
                .map(|s| &s[..s.len().min(20)])
                .unwrap_or("UNVERIFIED"),
            r.installed_at,
        );
    }
    Ok(())
}
