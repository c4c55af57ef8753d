use clap::Args;

use super::node::NodeArgs;
use super::Global;
use crate::node::state;

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// Plugin name.
    pub name: String,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(_g: &Global, a: RollbackArgs) -> anyhow::Result<()> {
    let conf = a.node.conf()?;
    let prefix = a.node.prefix(&conf)?;
    {
        let _lock = state::lock(&prefix)?;
        state::rollback(&prefix, &a.name)?;
    }
    let r = state::read_receipt(&prefix, &a.name)?;
    crate::progress::note(format!(
        "rolled {} back to {}; run `kong reload` to load it",
        a.name,
        r.map(|r| r.digest).unwrap_or_default()
    ));
    Ok(())
}
