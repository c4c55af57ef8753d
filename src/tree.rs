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
                anyhow::bail!(
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

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}
