use clap::Args;

use super::args::NodeArgs;
use super::output::RELOAD_HINT;
use super::Printer;

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Plugin name (as `kplug list` shows it).
    pub name: String,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Also take the plugin out of `plugins =` in kong.conf.
    #[arg(long)]
    pub disable: bool,
}

pub async fn run(out: &Printer, a: UninstallArgs) -> anyhow::Result<()> {
    let r = crate::ops::node::uninstall(&a.node.options(), &a.name, a.disable)?;
    crate::progress::note(format!(
        "removed {} from {}",
        r.name,
        crate::tree::parent_dir(&r.dir).display()
    ));
    for l in &r.left_in_place {
        eprintln!("left in place (not installed by kplug): {l}");
    }
    if let Some(p) = &r.restored_original {
        crate::progress::note(format!(
            "put back the original files kplug had adopted into {}",
            p.display()
        ));
    }
    if let Some(p) = &r.original_kept_in {
        eprintln!(
            "the original files kplug had adopted are kept in {}: files kplug did not install are in {}; move one or the other by hand",
            p.display(),
            r.dir.display()
        );
    }
    if r.disabled {
        crate::progress::note(format!(
            "disabled {} in {}; {RELOAD_HINT} to apply it",
            r.name,
            a.node.options().kong_conf_path().display()
        ));
    } else if r.still_enabled {
        eprintln!(
            "WARNING: {} is still enabled (kong.conf or KONG_PLUGINS): Kong will fail to start with \"plugin is enabled but not installed\". Re-run with --disable, or edit `plugins =`.",
            r.name
        );
    }
    if out.is_json() {
        return out.json_value(&r);
    }
    Ok(())
}
