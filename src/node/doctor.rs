//! `doctor`: find what would stop Kong from starting with the enabled plugins, or
//! surprise later. Exit-code policy is the caller's (any `Error` → non-zero).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::node::kongconf::{self, KongConf};
use crate::node::state::{self, Prefix};
use crate::node::{bundled, declarative, external};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Ok,
}

/// One result; `plugin` is empty for findings about the whole node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub plugin: String,
    pub severity: Severity,
    pub message: String,
}

fn finding(plugin: &str, severity: Severity, message: String) -> Finding {
    Finding {
        plugin: plugin.to_string(),
        severity,
        message,
    }
}

fn plugin_dir(prefix: &Path, name: &str) -> PathBuf {
    prefix.join("kong/plugins").join(name)
}

/// The finding for "no kong.conf found" ([`kongconf::locate`]'s `looked`).
pub fn no_conf_finding(looked: &[PathBuf]) -> Finding {
    let l: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    finding(
        "",
        Severity::Warning,
        format!(
            "no Kong configuration file found (looked for {}): checking Kong's defaults and the \
             KONG_* environment only; pass --kong-conf FILE",
            l.join(", ")
        ),
    )
}

/// What doctor does besides reading files.
#[derive(Debug, Clone)]
pub struct Options {
    /// A declarative file to check instead of `declarative_config`.
    pub declarative: Option<PathBuf>,
    /// Run each plugin server's query command (as Kong does at start-up).
    pub run_queries: bool,
    pub query_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            declarative: None,
            run_queries: true,
            query_timeout: external::DEFAULT_QUERY_TIMEOUT,
        }
    }
}

/// A `pluginserver_names` entry as Kong's conf_loader resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    pub name: String,
    pub socket: String,
    pub start_cmd: Option<String>,
    pub query_cmd: Option<String>,
}

/// The plugin servers kong.conf and `KONG_*` configure, with Kong's defaults
/// (`/usr/local/bin/<name>` and `… -dump` when that file exists).
pub fn server_confs(conf: &KongConf, env: &dyn Fn(&str) -> Option<String>) -> Vec<ServerConf> {
    let kong_prefix = conf
        .effective("prefix", env)
        .unwrap_or_else(|| external::DEFAULT_KONG_PREFIX.to_string());
    conf.list("pluginserver_names", env)
        .into_iter()
        .map(|n| {
            let n = n.to_ascii_lowercase();
            let key = external::conf_key(&n);
            let default = Path::new(external::DEFAULT_BIN_DIR).join(&n);
            let default = default.exists().then(|| default.display().to_string());
            ServerConf {
                socket: conf
                    .effective(&format!("{key}_socket"), env)
                    .unwrap_or_else(|| format!("{}/{n}.socket", kong_prefix.trim_end_matches('/'))),
                start_cmd: conf
                    .effective(&format!("{key}_start_cmd"), env)
                    .or(default.clone()),
                query_cmd: conf
                    .effective(&format!("{key}_query_cmd"), env)
                    .or(default.map(|d| format!("{d} -dump"))),
                name: n,
            }
        })
        .collect()
}

/// Check every enabled custom plugin against the effective Lua package path, plus
/// `extra_prefixes` (e.g. `--prefix`), and kplug's receipts in all of them.
pub fn check(
    conf: &KongConf,
    env: &dyn Fn(&str) -> Option<String>,
    extra_prefixes: &[PathBuf],
) -> Vec<Finding> {
    check_with(conf, env, extra_prefixes, &Options::default())
}

/// [`check`] with options: every start-up check, in this order: the plugin list, plugin
/// servers, legacy Go settings, each enabled plugin, the declarative file, receipts.
pub fn check_with(
    conf: &KongConf,
    env: &dyn Fn(&str) -> Option<String>,
    extra_prefixes: &[PathBuf],
    opts: &Options,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let enabled = enabled_plugins(conf, env, &mut out);
    let path_dirs = conf.package_path_dirs(env);
    let extra: Vec<PathBuf> = extra_prefixes
        .iter()
        .filter(|p| !path_dirs.contains(p))
        .cloned()
        .collect();
    let served = check_servers(&server_confs(conf, env), &enabled, opts, &mut out);
    check_legacy_go(conf, env, &mut out);
    let database = conf.database(env);
    for name in enabled.iter().filter(|p| *p != "bundled") {
        if let Some(server) = served.iter().find(|(p, _)| p == name).map(|(_, s)| s) {
            out.push(finding(
                name,
                Severity::Ok,
                format!("served by plugin server {server}"),
            ));
            continue;
        }
        if let Some(prefix) = find_installed(name, &path_dirs, &extra, &mut out) {
            out.extend(check_installed(&prefix, name, &database));
        }
    }
    check_declarative(conf, env, &enabled, opts, &mut out);
    check_receipts(&path_dirs, &extra, &enabled, env, &mut out);
    out
}

/// The effective `plugins` list. Kong loads nothing when it starts with `off`, and
/// ignores `off` elsewhere.
fn enabled_plugins(
    conf: &KongConf,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<Finding>,
) -> Vec<String> {
    let listed = conf.plugins(env);
    if listed.first().is_some_and(|p| p == "off") {
        out.push(finding(
            "",
            Severity::Ok,
            "plugins = off: Kong loads no plugins, bundled ones included".to_string(),
        ));
        return vec![];
    }
    listed.into_iter().filter(|p| p != "off").collect()
}

/// Where Kong would load `name` from (the first copy on the Lua path), or a finding.
fn find_installed(
    name: &str,
    path_dirs: &[PathBuf],
    extra: &[PathBuf],
    out: &mut Vec<Finding>,
) -> Option<PathBuf> {
    let found = |dirs: &[PathBuf]| -> Vec<PathBuf> {
        dirs.iter()
            .filter(|d| plugin_dir(d, name).join("handler.lua").is_file())
            .cloned()
            .collect()
    };
    let on_path = found(path_dirs);
    match (on_path.first(), found(extra).first()) {
        (Some(p), _) => {
            for other in &on_path[1..] {
                out.push(finding(
                    name,
                    Severity::Warning,
                    format!(
                    "also installed in {}, which Kong ignores: {} comes first on lua_package_path",
                    plugin_dir(other, name).display(),
                    plugin_dir(p, name).display()
                ),
                ));
            }
            Some(p.clone())
        }
        (None, Some(p)) => {
            out.push(finding(
                name,
                Severity::Warning,
                format!(
                    "installed in {} but {1} is not on the lua_package_path seen here; unless \
                 Kong's own environment adds it, set `lua_package_path = {1}/?.lua;{1}/?/init.lua;;` \
                 in kong.conf (the final `;;` keeps Lua's default path)",
                    plugin_dir(p, name).display(),
                    p.display()
                ),
            ));
            Some(p.clone())
        }
        (None, None) if bundled::is_bundled(name) => {
            out.push(finding(name, Severity::Ok, "bundled with Kong".to_string()));
            None
        }
        (None, None) => {
            let searched: Vec<String> = path_dirs
                .iter()
                .chain(extra)
                .map(|d| d.display().to_string())
                .collect();
            out.push(finding(name, Severity::Error, format!(
                "{name} plugin is enabled but not installed: no kong/plugins/{name}/handler.lua in {}, \
                 and no plugin server (pluginserver_names) lists it; install it with \
                 `kplug install <reference>`, or add its directory to lua_package_path",
                searched.join(", ")
            )));
            None
        }
    }
}

/// The first word of a command, which Kong runs with a limited PATH.
fn check_command(server: &str, what: &str, cmd: &str, out: &mut Vec<Finding>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let cmd_start = cmd.trim_start();
    // kplug single-quotes a path with a space (Kong runs the command through /bin/sh).
    let exe = match cmd_start.strip_prefix('\'') {
        Some(rest) => rest.split('\'').next().unwrap_or_default(),
        None => cmd_start.split_whitespace().next().unwrap_or_default(),
    };
    let why = if !exe.starts_with('/') {
        format!(
            "is not an absolute path; Kong runs it with a limited PATH, so write /full/path/{exe}"
        )
    } else if !std::fs::metadata(exe)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    {
        format!("{exe} is not an executable file")
    } else {
        return true;
    };
    out.push(finding(
        server,
        Severity::Error,
        format!("pluginserver {server}: {what} `{cmd}` {why}"),
    ));
    false
}

/// Each plugin server: its commands, and what its query command lists. Returns
/// (plugin, server) for each plugin a server provides.
fn check_servers(
    servers: &[ServerConf],
    enabled: &[String],
    opts: &Options,
    out: &mut Vec<Finding>,
) -> Vec<(String, String)> {
    let mut served = Vec::new();
    for s in servers {
        match &s.start_cmd {
            Some(cmd) => {
                check_command(&s.name, "start command", cmd, out);
            }
            None => out.push(finding(
                &s.name,
                Severity::Warning,
                format!(
                "start_command undefined for pluginserver {}; assuming external process management",
                s.name
            ),
            )),
        }
        let Some(q) = &s.query_cmd else {
            out.push(finding(
                &s.name,
                Severity::Error,
                format!(
                    "query_command undefined for pluginserver {0}: set pluginserver_{1}_query_cmd \
                 (Kong will not start)",
                    s.name,
                    s.name.replace('-', "_")
                ),
            ));
            continue;
        };
        if !check_command(&s.name, "query command", q, out) || !opts.run_queries {
            continue;
        }
        match external::query(q, opts.query_timeout) {
            Err(e) => out.push(finding(
                &s.name,
                Severity::Error,
                format!(
                    "pluginserver {}: the query failed, so Kong will not start: {e:#}",
                    s.name
                ),
            )),
            // Kong registers every plugin a server lists.
            Ok(infos) => {
                for p in infos.iter().map(|i| &i.name) {
                    if !enabled.contains(p) {
                        out.push(finding(p, Severity::Warning, format!(
                            "pluginserver {} provides plugin {p}, which `plugins` does not enable", s.name
                        )));
                    }
                    served.push((
                        p.clone(),
                        format!("{} ({}, socket {})", s.name, q, s.socket),
                    ));
                }
            }
        }
    }
    served
}

/// `go_plugins_dir` / `go_pluginserver_exe`: the pre-3.0 way, gone from Kong 3.
fn check_legacy_go(conf: &KongConf, env: &dyn Fn(&str) -> Option<String>, out: &mut Vec<Finding>) {
    for key in ["go_plugins_dir", "go_pluginserver_exe"] {
        if let Some(v) = conf.effective(key, env).filter(|v| v != "off") {
            out.push(finding("", Severity::Warning, format!(
                "{key} = {v}: the legacy Go plugin server is gone since Kong 3.0; build each plugin \
                 with go-pdk's embedded server and list it in pluginserver_names"
            )));
        }
    }
}

/// Plugins the declarative file uses that `plugins` does not enable, with Kong's own
/// messages (DB-less refuses to start; DB mode fails on the plugin rows).
fn check_declarative(
    conf: &KongConf,
    env: &dyn Fn(&str) -> Option<String>,
    enabled: &[String],
    opts: &Options,
    out: &mut Vec<Finding>,
) {
    let Some(path) = opts
        .declarative
        .clone()
        .or_else(|| conf.effective("declarative_config", env).map(PathBuf::from))
    else {
        return;
    };
    let db_less = conf.database(env) == "off";
    let d = match declarative::load(&path) {
        Ok(d) => d,
        Err(e) => {
            out.push(finding(
                "",
                Severity::Error,
                format!("declarative config: {e:#}"),
            ));
            return;
        }
    };
    match d.format_version.as_deref() {
        Some(v) if declarative::FORMAT_VERSIONS.contains(&v) => {}
        v => out.push(finding(
            "",
            Severity::Error,
            format!(
                "{}: _format_version {} is not one Kong accepts ({})",
                path.display(),
                v.map_or("missing".to_string(), |v| format!("\"{v}\"")),
                declarative::FORMAT_VERSIONS.join(", ")
            ),
        )),
    }
    let bundled_on = enabled.iter().any(|p| p == "bundled");
    for u in &d.uses {
        if enabled.contains(&u.name) || (bundled_on && bundled::is_bundled(&u.name)) {
            continue;
        }
        let kong_says = if db_less {
            format!(
                "plugin '{}' not enabled; add it to the 'plugins' configuration property",
                u.name
            )
        } else {
            format!("{} plugin is in use but not enabled", u.name)
        };
        out.push(finding(
            &u.name,
            Severity::Error,
            format!("{kong_says} (used at {} in {})", u.at, path.display()),
        ));
    }
}

/// Plugins kplug installed that are not enabled.
fn check_receipts(
    path_dirs: &[PathBuf],
    extra: &[PathBuf],
    enabled: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<Finding>,
) {
    for prefix in path_dirs.iter().chain(extra) {
        let p = Prefix::new(prefix);
        let listed = match crate::node::kinds::list(&p) {
            Ok(l) => l,
            Err(e) => {
                out.push(finding(
                    "",
                    Severity::Warning,
                    format!("cannot read kplug receipts in {}: {e:#}", prefix.display()),
                ));
                continue;
            }
        };
        for l in listed.iter().filter(|l| !enabled.contains(&l.receipt.name)) {
            let name = &l.receipt.name;
            let fix = match env("KONG_PLUGINS") {
                Some(cur) => kongconf::kong_plugins_env_line(Some(&cur), name),
                None => {
                    let mut c = KongConf::parse(&format!("plugins = {}\n", enabled.join(",")));
                    c.enable(name);
                    c.text().trim().to_string()
                }
            };
            let at = match external::read_server(&p, name) {
                Ok(Some(s)) => format!("as plugin server {}", s.bin.display()),
                _ => format!("in {}", plugin_dir(prefix, name).display()),
            };
            out.push(finding(
                name,
                Severity::Warning,
                format!("installed by kplug {at} but not enabled; enable it with `{fix}`"),
            ));
        }
    }
}

/// Checks on the copy of `name` Kong will load, under `prefix`.
fn check_installed(prefix: &Path, name: &str, database: &str) -> Vec<Finding> {
    let dir = plugin_dir(prefix, name);
    let mut out = Vec::new();
    let mut bad = |severity, message| out.push(finding(name, severity, message));
    if !dir.join("schema.lua").is_file() {
        bad(Severity::Error, format!(
            "no configuration schema found for plugin: {name} ({} has handler.lua but no schema.lua; Kong will not start)",
            dir.display()
        ));
    }
    if dir.join("migrations").is_dir() && !dir.join("migrations/init.lua").is_file() {
        bad(
            Severity::Error,
            format!(
                "{}/migrations has no init.lua listing the migrations; Kong will fail to load them",
                dir.display()
            ),
        );
    }
    if let Err(e) = check_sources(&dir, name) {
        bad(Severity::Error, format!("{e:#}"));
    }
    if dir.join("daos.lua").is_file() && database == "off" {
        bad(
            Severity::Warning,
            "defines custom entities (daos.lua) but database = off: on a DB-less node they get no \
             migrations and no writable Admin API; check the plugin supports DB-less mode"
                .to_string(),
        );
    }
    out.push(receipt_finding(prefix, &dir, name));
    out
}

/// Lua syntax of every file and the schema's name, as Kong would load them.
fn check_sources(dir: &Path, name: &str) -> anyhow::Result<()> {
    let files: Vec<(String, PathBuf)> = crate::tree::hash_tree(dir)?
        .into_iter()
        .map(|f| (f.path.clone(), dir.join(&f.path)))
        .collect();
    crate::node::plugin::check_sources(&dir.display().to_string(), name, &files)
}

/// Whether the copy matches kplug's receipt.
fn receipt_finding(prefix: &Path, dir: &Path, name: &str) -> Finding {
    let receipt = state::check_name(name)
        .ok()
        .and_then(|()| state::read_receipt(&Prefix::new(prefix), name).transpose());
    let (severity, message) = match receipt {
        Some(Ok(r)) => {
            let (modified, missing) = state::verify_files(dir, &r.files);
            if modified.is_empty() && missing.is_empty() {
                (
                    Severity::Ok,
                    format!(
                        "installed by kplug at {}: {} ({})",
                        dir.display(),
                        r.reference,
                        r.digest
                    ),
                )
            } else {
                (
                    Severity::Warning,
                    format!(
                        "changed since kplug installed {}: modified [{}], missing [{}]; \
                     run `kplug install {}` again to restore it",
                        r.reference,
                        modified.join(", "),
                        missing.join(", "),
                        r.reference
                    ),
                )
            }
        }
        Some(Err(e)) => (Severity::Warning, format!("{e:#}")),
        None => (
            Severity::Ok,
            format!("installed at {} (not by kplug)", dir.display()),
        ),
    };
    finding(name, severity, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::state::{install_dir, lock, staging_dir, Receipt};

    fn write(p: &Path, content: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn kplug_install(prefix: &Path, name: &str, files: &[&str]) {
        let prefix = Prefix::new(prefix);
        let _l = lock(&prefix).unwrap();
        let t = staging_dir(&prefix).unwrap();
        for f in files {
            write(&t.path().join(name).join(f), "return {}\n");
        }
        let r = Receipt {
            name: name.to_string(),
            version: Some("1.0.0".into()),
            reference: format!("reg.example/{name}:1.0.0"),
            digest: crate::digest::sha256(name.as_bytes()),
            signer: None,
            verified_at: None,
            installed_at: state::now_rfc3339(),
            files: vec![],
            ..Default::default()
        };
        install_dir(&prefix, &t.path().join(name), r, None).unwrap();
    }

    /// The findings for `plugin` as (severity, message).
    fn of(findings: &[Finding], plugin: &str) -> Vec<(Severity, String)> {
        findings
            .iter()
            .filter(|f| f.plugin == plugin)
            .map(|f| (f.severity, f.message.clone()))
            .collect()
    }

    fn has(findings: &[Finding], plugin: &str, severity: Severity, text: &str) -> bool {
        of(findings, plugin)
            .iter()
            .any(|(s, m)| *s == severity && m.contains(text))
    }

    /// Plugins in two Lua trees (`a`, `b`) and one off the path (`extra`), one per
    /// condition doctor reports, and a kong.conf enabling them.
    fn fixture(d: &Path) -> (PathBuf, PathBuf, PathBuf, KongConf) {
        let (a, b, extra) = (d.join("a"), d.join("b"), d.join("extra"));
        let conf = KongConf::parse(&format!(
            "database = off\nlua_package_path = {0}/?.lua;{0}/?/init.lua;{1}/?.lua\n\
             plugins = bundled,good,missing,noschema,badmig,entities,changed,shadowed,outside\n",
            a.display(),
            b.display()
        ));
        kplug_install(&a, "good", &["handler.lua", "schema.lua"]);
        kplug_install(&a, "changed", &["handler.lua", "schema.lua"]);
        std::fs::write(plugin_dir(&a, "changed").join("schema.lua"), "-- edited").unwrap();
        kplug_install(&b, "idle", &["handler.lua", "schema.lua"]);
        write(&plugin_dir(&a, "noschema").join("handler.lua"), "");
        for f in ["handler.lua", "schema.lua", "migrations/000_base.lua"] {
            write(&plugin_dir(&b, "badmig").join(f), "");
        }
        for f in ["handler.lua", "schema.lua", "daos.lua"] {
            write(&plugin_dir(&a, "entities").join(f), "");
        }
        for p in [&a, &b] {
            write(&plugin_dir(p, "shadowed").join("handler.lua"), "");
            write(&plugin_dir(p, "shadowed").join("schema.lua"), "");
        }
        write(&plugin_dir(&extra, "outside").join("handler.lua"), "");
        write(&plugin_dir(&extra, "outside").join("schema.lua"), "");
        (a, b, extra, conf)
    }

    #[test]
    fn detects_each_condition() {
        let d = tempfile::tempdir().unwrap();
        let (a, _, extra, conf) = fixture(d.path());
        let no_env = |_: &str| None;
        let f = check(&conf, &no_env, std::slice::from_ref(&extra));
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""severity":"error""#), "{json}");

        assert_eq!(of(&f, "good").len(), 1);
        assert!(has(&f, "good", Severity::Ok, "installed by kplug"));
        assert!(has(
            &f,
            "missing",
            Severity::Error,
            "enabled but not installed"
        ));
        assert!(has(
            &f,
            "missing",
            Severity::Error,
            &a.display().to_string()
        ));
        assert!(has(&f, "missing", Severity::Error, "kplug install"));
        assert!(has(
            &f,
            "noschema",
            Severity::Error,
            "no configuration schema found"
        ));
        assert!(has(
            &f,
            "badmig",
            Severity::Error,
            "migrations has no init.lua"
        ));
        assert!(has(&f, "entities", Severity::Warning, "database = off"));
        assert!(has(
            &f,
            "changed",
            Severity::Warning,
            "modified [schema.lua]"
        ));
        assert!(has(&f, "shadowed", Severity::Warning, "also installed in"));
        assert!(has(
            &f,
            "outside",
            Severity::Warning,
            "not on the lua_package_path"
        ));
        assert!(has(&f, "idle", Severity::Warning, "installed by kplug"));
        assert!(has(
            &f,
            "idle",
            Severity::Warning,
            "plugins = bundled,good,missing"
        ));
        assert!(of(&f, "bundled").is_empty());
    }

    #[test]
    fn the_environment_changes_the_advice() {
        let d = tempfile::tempdir().unwrap();
        let (a, _, _, conf) = fixture(d.path());
        let no_env = |_: &str| None;
        // With Postgres the daos warning goes; with env-configured plugins the fix is an export line.
        let env = |k: &str| match k {
            "KONG_DATABASE" => Some("postgres".to_string()),
            "KONG_PLUGINS" => Some("bundled,entities".to_string()),
            _ => None,
        };
        let f = check(&conf, &env, &[]);
        assert_eq!(of(&f, "entities").len(), 1, "{f:?}");
        assert!(has(
            &f,
            "good",
            Severity::Warning,
            "export KONG_PLUGINS=bundled,entities,good"
        ));
        assert!(of(&f, "missing").is_empty());

        let off = |k: &str| (k == "KONG_PLUGINS").then(|| "off".to_string());
        let f = check(&conf, &off, &[]);
        assert!(has(&f, "", Severity::Ok, "plugins = off"));
        assert!(has(
            &f,
            "good",
            Severity::Warning,
            "`export KONG_PLUGINS=good`"
        ));
        let f = check(
            &KongConf::parse("plugins = off\n"),
            &no_env,
            std::slice::from_ref(&a),
        );
        assert!(has(&f, "good", Severity::Warning, "`plugins = good`"));
        assert!(f.iter().all(|f| f.severity != Severity::Error));
    }
}
