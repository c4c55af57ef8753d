//! The node verbs besides install: `list`, `uninstall`, `rollback`, `doctor`, and what
//! they share with install — where the Lua tree is, which kong.conf, enabling a plugin.

use std::path::{Path, PathBuf};

use crate::error::Kind;
use crate::node::doctor::{self, Finding};
use crate::node::kongconf::{self, KongConf};
use crate::node::state::{self, Listed, Prefix};

/// Kong's default Lua tree, where `luarocks` installs plugins.
pub const DEFAULT_PREFIX: &str = "/usr/local/share/lua/5.1";

/// The process environment, as Kong reads `KONG_*` from it.
pub fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Where a node's plugins live and which kong.conf describes it.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Lua tree the plugin goes into (`<prefix>/kong/plugins/<name>/`).
    pub prefix: Option<PathBuf>,
    pub kong_conf: PathBuf,
    /// Use the first writable directory of the Lua package path as prefix.
    pub use_package_path: bool,
}

impl NodeOptions {
    pub fn conf(&self) -> anyhow::Result<KongConf> {
        KongConf::load(&self.kong_conf)
    }

    pub fn prefix(&self, conf: &KongConf) -> anyhow::Result<Prefix> {
        if let Some(p) = &self.prefix {
            return Ok(Prefix::new(p.clone()));
        }
        if !self.use_package_path {
            return Ok(Prefix::new(DEFAULT_PREFIX));
        }
        let dirs = conf.package_path_dirs(&env);
        if let Some(d) = dirs.iter().find(|d| writable(d)) {
            return Ok(Prefix::new(d.clone()));
        }
        crate::bail_kind!(
            Kind::Usage,
            "no writable directory on the Lua package path ({}); pass --prefix DIR",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn writable(d: &Path) -> bool {
    std::fs::metadata(d).is_ok_and(|m| m.is_dir()) && tempfile::tempfile_in(d).is_ok()
}

/// How a plugin was enabled.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "how")]
pub enum Enabled {
    /// `plugins =` in kong.conf now lists it (`changed: false`: it already did).
    KongConf { path: PathBuf, changed: bool },
    /// No kong.conf: this line goes into Kong's environment.
    Environment { line: String },
}

/// Add `name` to kong.conf's `plugins`, or say which KONG_PLUGINS line to export.
pub fn enable(conf: &KongConf, name: &str) -> anyhow::Result<Enabled> {
    if !conf.exists() {
        let line = kongconf::kong_plugins_env_line(env("KONG_PLUGINS").as_deref(), name);
        return Ok(Enabled::Environment { line });
    }
    let mut c = conf.clone();
    let changed = c.enable(name);
    if changed {
        c.save()?;
    }
    Ok(Enabled::KongConf {
        path: c.path().map(Path::to_path_buf).unwrap_or_default(),
        changed,
    })
}

/// Installed plugins, with their integrity. Taking the lock also finishes or undoes a
/// swap an earlier run left half done.
pub fn list(node: &NodeOptions) -> anyhow::Result<(Prefix, Vec<Listed>)> {
    let prefix = node.prefix(&node.conf()?)?;
    if !prefix.state_dir().is_dir() {
        return Ok((prefix, Vec::new()));
    }
    let items = {
        let _lock = state::lock(&prefix)?;
        state::list(&prefix)?
    };
    Ok((prefix, items))
}

/// What `uninstall` did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UninstallReport {
    pub name: String,
    pub dir: PathBuf,
    /// Files left in place because kplug did not install them.
    pub left_in_place: Vec<String>,
    /// Taken out of `plugins =` (with `--disable`).
    pub disabled: bool,
    /// Still enabled in kong.conf or KONG_PLUGINS: Kong will not start.
    pub still_enabled: bool,
}

pub fn uninstall(node: &NodeOptions, name: &str, disable: bool) -> anyhow::Result<UninstallReport> {
    let conf = node.conf()?;
    let prefix = node.prefix(&conf)?;
    let left_in_place = {
        let _lock = state::lock(&prefix)?;
        state::uninstall(&prefix, name)?
    };
    let mut disabled = false;
    if disable && conf.exists() {
        let mut c = conf.clone();
        if c.disable(name) {
            c.save()?;
            disabled = true;
        }
    }
    let still_enabled = !disabled && conf.plugins(&env).iter().any(|p| p == name);
    Ok(UninstallReport {
        name: name.to_string(),
        dir: prefix.plugin_dir(name),
        left_in_place,
        disabled,
        still_enabled,
    })
}

/// What `rollback` put back.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackReport {
    pub name: String,
    /// The digest now installed.
    pub digest: Option<String>,
    pub version: Option<String>,
}

pub fn rollback(node: &NodeOptions, name: &str) -> anyhow::Result<RollbackReport> {
    let prefix = node.prefix(&node.conf()?)?;
    {
        let _lock = state::lock(&prefix)?;
        state::rollback(&prefix, name)?;
    }
    let r = state::read_receipt(&prefix, name)?;
    Ok(RollbackReport {
        name: name.to_string(),
        digest: r.as_ref().map(|r| r.digest.clone()),
        version: r.and_then(|r| r.version),
    })
}

/// Kong's start-up checks against this node.
pub fn doctor(node: &NodeOptions) -> anyhow::Result<Vec<Finding>> {
    // A path other than the default was given on purpose: it must exist.
    let explicit =
        (node.kong_conf != Path::new(kongconf::DEFAULT_PATHS[0])).then_some(&*node.kong_conf);
    let (conf, looked) = kongconf::locate(explicit, kongconf::DEFAULT_PATHS)?;
    let extra: Vec<PathBuf> = node.prefix.iter().cloned().collect();
    let mut findings: Vec<Finding> = looked.iter().map(|l| doctor::no_conf_finding(l)).collect();
    findings.extend(doctor::check(&conf, &env, &extra));
    Ok(findings)
}
