//! External plugins: plugin-server executables (go-pdk's embedded server, Python or
//! JavaScript `kong-pdk`) that Kong starts and queries, configured in kong.conf by
//! `pluginserver_names` and `pluginserver_<name>_{socket,start_cmd,query_cmd}`.
//!
//! Artifact shape: a tar(.gz) with [`MANIFEST`] at its root (name, runtime, entrypoint,
//! query arguments, socket) and the server's files. One file (a static Go binary, a
//! single-file script) installs as `<bin_dir>/<name>`; several install as
//! `<lib_dir>/<name>/` with `<bin_dir>/<name>` a symlink to the entrypoint. Both swaps
//! are a rename. The install is recorded in the ordinary receipt plus a sidecar
//! `<name>.server.json` that `list`, `uninstall` and `rollback` read.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::bail_kind;
use crate::error::{fail, Kind};
use crate::node::kongconf::KongConf;
use crate::node::names::{check_plugin_name, escape};
use crate::node::state::{self, Outcome, Prefix, Receipt};
use crate::node::unpack::NameHints;
use crate::tree::FileEntry;

/// The file at an artifact's root that makes it a plugin server.
pub const MANIFEST: &str = "kplug-server.json";
/// Kong's `DEFAULT_PLUGINSERVER_PATH`.
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
pub const DEFAULT_LIB_DIR: &str = "/usr/local/lib/kplug/servers";
/// Kong's default `prefix`.
pub const DEFAULT_KONG_PREFIX: &str = "/usr/local/kong";
/// Most bytes a query command may print.
pub const MAX_DUMP_BYTES: u64 = 4 << 20;
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// go-pdk: `-dump`, socket `<prefix>/<name>.socket`.
    Go,
    /// kong-pdk (Python): `--dump`, socket `<prefix>/<name>.sock`.
    Python,
    /// kong-pdk (JavaScript): `--dump`, socket `<prefix>/<name>.sock`.
    Js,
}

impl Runtime {
    pub fn default_query_args(self) -> Vec<String> {
        vec![match self {
            Runtime::Go => "-dump".into(),
            Runtime::Python | Runtime::Js => "--dump".into(),
        }]
    }
    fn socket_name(self, name: &str) -> String {
        match self {
            Runtime::Go => format!("{name}.socket"),
            Runtime::Python | Runtime::Js => format!("{name}.sock"),
        }
    }
    fn prefix_flag(self) -> &'static str {
        match self {
            Runtime::Go => "-kong-prefix",
            Runtime::Python | Runtime::Js => "--kong-prefix",
        }
    }
}

/// [`MANIFEST`]: what the server is and how Kong runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerManifest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub runtime: Runtime,
    /// The executable, relative to the artifact root.
    pub entrypoint: String,
    /// Arguments that make it print its plugin info (default by runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_args: Option<Vec<String>>,
    /// Socket file name under Kong's prefix (default by runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl ServerManifest {
    pub fn query_args(&self) -> Vec<String> {
        self.query_args
            .clone()
            .unwrap_or_else(|| self.runtime.default_query_args())
    }
}

/// A server unpacked and checked in staging, not yet installed.
#[derive(Debug, Clone)]
pub struct StagedServer {
    pub manifest: ServerManifest,
    /// `staging/<name>.server`, the artifact's files (with the manifest).
    pub dir: PathBuf,
    pub files: Vec<FileEntry>,
}

/// Where servers go on this node, and Kong's prefix (for sockets).
#[derive(Debug, Clone)]
pub struct ServerLayout {
    pub bin_dir: PathBuf,
    pub lib_dir: PathBuf,
    pub kong_prefix: PathBuf,
}

impl Default for ServerLayout {
    fn default() -> Self {
        ServerLayout {
            bin_dir: DEFAULT_BIN_DIR.into(),
            lib_dir: DEFAULT_LIB_DIR.into(),
            kong_prefix: DEFAULT_KONG_PREFIX.into(),
        }
    }
}

/// The sidecar receipt of an installed server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerReceipt {
    pub runtime: Runtime,
    /// `<bin_dir>/<name>`: a file, or a symlink to `tree`'s entrypoint.
    pub bin: PathBuf,
    pub tree: Option<PathBuf>,
    /// The file `bin` links to, relative to `tree` (receipts from before it was recorded
    /// have none: the link on disk says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    pub start_cmd: String,
    pub query_cmd: String,
    pub socket: String,
    /// Relative to `tree`, or the one file as its bin name.
    pub files: Vec<FileEntry>,
}

/// One entry of a query command's output, as Kong reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub priority: i64,
    pub version: String,
    pub phases: Vec<String>,
}

/// Read and check [`MANIFEST`] in the unpacked artifact `raw`, and move it to
/// `staging/<name>.server`.
pub fn stage(
    raw: &Path,
    all: Vec<FileEntry>,
    staging: &Path,
    hints: &NameHints,
) -> Result<StagedServer> {
    let text = crate::node::lua::read_source(&raw.join(MANIFEST))?;
    let m: ServerManifest = serde_json::from_str(&text).map_err(|e| {
        fail(
            Kind::Unsafe,
            format!("{MANIFEST}: not a valid plugin-server manifest ({e})"),
        )
    })?;
    check_manifest(&m)?;
    if let Some(f) = hints.flag.as_deref().filter(|f| *f != m.name) {
        bail_kind!(
            Kind::Usage,
            "the artifact holds plugin server {}, not {f}",
            m.name
        );
    }
    let entry = crate::node::gate::check_path(&m.entrypoint).map_err(|why| {
        fail(
            Kind::Unsafe,
            format!(
                "{MANIFEST}: entrypoint {:?}: {why}",
                escape(m.entrypoint.as_bytes())
            ),
        )
    })?;
    if !all.iter().any(|f| f.path == entry && f.mode & 0o111 != 0) {
        bail_kind!(
            Kind::Unsafe,
            "{MANIFEST}: entrypoint {entry} is not an executable file of the artifact"
        );
    }
    let dir = staging.join(format!("{}.server", m.name));
    fs::rename(raw, &dir)
        .with_context(|| format!("moving {} to {}", raw.display(), dir.display()))?;
    let files = all.into_iter().filter(|f| f.path != MANIFEST).collect();
    Ok(StagedServer {
        manifest: ServerManifest {
            entrypoint: entry,
            ..m
        },
        dir,
        files,
    })
}

/// Bytes allowed in a query argument and a socket name: they go into kong.conf lines and
/// `/bin/sh -c` command lines verbatim, so no whitespace, quotes, `#` or shell syntax.
fn plain_word(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
}

/// The manifest's name, query arguments and socket name, checked before any of them is
/// run, printed or written to kong.conf.
pub fn check_manifest(m: &ServerManifest) -> Result<()> {
    check_plugin_name(&m.name)?;
    if let Some(v) = m.version.as_deref() {
        if !crate::node::plugin::valid_version(v) {
            bail_kind!(
                Kind::Unsafe,
                "{MANIFEST}: version \"{}\" is not a version (letters, digits, ._+-)",
                escape(v.as_bytes())
            );
        }
    }
    let args = m.query_args.as_deref().unwrap_or_default();
    if args.len() > 16 || args.iter().any(|a| !plain_word(a, b"=:,+/@%")) {
        bail_kind!(
            Kind::Unsafe,
            "{MANIFEST}: queryArgs \"{}\": at most 16 arguments of letters, digits and ._-=:,+/@%",
            escape(args.join(" ").as_bytes())
        );
    }
    if let Some(s) = m.socket.as_deref() {
        if !plain_word(s, b"") || s.starts_with('.') {
            bail_kind!(
                Kind::Unsafe,
                "{MANIFEST}: socket \"{}\": a file name under Kong's prefix (letters, digits, ._-)",
                escape(s.as_bytes())
            );
        }
        let own = m.runtime.socket_name(&m.name);
        if m.runtime == Runtime::Go && s != own {
            bail_kind!(
                Kind::Usage,
                "{MANIFEST}: socket {s}: a go-pdk server always listens on <kong prefix>/{own} \
                 (go-pdk has no flag to change it); leave socket unset"
            );
        }
    }
    Ok(())
}

fn sidecar(prefix: &Prefix, name: &str) -> PathBuf {
    prefix.state_dir().join(format!("{name}.server.json"))
}

fn backup_dir(prefix: &Prefix, name: &str) -> PathBuf {
    backup_dir_for(prefix, name, "")
}

/// `backup/<name>.server<suffix>`: the kept version (no suffix), or a copy on its way
/// to becoming it (`.new` during an update, `.next` during a rollback).
fn backup_dir_for(prefix: &Prefix, name: &str, suffix: &str) -> PathBuf {
    prefix
        .state_dir()
        .join("backup")
        .join(format!("{name}.server{suffix}"))
}

/// The server receipt of `name` under `prefix`, if kplug installed it as a server.
pub fn read_server(prefix: &Prefix, name: &str) -> Result<Option<ServerReceipt>> {
    read_json(&sidecar(prefix, name))
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    match crate::tree::read_capped(p, crate::tree::MAX_RECORD_BYTES) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            fail(
                Kind::Integrity,
                format!("receipt {} is corrupt: {e}", p.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(v)?;
    json.push(b'\n');
    crate::tree::write_atomic(p, &json)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A path as one `/bin/sh` word: Kong runs `exec <start_cmd>` and `io.popen(<query_cmd>)`
/// through the shell, so a `--bin-dir` with a space must be quoted.
fn sh_word(p: &Path) -> String {
    crate::node::kongconf::sh_word(&p.display().to_string())
}

/// The commands Kong runs for this server: start, query, socket.
fn commands(m: &ServerManifest, bin: &Path, layout: &ServerLayout) -> (String, String, String) {
    let socket = layout.kong_prefix.join(
        m.socket
            .clone()
            .unwrap_or_else(|| m.runtime.socket_name(&m.name)),
    );
    let mut start = sh_word(bin);
    if layout.kong_prefix != Path::new(DEFAULT_KONG_PREFIX) {
        start = format!(
            "{start} {} {}",
            m.runtime.prefix_flag(),
            sh_word(&layout.kong_prefix)
        );
    }
    // kong-pdk listens on `<name>.sock` unless told (Python `--socket-name`, JS
    // `--sock-name`); go-pdk has no such flag (check_manifest refuses another socket).
    if let Some(s) = m.socket.as_deref() {
        let flag = match m.runtime {
            Runtime::Python => "--socket-name",
            Runtime::Js => "--sock-name",
            Runtime::Go => "",
        };
        if !flag.is_empty() && s != m.runtime.socket_name(&m.name) {
            start = format!("{start} {flag} {s}");
        }
    }
    let query = format!("{} {}", sh_word(bin), m.query_args().join(" "));
    (start, query, socket.display().to_string())
}

/// Install a staged server: files atomically into place, the query command run and its
/// output validated (the server must list its own name), receipts written. The caller
/// holds the prefix lock. On a failed query the previous version is put back.
pub fn install(
    prefix: &Prefix,
    staged: &StagedServer,
    layout: &ServerLayout,
    mut receipt: Receipt,
    timeout: Duration,
) -> Result<(Outcome, Vec<PluginInfo>)> {
    let m = &staged.manifest;
    let name = m.name.clone();
    receipt.name = name.clone();
    receipt.files = vec![];
    let mut server = planned(staged, layout);
    let previous = state::read_receipt(prefix, &name)?;
    let old_server = read_server(prefix, &name)?;
    if previous.is_some() && old_server.is_none() {
        bail_kind!(
            Kind::Usage,
            "plugin {name} is installed as a Lua plugin; uninstall it first"
        );
    }
    refuse_foreign(&server.bin, server.tree.as_deref(), old_server.as_ref())?;
    if let (Some(old), Some(prev)) = (&old_server, &previous) {
        if let Some(infos) = rerun(prefix, old, prev, &server, &receipt, timeout)? {
            return Ok((Outcome::Unchanged, infos));
        }
    }
    // The version being replaced is copied aside first and becomes the kept previous
    // version only once the new one answered its query: a failed update puts it back and
    // leaves the older kept version as it was.
    let previous_differs = old_server.as_ref().map(differences).unwrap_or_default();
    let aside = match &old_server {
        Some(old) => keep_aside(prefix, &name, old, previous.as_ref())?,
        None => None,
    };
    let placed = place(staged, &server.bin, server.tree.as_deref())
        .and_then(|files| Ok((files, query_listed(&server.query_cmd, &name, timeout)?)));
    let infos = match placed {
        Ok((files, infos)) => {
            server.files = files;
            infos
        }
        Err(e) => {
            undo(
                prefix,
                &name,
                &server,
                old_server.as_ref(),
                aside.as_deref(),
            );
            return Err(e);
        }
    };
    if let Some(old) = &old_server {
        remove_moved(old, &server.bin, server.tree.as_deref());
    }
    write_json(&sidecar(prefix, &name), &server)?;
    write_json(&prefix.state_dir().join(format!("{name}.json")), &receipt)?;
    // The same artifact moved or repaired is not a previous version: the kept one stays.
    let replaced = previous.filter(|p| p.digest != receipt.digest);
    if let Some(a) = aside {
        keep_or_drop(&a, &backup_dir(prefix, &name), replaced.is_some())?;
    }
    Ok((
        Outcome::Installed {
            previous_differs: match replaced {
                Some(_) => previous_differs,
                None => Vec::new(),
            },
            previous: replaced.map(|r| r.digest),
            adopted: None,
        },
        infos,
    ))
}

/// Where a staged server goes and how Kong will run it (its files still to be listed):
/// one file as `<bin-dir>/<name>`, several as a tree `<lib-dir>/<name>`.
fn planned(staged: &StagedServer, layout: &ServerLayout) -> ServerReceipt {
    let m = &staged.manifest;
    let bin = layout.bin_dir.join(&m.name);
    let tree = (staged.files.len() > 1).then(|| layout.lib_dir.join(&m.name));
    let (start_cmd, query_cmd, socket) = commands(m, &bin, layout);
    ServerReceipt {
        runtime: m.runtime,
        entrypoint: tree.as_ref().map(|_| m.entrypoint.clone()),
        bin,
        tree,
        start_cmd,
        query_cmd,
        socket,
        files: Vec::new(),
    }
}

/// The same artifact installed again, intact, where it is and run the same way (a
/// bootstrap run twice): its query's answer, with nothing changed (the kept previous
/// version must stay what it is); None when it needs installing.
fn rerun(
    prefix: &Prefix,
    old: &ServerReceipt,
    prev: &Receipt,
    new: &ServerReceipt,
    receipt: &Receipt,
    timeout: Duration,
) -> Result<Option<Vec<PluginInfo>>> {
    let same_place = (&old.bin, &old.tree) == (&new.bin, &new.tree);
    let same_cmds = (&old.start_cmd, &old.query_cmd, &old.socket)
        == (&new.start_cmd, &new.query_cmd, &new.socket);
    if prev.digest != receipt.digest || !same_place || !same_cmds || verify(old) != (vec![], vec![])
    {
        return Ok(None);
    }
    let infos = query_listed(&new.query_cmd, &receipt.name, timeout)?;
    state::record_verification(prefix, prev, receipt)?;
    Ok(Some(infos))
}

/// Run the query command and check the server lists `name`.
fn query_listed(cmd: &str, name: &str, timeout: Duration) -> Result<Vec<PluginInfo>> {
    query(cmd, timeout).and_then(|i| expect_listed(i, name, cmd))
}

/// Make the copy set aside the kept previous version (`keep`), or drop it.
fn keep_or_drop(aside: &Path, kept: &Path, keep: bool) -> Result<()> {
    if !keep {
        let _ = fs::remove_dir_all(aside);
    } else if kept.exists() {
        // One exchange: a crash leaves the old kept version or the new one.
        crate::tree::exchange(aside, kept)?;
        let _ = fs::remove_dir_all(aside);
    } else {
        fs::rename(aside, kept)?;
    }
    Ok(())
}

/// How an installed server differs from its receipt, one entry per path (a tree's files
/// not in the receipt too).
fn differences(s: &ServerReceipt) -> Vec<String> {
    match &s.tree {
        Some(t) => state::differences(t, &s.files),
        None => state::differences_of(crate::tree::parent_dir(&s.bin), &s.files),
    }
}

/// Copy the installed version beside the kept one (`<name>.server.new`), returning where.
/// A version with files missing cannot be kept whole: None, the kept one stays as it is.
/// Any other failure stops the update before anything changed.
fn keep_aside(
    prefix: &Prefix,
    name: &str,
    old: &ServerReceipt,
    receipt: Option<&Receipt>,
) -> Result<Option<PathBuf>> {
    let aside = backup_dir_for(prefix, name, ".new");
    match save_backup_to(&aside, old, receipt) {
        Ok(()) => Ok(Some(aside)),
        Err(_) if !verify(old).1.is_empty() => {
            let _ = fs::remove_dir_all(&aside);
            Ok(None)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&aside);
            Err(e).with_context(|| {
                format!(
                    "keeping a copy of the installed {name} in {} before replacing it; nothing was changed",
                    aside.display()
                )
            })
        }
    }
}

/// Put the files in place: one file as `bin`, or a tree at `tree` and `bin` a symlink.
fn place(staged: &StagedServer, bin: &Path, tree: Option<&Path>) -> Result<Vec<FileEntry>> {
    let bin_dir = crate::tree::parent_dir(bin);
    fs::create_dir_all(bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let Some(tree) = tree else {
        let f = &staged.files[0];
        let mut out = crate::tree::AtomicFile::create(bin, 0o755)?;
        let mut from = fs::File::open(staged.dir.join(&f.path))?;
        std::io::copy(&mut from, out.file())?;
        // Kong runs it whatever the umask: 0755, as a package would install it.
        out.file()
            .set_permissions(fs::Permissions::from_mode(0o755))?;
        out.commit()
            .with_context(|| format!("installing {}", bin.display()))?;
        let (sha256, size) = crate::digest::sha256_file(bin)?;
        let name = bin
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        return Ok(vec![FileEntry {
            path: name,
            sha256,
            size,
            mode: 0o755,
        }]);
    };
    let lib = crate::tree::parent_dir(tree);
    fs::create_dir_all(lib).with_context(|| format!("creating {}", lib.display()))?;
    let incoming = lib.join(format!(".{}.incoming", staged.manifest.name));
    let _ = fs::remove_dir_all(&incoming);
    fs::rename(&staged.dir, &incoming)
        .or_else(|_| copy_dir(&staged.dir, &incoming))
        .with_context(|| format!("moving the server into {}", lib.display()))?;
    let _ = fs::remove_file(incoming.join(MANIFEST));
    if tree.exists() {
        // One atomic exchange: a crash leaves the old tree or the new one, never neither.
        crate::tree::exchange(&incoming, tree)
            .with_context(|| format!("replacing {}", tree.display()))?;
    } else {
        fs::rename(&incoming, tree)?;
    }
    let _ = fs::remove_dir_all(&incoming);
    let link = bin_dir.join(format!(".{}.kplug-link", staged.manifest.name));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(tree.join(&staged.manifest.entrypoint), &link)?;
    fs::rename(&link, bin).with_context(|| format!("installing {}", bin.display()))?;
    crate::tree::hash_tree(tree)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            fs::copy(e.path(), &t)?;
        }
    }
    Ok(())
}

/// Copy an installed server and its receipts to `b` (files may sit on another file
/// system than the state dir, so copies, not renames).
fn save_backup_to(b: &Path, old: &ServerReceipt, receipt: Option<&Receipt>) -> Result<()> {
    let _ = fs::remove_dir_all(b);
    fs::create_dir_all(b)?;
    match &old.tree {
        Some(t) => copy_dir(t, &b.join("tree"))?,
        None => {
            fs::copy(&old.bin, b.join("bin"))?;
        }
    }
    write_json(&b.join("server.json"), old)?;
    if let Some(r) = receipt {
        write_json(&b.join("receipt.json"), r)?;
    }
    Ok(())
}

/// Refuse to replace a `bin` or `tree` that kplug did not install for this server (a
/// file of the operator's, or one left at a `--bin-dir`/`--lib-dir` other than the
/// installed version's).
fn refuse_foreign(bin: &Path, tree: Option<&Path>, old: Option<&ServerReceipt>) -> Result<()> {
    if tree == Some(bin) {
        bail_kind!(Kind::Usage, "--bin-dir and --lib-dir must differ");
    }
    let ours_bin = old.is_some_and(|o| o.bin == bin);
    let ours_tree = |t: &Path| old.is_some_and(|o| o.tree.as_deref() == Some(t));
    let foreign = [
        (Some(bin), ours_bin, "--bin-dir"),
        (tree, tree.is_some_and(ours_tree), "--lib-dir"),
    ];
    for (p, ours, flag) in foreign {
        if let Some(p) = p.filter(|p| !ours && fs::symlink_metadata(p).is_ok()) {
            bail_kind!(
                Kind::Usage,
                "{} exists and kplug did not install it; remove it or choose another {flag}",
                p.display()
            );
        }
    }
    Ok(())
}

/// After an update that moved the server (another `--bin-dir`/`--lib-dir`, one file
/// instead of a tree or back): the old version's files, if unchanged since installed.
fn remove_moved(old: &ServerReceipt, bin: &Path, tree: Option<&Path>) {
    let unchanged = verify(old).0.is_empty();
    if old.bin != bin {
        let into_tree = |t: &PathBuf| fs::read_link(&old.bin).is_ok_and(|l| l.starts_with(t));
        if old.tree.as_ref().is_some_and(into_tree) || (old.tree.is_none() && unchanged) {
            let _ = fs::remove_file(&old.bin);
        }
    }
    if let Some(t) = old.tree.as_deref().filter(|t| Some(*t) != tree) {
        if unchanged {
            let _ = state::remove_listed(t, &old.files);
        }
    }
}

/// After a failed update: the new files removed where the old version does not live, the
/// old version put back from where it was copied aside, and that copy removed.
fn undo(
    prefix: &Prefix,
    name: &str,
    new: &ServerReceipt,
    old: Option<&ServerReceipt>,
    aside: Option<&Path>,
) {
    if old.is_none_or(|o| o.bin != new.bin) {
        let _ = fs::remove_file(&new.bin);
    }
    if let Some(t) = new
        .tree
        .as_deref()
        .filter(|t| old.is_none_or(|o| o.tree.as_deref() != Some(*t)))
    {
        let _ = fs::remove_dir_all(t);
    }
    if let Some(a) = aside {
        let _ = restore_from(prefix, name, a);
        let _ = fs::remove_dir_all(a);
    }
}

/// Put the copy in `b` in place (files, sidecar, receipt).
fn restore_from(prefix: &Prefix, name: &str, b: &Path) -> Result<()> {
    let Some(old) = read_json::<ServerReceipt>(&b.join("server.json"))? else {
        bail_kind!(
            Kind::NotFound,
            "no previous version of plugin server {name} to roll back to"
        );
    };
    let staged = StagedServer {
        manifest: ServerManifest {
            name: name.to_string(),
            version: None,
            runtime: old.runtime,
            entrypoint: match (&old.tree, &old.entrypoint) {
                (Some(_), Some(e)) => e.clone(),
                (Some(t), None) => fs::read_link(&old.bin)
                    .ok()
                    .and_then(|l| l.strip_prefix(t).ok().map(|p| p.display().to_string()))
                    .unwrap_or_default(),
                (None, _) => "bin".into(),
            },
            query_args: None,
            socket: None,
        },
        dir: if old.tree.is_some() {
            b.join("tree")
        } else {
            b.to_path_buf()
        },
        files: if old.tree.is_some() {
            old.files.clone()
        } else {
            vec![FileEntry {
                path: "bin".into(),
                ..old.files[0].clone()
            }]
        },
    };
    if old.tree.is_some() {
        let copy = b.join(".restore");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(&b.join("tree"), &copy)?;
        place(
            &StagedServer {
                dir: copy,
                ..staged
            },
            &old.bin,
            old.tree.as_deref(),
        )?;
    } else {
        place(&staged, &old.bin, None)?;
    }
    write_json(&sidecar(prefix, name), &old)?;
    if let Some(r) = read_json::<Receipt>(&b.join("receipt.json"))? {
        write_json(&prefix.state_dir().join(format!("{name}.json")), &r)?;
    }
    Ok(())
}

/// `rollback` of a server: the backup goes in place and the current version becomes
/// the backup (a toggle). A backup that differs from its receipt is refused, naming each
/// difference, unless `force`. The caller holds the lock.
pub fn rollback(prefix: &Prefix, name: &str, force: bool) -> Result<()> {
    let b = backup_dir(prefix, name);
    let Some(old) = read_json::<ServerReceipt>(&b.join("server.json"))? else {
        bail_kind!(
            Kind::NotFound,
            "no previous version of plugin server {name} to roll back to in {}",
            prefix.state_dir().display()
        );
    };
    let differs = backup_differences(&b, &old);
    if !differs.is_empty() && !force {
        bail_kind!(
            Kind::Integrity,
            "the previous version of plugin server {name} kept in {} no longer matches what \
             kplug installed: {}. `kplug rollback --force {name}` puts it back as it is; or \
             install the version you want",
            b.display(),
            differs.join(", ")
        );
    }
    let cur = read_server(prefix, name)?;
    if let Some(cur) = &cur {
        if cur.bin != old.bin {
            bail_kind!(
                Kind::Usage,
                "the previous version of plugin server {name} was installed as {}, the current \
                 one is {}: a rollback would leave one of them behind. Install the version you \
                 want with `kplug install REF --bin-dir DIR` instead",
                old.bin.display(),
                cur.bin.display()
            );
        }
        refuse_foreign(&old.bin, old.tree.as_deref(), Some(cur))?;
    }
    let next = backup_dir_for(prefix, name, ".next");
    let _ = fs::remove_dir_all(&next);
    if let Some(cur) = &cur {
        let receipt = state::read_receipt(prefix, name)?;
        save_backup_to(&next, cur, receipt.as_ref())?;
    }
    restore_from(prefix, name, &b)?;
    if let Some(cur) = &cur {
        // A tree the version put back does not use (one file now, or another --lib-dir).
        remove_moved(cur, &old.bin, old.tree.as_deref());
    }
    fs::remove_dir_all(&b)?;
    if next.exists() {
        fs::rename(&next, &b)?;
    }
    Ok(())
}

/// How a kept server differs from its receipt: its tree (`tree/`, every file listed) or
/// its one file (`bin`).
fn backup_differences(b: &Path, old: &ServerReceipt) -> Vec<String> {
    match (&old.tree, old.files.first()) {
        (Some(_), _) => state::differences(&b.join("tree"), &old.files),
        (None, Some(f)) => state::differences_of(
            b,
            &[FileEntry {
                path: "bin".into(),
                ..f.clone()
            }],
        ),
        (None, None) => vec!["no file in its receipt".into()],
    }
}

/// Remove what kplug installed for server `name`: its files (only if unchanged since;
/// changed ones are left and returned), the sidecar and the backup. The caller removes
/// the receipt (as `state::uninstall` does).
pub fn uninstall(prefix: &Prefix, name: &str) -> Result<Vec<String>> {
    let Some(s) = read_server(prefix, name)? else {
        return Ok(vec![]);
    };
    let mut left = Vec::new();
    let (modified, _) = verify(&s);
    match &s.tree {
        Some(t) => {
            if modified.is_empty() {
                left = state::remove_listed(t, &s.files)?;
            } else {
                left.push(t.display().to_string());
            }
            // Only kplug's link: one re-pointed elsewhere since is the operator's.
            if fs::read_link(&s.bin).is_ok_and(|l| l.starts_with(t)) {
                fs::remove_file(&s.bin)?;
            } else if fs::symlink_metadata(&s.bin).is_ok() {
                left.push(s.bin.display().to_string());
            }
        }
        None if modified.is_empty() => {
            let _ = fs::remove_file(&s.bin);
        }
        None => left.push(s.bin.display().to_string()),
    }
    let _ = fs::remove_dir_all(backup_dir(prefix, name));
    fs::remove_file(sidecar(prefix, name))?;
    Ok(left)
}

/// (modified, missing) files of an installed server, against its receipt.
pub fn verify(s: &ServerReceipt) -> (Vec<String>, Vec<String>) {
    match &s.tree {
        Some(t) => state::verify_files(t, &s.files),
        None => state::verify_files(crate::tree::parent_dir(&s.bin), &s.files),
    }
}

/// Add the server to kong.conf: `pluginserver_names`, its three lines (absolute paths),
/// and the name in `plugins`. Returns whether the text changed.
pub fn enable(conf: &mut KongConf, name: &str, s: &ServerReceipt) -> bool {
    let key = conf_key(name);
    let mut changed = conf.list_add("pluginserver_names", name);
    changed |= conf.set(&format!("{key}_socket"), &s.socket);
    changed |= conf.set(&format!("{key}_start_cmd"), &s.start_cmd);
    changed |= conf.set(&format!("{key}_query_cmd"), &s.query_cmd);
    changed |= conf.enable(name);
    changed
}

/// Undo [`enable`].
pub fn disable(conf: &mut KongConf, name: &str) -> bool {
    let key = conf_key(name);
    let mut changed = conf.list_remove("pluginserver_names", name);
    for k in ["socket", "start_cmd", "query_cmd"] {
        changed |= conf.remove_key(&format!("{key}_{k}"));
    }
    changed |= conf.disable(name);
    changed
}

/// `pluginserver_<name>` with `-` as `_`, as Kong's conf_loader looks it up.
pub fn conf_key(name: &str) -> String {
    format!(
        "pluginserver_{}",
        name.to_ascii_lowercase().replace('-', "_")
    )
}

/// Run a query command as Kong does (`/bin/sh -c`, a plain PATH), bounded in time and
/// output, and validate what it prints.
pub fn query(cmd: &str, timeout: Duration) -> Result<Vec<PluginInfo>> {
    let out = run_bounded(cmd, timeout)?;
    validate_dump(&out).map_err(|e| fail(Kind::Unsafe, format!("query command `{cmd}`: {e:#}")))
}

fn run_bounded(cmd: &str, timeout: Duration) -> Result<Vec<u8>> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running `{cmd}`"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = (&mut stdout).take(MAX_DUMP_BYTES + 1).read_to_end(&mut buf);
        r.map(|_| buf)
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > timeout {
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(status) = status else {
        bail_kind!(
            Kind::Other,
            "query command `{cmd}` did not finish within {}s",
            timeout.as_secs()
        );
    };
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading `{cmd}`"))??;
    let err = err_reader.join().unwrap_or_default();
    if out.len() as u64 > MAX_DUMP_BYTES {
        bail_kind!(
            Kind::Unsafe,
            "query command `{cmd}` printed over {MAX_DUMP_BYTES} bytes"
        );
    }
    if !status.success() {
        bail_kind!(
            Kind::Other,
            "query command `{cmd}` failed ({status}): {}",
            escape(String::from_utf8_lossy(&err).trim().as_bytes())
        );
    }
    Ok(out)
}

/// Check a query command's output the way Kong reads it: a JSON array of plugin infos
/// (Python/JS), or an object whose `Plugins` is one (go-pdk); each with `Name`,
/// `Priority`, `Version`, `Schema` and `Phases`.
pub fn validate_dump(bytes: &[u8]) -> Result<Vec<PluginInfo>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("its output is not JSON ({e})"))?;
    let list = v.get("Plugins").unwrap_or(&v);
    let Some(items) = list.as_array().filter(|a| !a.is_empty()) else {
        anyhow::bail!("its output is not a non-empty array of plugin infos");
    };
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let field = |k: &str| {
            it.get(k).ok_or_else(|| {
                let lower = k.to_ascii_lowercase();
                let hint = if it.get(&lower).is_some() {
                    format!(" (it has `{lower}`; Kong reads `{k}`)")
                } else {
                    String::new()
                };
                anyhow::anyhow!("plugin info {i} has no `{k}`{hint}")
            })
        };
        let name = field("Name")?
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("plugin info {i}: `Name` is not a string"))?;
        if !crate::node::names::valid_plugin_name(name) {
            anyhow::bail!(
                "plugin info {i}: `Name` \"{}\" is not a valid plugin name",
                escape(name.as_bytes())
            );
        }
        let priority = field("Priority")?
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("plugin {name}: `Priority` is not an integer"))?;
        let version = match field("Version")? {
            serde_json::Value::String(s) => s.clone(),
            other => anyhow::bail!("plugin {name}: `Version` is not a string ({other})"),
        };
        if !field("Schema")?.is_object() {
            anyhow::bail!("plugin {name}: `Schema` is not an object");
        }
        let phases: Option<Vec<String>> = field("Phases")?
            .as_array()
            .and_then(|a| a.iter().map(|p| p.as_str().map(String::from)).collect());
        let Some(phases) = phases else {
            anyhow::bail!("plugin {name}: `Phases` is not an array of strings");
        };
        out.push(PluginInfo {
            name: name.to_string(),
            priority,
            version,
            phases,
        });
    }
    Ok(out)
}

/// Kong registers every plugin a server lists (`ask_info` in its plugin_servers); the one
/// kplug enables is `name`, so it must be among them.
pub fn expect_listed(infos: Vec<PluginInfo>, name: &str, cmd: &str) -> Result<Vec<PluginInfo>> {
    if !infos.iter().any(|i| i.name == name) {
        bail_kind!(
            Kind::Unsafe,
            "query command `{cmd}` lists plugins {}, not {name}; Kong would not find {name}",
            infos
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(infos)
}

/// Build the artifact for a server: `src` (one executable, or a directory holding
/// `manifest.entrypoint`) plus [`MANIFEST`], as a reproducible tar.gz at `out`.
pub fn pack(
    src: &Path,
    manifest: &ServerManifest,
    out: &Path,
    limits: &crate::node::limits::Limits,
) -> Result<crate::node::plugin::Packed> {
    check_manifest(manifest)?;
    let stage = tempfile::tempdir()?;
    let root = stage.path();
    let mut m = manifest.clone();
    if src.is_file() {
        m.entrypoint = manifest.name.clone();
        fs::copy(src, root.join(&m.entrypoint))
            .with_context(|| format!("reading {}", src.display()))?;
        fs::set_permissions(root.join(&m.entrypoint), fs::Permissions::from_mode(0o755))?;
    } else {
        copy_dir(src, root).with_context(|| format!("reading {}", src.display()))?;
        let e = root.join(&m.entrypoint);
        if !fs::metadata(&e).is_ok_and(|x| x.is_file() && x.permissions().mode() & 0o111 != 0) {
            bail_kind!(
                Kind::Usage,
                "{}: entrypoint {} is not an executable file",
                src.display(),
                m.entrypoint
            );
        }
    }
    write_json(&root.join(MANIFEST), &m)?;
    let files = crate::tree::hash_tree(root)?;
    limits.check_tree(files.iter().map(|f| (f.path.as_str(), f.size)))?;
    crate::node::plugin::pack_flat(
        root,
        &files,
        &m.name,
        m.version.as_deref().unwrap_or("0.0.0"),
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_as_kong_reads_them() {
        let py = br#"[{"Name": "py-hello", "Phases": ["access"], "Priority": 100, "Version": "0.1.0", "Schema": {"name": "py-hello", "fields": []}}]"#;
        let i = validate_dump(py).unwrap();
        assert_eq!(
            (i[0].name.as_str(), i[0].priority, i[0].phases.as_slice()),
            ("py-hello", 100, &["access".to_string()][..])
        );
        let go = br#"{"Protocol":"ProtoBuf:1","SocketPath":"/usr/local/kong/go-hello.socket","Plugins":[{"Name":"go-hello","Phases":["access"],"Version":"1.0","Priority":1,"Schema":{"name":"go-hello","fields":[]}}]}"#;
        assert_eq!(validate_dump(go).unwrap()[0].name, "go-hello");
        for (bad, needle) in [
            (&b"not json"[..], "not JSON"),
            (b"[]", "non-empty"),
            (br#"[{"name":"x","priority":1}]"#, "Kong reads `Name`"),
            (br#"[{"Name":"x","Priority":"high"}]"#, "Priority"),
            (
                br#"[{"Name":"x","Priority":1,"Version":"1","Schema":{},"Phases":"access"}]"#,
                "Phases",
            ),
            (
                br#"[{"Name":"X\u001b","Priority":1}]"#,
                "not a valid plugin name",
            ),
        ] {
            let m = format!("{:#}", validate_dump(bad).unwrap_err());
            assert!(m.contains(needle), "{m}");
        }
        let e = expect_listed(i.clone(), "other", "q").unwrap_err();
        assert!(
            format!("{e}").contains("lists plugins py-hello, not other"),
            "{e}"
        );
        // Kong registers every plugin a server lists, not only the first.
        let two = br#"[{"Name":"a","Priority":1,"Version":"1","Schema":{},"Phases":[]},{"Name":"py-hello","Priority":1,"Version":"1","Schema":{},"Phases":[]}]"#;
        assert!(expect_listed(validate_dump(two).unwrap(), "py-hello", "q").is_ok());
    }

    #[test]
    fn query_is_bounded() {
        let e = query("sleep 5", Duration::from_millis(300)).unwrap_err();
        assert!(format!("{e}").contains("did not finish"), "{e}");
        let e = query("echo oops >&2; exit 3", Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e}").contains("oops"), "{e}");
        let e = query("head -c 5000000 /dev/zero", Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e}").contains("printed over"), "{e}");
    }

    #[test]
    fn custom_sockets() {
        let m = ServerManifest {
            name: "py-hello".into(),
            version: None,
            runtime: Runtime::Python,
            entrypoint: "py-hello".into(),
            query_args: None,
            socket: Some("custom.sock".into()),
        };
        let (start, _, socket) = commands(&m, Path::new("/b/py-hello"), &ServerLayout::default());
        assert_eq!(start, "/b/py-hello --socket-name custom.sock");
        assert_eq!(socket, "/usr/local/kong/custom.sock");
        let js = ServerManifest {
            runtime: Runtime::Js,
            ..m.clone()
        };
        let (start, _, _) = commands(&js, Path::new("/b/py-hello"), &ServerLayout::default());
        assert_eq!(start, "/b/py-hello --sock-name custom.sock");
        let go = ServerManifest {
            runtime: Runtime::Go,
            ..m
        };
        assert_eq!(kind_of_err(check_manifest(&go)), Kind::Usage);
        for bad in [
            ServerManifest {
                version: Some("1.0\x1b[2J".into()),
                ..go.clone()
            },
            ServerManifest {
                query_args: Some(vec!["--dump;id".into()]),
                ..go.clone()
            },
            ServerManifest {
                socket: Some("../x.sock".into()),
                ..go.clone()
            },
        ] {
            let e = check_manifest(&bad).unwrap_err();
            assert_eq!(crate::error::kind_of(&e), Kind::Unsafe, "{e}");
            assert!(!format!("{e}").contains('\x1b'), "{e}");
        }
        let layout = ServerLayout {
            bin_dir: "/my bin".into(),
            ..ServerLayout::default()
        };
        let (start, query, _) = commands(&go, Path::new("/my bin/py-hello"), &layout);
        assert_eq!(
            (start.as_str(), query.as_str()),
            ("'/my bin/py-hello'", "'/my bin/py-hello' -dump")
        );
    }

    fn kind_of_err(r: Result<()>) -> Kind {
        crate::error::kind_of(&r.unwrap_err())
    }

    #[test]
    fn kong_conf_lines() {
        let s = ServerReceipt {
            runtime: Runtime::Python,
            bin: "/opt/bin/py-hello".into(),
            tree: None,
            entrypoint: None,
            start_cmd: "/opt/bin/py-hello".into(),
            query_cmd: "/opt/bin/py-hello --dump".into(),
            socket: "/usr/local/kong/py-hello.sock".into(),
            files: vec![],
        };
        let text = "# keep me\nplugins = bundled # mine\nlog_level = info\n";
        let mut c = KongConf::parse(text);
        assert!(enable(&mut c, "py-hello", &s));
        assert!(!enable(&mut c, "py-hello", &s));
        let env = |_: &str| None;
        assert_eq!(c.list("pluginserver_names", &env), ["py-hello"]);
        assert_eq!(
            c.get("pluginserver_py_hello_query_cmd").as_deref(),
            Some("/opt/bin/py-hello --dump")
        );
        assert_eq!(
            c.get("pluginserver_py_hello_socket").as_deref(),
            Some("/usr/local/kong/py-hello.sock")
        );
        assert_eq!(c.plugins(&env), ["bundled", "py-hello"]);
        assert!(c
            .text()
            .starts_with("# keep me\nplugins = bundled,py-hello # mine\nlog_level = info\n"));
        assert!(disable(&mut c, "py-hello"));
        assert_eq!(c.text(), text);
    }
}
