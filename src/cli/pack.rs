use std::path::PathBuf;

use clap::Args;

use super::Global;

#[derive(Args, Debug)]
pub struct PackArgs {
    /// Plugin directory: bare (handler.lua, schema.lua …), kong/plugins/<name>/…, or a LuaRocks tree.
    pub dir: PathBuf,
    /// Output file (default <name>-<version>.tar.gz in the current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Plugin name when the layout does not say it.
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version (else the rockspec's, else handler.lua's VERSION).
    #[arg(long = "version", value_name = "VERSION")]
    pub plugin_version: Option<String>,
}

pub async fn run(g: &Global, a: PackArgs) -> anyhow::Result<()> {
    let src = crate::node::plugin::locate(&a.dir, a.name.as_deref(), a.plugin_version.as_deref())?;
    let out = a.output.unwrap_or_else(|| {
        PathBuf::from(crate::node::plugin::default_archive_name(
            &src.name,
            &src.version,
        ))
    });
    let p = crate::node::plugin::pack(&src, &out)?;
    if g.json {
        return super::print_json(&serde_json::json!({
            "name": p.name, "version": p.version, "path": p.path, "digest": p.digest,
            "size": p.size, "files": p.files,
        }));
    }
    crate::progress::note(format!(
        "{} {}: {} files, {}",
        p.name,
        p.version,
        p.files.len(),
        p.digest
    ));
    println!("{}", p.path.display());
    Ok(())
}
