//! `pack`: a plugin directory into a reproducible `<name>-<version>.tar.gz`, checked the way
//! a node checks it before install.

use std::path::{Path, PathBuf};

use crate::error::{fail, kind_of};
use crate::node::plugin;
use crate::node::unpack::{self, Checked, Limits, NameHints};

/// What `pack` asks for.
pub struct PackOptions {
    /// Plugin directory: bare, `kong/plugins/<name>/…`, or a LuaRocks tree.
    pub dir: PathBuf,
    /// Output file (default `<name>-<version>.tar.gz` in the current directory).
    pub output: Option<PathBuf>,
    pub name: Option<String>,
    pub version: Option<String>,
    /// Refuse an archive a node would refuse under these limits; `None` (`--force`): pack
    /// whatever the tree holds.
    pub check: Option<Limits>,
}

impl PackOptions {
    /// The same, writing the default file name into `dir`.
    pub fn into_dir(self, dir: &Path) -> PackOptions {
        PackOptions {
            output: Some(dir.to_path_buf()),
            ..self
        }
    }
}

/// Pack; an `output` that is a directory gets the default file name inside it. With a
/// check, a tree over the limits is refused before anything is written, and the archive is
/// packed beside `output` and takes its place only once a node would accept it, so a
/// refused pack never replaces an earlier archive.
pub fn pack(o: &PackOptions) -> anyhow::Result<plugin::Packed> {
    let src = plugin::locate(&o.dir, o.name.as_deref(), o.version.as_deref())?;
    let file = plugin::default_archive_name(&src.name, &src.version);
    let out = match &o.output {
        Some(d) if d.is_dir() => d.join(&file),
        Some(f) => f.clone(),
        None => PathBuf::from(&file),
    };
    crate::tree::check_parent_dir(&out)?;
    let Some(limits) = &o.check else {
        return plugin::pack_with(&src, &out, &NO_LIMITS);
    };
    let stage = tempfile::Builder::new()
        .prefix(".kplug-pack-")
        .tempdir_in(crate::tree::parent_dir(&out))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.kind()))?;
    let mut p = plugin::pack_with(&src, &stage.path().join(&file), limits)?;
    check_archive(&p.path, &out, Some(&src.name), None, limits)?;
    std::fs::rename(&p.path, &out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.kind()))?;
    p.path = out;
    Ok(p)
}

/// `--force`: pack whatever the tree holds.
const NO_LIMITS: Limits = Limits {
    max_files: u64::MAX,
    max_total_bytes: u64::MAX,
    max_file_bytes: u64::MAX,
    max_ratio: u64::MAX,
};

/// What a node would make of `file`: [`unpack::check_file`], the same gate, limits and
/// plugin checks as `install`, in a scratch directory; nothing is kept. The one check
/// `pack` and `push` run before publishing; messages call the file `shown` and say how to
/// publish it anyway. `name` is `--name`; `repo_hint` names a plugin of bare files.
pub fn check_archive(
    file: &Path,
    shown: &Path,
    name: Option<&str>,
    repo_hint: Option<&str>,
    limits: &Limits,
) -> anyhow::Result<Checked> {
    let hints = NameHints {
        flag: name.map(str::to_string),
        repo: repo_hint.map(str::to_string),
    };
    unpack::check_file(file, limits, &hints).map_err(|e| {
        let why = format!("{e:#}").replace(&file.display().to_string(), "");
        let why = crate::progress::escape(why.trim_start_matches(": "));
        fail(
            kind_of(&e),
            format!(
                "{} is not a plugin archive a node would install: {why}. \
                 To publish it anyway as an opaque file, add --force",
                shown.display()
            ),
        )
    })
}
