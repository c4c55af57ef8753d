use clap::Args;

use super::node::{env, NodeArgs};
use super::Global;
use crate::node::state;

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Plugin name.
    pub name: String,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Also take the plugin out of `plugins =` in kong.conf.
    #[arg(long)]
    pub disable: bool,
}

pub async fn run(_g: &Global, a: UninstallArgs) -> anyhow::Result<()> {
    let conf = a.node.conf()?;
    let prefix = a.node.prefix(&conf)?;
    let leftovers = {
        let _lock = state::lock(&prefix)?;
        state::uninstall(&prefix, &a.name)?
    };
    crate::progress::note(format!(
        "removed {} from {}",
        a.name,
        prefix.plugins_dir().display()
    ));
    for l in &leftovers {
        eprintln!("left in place (not installed by kplug): {l}");
    }
    let enabled = conf.plugins(&env).iter().any(|p| p == &a.name);
    if a.disable && conf.exists() {
        let mut c = conf.clone();
        if c.disable(&a.name) {
            c.save()?;
            crate::progress::note(format!(
                "disabled {} in {}",
                a.name,
                a.node.kong_conf.display()
            ));
        }
    } else if enabled {
        eprintln!(
            "WARNING: {} is still enabled (kong.conf or KONG_PLUGINS): Kong will fail to start with \"plugin is enabled but not installed\". Re-run with --disable, or edit `plugins =`.",
            a.name
        );
    }
    Ok(())
}
