//! `doctor`: find what would stop Kong from starting with the enabled plugins, or
//! surprise later. Exit-code policy is the caller's (any `Error` → non-zero).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::node::kongconf::{self, KongConf};
use crate::node::state::{self, Prefix};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Ok,
}

/// One result; `plugin` is empty for findings about the whole node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Check every enabled custom plugin against the effective Lua package path, plus
/// `extra_prefixes` (e.g. `--prefix`), and kplug's receipts in all of them.
pub fn check(
    conf: &KongConf,
    env: &dyn Fn(&str) -> Option<String>,
    extra_prefixes: &[PathBuf],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let listed = conf.plugins(env);
    // Kong loads nothing when the list starts with `off`, and ignores `off` elsewhere.
    let enabled: Vec<String> = if listed.first().is_some_and(|p| p == "off") {
        out.push(finding(
            "",
            Severity::Ok,
            "plugins = off: Kong loads no plugins, bundled ones included".to_string(),
        ));
        vec![]
    } else {
        listed.into_iter().filter(|p| p != "off").collect()
    };
    let path_dirs = conf.package_path_dirs(env);
    let extra: Vec<PathBuf> = extra_prefixes
        .iter()
        .filter(|p| !path_dirs.contains(p))
        .cloned()
        .collect();
    let database = conf.database(env);

    for name in enabled.iter().filter(|p| *p != "bundled") {
        let found = |dirs: &[PathBuf]| -> Vec<PathBuf> {
            dirs.iter()
                .filter(|d| plugin_dir(d, name).join("handler.lua").is_file())
                .cloned()
                .collect()
        };
        let on_path = found(&path_dirs);
        let prefix = match (on_path.first(), found(&extra).first()) {
            (Some(p), _) => {
                for other in &on_path[1..] {
                    out.push(finding(name, Severity::Warning, format!(
                        "also installed in {}, which Kong ignores: {} comes first on lua_package_path",
                        plugin_dir(other, name).display(),
                        plugin_dir(p, name).display()
                    )));
                }
                p.clone()
            }
            (None, Some(p)) => {
                out.push(finding(name, Severity::Warning, format!(
                    "installed in {} but {1} is not on the lua_package_path seen here; unless \
                     Kong's own environment adds it, add {1}/?.lua;{1}/?/init.lua to lua_package_path",
                    plugin_dir(p, name).display(),
                    p.display()
                )));
                p.clone()
            }
            (None, None) => {
                let searched: Vec<String> = path_dirs
                    .iter()
                    .chain(&extra)
                    .map(|d| d.display().to_string())
                    .collect();
                out.push(finding(name, Severity::Error, format!(
                    "enabled but not installed: no kong/plugins/{name}/handler.lua in {}; \
                     install it with `kplug install <reference>`, or add its directory to lua_package_path",
                    searched.join(", ")
                )));
                continue;
            }
        };
        out.extend(check_installed(&prefix, name, &database));
    }

    for prefix in path_dirs.iter().chain(&extra) {
        let listed = match state::list(&Prefix::new(prefix)) {
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
            out.push(finding(
                name,
                Severity::Warning,
                format!(
                    "installed by kplug in {} but not enabled; enable it with `{fix}`",
                    plugin_dir(prefix, name).display()
                ),
            ));
        }
    }
    out
}

/// Checks on the copy of `name` Kong will load, under `prefix`.
fn check_installed(prefix: &Path, name: &str, database: &str) -> Vec<Finding> {
    let dir = plugin_dir(prefix, name);
    let mut out = Vec::new();
    let mut bad = |severity, message| out.push(finding(name, severity, message));
    if !dir.join("schema.lua").is_file() {
        bad(Severity::Error, format!(
            "no configuration schema found: {} has handler.lua but no schema.lua; Kong will not start",
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
    if dir.join("daos.lua").is_file() && database == "off" {
        bad(
            Severity::Warning,
            "defines custom entities (daos.lua) but database = off: on a DB-less node they get no \
             migrations and no writable Admin API; check the plugin supports DB-less mode"
                .to_string(),
        );
    }
    let receipt = state::check_name(name)
        .ok()
        .and_then(|()| state::read_receipt(&Prefix::new(prefix), name).transpose());
    match receipt {
        Some(Ok(r)) => {
            let (modified, missing) = state::verify_files(&dir, &r.files);
            if modified.is_empty() && missing.is_empty() {
                bad(
                    Severity::Ok,
                    format!(
                        "installed by kplug at {}: {} ({})",
                        dir.display(),
                        r.reference,
                        r.digest
                    ),
                );
            } else {
                bad(
                    Severity::Warning,
                    format!(
                        "changed since kplug installed {}: modified [{}], missing [{}]; \
                     run `kplug install {}` again to restore it",
                        r.reference,
                        modified.join(", "),
                        missing.join(", "),
                        r.reference
                    ),
                );
            }
        }
        Some(Err(e)) => bad(Severity::Warning, format!("{e:#}")),
        None => bad(
            Severity::Ok,
            format!("installed at {} (not by kplug)", dir.display()),
        ),
    }
    out
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

    #[test]
    fn detects_each_condition() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, extra) = (
            d.path().join("a"),
            d.path().join("b"),
            d.path().join("extra"),
        );
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
