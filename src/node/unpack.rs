//! Unpack a plugin archive that may be hostile: tar, tar.gz, or zip (a LuaRocks rock).
//!
//! Every entry passes the [`Gate`] before a byte is written: only regular files and
//! directories, under paths built from checked components; links, devices, `..`, absolute
//! paths, backslashes and control characters in names, special mode bits, duplicates and
//! oversized or over-compressed content are refused with [`Kind::Unsafe`]. Tar is
//! streamed, never buffered; zip needs its central directory, so it is read from a file.
//! Nothing is ever written outside `dest`; on error `dest` may hold part of the archive
//! and the caller removes it.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result};

use crate::bail_kind;
use crate::digest::HashingWriter;
use crate::error::{fail, Kind};
use crate::node::gate::{Admitted, EntryKind, Gate, RawEntry};
pub use crate::node::limits::Limits;
use crate::node::plugin;
use crate::tree::FileEntry;

/// State shared by the readers below and above the gzip decoder.
#[derive(Default)]
struct Meter {
    compressed: Cell<u64>,
    violation: RefCell<Option<String>>,
}

/// Counts the compressed bytes the decoder pulls.
struct Counting<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter
            .compressed
            .set(self.meter.compressed.get() + n as u64);
        Ok(n)
    }
}

/// Caps the tar stream (file data plus headers: bounds what the tar crate buffers for
/// pax and long-name headers) and the compression ratio, while streaming.
struct Guard<R> {
    inner: R,
    meter: Rc<Meter>,
    gzip: bool,
    seen: u64,
    cap: u64,
    limits: Limits,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        let compressed = self.meter.compressed.get();
        let why = if self.seen > self.cap {
            Some(format!(
                "the tar stream is over {} bytes, more than the size limits allow",
                self.cap
            ))
        } else if self.gzip && self.limits.ratio_exceeded(self.seen, compressed) {
            Some(bomb(self.limits.max_ratio, self.seen, compressed))
        } else {
            None
        };
        if let Some(why) = why {
            *self.meter.violation.borrow_mut() = Some(why.clone());
            return Err(io::Error::other(why));
        }
        Ok(n)
    }
}

fn bomb(ratio: u64, expanded: u64, compressed: u64) -> String {
    format!(
        "it expands over {ratio}x ({expanded} bytes from {compressed} compressed): refusing a \
         likely decompression bomb"
    )
}

/// A read error: a limit tripped in [`Guard`], or a malformed archive.
fn read_error(meter: &Meter, e: io::Error) -> anyhow::Error {
    match meter.violation.borrow().clone() {
        Some(why) => fail(Kind::Unsafe, format!("archive refused: {why}")),
        None => fail(
            Kind::Unsafe,
            format!("archive refused: not a valid tar or tar.gz archive ({e})"),
        ),
    }
}

/// What the first bytes of an archive say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Zip,
    Zstd,
    /// Anything else; tar has no magic at offset 0.
    Tar,
}

pub fn format_of(magic: &[u8]) -> Format {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Zstd
    } else {
        Format::Tar
    }
}

/// The format of the archive file at `path`.
pub fn sniff(path: &Path) -> Result<Format> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let got =
        read_full(&mut f, &mut magic).with_context(|| format!("reading {}", path.display()))?;
    Ok(format_of(&magic[..got]))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn check_empty_dest(dest: &Path) -> Result<()> {
    let empty_dir = fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir())
        && fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none());
    if !empty_dir {
        bail_kind!(
            Kind::Usage,
            "{} must be an existing empty directory",
            dest.display()
        );
    }
    Ok(())
}

/// Create the missing directories of `rel` (a clean path) under `dest`, mode 0755.
fn make_dirs(dest: &Path, rel: &str) -> Result<()> {
    let mut p = dest.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail_kind!(
                Kind::Unsafe,
                "{} exists and is not a directory",
                p.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e).with_context(|| format!("checking {}", p.display())),
        }
    }
    Ok(())
}

/// Write one admitted entry under `dest` from `data`, which must yield exactly `a.size`
/// bytes. `read_err` turns a read error into the archive's own refusal.
fn write_entry(
    dest: &Path,
    a: &Admitted,
    data: &mut dyn Read,
    read_err: &dyn Fn(io::Error) -> anyhow::Error,
) -> Result<Option<FileEntry>> {
    // Every `rel` comes through the gate or a checked rockspec; this holds whatever the
    // caller: a normalised relative path, or nothing is written.
    if crate::node::gate::check_path(&a.rel).as_deref() != Ok(a.rel.as_str()) {
        crate::bail_kind!(
            Kind::Unsafe,
            "refusing to write {}: not a plain relative path",
            crate::node::names::escape(a.rel.as_bytes())
        );
    }
    if a.is_dir {
        make_dirs(dest, &a.rel)?;
        return Ok(None);
    }
    let (parent, _) = a.rel.rsplit_once('/').unwrap_or(("", &a.rel));
    make_dirs(dest, parent)?;
    let path: PathBuf = dest.join(&a.rel);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(a.mode)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(a.mode))?; // whatever the umask
    let mut out = HashingWriter::new(file);
    // One byte over the declared size is enough to tell a lying header.
    let mut data = data.take(a.size.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match data.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let (sha256, written) = out.hasher.finish();
    if written != a.size {
        let why = if written < a.size {
            "the archive is truncated"
        } else {
            "the entry holds more data than its header says"
        };
        bail_kind!(Kind::Unsafe, "archive entry \"{}\" refused: {why}", a.rel);
    }
    Ok(Some(FileEntry {
        path: a.rel.clone(),
        sha256,
        size: a.size,
        mode: a.mode,
    }))
}

fn tar_kind(ty: tar::EntryType) -> EntryKind {
    use tar::EntryType as T;
    match ty {
        T::Regular | T::Continuous => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink,
        T::Link => EntryKind::HardLink,
        T::Char => EntryKind::CharDevice,
        T::Block => EntryKind::BlockDevice,
        T::Fifo => EntryKind::Fifo,
        t => EntryKind::Other(format!("entry type {:?}", t.as_byte() as char)),
    }
}

/// Unpack a tar or tar.gz stream into `dest`, which must be an existing empty directory.
/// Returns the regular files written, relative to `dest`, sorted by path.
pub fn unpack_tar<R: Read>(reader: R, dest: &Path, limits: &Limits) -> Result<Vec<FileEntry>> {
    check_empty_dest(dest)?;
    let mut reader = reader;
    let mut magic = [0u8; 4];
    let got = read_full(&mut reader, &mut magic).context("reading the archive")?;
    let format = format_of(&magic[..got]);
    match format {
        Format::Zstd => bail_kind!(
            Kind::Usage,
            "zstd-compressed archives are not supported: use gzip or plain tar"
        ),
        Format::Zip => bail_kind!(
            Kind::Unsafe,
            "archive refused: a zip archive (a LuaRocks rock?) where a tar or tar.gz was expected"
        ),
        _ => {}
    }
    let gzip = format == Format::Gzip;
    let meter = Rc::new(Meter::default());
    let counted = Counting {
        inner: io::Cursor::new(magic[..got].to_vec()).chain(reader),
        meter: meter.clone(),
    };
    let stream: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    let guard = Guard {
        inner: stream,
        meter: meter.clone(),
        gzip,
        seen: 0,
        // File data plus generous room for headers and padding.
        cap: limits
            .max_total_bytes
            .saturating_add(limits.max_files.saturating_mul(4096))
            .saturating_add(1 << 20),
        limits: *limits,
    };
    let mut archive = tar::Archive::new(guard);
    let mut gate = Gate::new(*limits);
    let mut files = Vec::new();
    let read_err = |e| read_error(&meter, e);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            continue; // `git archive` writes one; it describes no file.
        }
        let name = entry.path_bytes().into_owned();
        let mode = match entry.header().mode() {
            Ok(m) => m,
            Err(_) => bail_kind!(
                Kind::Unsafe,
                "archive entry \"{}\" refused: unreadable mode field",
                crate::node::names::escape(&name)
            ),
        };
        let raw = RawEntry {
            name: &name,
            kind: tar_kind(ty),
            mode: mode & 0o7777,
            size: entry.size(),
        };
        let Some(a) = gate.admit(&raw)? else { continue };
        files.extend(write_entry(dest, &a, &mut entry, &read_err)?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn zip_kind(f: &zip::read::ZipFile<'_, impl Read>) -> EntryKind {
    const S_IFMT: u32 = 0o170000;
    match f.unix_mode().map(|m| m & S_IFMT) {
        Some(0o120000) => EntryKind::Symlink,
        Some(0o020000) => EntryKind::CharDevice,
        Some(0o060000) => EntryKind::BlockDevice,
        Some(0o010000) => EntryKind::Fifo,
        Some(0o140000) => EntryKind::Other("a socket".into()),
        Some(0o040000) => EntryKind::Dir,
        _ if f.is_symlink() => EntryKind::Symlink,
        _ if f.is_dir() => EntryKind::Dir,
        _ => EntryKind::File,
    }
}

/// Unpack a zip archive (a `.rock`) of `len` bytes into `dest`, which must be an existing
/// empty directory, through the same [`Gate`] as tar. Returns the files written, sorted.
pub fn unpack_zip<R: Read + Seek>(
    reader: R,
    len: u64,
    dest: &Path,
    limits: &Limits,
) -> Result<Vec<FileEntry>> {
    check_empty_dest(dest)?;
    let bad = |e: &dyn std::fmt::Display| {
        fail(
            Kind::Unsafe,
            format!("archive refused: not a valid zip archive ({e})"),
        )
    };
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| bad(&e))?;
    if zip.len() as u64 > limits.max_files {
        bail_kind!(
            Kind::Unsafe,
            "archive refused: {} entries, more than {} files and directories",
            zip.len(),
            limits.max_files
        );
    }
    let mut gate = Gate::new(*limits);
    let (mut files, mut expanded) = (Vec::new(), 0u64);
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| bad(&e))?;
        let name = f.name_raw().to_vec();
        if f.encrypted() {
            bail_kind!(
                Kind::Unsafe,
                "archive entry \"{}\" refused: encrypted",
                crate::node::names::escape(&name)
            );
        }
        let kind = zip_kind(&f);
        let default_mode = if kind == EntryKind::Dir { 0o755 } else { 0o644 };
        let raw = RawEntry {
            name: &name,
            mode: f.unix_mode().map_or(default_mode, |m| m & 0o7777),
            kind,
            size: f.size(),
        };
        let Some(a) = gate.admit(&raw)? else { continue };
        expanded = expanded.saturating_add(a.size);
        if limits.ratio_exceeded(expanded, len) {
            bail_kind!(
                Kind::Unsafe,
                "archive refused: {}",
                bomb(limits.max_ratio, expanded, len)
            );
        }
        let read_err = |e: io::Error| bad(&e);
        files.extend(write_entry(dest, &a, &mut f, &read_err)?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Unpack the archive file at `path` (tar, tar.gz or zip) into the empty dir `dest`.
pub fn unpack_file(path: &Path, dest: &Path, limits: &Limits) -> Result<Vec<FileEntry>> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match sniff(path)? {
        Format::Zip => {
            let len = f.metadata()?.len();
            unpack_zip(io::BufReader::new(f), len, dest, limits)
        }
        _ => unpack_tar(io::BufReader::new(f), dest, limits),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedPlugin {
    pub name: String,
    /// From the archive's rockspec or handler.lua `VERSION`, when present and well-formed.
    pub version: Option<String>,
    /// `staging/<name>`.
    pub dir: PathBuf,
    /// Relative to `dir`.
    pub files: Vec<FileEntry>,
}

/// Where a plugin's name may come from besides the archive itself. The order is
/// `flag` (`--name`), the archive's tree (`kong/plugins/<name>/`, its rockspec),
/// `schema.lua`'s `name`, then `repo` (the repository's last component).
#[derive(Debug, Clone, Default)]
pub struct NameHints {
    pub flag: Option<String>,
    pub repo: Option<String>,
}

impl NameHints {
    /// Only the fallback a repository name gives (no `--name`).
    pub fn from_repo(repo: Option<&str>) -> NameHints {
        NameHints {
            flag: None,
            repo: repo.map(String::from),
        }
    }
}

/// Unpack a plugin archive into `staging/raw`, find the plugin in it whatever the layout
/// (`kong/plugins/<name>/`, `<x>/kong/plugins/<name>/`, a rockspec's `build.modules`,
/// `<name>/handler.lua`, or handler.lua at the root as in a KongPluginInstallation image),
/// check it (layout, Lua syntax, schema name) and move it to `staging/<name>`; the rest of
/// `staging/raw` is removed. `fallback_name` names a plugin the archive does not name
/// (as the repository would, see [`NameHints`]); [`extract_plugin_with`] takes both hints.
/// `staging` must exist and not hold `raw` yet. On error the caller removes `staging`.
pub fn extract_plugin<R: Read>(
    reader: R,
    staging: &Path,
    limits: &Limits,
    fallback_name: Option<&str>,
) -> Result<ExtractedPlugin> {
    extract_plugin_with(
        reader,
        staging,
        limits,
        &NameHints::from_repo(fallback_name),
    )
}

/// [`extract_plugin`] of a tar stream with both name hints.
pub fn extract_plugin_with<R: Read>(
    reader: R,
    staging: &Path,
    limits: &Limits,
    hints: &NameHints,
) -> Result<ExtractedPlugin> {
    let raw = staging.join("raw");
    fs::create_dir(&raw).with_context(|| format!("creating {}", raw.display()))?;
    let all = unpack_tar(reader, &raw, limits)?;
    plugin_from_tree(&raw, all, staging, hints, limits)
}

/// Find, name and check the one plugin in the unpacked tree `raw` (files `all`), and
/// move it to `staging/<name>`, removing `raw`.
pub(crate) fn plugin_from_tree(
    raw: &Path,
    all: Vec<FileEntry>,
    staging: &Path,
    hints: &NameHints,
    limits: &Limits,
) -> Result<ExtractedPlugin> {
    let flag = hints.flag.as_deref();
    if let Some(n) = flag {
        crate::node::names::check_plugin_name(n)?;
    }
    // A rockspec's map comes first: a `src/handler.lua` tree is not a plugin named "src".
    let spec_root = [raw.to_path_buf()]
        .into_iter()
        .chain(single_subdir(raw))
        .find(|d| crate::node::rockspec::mapping(d, flag).is_some());
    if let Some(root) = spec_root {
        let spec = crate::node::rockspec::mapping(&root, flag).expect("found above");
        if flag.is_none() && spec.plugins().len() > 1 {
            bail_kind!(
                Kind::Usage,
                "the archive's rockspec maps several plugins: {}; choose one with --name",
                spec.plugins().join(", ")
            );
        }
        let mut out = from_rockspec(&root, &spec, flag, staging, &[], limits)?;
        remove_raw(raw)?;
        return Ok(out.remove(0));
    }
    // The repository's name may pick one of several plugins too.
    let found = plugin::detect(raw, flag.or(hints.repo.as_deref()), Kind::Unsafe)?;
    let name = name_for(&found, hints)?;
    plugin::check_plugin_dir(&found.dir, &name)?;
    let version =
        plugin::detect_version(&found.base, &found.dir).filter(|v| plugin::valid_version(v));
    let rel = found.dir.strip_prefix(raw)?.to_string_lossy().into_owned();
    let files = all
        .into_iter()
        .filter_map(|mut f| {
            if !rel.is_empty() {
                f.path = f.path.strip_prefix(&format!("{rel}/"))?.to_string();
            }
            Some(f)
        })
        .collect();
    move_out(&found.dir, staging, &name)?;
    remove_raw(raw)?;
    let dir = staging.join(&name);
    Ok(ExtractedPlugin {
        name,
        version,
        dir,
        files,
    })
}

/// The plugin's name: `--name`, the tree, the rockspec, `schema.lua`, the repository.
fn name_for(found: &plugin::Detected, hints: &NameHints) -> Result<String> {
    let flag = hints.flag.as_deref();
    Ok(match (found.name.clone(), flag) {
        (Some(t), Some(f)) if t != f => bail_kind!(
            Kind::Usage,
            "the archive holds plugin {t}, not {f}: its modules are required as \
             kong.plugins.{t}.*, so --name cannot rename it"
        ),
        (Some(t), _) => t,
        (None, Some(f)) => f.to_string(),
        (None, None) => plugin::rockspec_name(&found.base)
            .or_else(|| plugin::schema_name_of(&found.dir))
            .or_else(|| hints.repo.clone().filter(|r| plugin::valid_plugin_name(r)))
            .ok_or_else(|| {
                fail(
                    Kind::Usage,
                    format!(
                        "the archive holds handler.lua at its root (a KongPluginInstallation \
                         image) and nothing names the plugin (no literal name in schema.lua{}): \
                         pass --name",
                        hints
                            .repo
                            .as_ref()
                            .map(|r| format!(
                                ", and \"{}\" is not a valid plugin name",
                                crate::node::names::escape(r.as_bytes())
                            ))
                            .unwrap_or_default()
                    ),
                )
            })?,
    })
}

/// The only entry of `dir`, when it is a directory (a source tarball's top folder).
fn single_subdir(dir: &Path) -> Option<PathBuf> {
    let mut it = fs::read_dir(dir).ok()?.flatten();
    let first = it.next()?;
    (it.next().is_none() && first.file_type().ok()?.is_dir()).then(|| first.path())
}

/// Move a checked plugin dir to `staging/<name>` through a name that cannot clash with
/// `raw` (a plugin may be called "raw").
pub(crate) fn move_out(dir: &Path, staging: &Path, name: &str) -> Result<PathBuf> {
    let tmp = staging.join(format!(".{name}.tmp"));
    fs::rename(dir, &tmp)
        .with_context(|| format!("moving {} to {}", dir.display(), tmp.display()))?;
    Ok(tmp)
}

/// Remove `raw` and give the `.<name>.tmp` dirs left by [`move_out`] their real names.
pub(crate) fn remove_raw(raw: &Path) -> Result<()> {
    if raw.exists() {
        fs::remove_dir_all(raw).with_context(|| format!("removing {}", raw.display()))?;
    }
    let staging = crate::tree::parent_dir(raw);
    for ent in fs::read_dir(staging)?.flatten() {
        let n = ent.file_name().to_string_lossy().into_owned();
        if let Some(name) = n.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            fs::rename(ent.path(), staging.join(name))?;
        }
    }
    Ok(())
}

/// Lay out the plugins a rockspec maps (all of them, or `want`) from the unpacked tree
/// `root` into `staging/.<name>.tmp`, checked; [`remove_raw`] finishes the move.
/// `skip` names plugins to leave out.
pub(crate) fn from_rockspec(
    root: &Path,
    spec: &crate::node::rockspec::Rockspec,
    want: Option<&str>,
    staging: &Path,
    skip: &[String],
    limits: &Limits,
) -> Result<Vec<ExtractedPlugin>> {
    let names: Vec<String> = match want {
        Some(w) => vec![w.to_string()],
        None => spec
            .plugins()
            .into_iter()
            .filter(|p| !skip.contains(p))
            .collect(),
    };
    let mut out = Vec::new();
    let mut budget = MapBudget {
        files: limits.max_files,
        bytes: limits.max_total_bytes,
        limits,
    };
    for name in names {
        let tmp = staging.join(format!(".{name}.tmp"));
        fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut files = Vec::new();
        for (rel, src) in spec.plugin_files(&name)? {
            let (from, meta) = mapped_source(root, spec, &src)?;
            budget.take(meta.len(), spec)?;
            let a = Admitted {
                rel: rel.clone(),
                is_dir: false,
                mode: if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                },
                size: meta.len(),
            };
            let mut f = fs::File::open(&from)?;
            files.extend(write_entry(&tmp, &a, &mut f, &|e| e.into())?);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        plugin::check_plugin_dir(&tmp, &name)?;
        out.push(ExtractedPlugin {
            dir: staging.join(&name),
            version: spec.release().filter(|v| plugin::valid_version(v)),
            name,
            files,
        });
    }
    Ok(out)
}

/// The file a rockspec maps a module to, inside `root`, and its metadata.
fn mapped_source(
    root: &Path,
    spec: &crate::node::rockspec::Rockspec,
    src: &str,
) -> Result<(PathBuf, fs::Metadata)> {
    let from = root.join(crate::node::gate::check_path(src).map_err(|why| {
        fail(
            Kind::Unsafe,
            format!("{}: module path {src:?}: {why}", spec.path.display()),
        )
    })?);
    let meta = fs::symlink_metadata(&from).map_err(|_| {
        fail(
            Kind::Unsafe,
            format!(
                "{} maps {src}, which the archive does not hold",
                spec.path.display()
            ),
        )
    })?;
    Ok((from, meta))
}

/// What a rockspec's map may still lay out. The map may name one source many times:
/// every copy counts against the limits, as an archive's files do, before it is written.
struct MapBudget<'a> {
    files: u64,
    bytes: u64,
    limits: &'a Limits,
}

impl MapBudget<'_> {
    fn take(&mut self, size: u64, spec: &crate::node::rockspec::Rockspec) -> Result<()> {
        match (self.files.checked_sub(1), self.bytes.checked_sub(size)) {
            (Some(f), Some(b)) if size <= self.limits.max_file_bytes => {
                (self.files, self.bytes) = (f, b);
                Ok(())
            }
            _ => bail_kind!(
                Kind::Unsafe,
                "{} maps more than the limits allow (at most {} files, {} bytes in all, {} \
                 bytes a file); nothing was installed",
                spec.path.display(),
                self.limits.max_files,
                self.limits.max_total_bytes,
                self.limits.max_file_bytes
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;
    use crate::node::plugin::tests::{plugin_at, write, HANDLER, SCHEMA};
    use flate2::write::GzEncoder;
    use tar::{EntryType, Header};

    /// A header with `path` written raw, bypassing the tar crate's path checks.
    fn header(path: &[u8], ty: EntryType, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(mode);
        h.set_cksum();
        h
    }

    fn file(path: &str, body: &[u8]) -> (Header, Vec<u8>) {
        (
            header(
                path.as_bytes(),
                EntryType::Regular,
                body.len() as u64,
                0o644,
            ),
            body.to_vec(),
        )
    }

    fn tar_of(entries: Vec<(Header, Vec<u8>)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (h, body) in entries {
            b.append(&h, &body[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Unpack into a fresh `parent/dest`; check nothing appeared beside dest.
    fn try_unpack(archive: &[u8], limits: &Limits) -> Result<Vec<FileEntry>> {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let r = unpack_tar(archive, &dest, limits);
        assert_eq!(listing(parent.path()), ["dest"]);
        r
    }

    fn refused(archive: &[u8], limits: &Limits, needle: &str) {
        let e = try_unpack(archive, limits).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(kind_of(&e), Kind::Unsafe, "{m}");
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    }

    #[test]
    fn refuses_bad_paths() {
        let l = Limits::default();
        let abs = format!("/tmp/kplug-abs-{}", std::process::id());
        refused(&tar_of(vec![file(&abs, b"x")]), &l, "absolute");
        assert!(!Path::new(&abs).exists());
        refused(&tar_of(vec![file("../x", b"x")]), &l, "`..`");
        refused(&tar_of(vec![file("a/../../x", b"x")]), &l, "`..`");
        refused(
            &tar_of(vec![file("ok.lua", b"x"), file("a/./../x", b"x")]),
            &l,
            "`..`",
        );
        // A pax extended header naming the next entry.
        let rec = b"16 path=../evil\n";
        let pax = header(b"PaxHeaders/x", EntryType::XHeader, rec.len() as u64, 0o644);
        refused(
            &tar_of(vec![(pax, rec.to_vec()), file("x", b"x")]),
            &l,
            "`..`",
        );
        let bad = header(b"kong/\xff.lua", EntryType::Regular, 0, 0o644);
        refused(&tar_of(vec![(bad, vec![])]), &l, "UTF-8");
    }

    #[test]
    fn refuses_backslashes_and_control_characters() {
        // Issue 10 item 4: these used to install and reach receipts and terminals raw.
        let l = Limits::default();
        refused(
            &tar_of(vec![file("zz\\..\\..\\x.lua", b"x")]),
            &l,
            "backslash",
        );
        refused(&tar_of(vec![file("\\etc\\passwd", b"x")]), &l, "backslash");
        let e = try_unpack(&tar_of(vec![file("a\x1b]0;owned\x07.lua", b"x")]), &l).unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("control characters") && m.contains(r"a\x1b]0;owned\x07.lua"),
            "{m}"
        );
        assert!(!m.chars().any(char::is_control), "{m:?}");
        refused(&tar_of(vec![file("new\nline.lua", b"x")]), &l, "control");
    }

    /// A zip built entry by entry; names written as given.
    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, body, mode) in entries {
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            if name.ends_with('/') {
                w.add_directory(*name, o).unwrap();
            } else {
                w.start_file(*name, o).unwrap();
                w.write_all(body).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn try_unzip(bytes: &[u8], limits: &Limits) -> Result<Vec<FileEntry>> {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let r = unpack_zip(io::Cursor::new(bytes), bytes.len() as u64, &dest, limits);
        assert_eq!(listing(parent.path()), ["dest"]);
        r
    }

    fn unzip_refused(bytes: &[u8], limits: &Limits, needle: &str) {
        let e = try_unzip(bytes, limits).unwrap_err();
        let m = format!("{e:#}");
        assert_eq!(kind_of(&e), Kind::Unsafe, "{m}");
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    }

    #[test]
    fn zip_goes_through_the_same_gate() {
        let l = Limits::default();
        let files = try_unzip(
            &zip_of(&[
                ("lua/", b"", 0o755),
                ("lua/a.lua", b"return 1\n", 0o600),
                ("bin/x", b"#!", 0o700),
            ]),
            &l,
        )
        .unwrap();
        let got: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(got, [("bin/x", 0o755), ("lua/a.lua", 0o644)]);
        unzip_refused(&zip_of(&[("../evil.lua", b"x", 0o644)]), &l, "`..`");
        unzip_refused(&zip_of(&[("/abs.lua", b"x", 0o644)]), &l, "absolute");
        unzip_refused(&zip_of(&[("a\\..\\b", b"x", 0o644)]), &l, "backslash");
        unzip_refused(
            &zip_of(&[("a", b"1", 0o644), ("./a", b"2", 0o644)]),
            &l,
            "duplicate",
        );
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        w.add_symlink(
            "link.lua",
            "/etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        unzip_refused(&w.finish().unwrap().into_inner(), &l, "symbolic link");
        let small = Limits {
            max_file_bytes: 10,
            ..l
        };
        unzip_refused(&zip_of(&[("big", &[1; 11], 0o644)]), &small, "per file");
        let zeros = vec![0u8; 4 << 20];
        unzip_refused(
            &zip_of(&[("zeros", &zeros, 0o644)]),
            &l,
            "decompression bomb",
        );
        unzip_refused(b"PK\x03\x04 not really", &l, "not a valid zip");
    }

    #[test]
    fn refuses_links_devices_and_modes() {
        let l = Limits::default();
        let mut sym = header(b"kong/x.lua", EntryType::Symlink, 0, 0o777);
        sym.set_link_name("/etc/passwd").unwrap();
        sym.set_cksum();
        refused(&tar_of(vec![(sym, vec![])]), &l, "symbolic link");
        let mut hard = header(b"x.lua", EntryType::Link, 0, 0o644);
        hard.set_link_name("y.lua").unwrap();
        hard.set_cksum();
        refused(
            &tar_of(vec![file("y.lua", b"y"), (hard, vec![])]),
            &l,
            "hard link",
        );
        let dev = header(b"null", EntryType::Char, 0, 0o666);
        refused(&tar_of(vec![(dev, vec![])]), &l, "character device");
        let blk = header(b"sda", EntryType::Block, 0, 0o660);
        refused(&tar_of(vec![(blk, vec![])]), &l, "block device");
        let fifo = header(b"pipe", EntryType::Fifo, 0, 0o644);
        refused(&tar_of(vec![(fifo, vec![])]), &l, "FIFO");
        let sparse = header(b"s", EntryType::new(b'V'), 0, 0o644);
        refused(&tar_of(vec![(sparse, vec![])]), &l, "entry type 'V'");
        let suid = header(b"run.sh", EntryType::Regular, 1, 0o4755);
        refused(&tar_of(vec![(suid, b"x".to_vec())]), &l, "setuid");
        let sticky = header(b"tmp/", EntryType::Directory, 0, 0o1777);
        refused(&tar_of(vec![(sticky, vec![])]), &l, "sticky");
    }

    #[test]
    fn refuses_duplicates() {
        let l = Limits::default();
        refused(
            &tar_of(vec![file("a.lua", b"1"), file("./a.lua", b"2")]),
            &l,
            "duplicate",
        );
        let dir = header(b"a/", EntryType::Directory, 0, 0o755);
        refused(
            &tar_of(vec![file("a/b", b"1"), file("a", b"2")]),
            &l,
            "directory is",
        );
        refused(
            &tar_of(vec![(dir, vec![]), file("a", b"2")]),
            &l,
            "directory is",
        );
        refused(
            &tar_of(vec![file("a", b"1"), file("a/b", b"2")]),
            &l,
            "is a file",
        );
    }

    #[test]
    fn refuses_over_limits() {
        let few = Limits {
            max_files: 3,
            ..Limits::default()
        };
        let four: Vec<_> = (0..4).map(|i| file(&format!("f{i}"), b"x")).collect();
        refused(&tar_of(four), &few, "more than 3 files");
        let small = Limits {
            max_file_bytes: 100,
            max_total_bytes: 150,
            ..Limits::default()
        };
        refused(&tar_of(vec![file("big", &[7; 101])]), &small, "per file");
        refused(
            &tar_of(vec![file("a", &[7; 100]), file("b", &[7; 100])]),
            &small,
            "add up",
        );
        // Truncated data is refused too.
        let mut t = tar_of(vec![file("a", &[7; 3000])]);
        t.truncate(1500);
        refused(&t, &Limits::default(), "truncated");
    }

    #[test]
    fn refuses_gzip_bomb() {
        // 50 MiB of zeros in one file: within the size limits, ~50 KiB compressed.
        let size = 50u64 << 20;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        {
            let mut b = tar::Builder::new(&mut enc);
            let h = header(b"zeros", EntryType::Regular, size, 0o644);
            b.append(&h, io::repeat(0).take(size)).unwrap();
            b.finish().unwrap();
        }
        let bomb = enc.finish().unwrap();
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let e = unpack_tar(&bomb[..], &dest, &Limits::default()).unwrap_err();
        assert_eq!(kind_of(&e), Kind::Unsafe, "{e:#}");
        assert!(format!("{e:#}").contains("decompression bomb"), "{e:#}");
        let written = fs::metadata(dest.join("zeros"))
            .map(|m| m.len())
            .unwrap_or(0);
        eprintln!(
            "gzip bomb: {} compressed bytes, stopped after writing {written} bytes: {e:#}",
            bomb.len()
        );
        assert!(written < 16 << 20);
        assert_eq!(listing(parent.path()), ["dest"]);
    }

    #[test]
    fn dest_must_be_empty() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "x", "x");
        let e = unpack_tar(&tar_of(vec![])[..], t.path(), &Limits::default()).unwrap_err();
        assert_eq!(kind_of(&e), Kind::Usage);
    }

    #[test]
    fn normalises_modes_plain_tar_dot_paths_and_pax() {
        let mut b = tar::Builder::new(Vec::new());
        // What `git archive` writes first.
        let mut g = header(b"pax_global_header", EntryType::XGlobalHeader, 0, 0o666);
        let rec = b"52 comment=0123456789012345678901234567890123456789\n";
        g.set_size(rec.len() as u64);
        g.set_cksum();
        b.append(&g, &rec[..]).unwrap();
        for (p, ty, mode, body) in [
            ("./", EntryType::Directory, 0o700, &b""[..]),
            ("./bin/", EntryType::Directory, 0o700, b""),
            ("./bin/run", EntryType::Regular, 0o700, b"#!/bin/sh\n"),
            ("./secret.lua", EntryType::Regular, 0o600, b"return 1\n"),
        ] {
            let h = header(p.as_bytes(), ty, body.len() as u64, mode);
            b.append(&h, body).unwrap();
        }
        // A path over 100 bytes, through a GNU long-name entry.
        let long = format!("deep/{}.lua", "x".repeat(150));
        let mut h = Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"ok"[..]).unwrap();
        let plain = b.into_inner().unwrap();

        let t = tempfile::tempdir().unwrap();
        let files = unpack_tar(&plain[..], t.path(), &Limits::default()).unwrap();
        let got: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            got,
            [
                ("bin/run", 0o755),
                (long.as_str(), 0o644),
                ("secret.lua", 0o644)
            ]
        );
        let mode = |p: &str| fs::metadata(t.path().join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode("bin"), mode("bin/run"), mode("secret.lua")),
            (0o755, 0o755, 0o644)
        );
        assert_eq!(crate::tree::hash_tree(t.path()).unwrap(), files);
    }

    fn extract(
        archive: &[u8],
        fallback: Option<&str>,
    ) -> (tempfile::TempDir, Result<ExtractedPlugin>) {
        let staging = tempfile::tempdir().unwrap();
        let r = extract_plugin(archive, staging.path(), &Limits::default(), fallback);
        (staging, r)
    }

    fn paths(p: &ExtractedPlugin) -> Vec<&str> {
        p.files.iter().map(|f| f.path.as_str()).collect()
    }

    /// A .tar.gz of `src` as `tar czf - -C src .` would make it.
    fn tgz_of_dir(src: &Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", src).unwrap();
        gz(&b.into_inner().unwrap())
    }

    const PLUGIN_FILES: [&str; 4] = [
        "handler.lua",
        "migrations/000_base.lua",
        "migrations/init.lua",
        "schema.lua",
    ];

    #[test]
    fn extract_each_layout() {
        // 2: kong/plugins/<name>/.
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "kong/plugins/acme");
        let (staging, r) = extract(&tgz_of_dir(t.path()), None);
        let p = r.unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_deref()),
            ("acme", Some("0.1.0"))
        );
        assert_eq!(p.dir, staging.path().join("acme"));
        assert_eq!(paths(&p), PLUGIN_FILES);
        assert_eq!(crate::tree::hash_tree(&p.dir).unwrap(), p.files);
        assert_eq!(listing(staging.path()), ["acme"]);

        // 3: LuaRocks source tarball, version from the rockspec.
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "kong-plugin-acme-1.2.0/kong/plugins/acme");
        write(
            t.path(),
            "kong-plugin-acme-1.2.0/kong-plugin-acme-1.2.0-1.rockspec",
            "package = \"kong-plugin-acme\"\nversion = \"1.2.0-1\"\n",
        );
        let (staging, r) = extract(&tgz_of_dir(t.path()), None);
        let p = r.unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_deref()),
            ("acme", Some("1.2.0"))
        );
        assert_eq!(paths(&p), PLUGIN_FILES);
        assert_eq!(listing(staging.path()), ["acme"]);

        // 1: a bare directory named after the plugin.
        let t = tempfile::tempdir().unwrap();
        plugin_at(t.path(), "acme");
        let (_s, r) = extract(&tgz_of_dir(t.path()), Some("ignored"));
        let p = r.unwrap();
        assert_eq!(p.name, "acme");
        assert_eq!(paths(&p), PLUGIN_FILES);

        // 4: KongPluginInstallation image, flat; named only by the caller. A plugin may
        // even be called "raw".
        let flat = gz(&tar_of(vec![
            file("handler.lua", HANDLER.as_bytes()),
            file("schema.lua", SCHEMA.as_bytes()),
        ]));
        let (_s, r) = extract(&flat, None);
        let e = r.unwrap_err();
        assert!(
            kind_of(&e) == Kind::Usage && format!("{e}").contains("--name"),
            "{e}"
        );
        let (_s, r) = extract(&flat, Some("not.valid"));
        assert!(format!("{}", r.unwrap_err()).contains("not a valid plugin name"));
        let (staging, r) = extract(&flat, Some("raw"));
        let p = r.unwrap();
        assert_eq!(p.dir, staging.path().join("raw"));
        assert_eq!(paths(&p), ["handler.lua", "schema.lua"]);
        assert_eq!(listing(staging.path()), ["raw"]);
    }

    #[test]
    fn extract_refuses_non_plugins() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "kong/plugins/acme/handler.lua", HANDLER);
        let (_s, r) = extract(&tgz_of_dir(t.path()), None);
        let m = format!("{:#}", r.unwrap_err());
        assert!(m.contains("no configuration schema found"), "{m}");
        let (_s, r) = extract(&gz(&tar_of(vec![file("README.md", b"hi")])), Some("x"));
        assert_eq!(kind_of(&r.unwrap_err()), Kind::Unsafe);
        plugin_at(t.path(), "kong/plugins/acme");
        plugin_at(t.path(), "kong/plugins/other");
        let (_s, r) = extract(&tgz_of_dir(t.path()), None);
        let m = format!("{:#}", r.unwrap_err());
        assert!(m.contains("acme, other"), "{m}");
        let (_s, r) = extract(&tgz_of_dir(t.path()), Some("other"));
        assert_eq!(r.unwrap().name, "other");
    }

    #[test]
    fn pack_extract_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        plugin_at(&src, "");
        write(&src, "lib/util.lua", "return {}\n");
        let s = crate::node::plugin::locate(&src, Some("round-trip"), None).unwrap();
        let packed = crate::node::plugin::pack(&s, &t.path().join("p.tar.gz")).unwrap();
        let (_staging, r) = extract(&fs::read(&packed.path).unwrap(), None);
        let p = r.unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_deref()),
            ("round-trip", Some("0.1.0"))
        );
        assert_eq!(p.files, packed.files);
        assert_eq!(crate::tree::hash_tree(&p.dir).unwrap(), packed.files);
    }
}
