//! `pack`: a plugin directory into a reproducible `<name>-<version>.tar.gz`, checked the way
//! a node checks it before install.

use std::path::{Path, PathBuf};

use crate::error::{fail, kind_of, Kind};
use crate::node::external::{self, Runtime, ServerManifest};
use crate::node::kinds::{self, Checked};
use crate::node::plugin;
use crate::node::unpack::{Limits, NameHints};

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
    /// Pack a plugin server (an executable, or a directory holding its entrypoint)
    /// instead of a Lua tree.
    pub server: Option<ServerSpec>,
}

/// How Kong runs a plugin server, recorded in the artifact's `kplug-server.json`.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub runtime: Runtime,
    /// The executable inside a directory (one file: the file itself).
    pub entrypoint: Option<String>,
    /// What makes it print its plugin info (default by runtime: `-dump` / `--dump`).
    pub query_args: Option<Vec<String>>,
    /// Socket file name under Kong's prefix (default by runtime).
    pub socket: Option<String>,
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
    if let Some(spec) = &o.server {
        return pack_server(o, spec);
    }
    if o.dir.is_file() {
        return pack_file(o);
    }
    let src = plugin::locate(&o.dir, o.name.as_deref(), o.version.as_deref())?;
    let file = plugin::default_archive_name(&src.name, &src.version);
    let out = output_path(o, &file);
    crate::tree::check_parent_dir(&out)?;
    let Some(limits) = &o.check else {
        return plugin::pack_with(&src, &out, &NO_LIMITS);
    };
    let stage = scratch_beside(&out)?;
    let mut p = plugin::pack_with(&src, &stage.path().join(&file), limits)?;
    check_archive(&p.path, &out, Some(&src.name), None, limits)?;
    std::fs::rename(&p.path, &out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.kind()))?;
    p.path = out;
    Ok(p)
}

/// Where a packed file goes: `output` itself, a file named `file` inside an `output`
/// directory, or `file` in the current directory.
fn output_path(o: &PackOptions, file: &str) -> PathBuf {
    match &o.output {
        Some(d) if d.is_dir() => d.join(file),
        Some(f) => f.clone(),
        None => PathBuf::from(file),
    }
}

/// A plugin server: its files and `kplug-server.json` into a reproducible tar.gz, then
/// the node's check (the manifest, the entrypoint, the limits).
fn pack_server(o: &PackOptions, spec: &ServerSpec) -> anyhow::Result<plugin::Packed> {
    let Some(name) = o.name.clone() else {
        crate::bail_kind!(
            Kind::Usage,
            "a plugin server needs its plugin name: add --name (the name its query command lists)"
        );
    };
    let entrypoint = match (&spec.entrypoint, o.dir.is_dir()) {
        (Some(e), _) => e.clone(),
        (None, false) => name.clone(),
        (None, true) => crate::bail_kind!(
            Kind::Usage,
            "{} is a directory: say which file Kong starts with --entrypoint",
            o.dir.display()
        ),
    };
    let m = ServerManifest {
        name,
        version: o.version.clone(),
        runtime: spec.runtime,
        entrypoint,
        query_args: spec.query_args.clone(),
        socket: spec.socket.clone(),
    };
    let file = plugin::default_archive_name(&m.name, m.version.as_deref().unwrap_or("0.0.0"));
    let out = output_path(o, &file);
    crate::tree::check_parent_dir(&out)?;
    let limits = o.check.unwrap_or(NO_LIMITS);
    let stage = scratch_beside(&out)?;
    let mut p = external::pack(&o.dir, &m, &stage.path().join(&file), &limits)?;
    if let Some(l) = &o.check {
        check_archive(&p.path, &out, Some(&m.name), None, l)?;
    }
    std::fs::rename(&p.path, &out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.kind()))?;
    p.path = out;
    Ok(p)
}

/// An archive already made (a `.rock` from `luarocks pack`, a .tar.gz): checked as a
/// node would, then copied to the output as it is (a rock keeps its `rock_manifest`).
fn pack_file(o: &PackOptions) -> anyhow::Result<plugin::Packed> {
    let file = o
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = output_path(o, &file);
    crate::tree::check_parent_dir(&out)?;
    let c = check_archive(
        &o.dir,
        &o.dir,
        o.name.as_deref(),
        None,
        &o.check.unwrap_or(NO_LIMITS),
    )?;
    for n in &c.notes {
        crate::progress::note(n);
    }
    let same = std::fs::canonicalize(&out).ok() == std::fs::canonicalize(&o.dir).ok();
    if !same {
        let stage = scratch_beside(&out)?;
        let tmp = stage.path().join(&file);
        std::fs::copy(&o.dir, &tmp)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {}", o.dir.display(), e.kind()))?;
        std::fs::rename(&tmp, &out)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.kind()))?;
    }
    let (digest, size) = crate::digest::sha256_file(&out)?;
    Ok(plugin::Packed {
        name: c.names.join(","),
        version: o.version.clone().or(c.version).unwrap_or_default(),
        path: out,
        digest,
        size,
        files: Vec::new(),
    })
}

fn scratch_beside(out: &Path) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(".kplug-pack-")
        .tempdir_in(crate::tree::parent_dir(out))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.kind()))
}

/// `--force`: pack whatever the tree holds.
const NO_LIMITS: Limits = Limits {
    max_files: u64::MAX,
    max_total_bytes: u64::MAX,
    max_file_bytes: u64::MAX,
    max_ratio: u64::MAX,
};

/// What a node would make of `file`: [`kinds::check_file`], the same gate, limits and
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
    kinds::check_file(file, limits, &hints).map_err(|e| {
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
