//! `kplug install --env-file OUT`: the `KONG_PLUGINS` and `KONG_LUA_PACKAGE_PATH` values
//! Kong needs to load what was installed under a prefix, as `KEY=VALUE` lines (docker's
//! `--env-file` / `kubectl create configmap --from-env-file` format: no quotes).
//!
//! Several installs may share one file (one init container per plugin, one emptyDir):
//! an existing file is merged, never truncated, and replaced atomically.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::Kind;

/// The environment Kong needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KongEnv {
    pub kong_plugins: String,
    pub lua_package_path: String,
}

/// `<prefix>/?.lua;<prefix>/?/init.lua;;`: Kong requires `kong.plugins.<name>.handler`,
/// found at `<prefix>/kong/plugins/<name>/handler.lua`; `;;` keeps the default path.
pub fn lua_package_path(prefix: &Path) -> String {
    let p = prefix.display().to_string();
    let p = p.trim_end_matches('/');
    format!("{p}/?.lua;{p}/?/init.lua;;")
}

/// `list` plus `name` (comma-separated, duplicates and blanks dropped; `off` replaced).
pub fn add_plugin(list: &str, name: &str) -> String {
    let mut items: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "off")
        .collect();
    items.dedup();
    if !items.contains(&name) {
        items.push(name);
    }
    items.join(",")
}

/// Put the entries of `ours` (a package path) in front of `current`, once each.
fn merge_path(current: &str, ours: &str) -> String {
    let mut entries: Vec<&str> = ours.split(';').filter(|e| !e.is_empty()).collect();
    for e in current.split(';').filter(|e| !e.is_empty()) {
        if !entries.contains(&e) {
            entries.push(e);
        }
    }
    format!("{};;", entries.join(";"))
}

const MAX_ENV_FILE: u64 = 64 << 10;

/// The prefix of an installed plugin directory `<prefix>/kong/plugins/<name>`.
pub fn prefix_of(plugin_dir: &Path) -> Option<&Path> {
    let plugins = plugin_dir.parent()?;
    if !plugins.ends_with("kong/plugins") {
        return None;
    }
    plugins.parent()?.parent()
}

/// Write (or merge into) `out` the env Kong needs to load plugin `name` from `prefix`.
/// `current_plugins` is the list to extend when `out` does not say one yet (the
/// installer's own `KONG_PLUGINS`, else `bundled`).
pub fn write_env_file(
    out: &Path,
    prefix: &Path,
    name: &str,
    current_plugins: Option<&str>,
) -> anyhow::Result<KongEnv> {
    let prefix = absolute(prefix)?;
    let existing = read_existing(out)?;
    let get = |k: &str| {
        existing
            .iter()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('=').map(str::to_string))
    };
    let env = KongEnv {
        kong_plugins: add_plugin(
            &get("KONG_PLUGINS")
                .unwrap_or_else(|| current_plugins.unwrap_or("bundled").to_string()),
            name,
        ),
        lua_package_path: merge_path(
            &get("KONG_LUA_PACKAGE_PATH").unwrap_or_default(),
            &lua_package_path(&prefix),
        ),
    };
    let mut text = String::new();
    for line in &existing {
        if !line.starts_with("KONG_PLUGINS=") && !line.starts_with("KONG_LUA_PACKAGE_PATH=") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!("KONG_PLUGINS={}\n", env.kong_plugins));
    text.push_str(&format!("KONG_LUA_PACKAGE_PATH={}\n", env.lua_package_path));
    crate::tree::write_atomic(out, text.as_bytes())
        .with_context(|| format!("writing the env file {}", out.display()))?;
    // The temp file was created 0600; Kong may run as another user than the installer.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644))?;
    Ok(env)
}

/// Write (or merge into) `out` the env Kong needs to run plugin server `name`:
/// `KONG_PLUGINS` and `KONG_PLUGINSERVER_NAMES` extended, and `vars` (its
/// `KONG_PLUGINSERVER_<NAME>_*` lines) set. Returns `KONG_PLUGINS`.
pub fn write_server_env_file(
    out: &Path,
    name: &str,
    vars: &[(String, String)],
    current_plugins: Option<&str>,
) -> anyhow::Result<String> {
    let existing = read_existing(out)?;
    let get = |k: &str| {
        existing
            .iter()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('=').map(str::to_string))
    };
    let plugins = add_plugin(
        &get("KONG_PLUGINS").unwrap_or_else(|| current_plugins.unwrap_or("bundled").to_string()),
        name,
    );
    let names = add_plugin(&get("KONG_PLUGINSERVER_NAMES").unwrap_or_default(), name);
    let mut set = vec![
        ("KONG_PLUGINS".to_string(), plugins.clone()),
        ("KONG_PLUGINSERVER_NAMES".to_string(), names),
    ];
    set.extend(vars.iter().cloned());
    let mut text = String::new();
    for line in &existing {
        if !set.iter().any(|(k, _)| line.starts_with(&format!("{k}="))) {
            text.push_str(line);
            text.push('\n');
        }
    }
    for (k, v) in &set {
        text.push_str(&format!("{k}={v}\n"));
    }
    crate::tree::write_atomic(out, text.as_bytes())
        .with_context(|| format!("writing the env file {}", out.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644))?;
    Ok(plugins)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn read_existing(out: &Path) -> anyhow::Result<Vec<String>> {
    let f = match std::fs::File::open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    let mut buf = Vec::new();
    f.take(MAX_ENV_FILE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_ENV_FILE {
        crate::bail_kind!(
            Kind::Usage,
            "{} is over {MAX_ENV_FILE} bytes: not an env file kplug wrote; give another --env-file",
            out.display()
        );
    }
    let text = String::from_utf8(buf).map_err(|_| {
        crate::error::fail(
            Kind::Usage,
            format!(
                "{} is not UTF-8 text: not an env file; give another --env-file",
                out.display()
            ),
        )
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_then_merges() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("kong.env");
        let e = write_env_file(&out, Path::new("/kong-plugins"), "hello", None).unwrap();
        assert_eq!(e.kong_plugins, "bundled,hello");
        assert_eq!(
            e.lua_package_path,
            "/kong-plugins/?.lua;/kong-plugins/?/init.lua;;"
        );
        std::fs::write(
            &out,
            format!("# keep me\n{}", std::fs::read_to_string(&out).unwrap()),
        )
        .unwrap();
        let e = write_env_file(&out, Path::new("/other/"), "bye", None).unwrap();
        assert_eq!(e.kong_plugins, "bundled,hello,bye");
        assert_eq!(
            e.lua_package_path,
            "/other/?.lua;/other/?/init.lua;/kong-plugins/?.lua;/kong-plugins/?/init.lua;;"
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.starts_with("# keep me\nKONG_PLUGINS=bundled,hello,bye\n"),
            "{text}"
        );
        assert_eq!(add_plugin("off", "x"), "x");
        assert_eq!(add_plugin(" bundled , x ,", "x"), "bundled,x");
        let e = write_env_file(&d.path().join("b.env"), Path::new("/p"), "x", Some("a,b")).unwrap();
        assert_eq!(e.kong_plugins, "a,b,x");
    }
}
