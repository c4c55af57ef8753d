//! `push`: a plugin archive (or a directory, packed first) as the artifact
//! `cosign upload blob` writes, optionally signed in the same run.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::error::Kind;
use crate::node::plugin;
use crate::node::unpack::Limits;
use crate::oci::artifact;
use crate::oci::reference::Location;
use crate::oci::store::{self, WriteStore};
use crate::oci::{self, Descriptor};

/// What `push` asks for.
pub struct PushOptions {
    /// Plugin archive (.tar.gz) or plugin directory.
    pub path: PathBuf,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:REF] (tag defaults to `latest`).
    pub reference: String,
    /// Manifest annotations, as `cosign upload blob -a`; they win over kplug's own.
    pub annotations: BTreeMap<String, String>,
    /// Layer media type (cosign's `--ct`); default sniffed.
    pub media_type: Option<String>,
    /// The manifest's OCI 1.1 `artifactType` (`oras push --artifact-type`); none by default,
    /// as cosign writes it.
    pub artifact_type: Option<String>,
    /// Plugin name and version: used to pack a directory, and declared in the manifest.
    pub name: Option<String>,
    pub version: Option<String>,
    /// The limits a node installs under: what they refuse is not pushed. `None`
    /// (`--force`): push any file as an opaque blob.
    pub check: Option<Limits>,
    /// Sign the pushed digest with this cosign key.
    pub sign_key: Option<PathBuf>,
    /// Sign in the Sigstore bundle format (see `SignOptions::new_bundle_format`).
    pub new_bundle_format: bool,
    /// Pack `path` as a plugin server first.
    pub server: Option<super::pack::ServerSpec>,
    pub store: store::Options,
}

/// What a push produced.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// `REPO@DIGEST`.
    pub reference: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The plugin pushed, as a node will see it (unknown with `--force`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<super::sign::SignReport>,
}

/// The file to push and what it is.
struct Source {
    file: PathBuf,
    /// The layer's title: the archive's file name.
    title: String,
    name: Option<String>,
    version: Option<String>,
}

pub async fn push(o: &PushOptions) -> anyhow::Result<PushReport> {
    // Decrypt the key first: a wrong password should fail before anything is uploaded.
    let key = o
        .sign_key
        .as_deref()
        .map(super::keys::load_signing_key)
        .transpose()?;
    if let Some(t) = &o.artifact_type {
        artifact::check_artifact_type(t)?;
    }
    let loc = crate::oci::reference::parse(&o.reference)?;
    if loc.digest().is_some() {
        crate::bail_kind!(Kind::Usage, "push to a tag, not a digest: {}", o.reference);
    }
    // tempfile's own error names the temp directory; the kind alone is what helps.
    let packed_dir = tempfile::tempdir()
        .map_err(|e| anyhow::anyhow!("creating a scratch directory: {}", e.kind()))?;
    // Checked before the destination is opened: nothing is sent for a refused file.
    let src = source_file(o, &loc, packed_dir.path())?;
    let dst = store::open_writable(&loc, &o.store).await?;
    let mut report = push_file(dst.as_ref(), &loc, &src, o).await?;
    if let Some(key) = key {
        sign_pushed(o, &key, &loc, dst.as_ref(), &mut report).await?;
    }
    Ok(report)
}

/// Sign what was just pushed, in the store it was pushed to (no second open or login).
pub(crate) async fn sign_pushed(
    o: &PushOptions,
    key: &crate::trust::SigningKey,
    loc: &Location,
    dst: &dyn WriteStore,
    report: &mut PushReport,
) -> anyhow::Result<()> {
    let sopts = super::sign::SignOptions {
        reference: o.reference.clone(),
        key: o.sign_key.clone().unwrap_or_default(),
        annotations: BTreeMap::new(),
        output_signature: None,
        output_payload: None,
        new_bundle_format: o.new_bundle_format,
        store: o.store.clone(),
    };
    let desc = Descriptor::new(oci::MANIFEST_V1, &report.digest, report.size);
    let target = super::sign::SignTarget {
        loc,
        store: dst,
        desc: &desc,
    };
    report.signature = Some(super::sign::sign_digest(&target, key, &sopts, &o.store).await?);
    Ok(())
}

/// The file to push: the directory packed into `tmp`, or the archive given, checked as a
/// node would check it (unless `--force`).
fn source_file(o: &PushOptions, loc: &Location, tmp: &Path) -> anyhow::Result<Source> {
    if o.path.is_dir() || o.server.is_some() {
        let p = super::pack::pack(
            &super::pack::PackOptions {
                dir: o.path.clone(),
                output: None,
                name: o.name.clone(),
                version: o.version.clone(),
                check: o.check,
                server: o.server.clone(),
            }
            .into_dir(tmp),
        )?;
        crate::progress::note(format!(
            "packed {} {} ({} files, {})",
            p.name,
            p.version,
            p.files.len(),
            p.digest
        ));
        return Ok(Source {
            title: plugin::default_archive_name(&p.name, &p.version),
            file: p.path,
            name: Some(p.name),
            version: Some(p.version),
        });
    }
    if !o.path.is_file() {
        crate::bail_kind!(
            Kind::Usage,
            "{} does not exist: give a plugin .tar.gz or directory",
            o.path.display()
        );
    }
    let title = o
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|t| crate::oci::artifact::clean_title(t).is_ok())
        .unwrap_or_else(|| "plugin.tar.gz".to_string());
    let (mut name, mut version) = (o.name.clone(), o.version.clone());
    if let Some(limits) = &o.check {
        let hint = artifact::name_hint(&loc.repo_name());
        let c = super::pack::check_archive(
            &o.path,
            &o.path,
            o.name.as_deref(),
            hint.as_deref(),
            limits,
        )?;
        for n in &c.notes {
            crate::progress::note(n);
        }
        if let Some(n) = &o.name {
            if !c.names.contains(n) {
                crate::bail_kind!(
                    Kind::Usage,
                    "{} holds {}, not {n:?} (--name)",
                    o.path.display(),
                    c.names.join(", ")
                );
            }
        }
        // A rock may hold several plugins: then the manifest names none of them.
        if let [one] = &c.names[..] {
            name = Some(one.clone());
        }
        version = version.or(c.version);
    }
    Ok(Source {
        file: o.path.clone(),
        title,
        name,
        version,
    })
}

/// The manifest's annotations: the plugin's name and version as OCI's title and version
/// (so `list` shows what `--version` said, and ORAS and registries' UIs name it), then
/// the user's `-a`, which win.
fn manifest_annotations(src: &Source, o: &PushOptions) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if let Some(n) = &src.name {
        a.insert(oci::ANN_TITLE.to_string(), n.clone());
    }
    if let Some(v) = &src.version {
        a.insert(oci::ANN_VERSION.to_string(), v.clone());
    }
    a.extend(o.annotations.clone());
    a
}

/// From this size up a file is hashed while it uploads ([`WriteStore::push_blob_hashing`]):
/// below it, hashing first (45 ms for 64 MiB) costs less than that path's extra request
/// on a distant registry.
const HASH_WHILE_UPLOADING: u64 = 64 << 20;

/// Upload the file unless the store has it. Returns its digest and size.
async fn push_layer(dst: &dyn WriteStore, file: &Path) -> anyhow::Result<(String, u64)> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let bar = crate::progress::bar(size, "pushing");
    let (digest, size, uploaded) = if size < HASH_WHILE_UPLOADING {
        let (digest, size) = crate::digest::sha256_file(file)?;
        let desc = Descriptor::new("application/octet-stream", &digest, size);
        let uploaded = store::push_file(dst, &desc, file, bar.clone()).await?;
        (digest, size, uploaded)
    } else {
        let src = store::BlobSource::File(file.to_path_buf(), bar.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = file.to_path_buf();
        let hash = async move {
            let (digest, n) =
                tokio::task::spawn_blocking(move || crate::digest::sha256_file(&path)).await??;
            anyhow::ensure!(n == size, "{} changed while being pushed", file.display());
            let have = dst.blob_exists(&digest).await?;
            let _ = tx.send((!have).then(|| digest.clone()));
            anyhow::Ok(digest)
        };
        let (digest, uploaded) = tokio::join!(hash, dst.push_blob_hashing(size, &src, rx));
        // The hash's error first: it is why an upload waiting for the digest stopped.
        (digest?, size, uploaded?)
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if !uploaded {
        crate::progress::note(format!("layer {digest} already present"));
    }
    Ok((digest, size))
}

async fn push_file(
    dst: &dyn WriteStore,
    loc: &Location,
    src: &Source,
    o: &PushOptions,
) -> anyhow::Result<PushReport> {
    let file = &src.file;
    let (digest, size) = push_layer(dst, file).await?;
    let media_type = match &o.media_type {
        Some(m) => m.clone(),
        None => {
            let mut head = [0u8; 2];
            let n = tokio::fs::File::open(file).await?.read(&mut head).await?;
            crate::oci::artifact::sniff_media_type(&head[..n]).to_string()
        }
    };
    let mut layer = Descriptor::new(&media_type, &digest, size);
    layer
        .annotations
        .insert(oci::ANN_TITLE.to_string(), src.title.clone());
    let annotations = manifest_annotations(src, o);
    let (manifest, config) = crate::oci::artifact::cosign_blob_manifest(
        &layer,
        &annotations,
        o.artifact_type.as_deref(),
    );
    let config_desc = store::push_bytes(dst, oci::CONFIG_V1, &config).await?;
    let tag = loc.tag().unwrap_or("latest");
    let mdigest = dst
        .push_manifest(&manifest, oci::MANIFEST_V1, Some(tag))
        .await?;
    Ok(PushReport {
        reference: loc.pinned(&mdigest),
        digest: mdigest,
        size: manifest.len() as u64,
        media_type: oci::MANIFEST_V1.to_string(),
        name: src.name.clone(),
        version: src.version.clone(),
        annotations,
        config: config_desc,
        layers: vec![layer],
        signature: None,
    })
}
