use clap::Args;

use super::args::NodeArgs;
use super::output::RELOAD_HINT;
use super::Printer;

#[derive(Args, Debug)]
#[command(after_help = "\
Rollback is a toggle: each install keeps the version it replaced, and rollback swaps the two.
Run it again to go forward to the newer version. There is one previous version, not a history.")]
pub struct RollbackArgs {
    /// Plugin name (as `kplug list` shows it).
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
        "swapped {} to {} {} (run `kplug rollback {}` again to swap back); {RELOAD_HINT} to load it",
        r.name,
        r.version.as_deref().unwrap_or(""),
        r.digest.as_deref().unwrap_or_default(),
        r.name
    ));
    out.result(&r, |_| {})
}
