//! OCI image layout directory (`oci:DIR`): `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! Tags are `org.opencontainers.image.ref.name` annotations on `index.json` entries. A
//! layout may hold several plugins: with a name, tags are stored as `NAME:TAG`
//! (`oci:./store:hello:0.1.0`), without one as plain `TAG` (skopeo's `oci:DIR:TAG`).
//! Without a name, `list_tags` lists every REF (`NAME:TAG` and `TAG` alike).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;

use super::{BlobSource, ReadStore, Result, WriteStore, Writer};
use crate::digest::hex_of;
use crate::error::{Kind, StoreError};
use crate::oci::{self, Descriptor, Index};

const LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

pub struct LayoutStore {
    root: PathBuf,
    name: Option<String>,
    /// What messages call this layout when it is a staging copy of something else (an
    /// oci-archive `save` is writing): users never see the temp directory's name.
    shown_as: Option<String>,
    /// Serialises read-modify-write of index.json within this process.
    index_lock: Arc<tokio::sync::Mutex<()>>,
}

impl LayoutStore {
    pub fn open(root: &Path, name: Option<String>, writable: bool) -> anyhow::Result<Self> {
        let layout = root.join("oci-layout");
        if !layout.exists() {
            if !writable {
                crate::bail_kind!(
                    Kind::NotFound,
                    "{} is not an OCI image layout (no oci-layout file); push or copy into oci:{} first",
                    root.display(),
                    root.display()
                );
            }
            std::fs::create_dir_all(root.join("blobs/sha256"))
                .with_context(|| format!("creating OCI layout {}", root.display()))?;
            crate::tree::write_atomic(&layout, LAYOUT_FILE.as_bytes())?;
            crate::tree::write_atomic(&root.join("index.json"), &oci::to_json(&Index::empty()))?;
        }
        Ok(LayoutStore {
            root: root.to_path_buf(),
            name,
            shown_as: None,
            index_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The same layout, named `shown` (e.g. `oci-archive:out.tar`) in every message.
    pub fn shown_as(mut self, shown: String) -> LayoutStore {
        self.shown_as = Some(shown);
        self
    }

    /// `oci:DIR`, or what it is shown as.
    fn base_name(&self) -> String {
        self.shown_as
            .clone()
            .unwrap_or_else(|| format!("oci:{}", self.root.display()))
    }

    fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    fn ref_name(&self, tag: &str) -> String {
        match &self.name {
            Some(n) => format!("{n}:{tag}"),
            None => tag.to_string(),
        }
    }

    /// The same layout with tags scoped to another name; shares the index.json lock, so
    /// views of one layout can be written concurrently.
    pub fn with_name(&self, name: Option<String>) -> LayoutStore {
        LayoutStore {
            root: self.root.clone(),
            name,
            shown_as: self.shown_as.clone(),
            index_lock: self.index_lock.clone(),
        }
    }

    pub fn read_index(&self) -> anyhow::Result<Index> {
        let p = self.root.join("index.json");
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            crate::error::fail(
                Kind::Integrity,
                format!("{} is not a valid OCI index: {e}", p.display()),
            )
        })
    }

    /// Order `index.json` by ref.name (untagged entries last, by digest), so a layout
    /// written by concurrent copies comes out the same every time.
    pub fn sort_index(&self) -> anyhow::Result<()> {
        let mut idx = self.read_index()?;
        idx.manifests.sort_by(|a, b| {
            let key = |d: &Descriptor| {
                (
                    !d.annotations.contains_key(oci::ANN_REF_NAME),
                    d.annotations.get(oci::ANN_REF_NAME).cloned(),
                    d.digest.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        self.write_index(&idx)
    }

    fn write_index(&self, idx: &Index) -> anyhow::Result<()> {
        crate::tree::write_atomic(&self.root.join("index.json"), &oci::to_json(idx))
    }

    fn read_blob_file(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        match std::fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(crate::error::fail(
                Kind::NotFound,
                format!("{digest} not found in {}", self.describe()),
            )),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
}

#[async_trait]
impl ReadStore for LayoutStore {
    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{}:{n}", self.base_name()),
            None => self.base_name(),
        }
    }

    async fn resolve(&self, tag: &str) -> Result<Descriptor> {
        super::find_in_index(&self.read_index()?, self.name.as_deref(), tag).ok_or_else(|| {
            StoreError::NotFound(format!(
                "{:?} not found in {}; `kplug list-tags {}` shows what is there",
                self.ref_name(tag),
                self.base_name(),
                self.base_name()
            ))
        })
    }

    async fn choose_default(&self) -> Result<super::Chosen> {
        super::choose_in_index(&self.read_index()?, self.name.as_deref(), &self.describe())
    }

    async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Descriptor)> {
        let (digest, mt) = if reference.starts_with("sha256:") {
            (reference.to_string(), None)
        } else {
            let d = self.resolve(reference).await?;
            (d.digest, Some(d.media_type))
        };
        let bytes = self.read_blob_file(&digest)?;
        let desc = super::manifest_descriptor(&bytes, mt.as_deref());
        if desc.digest != digest {
            return Err(StoreError::Integrity(format!(
                "manifest {digest} in {} is corrupt: its content hashes to {}",
                self.root.display(),
                desc.digest
            )));
        }
        Ok((bytes, desc))
    }

    async fn manifest_exists(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.exists())
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.exists())
    }

    async fn fetch_blob(&self, desc: &Descriptor, sink: Writer<'_>) -> Result<()> {
        let p = self.blob_path(&desc.digest)?;
        let f = tokio::fs::File::open(&p)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::NotFound(format!(
                    "blob {} not found in {}",
                    desc.digest,
                    self.describe()
                )),
                _ => StoreError::Transport(format!("opening {}: {e}", p.display())),
            })?;
        let what = format!("blob {} in {}", desc.digest, self.root.display());
        super::copy_hashed(super::read_chunks(f, &what), sink, desc, &what).await
    }

    async fn referrers(&self, digest: &str, artifact_type: Option<&str>) -> Result<Index> {
        let entries = self.read_index()?.manifests;
        super::local_referrers(self, &entries, digest, artifact_type).await
    }

    fn referrers_beyond_tags(&self) -> bool {
        true
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        list_refs(&self.read_index()?, self.name.as_deref(), &self.base_name())
    }
}

/// The tags under `name` (signature tags included, as a registry lists them), or every REF
/// of the layout's artifacts without a name. A name nothing is stored under is not found,
/// as an unknown repository is in a registry.
pub(super) fn list_refs(idx: &Index, name: Option<&str>, base: &str) -> Result<Vec<String>> {
    let Some(n) = name else {
        return Ok(super::ref_names(idx, None));
    };
    let mut tags: Vec<String> = idx
        .manifests
        .iter()
        .filter_map(|m| m.annotations.get(oci::ANN_REF_NAME))
        .filter_map(|rn| rn.strip_prefix(&format!("{n}:")).map(str::to_string))
        .collect();
    tags.sort();
    tags.dedup();
    if tags.is_empty() {
        return Err(StoreError::NotFound(format!(
            "nothing named {:?} in {base}; `kplug list-tags {base}` lists what is there",
            crate::progress::escape(n)
        )));
    }
    Ok(tags)
}

#[async_trait]
impl WriteStore for LayoutStore {
    async fn push_blob(&self, desc: &Descriptor, src: &BlobSource) -> Result<()> {
        let dst = self.blob_path(&desc.digest)?;
        let dir = crate::tree::parent_dir(&dst).to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Transport(format!("creating {}: {e}", dir.display())))?;
        let tmp = crate::tree::AtomicFile::create(&dst, crate::tree::USER_MODE)?;
        let mut f = tokio::fs::File::from_std(tmp.reopen()?);
        let what = format!("blob {} written to {}", desc.digest, self.root.display());
        super::copy_hashed(super::read_chunks(src.open()?, &what), &mut f, desc, &what).await?;
        drop(f);
        tmp.commit()?;
        Ok(())
    }

    async fn push_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<String> {
        let desc = super::manifest_descriptor(bytes, Some(media_type));
        let p = self.blob_path(&desc.digest)?;
        if !p.exists() {
            crate::tree::write_atomic(&p, bytes)?;
        }
        let mut entry = desc.clone();
        if let Some(t) = tag {
            entry
                .annotations
                .insert(oci::ANN_REF_NAME.to_string(), self.ref_name(t));
            // Written the way `cosign save` marks entries, so `cosign load --dir` reads it.
            if let Some(k) = crate::oci::tagscheme::cosign_kind(t, media_type) {
                entry
                    .annotations
                    .insert(oci::ANN_KIND.to_string(), k.to_string());
            }
        }
        let _g = self.index_lock.lock().await;
        let mut idx = self.read_index()?;
        match tag {
            Some(_) => {
                // The tag moves here; an untagged entry for the same digest becomes redundant.
                let rn = entry.annotations.get(oci::ANN_REF_NAME).cloned();
                idx.manifests
                    .retain(|m| match m.annotations.get(oci::ANN_REF_NAME) {
                        Some(n) => Some(n) != rn.as_ref(),
                        None => m.digest != desc.digest,
                    });
                idx.manifests.push(entry);
            }
            None => {
                if !idx.manifests.iter().any(|m| m.digest == desc.digest) {
                    idx.manifests.push(entry);
                }
            }
        }
        self.write_index(&idx)?;
        Ok(desc.digest)
    }
}
