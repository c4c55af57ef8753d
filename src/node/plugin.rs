//! A plugin source tree: find it in the layouts authors use, check it the way Kong checks
//! it at start-up, and pack it as a reproducible tar.gz laid out as `kong/plugins/<name>/`.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result};
use regex::Regex;

use crate::bail_kind;
use crate::digest::{HashingReader, HashingWriter};
use crate::error::{fail, Kind};
use crate::node::limits::Limits;
use crate::node::{lua, rockspec};
use crate::tree::FileEntry;

pub use crate::node::names::valid_plugin_name;
use crate::node::names::NAME_RULE;

/// Versions end up in file names and tags: one safe component, OCI-tag sized.
pub(crate) fn valid_version(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'))
}

pub fn default_archive_name(name: &str, version: &str) -> String {
    format!("{name}-{version}.tar.gz")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSource {
    pub name: String,
    pub version: String,
    /// The directory holding handler.lua, or the rockspec's directory when `mapped`.
    pub dir: PathBuf,
    /// Laid out by a rockspec: (path inside `kong/plugins/<name>/`, source file), as
    /// `luarocks make` would install them. `None`: the files under `dir`.
    pub mapped: Option<Vec<(String, PathBuf)>>,
}

/// Where a plugin sits inside a tree (a source checkout or an unpacked archive).
#[derive(Debug)]
pub(crate) struct Detected {
    /// The name, when the layout gives it (`kong/plugins/<name>/`, `<name>/handler.lua`).
    pub name: Option<String>,
    /// The directory holding handler.lua.
    pub dir: PathBuf,
    /// Where a rockspec for this layout would be.
    pub base: PathBuf,
}

struct Candidate {
    name: String,
    dir: PathBuf,
    base: PathBuf,
}

/// Find the plugin directory under `root`, trying in order: `kong/plugins/<name>/`,
/// `<x>/kong/plugins/<name>/` (LuaRocks source tree), `handler.lua` at the root (bare
/// plugin dir, KongPluginInstallation image), `<name>/handler.lua`. `want` picks one when
/// several are found. `missing` is the kind of the "nothing found" error.
pub(crate) fn detect(root: &Path, want: Option<&str>, missing: Kind) -> Result<Detected> {
    let mut found = plugins_under(root)?;
    if found.is_empty() {
        for sub in subdirs(root)? {
            found.extend(plugins_under(&root.join(sub))?);
        }
    }
    if found.is_empty() {
        if is_present(&root.join("handler.lua")) {
            return Ok(Detected {
                name: None,
                dir: root.to_path_buf(),
                base: root.to_path_buf(),
            });
        }
        for sub in subdirs(root)? {
            let dir = root.join(&sub);
            if is_present(&dir.join("handler.lua")) {
                found.push(Candidate {
                    name: sub,
                    dir,
                    base: root.to_path_buf(),
                });
            }
        }
    }
    if found.is_empty() {
        bail_kind!(
            missing,
            "no Kong plugin found in {}: expected handler.lua and schema.lua at the top, in \
             kong/plugins/<name>/, in <dir>/kong/plugins/<name>/ or in <name>/",
            root.display()
        );
    }
    let c = pick(root, found, want)?;
    Ok(Detected {
        name: valid_plugin_name(&c.name).then_some(c.name),
        dir: c.dir,
        base: c.base,
    })
}

fn pick(root: &Path, mut found: Vec<Candidate>, want: Option<&str>) -> Result<Candidate> {
    if let Some(i) = want.and_then(|w| found.iter().position(|c| c.name == w)) {
        return Ok(found.swap_remove(i));
    }
    // A helper directory next to the plugin (no handler.lua) does not make it ambiguous.
    let with_handler: Vec<usize> = (0..found.len())
        .filter(|&i| is_present(&found[i].dir.join("handler.lua")))
        .collect();
    if with_handler.len() == 1 {
        return Ok(found.swap_remove(with_handler[0]));
    }
    if found.len() == 1 {
        return Ok(found.swap_remove(0));
    }
    let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
    match want {
        Some(w) => bail_kind!(
            Kind::Usage,
            "no plugin named {w} in {} (found: {}); choose one with --name",
            root.display(),
            names.join(", ")
        ),
        None => bail_kind!(
            Kind::Usage,
            "several plugins found in {}: {}; choose one with --name",
            root.display(),
            names.join(", ")
        ),
    }
}

/// The subdirectories of `base/kong/plugins`, each a candidate with `base` as its base.
fn plugins_under(base: &Path) -> Result<Vec<Candidate>> {
    let plugins = base.join("kong").join("plugins");
    if !fs::symlink_metadata(&plugins).is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    Ok(subdirs(&plugins)?
        .into_iter()
        .map(|name| Candidate {
            dir: plugins.join(&name),
            name,
            base: base.to_path_buf(),
        })
        .collect())
}

/// Names of the real (not symlinked) subdirectories of `dir`, sorted.
fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let ent = ent?;
        if ent.file_type()?.is_dir() {
            if let Ok(name) = ent.file_name().into_string() {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_present(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Read at most 1 MiB of a text file: rockspecs and handlers are small, archives hostile.
fn read_text(p: &Path) -> Option<String> {
    let mut buf = Vec::new();
    fs::File::open(p)
        .ok()?
        .take(1 << 20)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn rockspecs(base: &Path) -> Vec<String> {
    let mut out: Vec<String> = rockspec::paths(base)
        .iter()
        .filter_map(|p| read_text(p))
        .collect();
    out.sort();
    out
}

fn lua_string(text: &str, re: &Regex) -> Option<String> {
    re.captures(text).map(|c| c[1].to_string())
}

// Literal `version = "1.2.3-1"`, or the kong-plugin template's
// `local package_version = "1.2.3"` + `version = package_version .. "-" .. rockspec_revision`.
static RS_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*version\s*=\s*["']([^"']+)["']"#).unwrap());
static RS_PACKAGE_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*(?:local\s+)?package_version\s*=\s*["']([^"']+)["']"#).unwrap()
});
static RS_MODULE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"kong\.plugins\.([a-z0-9][a-z0-9_-]*)\."#).unwrap());
static RS_PLUGIN_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*(?:local\s+)?plugin_name\s*=\s*["']([^"']+)["']"#).unwrap()
});
static RS_PACKAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*package\s*=\s*["']kong-plugin-([^"']+)["']"#).unwrap());
static HANDLER_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\bVERSION\s*=\s*["']([^"']+)["']"#).unwrap());

fn rockspec_version(text: &str) -> Option<String> {
    if let Some(v) = lua_string(text, &RS_VERSION) {
        // Drop the rockspec revision: "1.2.3-1" is release 1.2.3, rockspec revision 1.
        return Some(match v.rsplit_once('-') {
            Some((v, rev)) if !v.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => {
                v.to_string()
            }
            _ => v,
        });
    }
    lua_string(text, &RS_PACKAGE_VERSION)
}

/// The plugin name a rockspec in `base` gives: its `kong.plugins.<name>.*` modules, the
/// template's `plugin_name`, or a `kong-plugin-<name>` package name.
pub(crate) fn rockspec_name(base: &Path) -> Option<String> {
    let specs = rockspecs(base);
    let mut names: Vec<String> = specs
        .iter()
        .flat_map(|t| RS_MODULE.captures_iter(t).map(|c| c[1].to_string()))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        names = specs
            .iter()
            .filter_map(|t| lua_string(t, &RS_PLUGIN_NAME).or_else(|| lua_string(t, &RS_PACKAGE)))
            .collect();
        names.sort();
        names.dedup();
    }
    match names.as_slice() {
        [n] if valid_plugin_name(n) => Some(n.clone()),
        _ => None,
    }
}

/// The version from the one rockspec in `base` (several that disagree are ignored), else
/// from `VERSION = "…"` in `dir/handler.lua`.
pub(crate) fn detect_version(base: &Path, dir: &Path) -> Option<String> {
    let mut versions: Vec<String> = rockspecs(base)
        .iter()
        .filter_map(|t| rockspec_version(t))
        .collect();
    versions.dedup();
    if let [v] = versions.as_slice() {
        return Some(v.clone());
    }
    let handler = read_text(&dir.join("handler.lua"))?;
    handler
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .find_map(|l| lua_string(l, &HANDLER_VERSION))
}

/// Find the plugin in `dir`, name and version it, and validate it (layout, Lua syntax,
/// schema name). A rockspec in `dir` whose `build.modules` maps `kong.plugins.<name>.*`
/// is the map; else the layouts of [`detect`]. The name comes from, in order: `name`
/// (`--name`), the tree (its `kong/plugins/<name>/` or rockspec), `schema.lua`'s `name`,
/// the directory's own name.
pub fn locate(dir: &Path, name: Option<&str>, version: Option<&str>) -> Result<PluginSource> {
    if let Some(n) = name {
        crate::node::names::check_plugin_name(n)?;
    }
    if !dir.is_dir() {
        bail_kind!(Kind::Usage, "{} is not a directory", dir.display());
    }
    let src = match rockspec::mapping(dir, name) {
        Some(spec) => from_rockspec(dir, &spec, name, version)?,
        None => from_layout(dir, name, version)?,
    };
    if !valid_version(&src.version) {
        bail_kind!(
            Kind::Usage,
            "invalid version {:?}: use letters, digits, '.', '_', '+' and '-' \
             (at most 128, starting with a letter or digit)",
            src.version
        );
    }
    source_items(&src)?;
    Ok(src)
}

fn from_rockspec(
    dir: &Path,
    spec: &rockspec::Rockspec,
    want: Option<&str>,
    version: Option<&str>,
) -> Result<PluginSource> {
    let plugins = spec.plugins();
    let name = match (want, plugins.as_slice()) {
        (Some(w), _) => w.to_string(),
        (None, [one]) => one.clone(),
        (None, _) => bail_kind!(
            Kind::Usage,
            "{} maps several plugins: {}; choose one with --name",
            spec.path.display(),
            plugins.join(", ")
        ),
    };
    let files = spec
        .plugin_files(&name)?
        .into_iter()
        .map(|(rel, src)| (rel, dir.join(src)))
        .collect();
    let version = match version.map(String::from).or_else(|| spec.release()) {
        Some(v) => v,
        None => bail_kind!(
            Kind::Usage,
            "no version for plugin {name}: {} has no literal version; pass --version",
            spec.path.display()
        ),
    };
    Ok(PluginSource {
        name,
        version,
        dir: dir.to_path_buf(),
        mapped: Some(files),
    })
}

fn from_layout(dir: &Path, name: Option<&str>, version: Option<&str>) -> Result<PluginSource> {
    let d = detect(dir, name, Kind::Usage)?;
    let name = match (d.name, name) {
        (Some(found), Some(want)) if found != want => bail_kind!(
            Kind::Usage,
            "the plugin in {} is named {found}, not {want}: its modules are required as \
             kong.plugins.{found}.*, so --name cannot rename it",
            d.dir.display()
        ),
        (Some(found), _) => found,
        (None, Some(want)) => want.to_string(),
        (None, None) => match rockspec_name(&d.base).or_else(|| schema_name_of(&d.dir)) {
            Some(n) => n,
            None => {
                let own = fs::canonicalize(&d.dir)
                    .ok()
                    .and_then(|p| Some(p.file_name()?.to_str()?.to_string()))
                    .unwrap_or_default();
                if !valid_plugin_name(&own) {
                    bail_kind!(
                        Kind::Usage,
                        "cannot name the plugin in {}: the directory name \"{}\" is not a valid \
                         plugin name ({NAME_RULE}); pass --name",
                        d.dir.display(),
                        crate::node::names::escape(own.as_bytes())
                    );
                }
                own
            }
        },
    };
    let version = match version {
        Some(v) => v.to_string(),
        None => detect_version(&d.base, &d.dir).ok_or_else(|| {
            fail(
                Kind::Usage,
                format!(
                    "no version found for plugin {name}: pass --version, or set \
                     version = \"1.2.3-1\" in its rockspec, or VERSION = \"1.2.3\" in the \
                     handler table of {}",
                    d.dir.join("handler.lua").display()
                ),
            )
        })?,
    };
    Ok(PluginSource {
        name,
        version,
        dir: d.dir,
        mapped: None,
    })
}

/// The literal, valid `name` of `dir/schema.lua`, if any.
pub(crate) fn schema_name_of(dir: &Path) -> Option<String> {
    let src = lua::read_source(&dir.join("schema.lua")).ok()?;
    lua::schema_name(&src)
        .ok()
        .flatten()
        .filter(|n| valid_plugin_name(n))
}

/// One thing to pack, relative to the plugin dir.
struct Item {
    rel: String,
    /// The file to read (a symlink's target), or the directory.
    src: PathBuf,
    is_dir: bool,
    exec: bool,
}

/// Version control metadata is never part of a plugin.
const SKIPPED: &[&str] = &[".git", ".hg", ".svn"];

/// Walk the plugin dir: regular files, directories, and symlinks to files inside it.
fn walk(root: &Path) -> Result<Vec<Item>> {
    let canon_root =
        fs::canonicalize(root).with_context(|| format!("reading {}", root.display()))?;
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs_dir = root.join(&rel_dir);
        let listing =
            fs::read_dir(&abs_dir).with_context(|| format!("reading {}", abs_dir.display()))?;
        for ent in listing {
            let ent = ent?;
            let path = ent.path();
            let Ok(name) = ent.file_name().into_string() else {
                bail_kind!(
                    Kind::Unsafe,
                    "{}: file name is not valid UTF-8",
                    path.display()
                );
            };
            if SKIPPED.contains(&name.as_str()) {
                continue;
            }
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            let item = walk_item(rel, path, &canon_root)?;
            if item.is_dir {
                stack.push(item.rel.clone());
            }
            out.push(item);
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// One directory entry of the walk: a directory, a regular file, or a symlink to a file
/// inside the plugin dir (`canon_root`); anything else is refused.
fn walk_item(rel: String, path: PathBuf, canon_root: &Path) -> Result<Item> {
    let meta = fs::symlink_metadata(&path)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(Item {
            rel,
            src: path,
            is_dir: true,
            exec: true,
        });
    }
    if ft.is_file() {
        return Ok(Item {
            rel,
            src: path,
            is_dir: false,
            exec: meta.permissions().mode() & 0o111 != 0,
        });
    }
    if !ft.is_symlink() {
        bail_kind!(
            Kind::Unsafe,
            "{} is a special file (device, FIFO or socket); a plugin holds only files and directories",
            path.display()
        );
    }
    let target = symlink_target(&path, canon_root)?;
    let exec = fs::metadata(&target)?.permissions().mode() & 0o111 != 0;
    Ok(Item {
        rel,
        src: target,
        is_dir: false,
        exec,
    })
}

/// Where a symlink in the plugin dir points: a file inside `canon_root`, or an error.
fn symlink_target(path: &Path, canon_root: &Path) -> Result<PathBuf> {
    let target = fs::canonicalize(path).map_err(|e| {
        fail(
            Kind::Unsafe,
            format!("{}: broken symlink ({e})", path.display()),
        )
    })?;
    if !target.starts_with(canon_root) {
        bail_kind!(
            Kind::Unsafe,
            "{} is a symlink to {}, outside the plugin directory; copy the file in instead",
            path.display(),
            target.display()
        );
    }
    if !fs::metadata(&target)?.is_file() {
        bail_kind!(
            Kind::Unsafe,
            "{} is a symlink to a directory or special file; only symlinks to files \
             inside the plugin directory are allowed",
            path.display()
        );
    }
    Ok(target)
}

/// The checks Kong makes when it loads the plugin, on the files it would load.
fn check_items(d: &str, items: &[Item]) -> Result<()> {
    let is_file = |rel: &str| items.iter().any(|i| i.rel == rel && !i.is_dir);
    if !is_file("handler.lua") {
        bail_kind!(
            Kind::Unsafe,
            "{d}: handler.lua is missing, so Kong would refuse to start with \"plugin is enabled \
             but not installed\"; put handler.lua and schema.lua side by side in the plugin directory"
        );
    }
    if !is_file("schema.lua") {
        bail_kind!(
            Kind::Unsafe,
            "{d}: schema.lua is missing next to handler.lua, so Kong would refuse to start with \
             \"no configuration schema found\"; add schema.lua to the same directory"
        );
    }
    let has_migrations = items.iter().any(|i| i.rel.starts_with("migrations/"));
    if has_migrations && !is_file("migrations/init.lua") {
        bail_kind!(
            Kind::Unsafe,
            "{d}: migrations/ has no init.lua; Kong finds a plugin's migrations through \
             migrations/init.lua (returning the list of migration names) and silently skips \
             them without it; add it or remove migrations/"
        );
    }
    Ok(())
}

/// Every `.lua` file compiles in LuaJIT (the message is LuaJIT's, with file:line), and
/// `schema.lua`'s literal `name` (when it has one) is the plugin's name.
pub(crate) fn check_sources(d: &str, name: &str, files: &[(String, PathBuf)]) -> Result<()> {
    let luajit = lua::SyntaxChecker::new().map_err(|e| anyhow::anyhow!(e))?;
    for (rel, src) in files.iter().filter(|(r, _)| r.ends_with(".lua")) {
        let bytes = lua::read_bytes(src)?;
        let shown = format!("{d}/{rel}");
        if let Err(msg) = luajit.check(&bytes, &shown) {
            bail_kind!(
                Kind::Unsafe,
                "{}: Lua syntax error; Kong would fail to load plugin {name}",
                crate::node::names::printable(&msg)
            );
        }
        if rel != "schema.lua" {
            continue;
        }
        if let Ok(Some(n)) = lua::schema_name(&String::from_utf8_lossy(&bytes)) {
            if n != name {
                bail_kind!(
                    Kind::Unsafe,
                    "{d}/schema.lua names the plugin \"{}\" but it is installed as \"{name}\": \
                     Kong loads it as kong.plugins.{name}.*; make the schema's name and the \
                     plugin name the same",
                    crate::node::names::escape(n.as_bytes())
                );
            }
        }
    }
    Ok(())
}

/// Items from a rockspec map: each source a regular file inside `root`. Sources that do
/// not exist are returned apart, so that a missing handler or schema gets Kong's message.
fn mapped_items(root: &Path, map: &[(String, PathBuf)]) -> Result<(Vec<Item>, Vec<PathBuf>)> {
    let canon_root =
        fs::canonicalize(root).with_context(|| format!("reading {}", root.display()))?;
    let (mut out, mut missing): (Vec<Item>, Vec<PathBuf>) = (Vec::new(), Vec::new());
    for (rel, src) in map {
        let Ok(target) = fs::canonicalize(src) else {
            missing.push(src.clone());
            continue;
        };
        if !target.starts_with(&canon_root) || !fs::metadata(&target)?.is_file() {
            bail_kind!(
                Kind::Unsafe,
                "{} (mapped by the rockspec) is not a file inside {}",
                src.display(),
                root.display()
            );
        }
        for (i, _) in rel.match_indices('/') {
            if !out.iter().any(|it| it.rel == rel[..i]) {
                out.push(Item {
                    rel: rel[..i].to_string(),
                    src: root.to_path_buf(),
                    is_dir: true,
                    exec: true,
                });
            }
        }
        out.push(Item {
            rel: rel.clone(),
            exec: fs::metadata(&target)?.permissions().mode() & 0o111 != 0,
            src: target,
            is_dir: false,
        });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((out, missing))
}

/// What `pack` would write for `src`, checked as Kong checks it at start-up.
fn source_items(src: &PluginSource) -> Result<Vec<Item>> {
    let (items, missing) = match &src.mapped {
        Some(map) => mapped_items(&src.dir, map)?,
        None => (walk(&src.dir)?, vec![]),
    };
    let d = src.dir.display().to_string();
    check_items(&d, &items)?;
    if let Some(m) = missing.first() {
        bail_kind!(
            Kind::Unsafe,
            "{}: the rockspec maps it but it does not exist, so `luarocks make` would fail too",
            m.display()
        );
    }
    let files: Vec<(String, PathBuf)> = items
        .iter()
        .filter(|i| !i.is_dir)
        .map(|i| (i.rel.clone(), i.src.clone()))
        .collect();
    check_sources(&d, &src.name, &files)?;
    Ok(items)
}

/// Check `dir` holds a plugin Kong can load: handler.lua and schema.lua side by side,
/// migrations/init.lua if there is a migrations/, only files, directories and symlinks to
/// files inside `dir`.
pub fn validate_plugin_dir(dir: &Path) -> Result<()> {
    check_items(&dir.display().to_string(), &walk(dir)?)
}

/// [`validate_plugin_dir`] plus Lua syntax and the schema's name, for plugin `name`.
pub fn check_plugin_dir(dir: &Path, name: &str) -> Result<()> {
    source_items(&PluginSource {
        name: name.to_string(),
        version: String::new(),
        dir: dir.to_path_buf(),
        mapped: None,
    })
    .map(|_| ())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    /// `sha256:<hex>` of the .tar.gz.
    pub digest: String,
    pub size: u64,
    /// The plugin's files, relative to the plugin dir.
    pub files: Vec<FileEntry>,
}

/// An archive path and, for a file, (source, path in `Packed::files`, executable).
type Entry = (String, Option<(PathBuf, String, bool)>);

/// gzip OS byte for Unix, as GNU gzip writes on Linux.
const GZIP_OS_UNIX: u8 = 3;
const GZIP_LEVEL: u32 = 9;

/// Pack the plugin as `kong/plugins/<name>/…` into a reproducible tar.gz at `out`: the
/// same tree gives the same bytes whatever the mtimes, owners and umask (GNU tar format,
/// entries sorted by path, mtime 0, uid/gid 0, no user/group names, modes 0644/0755, gzip
/// mtime 0, fixed OS byte and level). Written to a temp file beside `out`, then renamed.
pub fn pack(src: &PluginSource, out: &Path) -> Result<Packed> {
    pack_with(src, out, &Limits::DEFAULT)
}

/// [`pack`], refusing a tree over `limits` (what nodes refuse) before writing anything.
pub fn pack_with(src: &PluginSource, out: &Path, limits: &Limits) -> Result<Packed> {
    crate::node::names::check_plugin_name(&src.name)?;
    let items = source_items(src)?;
    let mut sizes = Vec::with_capacity(items.len());
    for it in &items {
        let size = if it.is_dir {
            0
        } else {
            fs::metadata(&it.src)?.len()
        };
        sizes.push((it.rel.as_str(), size));
    }
    // The three `kong/plugins/<name>/` directories count on the node too.
    limits.check_tree(sizes.into_iter().chain([
        ("kong/", 0),
        ("kong/plugins/", 0),
        ("<name>/", 0),
    ]))?;

    let prefix = format!("kong/plugins/{}", src.name);
    let mut entries: Vec<Entry> = vec![
        ("kong/".into(), None),
        ("kong/plugins/".into(), None),
        (format!("{prefix}/"), None),
    ];
    for it in &items {
        if it.is_dir {
            entries.push((format!("{prefix}/{}/", it.rel), None));
        } else {
            let file = Some((it.src.clone(), it.rel.clone(), it.exec));
            entries.push((format!("{prefix}/{}", it.rel), file));
        }
    }
    write_reproducible(entries, &src.name, &src.version, out)
}

/// Pack the files `files` of `root` at the archive's root (no `kong/plugins/` prefix),
/// reproducibly as [`pack`] does: the shape of non-Lua artifacts.
pub fn pack_flat(
    root: &Path,
    files: &[FileEntry],
    name: &str,
    version: &str,
    out: &Path,
) -> Result<Packed> {
    let mut entries: Vec<Entry> = Vec::new();
    for f in files {
        for (i, _) in f.path.match_indices('/') {
            let d = format!("{}/", &f.path[..i]);
            if !entries.iter().any(|(p, _)| *p == d) {
                entries.push((d, None));
            }
        }
        let file = Some((root.join(&f.path), f.path.clone(), f.mode & 0o111 != 0));
        entries.push((f.path.clone(), file));
    }
    write_reproducible(entries, name, version, out)
}

/// (archive path, file to read + its path in `Packed::files` + exec bit); `None` is a
/// directory. Sorted, GNU format, mtime/uid/gid 0, modes 0644/0755, fixed gzip header.
fn write_reproducible(
    mut entries: Vec<Entry>,
    name: &str,
    version: &str,
    out: &Path,
) -> Result<Packed> {
    let tmp = crate::tree::AtomicFile::create(out, crate::tree::USER_MODE)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let hashing = HashingWriter::new(BufWriter::new(tmp.reopen()?));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNIX)
        .write(hashing, flate2::Compression::new(GZIP_LEVEL));
    let mut tar = tar::Builder::new(gz);
    let mut files = Vec::new();
    for (path, item) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match item {
            Some((src, rel, exec)) => {
                let f =
                    fs::File::open(&src).with_context(|| format!("opening {}", src.display()))?;
                let size = f.metadata()?.len();
                let mode = if exec { 0o755 } else { 0o644 };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(size);
                let mut r = HashingReader::new(f.take(size));
                tar.append_data(&mut h, &path, &mut r)
                    .with_context(|| format!("packing {}", src.display()))?;
                let (sha256, n) = r.hasher.finish();
                if n != size {
                    anyhow::bail!("{} changed while it was being packed", src.display());
                }
                files.push(FileEntry {
                    path: rel,
                    sha256,
                    size,
                    mode,
                });
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
        }
    }
    let mut hashing = tar.into_inner()?.finish()?;
    hashing.flush()?;
    let (digest, size) = hashing.hasher.finish();
    tmp.commit()?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Packed {
        name: name.to_string(),
        version: version.to_string(),
        path: out.to_path_buf(),
        digest,
        size,
        files,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::kind_of;

    pub(crate) fn write(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }

    pub(crate) const HANDLER: &str =
        "local Handler = { PRIORITY = 1000, VERSION = \"0.1.0\" }\nreturn Handler\n";
    /// Named from the module path, as some plugins do: no literal name to compare.
    pub(crate) const SCHEMA: &str =
        "local name = (...):match(\"kong%.plugins%.([^.]+)\")\nreturn { name = name, fields = {} }\n";

    /// handler.lua, schema.lua and migrations under `root/rel`.
    pub(crate) fn plugin_at(root: &Path, rel: &str) {
        let j = |f: &str| {
            if rel.is_empty() {
                f.to_string()
            } else {
                format!("{rel}/{f}")
            }
        };
        write(root, &j("handler.lua"), HANDLER);
        write(root, &j("schema.lua"), SCHEMA);
        write(root, &j("migrations/init.lua"), "return { \"000_base\" }\n");
        write(root, &j("migrations/000_base.lua"), "return {}\n");
    }

    fn err_kind<T: std::fmt::Debug>(r: Result<T>) -> (Kind, String) {
        let e = r.unwrap_err();
        (kind_of(&e), format!("{e:#}"))
    }

    #[test]
    fn layout_bare_dir_named_by_flag_rockspec_or_dir() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("my-auth");
        plugin_at(&dir, "");
        let s = locate(&dir, None, None).unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str()), ("my-auth", "0.1.0"));
        assert_eq!(s.dir, dir);
        let s = locate(&dir, Some("other"), Some("2.0.0")).unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str()), ("other", "2.0.0"));
        // A rockspec in the bare dir names it (modules map to files at its root).
        write(
            &dir,
            "kong-plugin-jwt-x-1.4.0-2.rockspec",
            "package = \"kong-plugin-jwt-x\"\nversion = \"1.4.0-2\"\nbuild = { type = \"builtin\", modules = {\n  [\"kong.plugins.jwt-x.handler\"] = \"handler.lua\",\n  [\"kong.plugins.jwt-x.schema\"] = \"schema.lua\" } }\n",
        );
        let s = locate(&dir, None, None).unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str()), ("jwt-x", "1.4.0"));
    }

    #[test]
    fn layout_kong_plugins_and_several() {
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "kong/plugins/alpha");
        let s = locate(t.path(), None, None).unwrap();
        assert_eq!(s.name, "alpha");
        assert_eq!(s.dir, t.path().join("kong/plugins/alpha"));
        let (k, m) = err_kind(locate(t.path(), Some("beta"), None));
        assert_eq!(k, Kind::Usage);
        assert!(m.contains("named alpha"), "{m}");

        plugin_at(t.path(), "kong/plugins/beta");
        let (k, m) = err_kind(locate(t.path(), None, None));
        assert_eq!(k, Kind::Usage);
        assert!(m.contains("alpha, beta") && m.contains("--name"), "{m}");
        assert_eq!(locate(t.path(), Some("beta"), None).unwrap().name, "beta");
        // A helper dir without handler.lua does not count.
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "kong/plugins/alpha");
        write(t.path(), "kong/plugins/common/util.lua", "return {}\n");
        assert_eq!(locate(t.path(), None, None).unwrap().name, "alpha");
    }

    #[test]
    fn layout_luarocks_template() {
        // The Kong plugin template: rockspec at the root with variables.
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "kong/plugins/myplugin");
        write(
            t.path(),
            "kong-plugin-myplugin-0.3.1-1.rockspec",
            "local plugin_name = \"myplugin\"\nlocal package_name = \"kong-plugin-\" .. plugin_name\nlocal package_version = \"0.3.1\"\nlocal rockspec_revision = \"1\"\npackage = package_name\nversion = package_version .. \"-\" .. rockspec_revision\n",
        );
        let s = locate(t.path(), None, None).unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str()), ("myplugin", "0.3.1"));

        // Nested: DIR/<x>/<x>.rockspec + DIR/<x>/kong/plugins/<name>/.
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "kong-plugin-foo/kong/plugins/foo");
        write(
            t.path(),
            "kong-plugin-foo/kong-plugin-foo-2.1.0-3.rockspec",
            "package = \"kong-plugin-foo\"\nversion = \"2.1.0-3\"\n",
        );
        let s = locate(t.path(), None, None).unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str()), ("foo", "2.1.0"));
        assert_eq!(s.dir, t.path().join("kong-plugin-foo/kong/plugins/foo"));
    }

    #[test]
    fn version_from_handler_forms_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("p");
        plugin_at(&dir, "");
        write(
            &dir,
            "handler.lua",
            "local H = {}\n-- VERSION = \"9.9.9\"\nH.PRIORITY = 10\nH.VERSION = \"1.0.0-beta.1\"\nreturn H\n",
        );
        assert_eq!(locate(&dir, None, None).unwrap().version, "1.0.0-beta.1");
        write(
            &dir,
            "handler.lua",
            "local meta = require \"kong.meta\"\nreturn { VERSION = meta.version }\n",
        );
        let (k, m) = err_kind(locate(&dir, None, None));
        assert_eq!(k, Kind::Usage);
        assert!(m.contains("--version") && m.contains("rockspec"), "{m}");
        let (k, _) = err_kind(locate(&dir, None, Some("../1")));
        assert_eq!(k, Kind::Usage);
    }

    #[test]
    fn validate_refusals() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("p");
        plugin_at(&dir, "");
        validate_plugin_dir(&dir).unwrap();

        fs::remove_file(dir.join("migrations/init.lua")).unwrap();
        let (k, m) = err_kind(validate_plugin_dir(&dir));
        assert!(
            k == Kind::Unsafe && m.contains("migrations/init.lua"),
            "{m}"
        );
        write(&dir, "migrations/init.lua", "return {}\n");

        fs::remove_file(dir.join("schema.lua")).unwrap();
        let (k, m) = err_kind(validate_plugin_dir(&dir));
        assert!(
            k == Kind::Unsafe && m.contains("no configuration schema found"),
            "{m}"
        );
        write(&dir, "schema.lua", SCHEMA);

        fs::rename(dir.join("handler.lua"), dir.join("h.lua")).unwrap();
        let (k, m) = err_kind(validate_plugin_dir(&dir));
        assert!(
            k == Kind::Unsafe && m.contains("plugin is enabled but not installed"),
            "{m}"
        );
        fs::rename(dir.join("h.lua"), dir.join("handler.lua")).unwrap();

        write(t.path(), "outside.lua", "secret");
        std::os::unix::fs::symlink(t.path().join("outside.lua"), dir.join("x.lua")).unwrap();
        let (k, m) = err_kind(validate_plugin_dir(&dir));
        assert!(
            k == Kind::Unsafe && m.contains("outside the plugin directory"),
            "{m}"
        );
        fs::remove_file(dir.join("x.lua")).unwrap();

        std::os::unix::fs::symlink("..", dir.join("up")).unwrap();
        assert_eq!(err_kind(validate_plugin_dir(&dir)).0, Kind::Unsafe);
        fs::remove_file(dir.join("up")).unwrap();

        let fifo = std::ffi::CString::new(dir.join("pipe").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let (k, m) = err_kind(validate_plugin_dir(&dir));
        assert!(k == Kind::Unsafe && m.contains("special file"), "{m}");
    }

    /// (path, mode, mtime, uid, gid, uname) of every entry, and the gzip header.
    type Listing = Vec<(String, u32, u64, u64, u64, Vec<u8>)>;

    fn listing(archive: &Path) -> (Listing, Vec<u8>) {
        let bytes = fs::read(archive).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let l = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.username_bytes().unwrap_or_default().to_vec(),
                )
            })
            .collect();
        (l, bytes[..10].to_vec())
    }

    /// `files` of `from` copied to `to` in reverse order, with other modes and mtimes.
    fn copy_scrambled(from: &Path, to: &Path, files: &[FileEntry]) {
        fs::create_dir(to).unwrap();
        for f in files.iter().rev() {
            let body = fs::read(from.join(&f.path)).unwrap();
            let p = to.join(&f.path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, body).unwrap();
            let mode = if f.mode == 0o755 { 0o700 } else { 0o600 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345);
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        fs::set_permissions(to.join("data"), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn pack_is_reproducible() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        plugin_at(&a, "");
        write(&a, "bin/tool.sh", "#!/bin/sh\n");
        fs::set_permissions(a.join("bin/tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        // Over 100 bytes: stored with a GNU long-name entry.
        write(&a, &format!("data/{}.lua", "long".repeat(30)), "return 1\n");
        // A symlink to a file inside is stored as that file's content.
        std::os::unix::fs::symlink("schema.lua", a.join("schema_alias.lua")).unwrap();
        let src = PluginSource {
            name: "repro".into(),
            version: "1.0.0".into(),
            dir: a.clone(),
            mapped: None,
        };
        let p1 = pack(&src, &t.path().join("one.tar.gz")).unwrap();
        let p2 = pack(&src, &t.path().join("two.tar.gz")).unwrap();
        assert_eq!(p1.digest, p2.digest);
        assert_eq!(fs::read(&p1.path).unwrap(), fs::read(&p2.path).unwrap());
        assert_eq!(p1.size, fs::metadata(&p1.path).unwrap().len());
        assert_eq!(p1.digest, crate::digest::sha256_file(&p1.path).unwrap().0);

        // Same content, other modes, mtimes and creation order.
        let b = t.path().join("b");
        copy_scrambled(&a, &b, &p1.files);
        let p3 = pack(
            &PluginSource {
                dir: b,
                ..src.clone()
            },
            &t.path().join("three.tar.gz"),
        )
        .unwrap();
        assert_eq!(p1.digest, p3.digest);
        assert_eq!(p1.files, p3.files);

        let (entries, gz) = listing(&p1.path);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime");
        assert_eq!(gz[9], GZIP_OS_UNIX);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert_eq!(
            &paths[..3],
            ["kong/", "kong/plugins/", "kong/plugins/repro/"]
        );
        assert!(paths.contains(&"kong/plugins/repro/migrations/"));
        assert!(paths.contains(&"kong/plugins/repro/migrations/init.lua"));
        for (p, mode, mtime, uid, gid, uname) in &entries {
            let want = if p.ends_with('/') || p.ends_with(".sh") {
                0o755
            } else {
                0o644
            };
            assert_eq!((*mode, *mtime, *uid, *gid), (want, 0, 0, 0), "{p}");
            assert!(uname.is_empty());
        }
        let alias = p1
            .files
            .iter()
            .find(|f| f.path == "schema_alias.lua")
            .unwrap();
        assert_eq!(alias.sha256, crate::digest::sha256(SCHEMA.as_bytes()));
        assert_eq!(default_archive_name("repro", "1.0.0"), "repro-1.0.0.tar.gz");
    }

    #[test]
    fn pack_refusals_leave_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("src");
        plugin_at(&dir, "");
        let out_dir = t.path().join("out");
        fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("x.tar.gz");
        let src = PluginSource {
            name: "Bad.Name".into(),
            version: "1".into(),
            dir: dir.clone(),
            mapped: None,
        };
        assert_eq!(err_kind(pack(&src, &out)).0, Kind::Usage);
        let src = PluginSource {
            name: "good".into(),
            ..src
        };
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.lua")).unwrap();
        assert_eq!(err_kind(pack(&src, &out)).0, Kind::Unsafe);
        fs::remove_file(dir.join("passwd.lua")).unwrap();
        fs::remove_file(dir.join("schema.lua")).unwrap();
        assert_eq!(err_kind(pack(&src, &out)).0, Kind::Unsafe);
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
    }
}
