//! LuaRocks rocks, read in Rust (Kong's hardened images have no `zip`, so `luarocks`
//! cannot unpack there). A `.all.rock` is a zip with the rockspec and `rock_manifest`
//! (the MD5 of every file) at its root and the Lua modules under `lua/`; a `.src.rock`
//! holds the rockspec and the sources, laid out here by the rockspec's `build.modules`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use md5::{Digest, Md5};

use crate::bail_kind;
use crate::error::{fail, Kind};
use crate::node::limits::Limits;
use crate::node::lua::{self, Value};
use crate::node::rockspec::{self, Rockspec};
use crate::node::unpack::{self, ExtractedPlugin, NameHints};
use crate::tree::FileEntry;

/// A Lua module a rock carries besides its plugins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtraModule {
    /// `resty.foo`.
    pub module: String,
    /// Inside the rock: `lua/resty/foo.lua`.
    pub path: String,
    /// Where a copy already is on the Lua path searched, if anywhere.
    pub installed_at: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RockReport {
    pub package: Option<String>,
    /// `1.2.3-1`.
    pub version: Option<String>,
    /// `all` (built, with `rock_manifest`) or `src`.
    pub kind: String,
    /// Every plugin the rock holds, sorted.
    pub plugins: Vec<String>,
    /// Modules Kong may need that kplug does not install.
    pub extras: Vec<ExtraModule>,
    /// Compiled files (`lib/`, `bin/`), which kplug never installs.
    pub native: Vec<String>,
}

impl RockReport {
    /// One line per extra or native file, for the operator.
    pub fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .extras
            .iter()
            // Module names and paths come from the rock: escaped, never printed raw.
            .map(|e| (e, esc(&e.module), esc(&e.path)))
            .map(|(e, module, path)| match &e.installed_at {
                Some(p) => format!("the rock also carries module {module} ({path}); installed at {}", p.display()),
                None => format!(
                    "the rock also carries module {module} ({path}), which is NOT installed on this node's Lua path; \
                     kplug installs only kong/plugins/<name>/: install it (e.g. `luarocks install` its rock) \
                     or Kong will fail to load a plugin that requires it"
                ),
            })
            .collect();
        out.extend(self.native.iter().map(|n| {
            format!(
                "the rock carries compiled file {}, which kplug does not install",
                esc(n)
            )
        }));
        out
    }
}

/// Read `rock_manifest` into path → MD5 (hex): nested tables are directories.
pub fn read_manifest(path: &Path) -> Result<BTreeMap<String, String>> {
    let src = lua::read_source(path)?;
    let chunk = lua::eval(&src).map_err(|e| {
        fail(
            Kind::Integrity,
            format!("rock_manifest:{e}: not a valid rock manifest"),
        )
    })?;
    let Some(Value::Table(t)) = chunk.globals.get("rock_manifest") else {
        bail_kind!(Kind::Integrity, "rock_manifest sets no rock_manifest table");
    };
    let mut out = BTreeMap::new();
    flatten("", t, &mut out)?;
    Ok(out)
}

fn flatten(prefix: &str, t: &lua::Table, out: &mut BTreeMap<String, String>) -> Result<()> {
    for (k, v) in t.string_keys() {
        let path = format!("{prefix}{k}");
        match v {
            Value::Str(md5) => {
                out.insert(path, md5.to_ascii_lowercase());
            }
            Value::Table(sub) => flatten(&format!("{path}/"), sub, out)?,
            _ => bail_kind!(
                Kind::Integrity,
                "rock_manifest: entry {} is not an MD5 or a directory",
                esc(&path)
            ),
        }
    }
    Ok(())
}

/// Every file of the rock is in `rock_manifest` with its MD5, and every listed file is there.
fn verify_manifest(raw: &Path, files: &[FileEntry]) -> Result<()> {
    let manifest = read_manifest(&raw.join("rock_manifest"))?;
    for f in files.iter().filter(|f| f.path != "rock_manifest") {
        let Some(want) = manifest.get(&f.path) else {
            bail_kind!(
                Kind::Integrity,
                "rock refused: {} is not listed in rock_manifest (the rock was altered after `luarocks pack`)",
                esc(&f.path)
            );
        };
        let got = hex::encode(Md5::digest(fs::read(raw.join(&f.path))?));
        if &got != want {
            bail_kind!(
                Kind::Integrity,
                "rock refused: {} has MD5 {got} but rock_manifest says {} (the rock was altered \
                 after `luarocks pack`)",
                esc(&f.path),
                esc(want)
            );
        }
    }
    if let Some(missing) = manifest
        .keys()
        .find(|p| !files.iter().any(|f| &&f.path == p))
    {
        bail_kind!(
            Kind::Integrity,
            "rock refused: rock_manifest lists {}, which the rock does not hold",
            esc(missing)
        );
    }
    Ok(())
}

/// A string from the rock (a module name, a manifest key) as it may be printed.
fn esc(s: &str) -> String {
    crate::node::names::escape(s.as_bytes())
}

fn root_rockspec(raw: &Path) -> Option<Rockspec> {
    rockspec::find(raw).into_iter().next()
}

/// Take the plugins out of a rock unpacked into `raw` (files `all`, through the gate):
/// verify `rock_manifest`, then move `lua/kong/plugins/<name>/` (the one `--name` asks
/// for, or each) to `staging/<name>`, checked; say what else it carries.
pub fn from_unpacked(
    raw: &Path,
    all: Vec<FileEntry>,
    staging: &Path,
    hints: &NameHints,
    lua_dirs: &[PathBuf],
    limits: &Limits,
) -> Result<(Vec<ExtractedPlugin>, RockReport)> {
    let spec = root_rockspec(raw);
    let mut report = RockReport {
        package: spec.as_ref().and_then(|s| s.package.clone()),
        version: spec.as_ref().and_then(|s| s.version.clone()),
        kind: "all".into(),
        plugins: vec![],
        extras: vec![],
        native: vec![],
    };
    if !raw.join("rock_manifest").is_file() {
        report.kind = "src".into();
        let plugins = from_src_rock(raw, spec, staging, hints, limits, &mut report)?;
        return Ok((plugins, report));
    }
    verify_manifest(raw, &all)?;
    let plugins_dir = raw.join("lua/kong/plugins");
    report.plugins = fs::read_dir(&plugins_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("handler.lua").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    report.plugins.sort();
    let chosen = choose(&report.plugins, hints)?;
    let version = spec.as_ref().and_then(Rockspec::release);
    let mut out = Vec::new();
    for name in &chosen {
        crate::node::names::check_plugin_name(name)?;
        let dir = plugins_dir.join(name);
        crate::node::plugin::check_plugin_dir(&dir, name)?;
        let prefix = format!("lua/kong/plugins/{name}/");
        let files = all
            .iter()
            .filter_map(|f| {
                let mut f = f.clone();
                f.path = f.path.strip_prefix(&prefix)?.to_string();
                Some(f)
            })
            .collect();
        unpack::move_out(&dir, staging, name)?;
        out.push(ExtractedPlugin {
            name: name.clone(),
            version: version
                .clone()
                .filter(|v| crate::node::plugin::valid_version(v)),
            dir: staging.join(name),
            files,
        });
    }
    carried(&all, &chosen, lua_dirs, &mut report);
    unpack::remove_raw(raw)?;
    Ok((out, report))
}

/// The plugins to take: the one `--name` asks for, or every one.
fn choose(plugins: &[String], hints: &NameHints) -> Result<Vec<String>> {
    Ok(match hints.flag.as_deref() {
        Some(w) if plugins.iter().any(|p| p == w) => vec![w.to_string()],
        Some(w) => bail_kind!(
            Kind::Usage,
            "the rock holds no plugin {w} (it holds: {})",
            plugins.join(", ")
        ),
        None if plugins.is_empty() => bail_kind!(
            Kind::Unsafe,
            "the rock holds no Kong plugin: no lua/kong/plugins/<name>/handler.lua"
        ),
        None => plugins.to_vec(),
    })
}

/// What the rock holds besides the chosen plugins: Lua modules and compiled files.
fn carried(all: &[FileEntry], chosen: &[String], lua_dirs: &[PathBuf], report: &mut RockReport) {
    for f in all {
        if let Some(rel) = f.path.strip_prefix("lua/") {
            if !chosen
                .iter()
                .any(|n| rel.starts_with(&format!("kong/plugins/{n}/")))
            {
                report.extras.push(extra(rel, &f.path, lua_dirs));
            }
        } else if f.path.starts_with("lib/") || f.path.starts_with("bin/") {
            report.native.push(f.path.clone());
        }
    }
}

fn extra(rel: &str, path: &str, lua_dirs: &[PathBuf]) -> ExtraModule {
    let module = rel
        .strip_suffix("/init.lua")
        .or_else(|| rel.strip_suffix(".lua"))
        .unwrap_or(rel)
        .replace('/', ".");
    ExtraModule {
        module,
        path: path.to_string(),
        installed_at: lua_dirs.iter().map(|d| d.join(rel)).find(|p| p.is_file()),
    }
}

/// A `.src.rock`: the rockspec plus the sources, as a directory or one nested archive.
fn from_src_rock(
    raw: &Path,
    spec: Option<Rockspec>,
    staging: &Path,
    hints: &NameHints,
    limits: &Limits,
    report: &mut RockReport,
) -> Result<Vec<ExtractedPlugin>> {
    let Some(spec) = spec else {
        bail_kind!(
            Kind::Unsafe,
            "not a LuaRocks rock: neither rock_manifest (a built .all.rock) nor a rockspec (a .src.rock) at its root"
        );
    };
    if !matches!(
        spec.build_type.as_deref(),
        None | Some("builtin") | Some("none")
    ) {
        bail_kind!(
            Kind::Usage,
            "{}: build type {:?} needs luarocks to build it; kplug carries pure-Lua plugins \
             (build it with `luarocks make` and `luarocks pack` to a .all.rock)",
            spec.path.display(),
            spec.build_type.as_deref().unwrap_or_default()
        );
    }
    report.plugins = spec.plugins();
    // The sources: a nested .tar.gz/.zip next to the rockspec, or a directory.
    let nested = fs::read_dir(raw)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file() && p.extension().is_some_and(|x| x != "rockspec"));
    let src_root = match nested {
        Some(archive) => {
            let dest = raw.join(".sources");
            fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
            unpack::unpack_file(&archive, &dest, limits)?;
            single_dir(&dest).unwrap_or(dest)
        }
        None => single_dir(raw).unwrap_or_else(|| raw.to_path_buf()),
    };
    let want = hints.flag.as_deref();
    if let Some(w) = want {
        if !report.plugins.iter().any(|p| p == w) {
            bail_kind!(
                Kind::Usage,
                "the rock holds no plugin {w} (it holds: {})",
                report.plugins.join(", ")
            );
        }
    }
    let out = unpack::from_rockspec(&src_root, &spec, want, staging, &[], limits)?;
    let names: Vec<String> = out.iter().map(|p| p.name.clone()).collect();
    for m in spec
        .modules
        .iter()
        .filter(|m| m.plugin().is_none_or(|p| !names.iter().any(|n| n == p)))
    {
        report.extras.push(ExtraModule {
            module: m.name.clone(),
            path: m.lua_source.clone().unwrap_or_default(),
            installed_at: None,
        });
    }
    unpack::remove_raw(raw)?;
    Ok(out)
}

fn single_dir(dir: &Path) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    match dirs.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_never_print_the_rock_s_control_characters() {
        let r = RockReport {
            package: None,
            version: None,
            kind: "src".into(),
            plugins: vec![],
            extras: vec![ExtraModule {
                module: "resty.x\u{1b}[2J\u{7}\nERROR: fake line".into(),
                path: "a\u{1b}[31mred.lua".into(),
                installed_at: None,
            }],
            native: vec!["lib/x\u{1b}.so".into()],
        };
        for n in r.notes() {
            assert!(!n.contains(['\u{1b}', '\u{7}', '\n']), "{n:?}");
        }
    }
}
