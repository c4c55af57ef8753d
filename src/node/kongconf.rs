//! Reading and editing kong.conf, as Kong's conf_loader reads it.
//!
//! The file is kept as raw lines (terminators included) so an edit changes only the
//! one line it means to and the rest stays byte-identical.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Kong's default `lua_package_path`.
pub const DEFAULT_LUA_PACKAGE_PATH: &str = "./?.lua;./?/init.lua;";

/// Directories of the default Lua path of Kong's OpenResty (what `;;` expands to), in
/// search order. Kong's nginx template always appends `;;` to `lua_package_path`.
pub const DEFAULT_LUA_DIRS: &[&str] = &[
    "/usr/local/openresty/site/lualib",
    "/usr/local/openresty/lualib",
    "/usr/local/share/lua/5.1",
    "/usr/local/openresty/luajit/share/lua/5.1",
];

#[derive(Debug, Clone, Default)]
pub struct KongConf {
    /// Where `save` writes; `None` for a conf built in memory.
    path: Option<PathBuf>,
    /// Raw lines, each with its terminator.
    lines: Vec<String>,
    exists: bool,
}

/// One active `key = value` line, with the byte range of its value.
struct Assignment {
    key: String,
    value: std::ops::Range<usize>,
}

fn assignment(line: &str) -> Option<Assignment> {
    let body = line.trim_end_matches(['\n', '\r']);
    let trimmed = body.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let eq = body.find('=')?;
    let key = body[..eq].trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let rest = &body[eq + 1..];
    let start = eq + 1 + (rest.len() - rest.trim_start().len());
    let end = start + comment_start(&body[start..]);
    let end = start + body[start..end].trim_end().len();
    Some(Assignment {
        key: key.to_ascii_lowercase(),
        value: start..end,
    })
}

/// Offset of the first `#` not escaped as `\#` (the length when there is none).
fn comment_start(s: &str) -> usize {
    let b = s.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b'#' && (i == 0 || b[i - 1] != b'\\'))
        .unwrap_or(b.len())
}

/// A value as Kong sees it: trailing comment removed, `\#` unescaped, trimmed.
fn clean(v: &str) -> String {
    v[..comment_start(v)].replace("\\#", "#").trim().to_string()
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn line_ending(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

impl KongConf {
    /// Read `path`; a missing file gives an empty conf that `save` will create.
    pub fn load(path: &Path) -> Result<KongConf> {
        let (text, exists) = match std::fs::read_to_string(path) {
            Ok(t) => (t, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(KongConf {
            path: Some(path.to_path_buf()),
            exists,
            ..KongConf::parse(&text)
        })
    }

    /// A conf from text, not tied to a file.
    pub fn parse(text: &str) -> KongConf {
        KongConf {
            path: None,
            lines: text.split_inclusive('\n').map(String::from).collect(),
            exists: true,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the file existed when loaded.
    pub fn exists(&self) -> bool {
        self.exists
    }

    pub fn text(&self) -> String {
        self.lines.concat()
    }

    /// Index and parsed form of the last active assignment of `key`.
    fn last(&self, key: &str) -> Option<(usize, Assignment)> {
        self.lines
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, l)| assignment(l).filter(|a| a.key == key).map(|a| (i, a)))
    }

    /// Refuse to edit `keys` when the effective line of one ends in `\\`: Kong joins it
    /// with the next line (Penlight's config reader), and an edit of the first physical
    /// line would split the value Kong reads.
    pub fn check_editable(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            let Some((i, a)) = self.last(key) else {
                continue;
            };
            let line = &self.lines[i];
            let body = line.trim_end_matches(['\n', '\r']);
            if body[..a.value.end].trim_end().ends_with('\\') || body.trim_end().ends_with('\\') {
                crate::bail_kind!(
                    crate::error::Kind::Usage,
                    "{}: `{key} =` continues on the next line (it ends in a backslash); kplug \
                     edits only single-line settings, so nothing was changed: put it on one line, \
                     or edit it by hand",
                    self.path
                        .as_deref()
                        .map_or("kong.conf".into(), |p| p.display().to_string())
                );
            }
        }
        Ok(())
    }

    /// The file's value of `key` (last assignment wins), comment stripped and trimmed.
    pub fn get(&self, key: &str) -> Option<String> {
        let (i, a) = self.last(key)?;
        Some(clean(&self.lines[i][a.value]))
    }

    /// `KONG_<KEY>` from `env` if set, else the file's value.
    pub fn effective(&self, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        match env(&env_name(key)) {
            Some(v) => Some(clean(&v)),
            None => self.get(key),
        }
    }

    /// The effective `plugins` list (default `bundled`).
    pub fn plugins(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        match self.effective("plugins", env) {
            Some(v) => split_list(&v),
            None => vec!["bundled".to_string()],
        }
    }

    /// The effective `database` (default `postgres`; `off` means DB-less).
    pub fn database(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        self.effective("database", env)
            .unwrap_or_else(|| "postgres".to_string())
    }

    /// Add `name` to the `plugins` line of the file. Returns whether the text changed.
    ///
    /// Edits the effective (last) `plugins` line in place; with only commented-out ones
    /// (stock kong.conf), adds `plugins = bundled,<name>` after the last of them and its
    /// indented continuation comments; else
    /// appends that line. A list starting with `off` (Kong then loads nothing) becomes
    /// `plugins = <name>`: only the plugin asked for is turned on.
    pub fn enable(&mut self, name: &str) -> bool {
        if let Some((i, a)) = self.last("plugins") {
            let line = &self.lines[i];
            let raw = &line[a.value.clone()];
            let list = split_list(&clean(raw));
            if list.iter().any(|p| p == name) {
                return false;
            }
            let new = if list.first().is_none_or(|p| p == "off") {
                name.to_string()
            } else {
                format!("{raw},{name}")
            };
            self.lines[i] = format!("{}{new}{}", &line[..a.value.start], &line[a.value.end..]);
            return true;
        }
        let commented = self.lines.iter().rposition(|l| {
            l.trim_start()
                .strip_prefix('#')
                .and_then(|r| r.trim_start().strip_prefix("plugins"))
                .is_some_and(|r| r.trim_start().starts_with('='))
        });
        // After the commented-out setting and the indented comment lines continuing it.
        let at = commented.map_or(self.lines.len(), |i| {
            i + 1
                + self.lines[i + 1..]
                    .iter()
                    .take_while(|l| l.starts_with([' ', '\t']) && l.trim_start().starts_with('#'))
                    .count()
        });
        let nl = match at.checked_sub(1).map(|i| &mut self.lines[i]) {
            Some(prev) => {
                if !prev.ends_with('\n') {
                    prev.push('\n');
                }
                line_ending(prev)
            }
            None => "\n",
        };
        self.lines
            .insert(at, format!("plugins = bundled,{name}{nl}"));
        true
    }

    /// Remove `name` from the effective `plugins` line. Returns whether the text changed.
    /// Removing the last entry leaves `off` (nothing enabled, as before minus `name`).
    pub fn disable(&mut self, name: &str) -> bool {
        let Some((i, a)) = self.last("plugins") else {
            return false;
        };
        let line = &self.lines[i];
        let raw = &line[a.value.clone()];
        let items: Vec<&str> = raw.split(',').collect();
        if !items.iter().any(|p| clean(p) == name) {
            return false;
        }
        let kept: Vec<&str> = items.into_iter().filter(|p| clean(p) != name).collect();
        let mut new = kept.join(",").trim().to_string();
        if split_list(&new).is_empty() {
            new = "off".to_string();
        }
        self.lines[i] = format!("{}{new}{}", &line[..a.value.start], &line[a.value.end..]);
        true
    }

    /// Set `key = value`: the last active assignment is edited in place (its comment
    /// kept), else a line is appended. Returns whether the text changed.
    pub fn set(&mut self, key: &str, value: &str) -> bool {
        if let Some((i, a)) = self.last(key) {
            let line = &self.lines[i];
            if &line[a.value.clone()] == value {
                return false;
            }
            self.lines[i] = format!("{}{value}{}", &line[..a.value.start], &line[a.value.end..]);
            return true;
        }
        self.append(&format!("{key} = {value}"));
        true
    }

    fn append(&mut self, line: &str) {
        let nl = match self.lines.last_mut() {
            Some(prev) => {
                if !prev.ends_with('\n') {
                    prev.push('\n');
                }
                line_ending(prev)
            }
            None => "\n",
        };
        self.lines.push(format!("{line}{nl}"));
    }

    /// Add `item` to the comma-separated list `key` (created if absent).
    pub fn list_add(&mut self, key: &str, item: &str) -> bool {
        match self.last(key) {
            Some((i, a)) => {
                let line = &self.lines[i];
                let raw = &line[a.value.clone()];
                let list = split_list(&clean(raw));
                if list.iter().any(|p| p == item) {
                    return false;
                }
                let new = if list.is_empty() {
                    item.to_string()
                } else {
                    format!("{raw},{item}")
                };
                self.lines[i] = format!("{}{new}{}", &line[..a.value.start], &line[a.value.end..]);
                true
            }
            None => {
                self.append(&format!("{key} = {item}"));
                true
            }
        }
    }

    /// Remove `item` from the list `key`; an emptied list loses its line.
    pub fn list_remove(&mut self, key: &str, item: &str) -> bool {
        let Some((i, a)) = self.last(key) else {
            return false;
        };
        let line = &self.lines[i];
        let raw = &line[a.value.clone()];
        let items: Vec<&str> = raw.split(',').collect();
        if !items.iter().any(|p| clean(p) == item) {
            return false;
        }
        let kept: Vec<&str> = items.into_iter().filter(|p| clean(p) != item).collect();
        let new = kept.join(",").trim().to_string();
        if split_list(&new).is_empty() {
            self.lines.remove(i);
        } else {
            self.lines[i] = format!("{}{new}{}", &line[..a.value.start], &line[a.value.end..]);
        }
        true
    }

    /// Remove every active assignment of `key`. Returns whether the text changed.
    pub fn remove_key(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| assignment(l).is_none_or(|a| a.key != key));
        self.lines.len() != before
    }

    /// Active keys starting with `prefix`, in file order, deduplicated.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.lines.iter().filter_map(|l| assignment(l)) {
            if a.key.starts_with(prefix) && !out.contains(&a.key) {
                out.push(a.key);
            }
        }
        out
    }

    /// The effective list `key` (`KONG_<KEY>` wins), empty when unset.
    pub fn list(&self, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        self.effective(key, env)
            .map(|v| split_list(&v))
            .unwrap_or_default()
    }

    /// Write the file atomically, keeping its mode and owner (Kong often runs as another
    /// user that must still read it). A symlinked kong.conf is written through the link.
    pub fn save(&self) -> Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = self
            .path
            .as_deref()
            .context("this kong.conf has no file path")?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let old = std::fs::metadata(&path).ok();
        crate::tree::write_atomic(&path, self.text().as_bytes())?;
        if let Some(m) = old {
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(m.permissions().mode()),
            )
            .with_context(|| format!("setting the mode of {}", path.display()))?;
            let new = std::fs::metadata(&path)?;
            if (new.uid(), new.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::chown(&path, Some(m.uid()), Some(m.gid()))
                    .with_context(|| format!("restoring the owner of {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Absolute directories the effective `lua_package_path` searches, in order, deduplicated.
    ///
    /// `/x/y/?.lua` gives `/x/y`, `/x/?/init.lua` gives `/x`; `;;` expands to
    /// [`DEFAULT_LUA_DIRS`], which Kong's nginx template always appends. Relative
    /// entries (`./?.lua`) depend on nginx's working directory and are skipped.
    pub fn package_path_dirs(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
        let path = self
            .effective("lua_package_path", env)
            .unwrap_or_else(|| DEFAULT_LUA_PACKAGE_PATH.to_string());
        let mut out: Vec<PathBuf> = Vec::new();
        let mut push = |d: PathBuf| {
            if !out.contains(&d) {
                out.push(d);
            }
        };
        for (n, part) in format!("{path};;").split(";;").enumerate() {
            if n > 0 {
                DEFAULT_LUA_DIRS.iter().for_each(|d| push(PathBuf::from(d)));
            }
            for entry in part.split(';').map(str::trim) {
                let Some(q) = entry.find('?') else { continue };
                let dir = entry[..q].trim_end_matches('/');
                if entry.starts_with('/') {
                    push(PathBuf::from(if dir.is_empty() { "/" } else { dir }));
                }
            }
        }
        out
    }
}

/// Where Kong looks for its configuration when `-c` is not given.
pub const DEFAULT_PATHS: &[&str] = &["/etc/kong/kong.conf", "/etc/kong.conf"];

/// The kong.conf to read: `explicit` (`--kong-conf`), which must exist (an error of kind
/// `Usage` naming it otherwise, never a silent fallback), else the first of `defaults`
/// that exists. With none found, an empty conf (Kong's defaults plus `KONG_*`) and the
/// paths looked at, for the caller to say so.
pub fn locate(
    explicit: Option<&Path>,
    defaults: &[&str],
) -> Result<(KongConf, Option<Vec<PathBuf>>)> {
    if let Some(p) = explicit {
        if !p.is_file() {
            crate::bail_kind!(
                crate::error::Kind::Usage,
                "{}: no such Kong configuration file (given with --kong-conf)",
                p.display()
            );
        }
        return Ok((KongConf::load(p)?, None));
    }
    for d in defaults {
        if Path::new(d).is_file() {
            return Ok((KongConf::load(Path::new(d))?, None));
        }
    }
    let looked: Vec<PathBuf> = defaults.iter().map(PathBuf::from).collect();
    Ok((KongConf::parse(""), Some(looked)))
}

/// `KONG_<KEY>`: the environment variable that overrides kong.conf property `key`.
pub fn env_name(key: &str) -> String {
    format!("KONG_{}", key.to_ascii_uppercase())
}

/// A shell line enabling `name` on a node configured by environment, given the
/// current `KONG_PLUGINS` value: `export KONG_PLUGINS=bundled,my-plugin`.
pub fn kong_plugins_env_line(current: Option<&str>, name: &str) -> String {
    let mut list = split_list(&clean(current.unwrap_or("bundled")));
    if list.first().is_some_and(|p| p == "off") {
        list.clear();
    }
    if !list.iter().any(|p| p == name) {
        list.push(name.to_string());
    }
    format!("export KONG_PLUGINS={}", sh_word(&list.join(",")))
}

/// `s` as one `/bin/sh` word: as it is when every byte is safe unquoted, else in single
/// quotes. Kong runs start and query commands through the shell, and export lines are
/// pasted into one.
pub fn sh_word(s: &str) -> String {
    match s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@".contains(&b))
    {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK: &str = "\
# -----------------------
# Kong configuration file
# -----------------------
#
# The commented-out settings shown in this file represent the default values.
#
# This file is read when `kong start` or `kong prepare` are used. Kong
# generates the Nginx configuration with the settings specified in this file.

#------------------------------------------------------------------------------
# GENERAL
#------------------------------------------------------------------------------

#prefix = /usr/local/kong/       # Working directory. Equivalent to Nginx's
                                 # prefix path, containing temporary files
                                 # and logs.

#log_level = notice              # Log level of the Nginx server. Logs are
                                 # found at `<prefix>/logs/error.log`.

#plugins = bundled               # Comma-separated list of plugins this node
                                 # should load. By default, only plugins
                                 # bundled in official distributions are
                                 # loaded via the `bundled` keyword.

#lua_package_path = ./?.lua;./?/init.lua;  # Sets the Lua module search path

database = off                   # Determines the database (or no database)
#pg_host = 127.0.0.1             # Host of the Postgres server.
declarative_config = /etc/kong/kong.yml
admin_listen = 127.0.0.1:8001 reuseport backlog=16384, 127.0.0.1:8444 http2 ssl
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// Lines of `after` not found in `before`.
    fn changed(before: &str, after: &str) -> Vec<String> {
        let b: Vec<&str> = before.lines().collect();
        after
            .lines()
            .filter(|l| !b.contains(l))
            .map(String::from)
            .collect()
    }

    #[test]
    fn values_and_comments() {
        let c = KongConf::parse("a = 1 # one\nb=x\\#y#z\n#c = 3\na = 2\n  d   =   spaced out  \n");
        assert_eq!(c.get("a").as_deref(), Some("2"));
        assert_eq!(c.get("b").as_deref(), Some("x#y"));
        assert_eq!(c.get("c"), None);
        assert_eq!(c.get("d").as_deref(), Some("spaced out"));
        let env = |k: &str| (k == "KONG_A").then(|| "from-env".to_string());
        assert_eq!(c.effective("a", &env).as_deref(), Some("from-env"));
        assert_eq!(c.effective("b", &env).as_deref(), Some("x#y"));
    }

    #[test]
    fn enable_disable_stock_conf() {
        let mut c = KongConf::parse(STOCK);
        assert_eq!(c.plugins(&no_env), ["bundled"]);
        assert_eq!(c.database(&no_env), "off");
        assert!(c.enable("my-plugin"));
        let once = c.text();
        assert_eq!(changed(STOCK, &once), ["plugins = bundled,my-plugin"]);
        // Inserted after the commented-out setting and its comment block, the rest kept.
        let lines: Vec<&str> = once.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.contains("via the `bundled` keyword"))
            .unwrap();
        assert_eq!(lines[i + 1], "plugins = bundled,my-plugin");
        let mut without = lines.clone();
        without.remove(i + 1);
        assert_eq!(without.join("\n") + "\n", STOCK);
        assert_eq!(c.plugins(&no_env), ["bundled", "my-plugin"]);

        assert!(!c.enable("my-plugin"), "idempotent");
        assert_eq!(c.text(), once);
        assert!(c.enable("other"));
        assert_eq!(c.get("plugins").as_deref(), Some("bundled,my-plugin,other"));
        assert!(c.disable("my-plugin"));
        assert!(!c.disable("my-plugin"));
        assert!(c.disable("other"));
        assert_eq!(c.get("plugins").as_deref(), Some("bundled"));
        assert_eq!(changed(STOCK, &c.text()), ["plugins = bundled"]);

        // The environment overrides the file.
        let env = |k: &str| (k == "KONG_PLUGINS").then(|| "bundled, env-one ".to_string());
        assert_eq!(c.plugins(&env), ["bundled", "env-one"]);
    }

    #[test]
    fn enable_edits_existing_line_in_place() {
        let text = STOCK.replace(
            "database = off",
            "plugins = bundled, foo   # keep\ndatabase = off",
        );
        let mut c = KongConf::parse(&text);
        assert!(c.enable("my-plugin"));
        assert_eq!(
            changed(&text, &c.text()),
            ["plugins = bundled, foo,my-plugin   # keep"]
        );
        assert_eq!(c.text().lines().count(), text.lines().count());
        assert!(!c.enable("foo"));
        assert!(c.disable("foo"));
        assert_eq!(
            changed(&text, &c.text()),
            ["plugins = bundled,my-plugin   # keep"]
        );
        assert!(c.disable("my-plugin"));
        assert_eq!(c.text(), text.replace("bundled, foo", "bundled"));

        // The last assignment is the effective one and the one edited.
        let mut c = KongConf::parse("plugins = a\nplugins = b\n");
        c.enable("x");
        assert_eq!(c.text(), "plugins = a\nplugins = b,x\n");
        let mut c = KongConf::parse("plugins = off, y\n");
        c.enable("x");
        assert_eq!(c.text(), "plugins = x\n");
        let mut c = KongConf::parse("plugins = off\nlog_level = debug");
        c.enable("x");
        assert_eq!(c.text(), "plugins = x\nlog_level = debug");
        assert!(c.disable("x"));
        assert_eq!(c.get("plugins").as_deref(), Some("off"));
        let mut c = KongConf::parse("log_level = debug");
        c.enable("x");
        assert_eq!(c.text(), "log_level = debug\nplugins = bundled,x\n");
    }

    #[test]
    fn load_save_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kong.conf");
        let mut c = KongConf::load(&p).unwrap();
        assert!(!c.exists());
        assert!(c.enable("x"));
        c.save().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "plugins = bundled,x\n"
        );
        std::fs::write(&p, STOCK).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut c = KongConf::load(&p).unwrap();
        assert!(c.exists());
        c.enable("x");
        c.save().unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            KongConf::load(&p).unwrap().plugins(&no_env),
            ["bundled", "x"]
        );

        // Written through a symlink, which stays a symlink.
        let link = d.path().join("link.conf");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let mut c = KongConf::load(&link).unwrap();
        c.enable("y");
        c.save().unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            KongConf::load(&p).unwrap().plugins(&no_env),
            ["bundled", "x", "y"]
        );
    }

    #[test]
    fn env_line() {
        assert_eq!(
            kong_plugins_env_line(None, "p"),
            "export KONG_PLUGINS=bundled,p"
        );
        assert_eq!(
            kong_plugins_env_line(Some("bundled, a"), "p"),
            "export KONG_PLUGINS=bundled,a,p"
        );
        assert_eq!(
            kong_plugins_env_line(Some("bundled,p"), "p"),
            "export KONG_PLUGINS=bundled,p"
        );
        assert_eq!(
            kong_plugins_env_line(Some("off"), "p"),
            "export KONG_PLUGINS=p"
        );
        assert_eq!(
            kong_plugins_env_line(Some("a b"), "p"),
            "export KONG_PLUGINS='a b,p'"
        );
    }

    #[test]
    fn package_path() {
        let defaults: Vec<PathBuf> = DEFAULT_LUA_DIRS.iter().map(PathBuf::from).collect();
        let c = KongConf::parse("");
        assert_eq!(c.package_path_dirs(&no_env), defaults);
        let c = KongConf::parse(
            "lua_package_path = /opt/a/?.lua;/opt/a/?/init.lua;/opt/b/?/init.lua;;./?.lua;/opt/c/?.lua # c\n",
        );
        let mut want: Vec<PathBuf> = vec!["/opt/a".into(), "/opt/b".into()];
        want.extend(defaults.iter().cloned());
        want.push("/opt/c".into());
        assert_eq!(c.package_path_dirs(&no_env), want);
        let env = |k: &str| (k == "KONG_LUA_PACKAGE_PATH").then(|| "/env/?.lua".to_string());
        assert_eq!(c.package_path_dirs(&env)[0], PathBuf::from("/env"));
        assert_eq!(c.package_path_dirs(&env)[1..], defaults[..]);
    }

    /// Issue 11.4: a --kong-conf that does not exist is a usage error naming it; with no
    /// kong.conf anywhere, doctor's finding says which paths it looked for.
    #[test]
    fn locate_says_what_it_looked_for() {
        let d = tempfile::tempdir().unwrap();
        let (gone, other) = (d.path().join("gone.conf"), d.path().join("other.conf"));
        let e = locate(Some(&gone), &[]).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), crate::error::Kind::Usage);
        assert!(format!("{e:#}").contains("gone.conf"), "{e:#}");

        let defaults = [gone.to_str().unwrap(), other.to_str().unwrap()];
        let (_, looked) = locate(None, &defaults).unwrap();
        let looked = looked.expect("nothing found");
        assert_eq!(looked, [gone.clone(), other.clone()]);
        let f = crate::node::doctor::no_conf_finding(&looked);
        for p in [&gone, &other] {
            assert!(
                f.message.contains(&p.display().to_string()),
                "{}",
                f.message
            );
        }
        assert!(f.message.contains("--kong-conf"), "{}", f.message);

        std::fs::write(&other, "plugins = bundled,hello\n").unwrap();
        let (conf, looked) = locate(None, &defaults).unwrap();
        assert!(looked.is_none());
        assert_eq!(conf.get("plugins").as_deref(), Some("bundled,hello"));
    }
}
