//! `pull`: a plugin artifact's archive as a file, or unpacked under the hostile-archive
//! rules into `DIR/kong/plugins/<name>/`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::Kind;
use crate::node::unpack::{self, ExtractedPlugin, Limits};
use crate::oci::artifact;
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
    pub layer: crate::oci::Descriptor,
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
    let loc = crate::oci::reference::parse(&o.reference)?;
    let st = store::open(&loc, &o.store).await?;
    let (bytes, desc) = store::fetch_resolved(st.as_ref(), &loc).await?;
    let what = loc.pinned(&desc.digest);
    let r = artifact::resolve_plugin(st.as_ref(), &bytes, &desc, &what).await?;
    let mut report = PullReport {
        reference: what,
        digest: desc.digest.clone(),
        layer: r.layer.clone(),
        path: PathBuf::new(),
        name: None,
        version: None,
        files: Vec::new(),
        source: None,
    };
    match &o.output {
        PullTo::File(out) => {
            let out = out.clone().unwrap_or_else(|| {
                PathBuf::from(artifact::default_file_name(
                    &r.layer,
                    &loc.repo_name(),
                    loc.tag(),
                ))
            });
            store::fetch_blob_to_file(st.as_ref(), &r.layer, &out).await?;
            report.path = out;
        }
        PullTo::Dir(dir) => {
            let hint = o
                .name
                .clone()
                .or_else(|| artifact::name_hint(&loc.repo_name()));
            let ex = pull_into(st.as_ref(), &r.layer, dir, &o.limits, hint).await?;
            report.path = ex.dir;
            report.name = Some(ex.name);
            report.version = ex.version;
            report.files = ex.files;
        }
    }
    report.source = st.served_from(&r.layer.digest);
    Ok(report)
}

/// Download `layer` into a staging dir inside `dir`, unpack it there, and move the plugin
/// to `dir/kong/plugins/<name>` (which must not exist yet).
async fn pull_into(
    st: &dyn ReadStore,
    layer: &crate::oci::Descriptor,
    dir: &Path,
    limits: &Limits,
    hint: Option<String>,
) -> anyhow::Result<ExtractedPlugin> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".kplug-pull-")
        .tempdir_in(dir)?;
    let blob = staging.path().join("blob");
    store::fetch_blob_to_file(st, layer, &blob).await?;
    let mut ex = extract_blob(&blob, staging.path(), *limits, hint).await?;
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
        unpack::extract_plugin_file(&blob, &stage, &limits, name_hint.as_deref())
    })
    .await?
}
