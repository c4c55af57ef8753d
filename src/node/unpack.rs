//! Unpack a plugin archive that may be hostile.
//!
//! Only regular files and directories are accepted, under paths built from checked
//! components; every other entry type, `..`, absolute paths, special mode bits, duplicates
//! and oversized or over-compressed content are refused with [`Kind::Unsafe`]. The archive
//! is streamed, never buffered. Nothing is ever written outside `dest`; on error `dest`
//! may hold part of the archive and the caller removes it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result};

use crate::bail_kind;
use crate::digest::HashingWriter;
use crate::error::{fail, Kind};
use crate::node::plugin;
use crate::tree::FileEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files and directories.
    pub max_files: u64,
    /// Sum of the file sizes.
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
    /// Decompressed/compressed, checked once past 1 MiB decompressed.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 10_000,
            max_total_bytes: 256 << 20,
            max_file_bytes: 64 << 20,
            max_ratio: 200,
        }
    }
}

const RATIO_FLOOR: u64 = 1 << 20;

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
    max_ratio: u64,
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
        } else if self.gzip
            && self.seen > RATIO_FLOOR
            && self.seen > self.max_ratio.saturating_mul(compressed)
        {
            Some(format!(
                "gzip expands over {}x ({} bytes from {compressed} compressed): refusing a likely \
                 decompression bomb",
                self.max_ratio, self.seen
            ))
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    /// Created as the parent of an entry, not listed itself (yet).
    ImplicitDir,
    Dir,
}

/// Check an entry name and return it normalised: `/`-joined components, no `.`/empty ones.
fn clean_path(name: &str) -> Result<String, &'static str> {
    if name.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if name.len() > 4096 {
        return Err("the path is longer than 4096 bytes");
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` components are not allowed"),
            c if c.len() > 255 => return Err("a path component is longer than 255 bytes"),
            c if c.contains('\0') => return Err("the path holds a NUL byte"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
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

/// Unpack a tar or tar.gz stream into `dest`, which must be an existing empty directory.
/// Returns the regular files written, relative to `dest`, sorted by path.
pub fn unpack_tar<R: Read>(reader: R, dest: &Path, limits: &Limits) -> Result<Vec<FileEntry>> {
    let empty_dir = fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir())
        && fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none());
    if !empty_dir {
        bail_kind!(
            Kind::Usage,
            "{} must be an existing empty directory",
            dest.display()
        );
    }

    let mut reader = reader;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the archive"),
        }
    }
    if magic[..got] == [0x28, 0xb5, 0x2f, 0xfd] {
        bail_kind!(
            Kind::Usage,
            "zstd-compressed archives are not supported: use gzip or plain tar"
        );
    }
    let gzip = magic[..got].starts_with(&[0x1f, 0x8b]);
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
        max_ratio: limits.max_ratio,
    };
    let mut archive = tar::Archive::new(guard);

    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut files = Vec::new();
    let mut count = 0u64;
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries().map_err(|e| read_error(&meter, e))? {
        let mut entry = entry.map_err(|e| read_error(&meter, e))?;
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            continue; // `git archive` writes one; it describes no file.
        }
        let raw = entry.path_bytes().into_owned();
        let Ok(name) = String::from_utf8(raw) else {
            bail_kind!(
                Kind::Unsafe,
                "archive entry {:?} refused: names must be valid UTF-8",
                String::from_utf8_lossy(&entry.path_bytes())
            );
        };
        let refuse = |why: &str| {
            fail(
                Kind::Unsafe,
                format!("archive entry {name:?} refused: {why}"),
            )
        };

        let is_file = ty.is_file() || ty.is_contiguous();
        // Pre-POSIX tar marks directories as files whose name ends in '/'.
        let is_dir = ty.is_dir() || (is_file && name.ends_with('/'));
        if !is_dir && !is_file {
            let what = match ty {
                tar::EntryType::Symlink => "symbolic links are not allowed".to_string(),
                tar::EntryType::Link => "hard links are not allowed".to_string(),
                tar::EntryType::Char => "character devices are not allowed".to_string(),
                tar::EntryType::Block => "block devices are not allowed".to_string(),
                tar::EntryType::Fifo => "FIFOs are not allowed".to_string(),
                t => format!(
                    "entry type {:?} is not allowed, only files and directories",
                    t.as_byte() as char
                ),
            };
            return Err(refuse(&what));
        }
        let rel = clean_path(&name).map_err(refuse)?;
        if rel.is_empty() {
            if is_dir {
                continue; // "./": dest itself
            }
            return Err(refuse("empty path"));
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|_| refuse("unreadable mode field"))?;
        if mode & 0o7000 != 0 {
            return Err(refuse(&format!(
                "setuid, setgid and sticky bits are not allowed (mode {mode:o})"
            )));
        }
        count += 1;
        if count > limits.max_files {
            return Err(refuse(&format!(
                "more than {} files and directories",
                limits.max_files
            )));
        }

        // Each path once; never a file where a directory is, or the other way round.
        for (i, _) in rel.match_indices('/') {
            match nodes.get(&rel[..i]) {
                Some(Node::File) => {
                    return Err(refuse(&format!("{} is a file, not a directory", &rel[..i])))
                }
                Some(_) => {}
                None => {
                    nodes.insert(rel[..i].to_string(), Node::ImplicitDir);
                }
            }
        }
        match (nodes.get(&rel).copied(), is_dir) {
            (None, _) | (Some(Node::ImplicitDir), true) => {}
            (Some(Node::ImplicitDir | Node::Dir), false) => {
                return Err(refuse("a file where a directory is"))
            }
            _ => return Err(refuse("duplicate entry")),
        }
        nodes.insert(rel.clone(), if is_dir { Node::Dir } else { Node::File });

        if is_dir {
            make_dirs(dest, &rel)?;
            continue;
        }
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(refuse(&format!(
                "{size} bytes, over the {} bytes limit per file",
                limits.max_file_bytes
            )));
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(refuse(&format!(
                "the files add up to over {} bytes",
                limits.max_total_bytes
            )));
        }
        let (parent, _) = rel.rsplit_once('/').unwrap_or(("", &rel));
        make_dirs(dest, parent)?;
        let path: PathBuf = dest.join(&rel);
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_permissions(fs::Permissions::from_mode(mode))?; // whatever the umask
        let mut out = HashingWriter::new(file);
        loop {
            let n = match entry.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&meter, e)),
            };
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let (sha256, written) = out.hasher.finish();
        if written != size {
            return Err(refuse("the archive is truncated"));
        }
        files.push(FileEntry {
            path: rel,
            sha256,
            size,
            mode,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
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

/// Unpack a plugin archive into `staging/raw`, find the plugin in it whatever the layout
/// (`kong/plugins/<name>/`, `<x>/kong/plugins/<name>/`, `<name>/handler.lua`, or
/// handler.lua at the root as in a KongPluginInstallation image, named by `fallback_name`),
/// validate it, and move it to `staging/<name>`; the rest of `staging/raw` is removed.
/// `staging` must exist and not hold `raw` yet. On error the caller removes `staging`.
pub fn extract_plugin<R: Read>(
    reader: R,
    staging: &Path,
    limits: &Limits,
    fallback_name: Option<&str>,
) -> Result<ExtractedPlugin> {
    let raw = staging.join("raw");
    fs::create_dir(&raw).with_context(|| format!("creating {}", raw.display()))?;
    let all = unpack_tar(reader, &raw, limits)?;

    let found = plugin::detect(&raw, fallback_name, Kind::Unsafe)?;
    let name = match (found.name, fallback_name) {
        (Some(n), _) => n,
        (None, Some(n)) if plugin::valid_plugin_name(n) => n.to_string(),
        (None, _) => match plugin::rockspec_name(&found.base) {
            Some(n) => n,
            None => bail_kind!(
                Kind::Usage,
                "the archive holds handler.lua at its root (a KongPluginInstallation image) and \
                 nothing names the plugin{}: pass --name",
                fallback_name
                    .map(|n| format!(" ({n:?} is not a valid plugin name)"))
                    .unwrap_or_default()
            ),
        },
    };
    plugin::validate_plugin_dir(&found.dir)?;
    let version =
        plugin::detect_version(&found.base, &found.dir).filter(|v| plugin::valid_version(v));

    let rel = found.dir.strip_prefix(&raw)?.to_string_lossy().into_owned();
    let files = all
        .into_iter()
        .filter_map(|mut f| {
            if !rel.is_empty() {
                f.path = f.path.strip_prefix(&format!("{rel}/"))?.to_string();
            }
            Some(f)
        })
        .collect();

    // Through a name that cannot clash with `raw` (a plugin may be called "raw").
    let tmp = staging.join(format!(".{name}.tmp"));
    fs::rename(&found.dir, &tmp)
        .with_context(|| format!("moving {} to {}", found.dir.display(), tmp.display()))?;
    if raw.exists() {
        fs::remove_dir_all(&raw).with_context(|| format!("removing {}", raw.display()))?;
    }
    let dir = staging.join(&name);
    fs::rename(&tmp, &dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    Ok(ExtractedPlugin {
        name,
        version,
        dir,
        files,
    })
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
