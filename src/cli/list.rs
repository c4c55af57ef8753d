use clap::Args;

use super::args::NodeArgs;
use super::Printer;
use crate::error::Kind;
use crate::progress::escape;

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(out: &Printer, a: ListArgs) -> anyhow::Result<()> {
    let (prefix, items, broken) = crate::ops::node::list(&a.node.options())?;
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
            .chain(broken.iter().map(|b| {
                serde_json::json!({"name": b.name, "intact": false, "error": b.error})
            }))
            .collect();
        out.json_value(&v)?;
    } else if items.is_empty() && broken.is_empty() {
        crate::progress::note(format!(
            "no plugins installed by kplug in {}",
            prefix.plugins_dir().display()
        ));
    } else {
        out.result(&(), |t| table(t, &items, &broken))?;
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

fn table(
    t: &mut super::output::Lines,
    items: &[crate::node::state::Listed],
    broken: &[crate::node::state::Broken],
) {
    t.line(format!(
        "{:<24} {:<10} {:<19} {:<20} {:<20} FILES",
        "NAME", "VERSION", "DIGEST", "SIGNER", "INSTALLED"
    ));
    for l in items {
        let r = &l.receipt;
        let status = if l.modified.is_empty() && l.missing.is_empty() {
            "ok".to_string()
        } else {
            format!("{} modified, {} missing", l.modified.len(), l.missing.len())
        };
        t.line(format!(
            "{:<24} {:<10} {:<19} {:<20} {:<20} {status}",
            r.name,
            escape(r.version.as_deref().unwrap_or("-")),
            short(&r.digest, 19),
            r.signer
                .as_deref()
                .map(|s| short(s, 20))
                .unwrap_or_else(|| "UNVERIFIED".into()),
            escape(&r.installed_at),
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
