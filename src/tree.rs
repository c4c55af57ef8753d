//! Small filesystem helpers shared by pack, unpack and install.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One regular file of a plugin tree, as recorded in receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the plugin directory, `/`-separated.
    pub path: String,
    /// `sha256:<hex>` of the content.
    pub sha256: String,
    pub size: u64,
    /// Permission bits (0o644 or 0o755 after normalisation).
    pub mode: u32,
}

/// Every regular file under `dir`, sorted by path. Symlinks and other non-regular
/// entries are an error: kplug never creates them.
pub fn hash_tree(dir: &Path) -> anyhow::Result<Vec<FileEntry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for ent in std::fs::read_dir(&abs).with_context(|| format!("reading {}", abs.display()))? {
            let ent = ent?;
            let meta = std::fs::symlink_metadata(ent.path())?;
            let r = rel.join(ent.file_name());
            if meta.is_dir() {
                stack.push(r);
            } else if meta.is_file() {
                let (sha256, size) = crate::digest::sha256_file(&ent.path())?;
                out.push(FileEntry {
                    path: r.to_string_lossy().replace('\\', "/"),
                    sha256,
                    size,
                    mode: meta.permissions().mode() & 0o7777,
                });
            } else {
                crate::bail_kind!(
                    crate::error::Kind::Unsafe,
                    "{} is not a regular file or directory",
                    ent.path().display()
                );
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The directory a file is in (`.` for a bare file name), where its temp file goes.
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuse, naming it, a directory that is missing or is not one, before anything is
/// written into it: `pull -o missing/dir/f.tar.gz` says which directory does not exist.
pub fn check_parent_dir(path: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => crate::bail_kind!(
            crate::error::Kind::Usage,
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::bail_kind!(
            crate::error::Kind::Usage,
            "cannot write {}: directory {} does not exist (create it first)",
            path.display(),
            dir.display()
        ),
        Err(e) => crate::bail_kind!(
            crate::error::Kind::Usage,
            "cannot write {}: {}: {}",
            path.display(),
            dir.display(),
            e.kind()
        ),
    }
}

/// Mode of files kplug writes for the user (pack output, pull `-o`, bundles): 0644 before
/// the umask, like any tool's output. Key files use [`SECRET_MODE`].
pub const USER_MODE: u32 = 0o644;
/// Mode of private key files.
pub const SECRET_MODE: u32 = 0o600;

/// A file written beside its final path and renamed over it by [`commit`](Self::commit),
/// after an fsync: readers see the old content or the new one, never a part of it. Dropped
/// without a commit (an error, a cancelled task), the temp file is removed.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Start writing `path` with permission bits `mode` (before the umask).
    pub fn create(path: &Path, mode: u32) -> anyhow::Result<AtomicFile> {
        use std::os::unix::fs::PermissionsExt;
        check_parent_dir(path)?;
        let tmp = tempfile::Builder::new()
            .prefix(".kplug-tmp")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(parent_dir(path))
            // The io error alone: tempfile's own message names the temp file.
            .map_err(|e| {
                crate::error::fail(
                    crate::error::Kind::Other,
                    format!("cannot write {}: {}", path.display(), e.kind()),
                )
            })?;
        Ok(AtomicFile {
            tmp,
            path: path.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    /// A second handle on the temp file, for async writers (`tokio::fs::File::from_std`).
    pub fn reopen(&self) -> anyhow::Result<std::fs::File> {
        Ok(self.tmp.reopen()?)
    }

    /// fsync, then rename over the final path.
    pub fn commit(self) -> anyhow::Result<()> {
        self.tmp.as_file().sync_all()?;
        let path = self.path;
        self.tmp
            .persist(&path)
            .with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }
}

/// Write `bytes` to `path` atomically (see [`AtomicFile`]), mode 0644 before the umask.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(path, bytes, USER_MODE)
}

/// [`write_atomic`] with explicit permission bits.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = AtomicFile::create(path, mode)?;
    f.file().write_all(bytes)?;
    f.commit()
}

/// Swap two paths atomically (`renameat2(RENAME_EXCHANGE)`): both must exist, and after
/// it each name holds what the other held. Where the file system cannot (`EINVAL`,
/// `ENOSYS`), two renames through a `.old` name beside `b`.
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(e);
    }
    let mut old = b.as_os_str().to_owned();
    old.push(".old");
    std::fs::rename(b, &old)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&old, a)
}

#[cfg(test)]
mod exchange_tests {
    #[test]
    fn exchange_swaps_two_trees() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("new"), "").unwrap();
        std::fs::write(b.join("old"), "").unwrap();
        super::exchange(&a, &b).unwrap();
        assert!(b.join("new").is_file() && a.join("old").is_file());
        assert!(super::exchange(&t.path().join("missing"), &b).is_err());
    }
}

/// Most bytes kplug reads back from a record of its own (a receipt, a journal): one for
/// the 10,000 files an archive may hold is about 2 MB.
pub const MAX_RECORD_BYTES: u64 = 32 << 20;

/// The bytes of `path`, refused past `cap` (a record replaced by something huge, or by a
/// link to /dev/zero, must not exhaust memory while the lock is held).
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("over {cap} bytes, more than kplug ever writes there"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_read_bounded() {
        // A receipt replaced by a link to /dev/zero: refused after cap + 1 bytes.
        let e = super::read_capped(std::path::Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
