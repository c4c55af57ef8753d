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
    /// DB-less: the declarative file (kong.yml, YAML or JSON) to check for plugins in use
    /// but not enabled, instead of kong.conf's `declarative_config`.
    #[arg(long, value_name = "FILE")]
    pub declarative: Option<std::path::PathBuf>,
    /// Do not run plugin servers' query commands (Kong runs them at start-up).
    #[arg(long)]
    pub no_query: bool,
    /// Longest run of a plugin server's query command, e.g. 20s.
    #[arg(long, value_name = "DURATION", value_parser = super::args::parse_duration)]
    pub query_timeout: Option<std::time::Duration>,
}

pub async fn run(out: &Printer, a: DoctorArgs) -> anyhow::Result<()> {
    let defaults = crate::node::doctor::Options::default();
    let opts = crate::node::doctor::Options {
        declarative: a.declarative,
        run_queries: !a.no_query,
        query_timeout: a.query_timeout.unwrap_or(defaults.query_timeout),
    };
    let findings = crate::ops::node::doctor(&a.node.options(), &opts)?;
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
