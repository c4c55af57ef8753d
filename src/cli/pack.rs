use std::path::PathBuf;

use clap::Args;

use super::args::{LimitArgs, ServerArgs};
use super::Printer;
use crate::ops::pack::{self, PackOptions};

#[derive(Args, Debug)]
pub struct PackArgs {
    /// Plugin directory: bare (handler.lua, schema.lua …), kong/plugins/<name>/…, or a
    /// LuaRocks tree; a .rock (checked, copied as it is); with --runtime, a plugin server.
    pub dir: PathBuf,
    /// Output file (default <name>-<version>.tar.gz in the current directory).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Plugin name when the layout does not say it.
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version (else the rockspec's, else handler.lua's VERSION).
    #[arg(long = "version", value_name = "VERSION")]
    pub plugin_version: Option<String>,
    /// Write the archive even if a node would refuse to install it (over the limits below).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(out: &Printer, a: PackArgs) -> anyhow::Result<()> {
    let p = pack::pack(&PackOptions {
        dir: a.dir,
        output: a.output,
        name: a.name,
        version: a.plugin_version,
        check: (!a.force).then(|| a.limits.limits()),
        server: a.server.spec(),
    })?;
    let json = serde_json::json!({
        "name": p.name, "version": p.version, "path": p.path, "digest": p.digest,
        "size": p.size, "files": p.files,
    });
    if !out.is_json() {
        crate::progress::note(format!(
            "{} {}: {} files, {}",
            p.name,
            p.version,
            p.files.len(),
            p.digest
        ));
    }
    out.result(&json, |t| t.line(p.path.display().to_string()))
}
