//! One plugin tree from whatever `SRC` names: a plugin directory, a plugin .tar.gz, or a
//! reference (registry, `oci:` layout, archive), verified before its layer is downloaded.
//! Every kind goes through the same hostile-archive unpacking, so the tree handed on is
//! normalised (regular files and directories, modes 0644/0755).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{fail, Kind};
use crate::node::unpack::{ExtractedPlugin, Limits};
use crate::oci::store::{self, ReadStore};
use crate::oci::Manifest;
use crate::tree::FileEntry;
use crate::trust::Policy;

/// Where the plugin comes from and how to read it.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// A plugin directory, a plugin .tar.gz, or a reference.
    pub src: String,
    pub name: Option<String>,
    /// Version for a directory whose rockspec and handler do not say it.
    pub version: Option<String>,
    pub store: store::Options,
    /// Keys a reference must be signed by; `None` only with `--insecure-skip-verify`.
    pub policy: Option<Policy>,
    pub limits: Limits,
}

/// A plugin tree unpacked into a temporary directory (removed on drop).
#[derive(Debug)]
pub struct Loaded {
    pub name: String,
    pub version: Option<String>,
    /// The plugin directory (handler.lua at its top).
    pub dir: PathBuf,
    /// Relative to `dir`, sorted.
    pub files: Vec<FileEntry>,
    /// For a reference: pinned to the digest that was verified and read.
    pub pinned: Option<String>,
    /// Key fingerprint that verified the reference.
    pub signer: Option<String>,
    /// For a reference: its image manifest and the downloaded plugin layer.
    pub manifest: Option<Manifest>,
    pub layer_file: Option<PathBuf>,
    pub layer: Option<crate::oci::Descriptor>,
    _tmp: tempfile::TempDir,
}

impl Loaded {
    /// `(path, size)` of every file.
    pub fn sizes(&self) -> Vec<(String, u64)> {
        self.files
            .iter()
            .map(|f| (f.path.clone(), f.size))
            .collect()
    }
}

/// Whether `src` names a reference rather than a local directory or file.
pub fn is_reference(src: &str) -> bool {
    !Path::new(src).exists()
}

/// Read the plugin `o.src` names.
pub async fn load(o: &SourceOptions) -> anyhow::Result<Loaded> {
    let tmp = tempfile::Builder::new().prefix("kplug-k8s-").tempdir()?;
    let path = Path::new(&o.src);
    if path.is_dir() {
        let src = crate::node::plugin::locate(path, o.name.as_deref(), o.version.as_deref())?;
        let archive = tmp.path().join("plugin.tar.gz");
        crate::node::plugin::pack(&src, &archive)?;
        // Packed here from the user's own tree: no compression-ratio alarm to raise.
        let limits = Limits {
            max_ratio: u64::MAX,
            ..o.limits
        };
        let ex = extract(&archive, tmp.path(), limits, Some(src.name.clone())).await?;
        return Ok(loaded(ex, Some(src.version), tmp, None));
    }
    if path.is_file() {
        let ex = extract(path, tmp.path(), o.limits, o.name.clone()).await?;
        return Ok(loaded(ex, None, tmp, None));
    }
    let policy = o.policy.as_ref();
    let r = fetch_verified(o, policy, tmp.path()).await?;
    // A flat layer (a KPI image) does not name its plugin: `push --kpi` records it as the
    // manifest's title; else the repository's last component.
    let title = r
        .manifest
        .annotations
        .get(crate::oci::ANN_TITLE)
        .filter(|t| crate::node::plugin::valid_plugin_name(t));
    let hint = o
        .name
        .clone()
        .or_else(|| title.cloned())
        .or_else(|| crate::oci::artifact::name_hint(&r.repo_name));
    let ex = extract(&r.layer_file, tmp.path(), o.limits, hint).await?;
    if let Some(n) = &o.name {
        if n != &ex.name {
            crate::bail_kind!(
                Kind::Usage,
                "{} holds plugin {:?}, not {n:?}",
                r.pinned,
                ex.name
            );
        }
    }
    Ok(loaded(ex, None, tmp, Some(r)))
}

fn loaded(
    ex: ExtractedPlugin,
    version: Option<String>,
    tmp: tempfile::TempDir,
    fetched: Option<Fetched>,
) -> Loaded {
    let (pinned, signer, manifest, layer_file, layer) = match fetched {
        Some(f) => (
            Some(f.pinned),
            f.signer,
            Some(f.manifest),
            Some(f.layer_file),
            Some(f.layer),
        ),
        None => (None, None, None, None, None),
    };
    Loaded {
        name: ex.name,
        version: version.or(ex.version),
        dir: ex.dir,
        files: ex.files,
        pinned,
        signer,
        manifest,
        layer_file,
        layer,
        _tmp: tmp,
    }
}

/// Unpack `archive` into `work/stage/`.
async fn extract(
    archive: &Path,
    work: &Path,
    limits: Limits,
    hint: Option<String>,
) -> anyhow::Result<ExtractedPlugin> {
    let staging = work.join("stage");
    std::fs::create_dir(&staging)?;
    let archive = archive.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&archive)
            .with_context(|| format!("opening {}", archive.display()))?;
        crate::node::unpack::extract_plugin(
            std::io::BufReader::new(f),
            &staging,
            &limits,
            hint.as_deref(),
        )
    })
    .await?
}

struct Fetched {
    pinned: String,
    repo_name: String,
    signer: Option<String>,
    manifest: Manifest,
    layer_file: PathBuf,
    layer: crate::oci::Descriptor,
}

/// Resolve the reference once, verify its digest, then download its plugin layer.
async fn fetch_verified(
    o: &SourceOptions,
    policy: Option<&Policy>,
    work: &Path,
) -> anyhow::Result<Fetched> {
    let loc = crate::oci::reference::parse(&o.src).map_err(|e| {
        fail(
            crate::error::kind_of(&e),
            format!(
                "{e:#} ({:?} is neither a plugin directory nor a file here, so it was read as a reference)",
                o.src
            ),
        )
    })?;
    let st = store::open(&loc, &o.store).await?;
    let (bytes, desc) = store::fetch_resolved(st.as_ref(), &loc).await?;
    let pinned = loc.pinned(&desc.digest);
    let signer = match policy {
        None => {
            eprintln!("WARNING: --insecure-skip-verify: reading {pinned} WITHOUT verifying its signature.");
            None
        }
        Some(p) => {
            let over = crate::ops::verify::signature_store(&o.store).await?;
            let sigs: &dyn ReadStore = over.as_deref().unwrap_or(st.as_ref());
            let v = crate::ops::verify::verify_digest(sigs, &desc.digest, p)
                .await
                .with_context(|| format!("verifying {pinned}; nothing was rendered"))?;
            crate::progress::note(format!("verified {pinned}"));
            v.into_iter().next().map(|v| v.signer)
        }
    };
    let r = crate::oci::artifact::resolve_plugin(st.as_ref(), &bytes, &desc, &pinned).await?;
    let layer_file = work.join("layer");
    crate::ops::pull::fetch_plugin(st.as_ref(), &r.content, &layer_file, &o.limits).await?;
    // One file per layer (ORAS) is gathered into one tar; its first layer stands for it
    // (no KPI image has that shape, which check_kpi_image then says).
    let layer = r.content.layers().swap_remove(0);
    Ok(Fetched {
        pinned,
        repo_name: loc.repo_name(),
        signer,
        manifest: r.manifest,
        layer_file,
        layer,
    })
}
