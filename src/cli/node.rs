//! Options shared by every verb that touches a node.

use std::path::PathBuf;

use clap::Args;

use crate::node::kongconf::KongConf;
use crate::node::state::Prefix;

pub const DEFAULT_PREFIX: &str = "/usr/local/share/lua/5.1";

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Lua tree the plugin goes into (<prefix>/kong/plugins/<name>/).
    #[arg(long, value_name = "DIR", env = "KPLUG_PREFIX")]
    pub prefix: Option<PathBuf>,
    /// Kong configuration file to read (and edit with --enable/--disable).
    #[arg(long, value_name = "FILE", default_value = "/etc/kong/kong.conf")]
    pub kong_conf: PathBuf,
    /// Use the first writable directory of KONG_LUA_PACKAGE_PATH / lua_package_path as prefix.
    #[arg(long, conflicts_with = "prefix")]
    pub use_package_path: bool,
}

pub fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl NodeArgs {
    pub fn conf(&self) -> anyhow::Result<KongConf> {
        KongConf::load(&self.kong_conf)
    }

    pub fn prefix(&self, conf: &KongConf) -> anyhow::Result<Prefix> {
        if let Some(p) = &self.prefix {
            return Ok(Prefix::new(p.clone()));
        }
        if self.use_package_path {
            let dirs = conf.package_path_dirs(&env);
            for d in &dirs {
                if writable(d) {
                    return Ok(Prefix::new(d.clone()));
                }
            }
            crate::bail_kind!(
                crate::error::Kind::Usage,
                "no writable directory on the Lua package path ({}); pass --prefix DIR",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(Prefix::new(DEFAULT_PREFIX))
    }
}

fn writable(d: &std::path::Path) -> bool {
    let Ok(meta) = std::fs::metadata(d) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    tempfile::tempfile_in(d).is_ok()
}
