use clap::Args;

use super::node::{env, NodeArgs};
use super::Global;
use crate::error::Kind;
use crate::node::doctor::{self, Severity};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(g: &Global, a: DoctorArgs) -> anyhow::Result<()> {
    let conf = a.node.conf()?;
    let mut extra = Vec::new();
    if let Some(p) = &a.node.prefix {
        extra.push(p.clone());
    }
    let findings = doctor::check(&conf, &env, &extra);
    if g.json {
        super::print_json(&findings)?;
    } else {
        for f in &findings {
            let tag = match f.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "WARN ",
                Severity::Ok => "ok   ",
            };
            let who = if f.plugin.is_empty() {
                String::new()
            } else {
                format!("{}: ", f.plugin)
            };
            println!("{tag} {who}{}", f.message);
        }
    }
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
