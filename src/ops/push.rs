//! `push`: a plugin archive (or a directory, packed first) as the artifact
//! `cosign upload blob` writes, optionally signed in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::error::Kind;
use crate::oci::reference::Location;
use crate::oci::store::{self, WriteStore};
use crate::oci::{self, Descriptor};

/// What `push` asks for.
pub struct PushOptions {
    /// Plugin archive (.tar.gz) or plugin directory.
    pub path: PathBuf,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:NAME:TAG] (tag defaults to `latest`).
    pub reference: String,
    /// Manifest annotations, as `cosign upload blob -a`.
    pub annotations: BTreeMap<String, String>,
    /// Layer media type (cosign's `--ct`); default sniffed.
    pub media_type: Option<String>,
    /// Plugin name and version when packing a directory.
    pub name: Option<String>,
    pub version: Option<String>,
    /// Sign the pushed digest with this cosign key.
    pub sign_key: Option<PathBuf>,
    /// Sign in the Sigstore bundle format (see `SignOptions::new_bundle_format`).
    pub new_bundle_format: bool,
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
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<super::sign::SignReport>,
}

pub async fn push(o: &PushOptions) -> anyhow::Result<PushReport> {
    // Decrypt the key first: a wrong password should fail before anything is uploaded.
    let key = o
        .sign_key
        .as_deref()
        .map(super::keys::load_signing_key)
        .transpose()?;
    let loc = crate::oci::reference::parse(&o.reference)?;
    if loc.digest().is_some() {
        crate::bail_kind!(Kind::Usage, "push to a tag, not a digest: {}", o.reference);
    }
    let dst = store::open_writable(&loc, &o.store).await?;
    let packed_dir = tempfile::tempdir()?;
    let file = source_file(o, packed_dir.path())?;
    let mut report = push_file(dst.as_ref(), &loc, &file, o).await?;
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

/// The file to push: the archive given, or the directory packed into `tmp`.
fn source_file(o: &PushOptions, tmp: &Path) -> anyhow::Result<PathBuf> {
    if o.path.is_dir() {
        let p = super::pack::pack(
            &super::pack::PackOptions {
                dir: o.path.clone(),
                output: None,
                name: o.name.clone(),
                version: o.version.clone(),
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
        return Ok(p.path);
    }
    if o.path.is_file() {
        return Ok(o.path.clone());
    }
    crate::bail_kind!(
        Kind::NotFound,
        "{} does not exist: give a plugin .tar.gz or directory",
        o.path.display()
    )
}

async fn push_file(
    dst: &dyn WriteStore,
    loc: &Location,
    file: &Path,
    o: &PushOptions,
) -> anyhow::Result<PushReport> {
    let (digest, size) = crate::digest::sha256_file(file)?;
    let media_type = match &o.media_type {
        Some(m) => m.clone(),
        None => {
            let mut head = [0u8; 2];
            let n = tokio::fs::File::open(file).await?.read(&mut head).await?;
            crate::oci::artifact::sniff_media_type(&head[..n]).to_string()
        }
    };
    let layer = Descriptor::new(&media_type, &digest, size);
    let (manifest, config) = crate::oci::artifact::cosign_blob_manifest(&layer, &o.annotations);
    let config_desc = store::push_bytes(dst, oci::CONFIG_V1, &config).await?;
    if dst.blob_exists(&digest).await? {
        crate::progress::note(format!("layer {digest} already present"));
    } else {
        let bar = crate::progress::bar(size, "pushing");
        let src = store::BlobSource::File(file.to_path_buf(), bar.clone());
        dst.push_blob(&layer, &src).await?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
    let tag = loc.tag().unwrap_or("latest");
    let mdigest = dst
        .push_manifest(&manifest, oci::MANIFEST_V1, Some(tag))
        .await?;
    Ok(PushReport {
        reference: loc.pinned(&mdigest),
        digest: mdigest,
        size: manifest.len() as u64,
        media_type: oci::MANIFEST_V1.to_string(),
        config: config_desc,
        layers: vec![layer],
        signature: None,
    })
}
