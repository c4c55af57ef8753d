use clap::Args;

use super::args::NodeArgs;
use super::Printer;

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// Plugin name.
    pub name: String,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Put the previous version back even though its files no longer match its receipt
    /// (they were changed after kplug installed them).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(out: &Printer, a: RollbackArgs) -> anyhow::Result<()> {
    let r = crate::ops::node::rollback(&a.node.options(), &a.name, a.force)?;
    crate::progress::note(format!(
        "rolled {} back to {}; run `kong reload` to load it",
        r.name,
        r.digest.as_deref().unwrap_or_default()
    ));
    if out.is_json() {
        return out.json_value(&r);
    }
    Ok(())
}
