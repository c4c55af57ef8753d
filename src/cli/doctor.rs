use clap::Args;

use super::args::NodeArgs;
use super::Printer;
use crate::error::Kind;
use crate::node::doctor::Severity;

#[derive(Args, Debug)]
#[command(after_help = "\
Reads kong.conf (and KONG_* variables, which override it) the way Kong does at start-up:
every plugin in `plugins =` must be found on lua_package_path, with handler.lua and
schema.lua. Exit 1 when something would stop Kong from starting.")]
pub struct DoctorArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(out: &Printer, a: DoctorArgs) -> anyhow::Result<()> {
    let findings = crate::ops::node::doctor(&a.node.options())?;
    out.result(&findings, |t| {
        for f in &findings {
            let tag = match f.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "WARN ",
                Severity::Ok => "ok   ",
            };
            let who = match f.plugin.is_empty() {
                true => String::new(),
                false => format!("{}: ", f.plugin),
            };
            t.line(format!("{tag} {who}{}", f.message));
        }
    })?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        crate::bail_kind!(
            Kind::Other,
            "{errors} problem(s) would stop Kong from starting"
        );
    }
    Ok(())
}
