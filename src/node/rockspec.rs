//! Rockspecs as the map of a plugin tree: `build.modules` (module name → source path)
//! says where `luarocks make` installs each file, whatever the source layout.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::Kind;
use crate::node::lua::{self, Value};
use crate::node::names::valid_plugin_name;

/// One `build.modules` (or `build.install.lua`) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// `kong.plugins.acme.handler`.
    pub name: String,
    /// The source file relative to the rockspec's directory, for a pure-Lua module.
    pub lua_source: Option<String>,
}

impl Module {
    /// Where `luarocks make` installs the module, relative to the Lua tree:
    /// `kong/plugins/acme/handler.lua`, or `…/handler/init.lua` for an `init.lua` source.
    pub fn installed_path(&self) -> String {
        let base = self.name.replace('.', "/");
        match &self.lua_source {
            Some(s) if s == "init.lua" || s.ends_with("/init.lua") => format!("{base}/init.lua"),
            _ => format!("{base}.lua"),
        }
    }

    /// The plugin this module belongs to, for `kong.plugins.<name>.…`.
    pub fn plugin(&self) -> Option<&str> {
        let rest = self.name.strip_prefix("kong.plugins.")?;
        let (name, _) = rest.split_once('.')?;
        Some(name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rockspec {
    pub path: PathBuf,
    pub package: Option<String>,
    /// `1.2.3-1`.
    pub version: Option<String>,
    pub build_type: Option<String>,
    pub modules: Vec<Module>,
}

impl Rockspec {
    /// Parse (never run) the rockspec at `path`.
    pub fn load(path: &Path) -> Result<Rockspec> {
        let src = lua::read_source(path)?;
        Rockspec::parse(&src, path)
    }

    pub fn parse(src: &str, path: &Path) -> Result<Rockspec> {
        let chunk = lua::eval(src).map_err(|e| {
            crate::error::fail(
                Kind::Usage,
                format!("{}:{e} (rockspec syntax error)", path.display()),
            )
        })?;
        let g = &chunk.globals;
        let text = |k: &str| g.get(k).and_then(Value::as_str).map(String::from);
        let build = g.get("build");
        let mut modules = Vec::new();
        let tables = [
            build.and_then(|b| b.get("modules")),
            build
                .and_then(|b| b.get("install"))
                .and_then(|i| i.get("lua")),
        ];
        for t in tables.into_iter().flatten().filter_map(Value::as_table) {
            for (name, v) in t.string_keys() {
                let lua_source = v.as_str().filter(|s| s.ends_with(".lua")).map(String::from);
                modules.push(Module {
                    name: name.to_string(),
                    lua_source,
                });
            }
        }
        Ok(Rockspec {
            path: path.to_path_buf(),
            package: text("package"),
            version: text("version"),
            build_type: build
                .and_then(|b| b.get("type"))
                .and_then(Value::as_str)
                .map(String::from),
            modules,
        })
    }

    /// The plugins the modules name (`kong.plugins.<name>.*`), sorted, valid names only.
    pub fn plugins(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .modules
            .iter()
            .filter_map(Module::plugin)
            .filter(|n| valid_plugin_name(n))
            .map(String::from)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The release without the rockspec revision: `1.2.3-1` → `1.2.3`.
    pub fn release(&self) -> Option<String> {
        let v = self.version.as_deref()?;
        Some(match v.rsplit_once('-') {
            Some((r, rev)) if !r.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => {
                r.to_string()
            }
            _ => v.to_string(),
        })
    }

    /// The files of plugin `name`: (path inside `kong/plugins/<name>/`, source relative to
    /// the rockspec's directory). A module that is not plain Lua is an error: kplug
    /// carries no compiled code.
    pub fn plugin_files(&self, name: &str) -> Result<Vec<(String, String)>> {
        let prefix = format!("kong/plugins/{name}/");
        let mut out = Vec::new();
        for m in self.modules.iter().filter(|m| m.plugin() == Some(name)) {
            let Some(src) = &m.lua_source else {
                crate::bail_kind!(
                    Kind::Usage,
                    "{}: module {} is not a Lua file (C sources need compiling; kplug carries \
                     pure-Lua plugins only)",
                    self.path.display(),
                    crate::node::names::escape(m.name.as_bytes())
                );
            };
            if !valid_module_name(&m.name) {
                crate::bail_kind!(
                    Kind::Unsafe,
                    "{}: {} is not a Lua module name (dot-separated parts of letters, digits, \
                     `_` and `-`); it would become a file name, so nothing was written",
                    self.path.display(),
                    crate::node::names::escape(m.name.as_bytes())
                );
            }
            let inside = m.installed_path();
            let rel = inside
                .strip_prefix(&prefix)
                .expect("module of this plugin")
                .to_string();
            out.push((rel, src.clone()));
        }
        out.sort();
        Ok(out)
    }

    /// Lua modules outside `kong.plugins.<plugin>` (shared libraries the plugin needs).
    pub fn other_modules(&self, plugin: &str) -> Vec<&Module> {
        self.modules
            .iter()
            .filter(|m| m.plugin() != Some(plugin))
            .collect()
    }
}

/// A module name whose file name stays where it belongs: dot-separated parts of
/// `[A-Za-z0-9_-]`, none empty (so no `/`, no `..`, nothing absolute).
fn valid_module_name(name: &str) -> bool {
    name.len() <= 1024
        && name.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// The `*.rockspec` files directly in `dir`, sorted.
pub fn paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rockspec"))
        .collect();
    paths.sort();
    paths
}

/// The rockspecs directly in `dir`, parsed, sorted by path; unreadable ones are skipped.
pub fn find(dir: &Path) -> Vec<Rockspec> {
    paths(dir)
        .iter()
        .filter_map(|p| Rockspec::load(p).ok())
        .collect()
}

/// The one rockspec in `dir` that maps modules of plugin `want` (or of any plugin), with
/// its plugin names. Several rockspecs mapping different plugins are ambiguous → `None`
/// unless `want` picks one.
pub fn mapping(dir: &Path, want: Option<&str>) -> Option<Rockspec> {
    let mut specs: Vec<Rockspec> = find(dir)
        .into_iter()
        .filter(|s| !s.plugins().is_empty())
        .filter(|s| want.is_none_or(|w| s.plugins().iter().any(|p| p == w)))
        .collect();
    (specs.len() == 1).then(|| specs.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a real public plugin's rockspec: sources in `src/`, mapped only here.
    pub(crate) const SRC_LAYOUT: &str = r#"local plugin_name = "upstream-auth"
local package_name = "kong-plugin-" .. plugin_name
local package_version = "1.4.0"
local rockspec_revision = "1"
package = package_name
version = package_version .. "-" .. rockspec_revision
supported_platforms = {"linux", "macosx"}
source = { url = "git+https://example.invalid/x.git", tag = package_version }
dependencies = { "lua-resty-http >= 0.15" }
build = {
  type = "builtin",
  modules = {
    ["kong.plugins."..plugin_name..".handler"] = "src/handler.lua",
    ["kong.plugins."..plugin_name..".schema"] = "src/schema.lua",
    ["kong.plugins."..plugin_name..".access"] = "src/access/init.lua",
    ["resty.upstream-auth-helper"] = "lib/helper.lua",
  }
}
"#;

    #[test]
    fn module_names_that_are_not_file_names_are_refused() {
        for bad in [
            "acme./etc/x",
            "acme..x",
            "acme.x\u{1b}[2J",
            "acme.",
            "acme.a b",
        ] {
            let src = format!(
                "build = {{ modules = {{ [\"kong.plugins.acme.handler\"] = \"h.lua\", \
                 [\"kong.plugins.{bad}\"] = \"h.lua\" }} }}"
            );
            let r = Rockspec::parse(&src, Path::new("x.rockspec")).unwrap();
            let e = r.plugin_files("acme").unwrap_err();
            assert_eq!(crate::error::kind_of(&e), Kind::Unsafe, "{bad}: {e:#}");
            assert!(!format!("{e:#}").contains('\u{1b}'), "{e:#}");
        }
        assert!(valid_module_name("kong.plugins.acme.access-v2_x"));
    }

    #[test]
    fn maps_modules() {
        let r = Rockspec::parse(SRC_LAYOUT, Path::new("x.rockspec")).unwrap();
        assert_eq!(r.package.as_deref(), Some("kong-plugin-upstream-auth"));
        assert_eq!(r.release().as_deref(), Some("1.4.0"));
        assert_eq!(r.plugins(), ["upstream-auth"]);
        assert_eq!(
            r.plugin_files("upstream-auth").unwrap(),
            [
                (
                    "access/init.lua".to_string(),
                    "src/access/init.lua".to_string()
                ),
                ("handler.lua".into(), "src/handler.lua".into()),
                ("schema.lua".into(), "src/schema.lua".into()),
            ]
        );
        let others: Vec<String> = r
            .other_modules("upstream-auth")
            .iter()
            .map(|m| m.installed_path())
            .collect();
        assert_eq!(others, ["resty/upstream-auth-helper.lua"]);
        let c = Rockspec::parse(
            "build = { type = 'builtin', modules = { ['kong.plugins.c.handler'] = 'h.lua', ['kong.plugins.c.native'] = { sources = {'x.c'} } } }",
            Path::new("c.rockspec"),
        )
        .unwrap();
        assert!(format!("{}", c.plugin_files("c").unwrap_err()).contains("not a Lua file"));
    }
}
