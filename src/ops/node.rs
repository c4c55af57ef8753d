//! The node verbs besides install: `list`, `uninstall`, `rollback`, `doctor`, and what
//! they share with install — where the Lua tree is, which kong.conf, enabling a plugin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Kind;
use crate::node::doctor::{self, Finding, Severity};
use crate::node::kinds;
use crate::node::kongconf::{self, KongConf};
use crate::node::state::{self, Broken, Listed, Original, Prefix};

/// Kong's default Lua tree, where `luarocks` installs plugins.
pub const DEFAULT_PREFIX: &str = "/usr/local/share/lua/5.1";

/// The process environment, as Kong reads `KONG_*` from it.
pub fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Where a node's plugins live and which kong.conf describes it.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Lua tree the plugin goes into (`<prefix>/kong/plugins/<name>/`).
    pub prefix: Option<PathBuf>,
    /// kong.conf given explicitly (it must exist); `None`: Kong's default paths.
    pub kong_conf: Option<PathBuf>,
    /// Use the first writable directory of the Lua package path as prefix.
    pub use_package_path: bool,
    /// Longest wait for another kplug command's prefix lock; `None`: no limit.
    pub lock_timeout: Option<Duration>,
}

impl NodeOptions {
    /// The kong.conf path in use: the one given, else the first of Kong's default paths
    /// that exists, else the first default (absent).
    pub fn kong_conf_path(&self) -> PathBuf {
        if let Some(p) = &self.kong_conf {
            return p.clone();
        }
        let defaults = kongconf::DEFAULT_PATHS;
        let found = defaults.iter().find(|d| Path::new(d).is_file());
        PathBuf::from(found.unwrap_or(&defaults[0]))
    }

    /// The kong.conf to read and edit. One given explicitly must exist: a typo must not
    /// turn into "no kong.conf, here is an export line".
    pub fn conf(&self) -> anyhow::Result<KongConf> {
        if let Some(p) = &self.kong_conf {
            if !p.is_file() {
                crate::bail_kind!(
                    Kind::Usage,
                    "{}: no such Kong configuration file (given with --kong-conf); give the path of Kong's \
                     configuration, or leave the flag out to use {}",
                    p.display(),
                    kongconf::DEFAULT_PATHS.join(" or ")
                );
            }
        }
        KongConf::load(&self.kong_conf_path())
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

    /// The prefix lock, waiting at most `--lock-timeout`.
    pub fn lock(&self, prefix: &Prefix) -> anyhow::Result<state::LockGuard> {
        state::lock_wait(prefix, self.lock_timeout)
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
    /// `env_line`: KONG_PLUGINS (or, for a plugin server, KONG_PLUGINSERVER_NAMES) is
    /// set, overrides kong.conf and lacks the plugin; the `export` lines Kong's
    /// environment needs, one per variable.
    KongConf {
        path: PathBuf,
        changed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        env_line: Option<String>,
    },
    /// No kong.conf: this line goes into Kong's environment.
    Environment { line: String },
}

/// Add `name` to kong.conf's `plugins`, or say which KONG_PLUGINS line to export; with
/// KONG_PLUGINS set (it overrides kong.conf) also the exact line that enables it there.
pub fn enable(conf: &KongConf, name: &str) -> anyhow::Result<Enabled> {
    enable_with(conf, name, env("KONG_PLUGINS"))
}

/// [`enable`] of several plugins (a rock's) in turn: each sees the kong.conf the one
/// before saved, and each `KONG_PLUGINS` line includes the ones before.
pub fn enable_each(conf: &KongConf, names: &[&str]) -> anyhow::Result<Vec<Enabled>> {
    let mut current = env("KONG_PLUGINS");
    let mut out = Vec::new();
    for &name in names {
        // Each edit reads kong.conf again (`for_edit`), so it sees the one before.
        out.push(enable_with(conf, name, current.clone())?);
        if !conf.exists() || current.is_some() {
            let base = current.as_deref().unwrap_or("bundled");
            current = Some(super::k8s::add_plugin(base, name));
        }
    }
    Ok(out)
}

fn enable_with(conf: &KongConf, name: &str, current: Option<String>) -> anyhow::Result<Enabled> {
    if !conf.exists() {
        let line = kongconf::kong_plugins_env_line(current.as_deref(), name);
        return Ok(Enabled::Environment { line });
    }
    let mut c = for_edit(conf, &["plugins"])?;
    let changed = c.enable(name);
    if changed {
        c.save()?;
    }
    let env_line = current
        .filter(|_| !conf.plugins(&env).iter().any(|p| p == name))
        .map(|cur| kongconf::kong_plugins_env_line(Some(&cur), name));
    Ok(Enabled::KongConf {
        path: c.path().map(Path::to_path_buf).unwrap_or_default(),
        changed,
        env_line,
    })
}

/// kong.conf as it is now, to edit: read again, since the operator or another run may
/// have changed it since this run read it (a download ago), and refused when a setting
/// to edit continues over several lines.
fn for_edit(conf: &KongConf, keys: &[&str]) -> anyhow::Result<KongConf> {
    let c = match conf.path().filter(|_| conf.exists()) {
        Some(p) => KongConf::load(p)?,
        None => conf.clone(),
    };
    c.check_editable(keys)?;
    Ok(c)
}

/// The `KONG_PLUGINSERVER_<NAME>_{SOCKET,START_CMD,QUERY_CMD}` values of server `name`.
pub fn server_env(name: &str, s: &crate::node::external::ServerReceipt) -> Vec<(String, String)> {
    let key = crate::node::external::conf_key(name);
    [
        ("socket", &s.socket),
        ("start_cmd", &s.start_cmd),
        ("query_cmd", &s.query_cmd),
    ]
    .into_iter()
    .map(|(k, v)| (kongconf::env_name(&format!("{key}_{k}")), v.clone()))
    .collect()
}

/// Add plugin server `name` to kong.conf: `pluginserver_names`, its socket, start and
/// query commands, and `plugins`; without a kong.conf, the `KONG_*` lines Kong's
/// environment needs.
pub fn enable_server(
    conf: &KongConf,
    name: &str,
    s: &crate::node::external::ServerReceipt,
) -> anyhow::Result<Enabled> {
    use crate::node::external;
    if !conf.exists() {
        let mut names: Vec<String> = env("KONG_PLUGINSERVER_NAMES")
            .unwrap_or_default()
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        let export = |k: &str, v: &str| format!("export {k}={}", kongconf::sh_word(v));
        let mut lines = vec![
            kongconf::kong_plugins_env_line(env("KONG_PLUGINS").as_deref(), name),
            export(&kongconf::env_name("pluginserver_names"), &names.join(",")),
        ];
        for (k, v) in server_env(name, s) {
            lines.push(export(&k, &v));
        }
        let line = lines.join("\n");
        return Ok(Enabled::Environment { line });
    }
    let mut c = for_edit(conf, &["plugins", "pluginserver_names"])?;
    let changed = external::enable(&mut c, name, s);
    if changed {
        c.save()?;
    }
    let plugins = env("KONG_PLUGINS")
        .filter(|_| !conf.plugins(&env).iter().any(|p| p == name))
        .map(|cur| kongconf::kong_plugins_env_line(Some(&cur), name));
    // Kong reads the server list from KONG_PLUGINSERVER_NAMES when it is set, as it
    // reads KONG_PLUGINS: a name only in kong.conf would never start.
    let names = env("KONG_PLUGINSERVER_NAMES")
        .filter(|_| {
            !conf
                .list("pluginserver_names", &env)
                .iter()
                .any(|n| n == name)
        })
        .map(|cur| {
            let v = super::k8s::add_plugin(&cur, name);
            format!("export KONG_PLUGINSERVER_NAMES={}", kongconf::sh_word(&v))
        });
    let lines: Vec<String> = plugins.into_iter().chain(names).collect();
    let env_line = (!lines.is_empty()).then(|| lines.join("\n"));
    Ok(Enabled::KongConf {
        path: c.path().map(Path::to_path_buf).unwrap_or_default(),
        changed,
        env_line,
    })
}

/// Installed plugins with their integrity, and receipts that cannot be trusted. Taking
/// the lock also finishes or undoes a swap an earlier run left half done.
pub fn list(node: &NodeOptions) -> anyhow::Result<(Prefix, Vec<Listed>, Vec<Broken>)> {
    let prefix = node.prefix(&node.conf()?)?;
    if !prefix.state_dir().is_dir() {
        return Ok((prefix, Vec::new(), Vec::new()));
    }
    let (items, broken) = {
        let _lock = node.lock(&prefix)?;
        kinds::list_checked(&prefix)?
    };
    Ok((prefix, items, broken))
}

/// What `uninstall` did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UninstallReport {
    pub name: String,
    pub dir: PathBuf,
    /// Files left in place because kplug did not install them.
    pub left_in_place: Vec<String>,
    /// The original files of an adopted directory, put back at `dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_original: Option<PathBuf>,
    /// The original files of an adopted directory, still kept here because files kplug
    /// did not install are at `dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_kept_in: Option<PathBuf>,
    /// Taken out of `plugins =` (with `--disable`).
    pub disabled: bool,
    /// Still enabled in kong.conf or KONG_PLUGINS: Kong will not start.
    pub still_enabled: bool,
}

pub fn uninstall(node: &NodeOptions, name: &str, disable: bool) -> anyhow::Result<UninstallReport> {
    let conf = node.conf()?;
    let prefix = node.prefix(&conf)?;
    let (done, server) = {
        let _lock = node.lock(&prefix)?;
        let server = crate::node::external::read_server(&prefix, name)?;
        (kinds::uninstall(&prefix, name)?, server)
    };
    let mut disabled = false;
    let restored = matches!(done.original, Some(Original::Restored(_)));
    if disable && conf.exists() && !restored {
        let mut c = for_edit(&conf, &["plugins", "pluginserver_names"])?;
        let changed = match server {
            Some(_) => crate::node::external::disable(&mut c, name),
            None => c.disable(name),
        };
        if changed {
            c.save()?;
            disabled = true;
        }
    }
    let still_enabled = !disabled && !restored && conf.plugins(&env).iter().any(|p| p == name);
    Ok(UninstallReport {
        name: name.to_string(),
        dir: prefix.plugin_dir(name),
        left_in_place: done.leftovers,
        restored_original: match &done.original {
            Some(Original::Restored(p)) => Some(p.clone()),
            _ => None,
        },
        original_kept_in: match done.original {
            Some(Original::Kept(p)) => Some(p),
            _ => None,
        },
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

/// Put the previous version back; one that no longer matches its receipt only with `force`.
pub fn rollback(node: &NodeOptions, name: &str, force: bool) -> anyhow::Result<RollbackReport> {
    let prefix = node.prefix(&node.conf()?)?;
    {
        let _lock = node.lock(&prefix)?;
        kinds::rollback(&prefix, name, force)?;
    }
    let r = state::read_receipt(&prefix, name)?;
    Ok(RollbackReport {
        name: name.to_string(),
        digest: r.as_ref().map(|r| r.digest.clone()),
        version: r.and_then(|r| r.version),
    })
}

/// Kong's start-up checks against this node. An install interrupted mid-swap is
/// finished first (it would otherwise show as "enabled but not installed"); receipts
/// under a bundled plugin's name are flagged.
pub fn doctor(node: &NodeOptions, opts: &doctor::Options) -> anyhow::Result<Vec<Finding>> {
    let (conf, looked) = kongconf::locate(node.kong_conf.as_deref(), kongconf::DEFAULT_PATHS)?;
    let extra: Vec<PathBuf> = node.prefix.iter().cloned().collect();
    let mut prefixes = conf.package_path_dirs(&env);
    for p in &extra {
        if !prefixes.contains(p) {
            prefixes.push(p.clone());
        }
    }
    let mut findings: Vec<Finding> = prefixes
        .iter()
        .filter_map(|p| finish_pending(node, &Prefix::new(p)))
        .collect();
    findings.extend(looked.iter().map(|l| doctor::no_conf_finding(l)));
    findings.extend(doctor::check_with(&conf, &env, &extra, opts));
    for p in &prefixes {
        findings.extend(bundled_findings(&Prefix::new(p)));
    }
    Ok(findings)
}

/// Replay an interrupted swap under `prefix` (what any command taking the lock does), or
/// say why it could not be.
fn finish_pending(node: &NodeOptions, prefix: &Prefix) -> Option<Finding> {
    let name = state::pending_swap(prefix)?;
    let timeout = node.lock_timeout.or(Some(Duration::from_secs(5)));
    let r = state::lock_wait(prefix, timeout);
    let (severity, message) = match r {
        Ok(_) => (
            Severity::Ok,
            format!(
                "finished an install of {name} that was interrupted mid-swap in {}",
                prefix.plugins_dir().display()
            ),
        ),
        Err(e) => (
            Severity::Error,
            format!(
                "an install of {name} was interrupted mid-swap ({} is still there), so kong/plugins/{name} \
                 may be missing; run any kplug command on this prefix (e.g. `kplug list --prefix {}`) as a \
                 user who can write it to finish it: {e:#}",
                prefix.journal_path().display(),
                prefix.root.display()
            ),
        ),
    };
    Some(Finding {
        plugin: name,
        severity,
        message,
    })
}

/// Receipts of plugins named like one Kong ships.
fn bundled_findings(prefix: &Prefix) -> Vec<Finding> {
    let Ok((listed, _)) = kinds::list_checked(prefix) else {
        return Vec::new();
    };
    listed
        .iter()
        .filter(|l| crate::node::bundled::is_bundled(&l.receipt.name))
        .map(|l| Finding {
            plugin: l.receipt.name.clone(),
            severity: Severity::Warning,
            message: format!(
                "installed by kplug in {}: {}",
                prefix.plugin_dir(&l.receipt.name).display(),
                crate::node::bundled::clash_message(&l.receipt.name)
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_edits_kong_conf_as_it_is_now() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("kong.conf");
        std::fs::write(&path, "plugins = bundled\n").unwrap();
        let read_at_start = KongConf::load(&path).unwrap();
        // Changed while the artifact downloaded (the operator, another run).
        std::fs::write(&path, "plugins = bundled,other\nlog_level = debug\n").unwrap();
        enable_with(&read_at_start, "hello", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "plugins = bundled,other,hello\nlog_level = debug\n"
        );
    }

    #[test]
    fn a_continued_plugins_line_is_not_edited() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("kong.conf");
        let text = "plugins = bundled,\\\n          my-auth\n";
        std::fs::write(&path, text).unwrap();
        let conf = KongConf::load(&path).unwrap();
        let e = enable_with(&conf, "hello", None).unwrap_err();
        assert_eq!(
            crate::error::kind_of(&e),
            crate::error::Kind::Usage,
            "{e:#}"
        );
        assert!(
            format!("{e:#}").contains("continues on the next line"),
            "{e:#}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
