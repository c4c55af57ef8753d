//! `pull`: a plugin artifact's archive as a file, or unpacked under the hostile-archive
//! rules into `DIR/kong/plugins/<name>/`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{fail, Kind};
use crate::node::unpack::{ExtractedPlugin, Limits};
use crate::oci::artifact::{self, PluginContent};
use crate::oci::store::{self, ReadStore};
use crate::tree::FileEntry;

/// What `pull` asks for.
pub struct PullOptions {
    pub reference: String,
    /// Where to put it.
    pub output: PullTo,
    /// Plugin name for archives of bare files (default: the repository's last component).
    pub name: Option<String>,
    pub limits: Limits,
    pub store: store::Options,
}

pub enum PullTo {
    /// The archive itself, to this file (default: its title, or `<repo>-<tag>.tar.gz`).
    File(Option<PathBuf>),
    /// Unpacked into `DIR/kong/plugins/<name>/`.
    Dir(PathBuf),
}

/// What was pulled.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    pub reference: String,
    pub digest: String,
    /// The layers the plugin came from: one archive, or one file each.
    pub layers: Vec<crate::oci::Descriptor>,
    /// The archive file (file pulls) or the plugin directory (unpacked pulls).
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    /// Which mirror (or the primary) served the artifact, when mirrors are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

pub async fn pull(o: &PullOptions) -> anyhow::Result<PullReport> {
    if let PullTo::File(Some(out)) = &o.output {
        crate::tree::check_parent_dir(out)?;
    }
    let loc = crate::oci::reference::parse(&o.reference)?;
    let st = store::open(&loc, &o.store).await?;
    let (bytes, desc) = store::fetch_resolved(st.as_ref(), &loc).await?;
    let what = loc.pinned(&desc.digest);
    let r = artifact::resolve_plugin(st.as_ref(), &bytes, &desc, &what).await?;
    let mut report = PullReport {
        reference: what,
        digest: desc.digest.clone(),
        layers: r.content.layers(),
        path: PathBuf::new(),
        name: None,
        version: None,
        files: Vec::new(),
        source: None,
    };
    match &o.output {
        PullTo::File(out) => {
            let out = out
                .clone()
                .unwrap_or_else(|| default_output(&r.content, &loc));
            fetch_plugin(st.as_ref(), &r.content, &out, &o.limits).await?;
            report.path = out;
        }
        PullTo::Dir(dir) => {
            let hint = o
                .name
                .clone()
                .or_else(|| artifact::name_hint(&loc.repo_name()));
            let ex = pull_into(st.as_ref(), &r.content, dir, &o.limits, hint).await?;
            report.path = ex.dir;
            report.name = Some(ex.name);
            report.version = declared_version(&r).or(ex.version);
            report.files = ex.files;
        }
    }
    report.source = st.served_from(&r.content.layers()[0].digest);
    Ok(report)
}

/// The version the artifact's manifest declares (what `kplug push --version` sets), when
/// it is one a plugin may have: it wins over what the archive's files say.
pub fn declared_version(r: &artifact::Resolved) -> Option<String> {
    r.declared_version()
        .filter(|v| crate::node::plugin::valid_version(v))
        .map(str::to_string)
}

/// `pull` without `-o`: the archive's title, or `<repo>-<tag>.tar.gz` (`.tar` for files
/// gathered from one layer each).
fn default_output(content: &PluginContent, loc: &crate::oci::reference::Location) -> PathBuf {
    let tag = loc.tag();
    PathBuf::from(match content {
        PluginContent::Archive(layer) => artifact::default_file_name(layer, &loc.repo_name(), tag),
        PluginContent::Files(f) => {
            let untitled = crate::oci::Descriptor::new("", &f[0].1.digest, 0);
            let n = artifact::default_file_name(&untitled, &loc.repo_name(), tag);
            format!("{}.tar", n.trim_end_matches(".tar.gz"))
        }
    })
}

/// Write the plugin of an artifact to `dest` as one archive: its archive layer as it is,
/// or a tar of its file layers (each fetched and checked against its digest, within
/// `limits`, under its cleaned title). Nothing is left at `dest` on error.
pub async fn fetch_plugin(
    st: &dyn ReadStore,
    content: &PluginContent,
    dest: &Path,
    limits: &Limits,
) -> anyhow::Result<()> {
    let files = match content {
        PluginContent::Archive(layer) => return store::fetch_blob_to_file(st, layer, dest).await,
        PluginContent::Files(files) => files,
    };
    check_file_layers(files, limits)?;
    let parts = tempfile::Builder::new()
        .prefix(".kplug-parts-")
        .tempdir_in(crate::tree::parent_dir(dest))
        .map_err(|e| anyhow::anyhow!("cannot write beside {}: {}", dest.display(), e.kind()))?;
    let mut fetched = Vec::new();
    for (i, (path, d)) in files.iter().enumerate() {
        let p = parts.path().join(i.to_string());
        store::fetch_blob_to_file(st, d, &p).await?;
        fetched.push((path.clone(), p));
    }
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || write_tar(&fetched, &dest)).await?
}

/// File layers within the limits a node applies, judged by their descriptors before any
/// download.
fn check_file_layers(
    files: &[(String, crate::oci::Descriptor)],
    limits: &Limits,
) -> anyhow::Result<()> {
    let total: u64 = files.iter().map(|(_, d)| d.size).sum();
    let over = |what: String| fail(Kind::Unsafe, format!("artifact refused: {what}"));
    if files.len() as u64 > limits.max_files {
        return Err(over(format!(
            "{} files, more than the {} allowed",
            files.len(),
            limits.max_files
        )));
    }
    if let Some((p, d)) = files.iter().find(|(_, d)| d.size > limits.max_file_bytes) {
        return Err(over(format!(
            "{p} is {} bytes, over the {} bytes limit per file",
            d.size, limits.max_file_bytes
        )));
    }
    if total > limits.max_total_bytes {
        return Err(over(format!(
            "{total} bytes in all, over the {} bytes limit",
            limits.max_total_bytes
        )));
    }
    Ok(())
}

/// A plain tar of `(path, file)` pairs: regular files, mode 0644, times and owners zeroed.
fn write_tar(files: &[(String, PathBuf)], dest: &Path) -> anyhow::Result<()> {
    let tmp = crate::tree::AtomicFile::create(dest, crate::tree::USER_MODE)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(tmp.reopen()?));
    for (path, file) in files {
        let f = std::fs::File::open(file)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(f.metadata()?.len());
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, f)
            .with_context(|| format!("adding {path} to {}", dest.display()))?;
    }
    let w = b.into_inner()?;
    w.into_inner().map_err(|e| e.into_error())?;
    tmp.commit()
}

/// Download the plugin into a staging dir inside `dir`, unpack it there, and move it to
/// `dir/kong/plugins/<name>` (which must not exist yet).
async fn pull_into(
    st: &dyn ReadStore,
    content: &PluginContent,
    dir: &Path,
    limits: &Limits,
    hint: Option<String>,
) -> anyhow::Result<ExtractedPlugin> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".kplug-pull-")
        .tempdir_in(dir)
        .map_err(|e| anyhow::anyhow!("cannot write into {}: {}", dir.display(), e.kind()))?;
    let blob = staging.path().join("blob");
    fetch_plugin(st, content, &blob, limits).await?;
    let mut ex = extract_blob(&blob, staging.path(), *limits, hint)
        .await
        .map_err(|e| {
            // Messages name the directory asked for, never the staging one inside it.
            let msg = format!("{e:#}").replace(
                &staging.path().display().to_string(),
                &dir.display().to_string(),
            );
            crate::error::fail(crate::error::kind_of(&e), msg)
        })?;
    let target = dir.join("kong/plugins").join(&ex.name);
    if target.exists() {
        crate::bail_kind!(
            Kind::Usage,
            "{} already exists; remove it, pull into an empty directory, or use `kplug install` to replace plugins atomically",
            target.display()
        );
    }
    std::fs::create_dir_all(crate::tree::parent_dir(&target))?;
    std::fs::rename(&ex.dir, &target)
        .with_context(|| format!("moving into {}", target.display()))?;
    ex.dir = target;
    Ok(ex)
}

/// Unpack a downloaded plugin archive into `staging/x` off the async runtime (the unpack
/// is blocking file I/O), whatever layout it uses.
pub async fn extract_blob(
    blob: &Path,
    staging: &Path,
    limits: Limits,
    name_hint: Option<String>,
) -> anyhow::Result<ExtractedPlugin> {
    let stage = staging.join("x");
    std::fs::create_dir(&stage)?;
    let blob = blob.to_path_buf();
    tokio::task::spawn_blocking(move || {
        crate::node::kinds::extract_plugin_file(&blob, &stage, &limits, name_hint.as_deref())
    })
    .await?
}
