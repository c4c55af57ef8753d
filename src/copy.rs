//! The one copy function behind `copy`, `mirror`, `save` and `load`.
//!
//! Copies a manifest (recursively for indexes) from one store to another by digest, so
//! the destination serves the very same bytes and digest. Blobs the destination already
//! has are skipped (HEAD before PUT); same-registry blobs are mounted when allowed;
//! otherwise they stream straight from source to destination.

use std::collections::HashSet;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::oci::{self, Descriptor, Index, Manifest};
use crate::store::{self, Store};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub manifests_copied: u64,
    pub manifests_skipped: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub bytes_copied: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.manifests_copied += o.manifests_copied;
        self.manifests_skipped += o.manifests_skipped;
        self.blobs_copied += o.blobs_copied;
        self.blobs_mounted += o.blobs_mounted;
        self.blobs_skipped += o.blobs_skipped;
        self.bytes_copied += o.bytes_copied;
    }
}

/// Copy one blob unless the destination has it.
pub async fn copy_blob(
    src: &dyn Store,
    dst: &dyn Store,
    d: &Descriptor,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    if dst.blob_exists(&d.digest).await? {
        stats.blobs_skipped += 1;
        return Ok(());
    }
    if dst.mount_blob(&d.digest, src).await? {
        stats.blobs_mounted += 1;
        return Ok(());
    }
    store::transfer_blob(src, dst, d).await?;
    stats.blobs_copied += 1;
    stats.bytes_copied += d.size;
    Ok(())
}

/// Copy the manifest `bytes` (already fetched from `src`, digest `desc.digest`) and all it
/// references to `dst`, then point `tag` at it. Children are copied before parents, so a
/// destination never holds a manifest whose content is missing.
pub fn copy_manifest<'a>(
    src: &'a dyn Store,
    dst: &'a dyn Store,
    desc: &'a Descriptor,
    bytes: &'a [u8],
    tag: Option<&'a str>,
    stats: &'a mut Stats,
) -> BoxFuture<'a, anyhow::Result<()>> {
    async move {
        if !dst.manifest_exists(&desc.digest).await? {
            if oci::is_index(&desc.media_type) {
                let idx: Index = serde_json::from_slice(bytes)?;
                let mut seen = HashSet::new();
                for child in &idx.manifests {
                    if !seen.insert(child.digest.clone()) {
                        continue;
                    }
                    let (cb, cd) = src.fetch_manifest(&child.digest).await?;
                    let cd = Descriptor {
                        media_type: child.media_type.clone(),
                        ..cd
                    };
                    copy_manifest(src, dst, &cd, &cb, None, stats).await?;
                }
            } else {
                let m: Manifest = serde_json::from_slice(bytes)?;
                copy_blob(src, dst, &m.config, stats).await?;
                for l in &m.layers {
                    copy_blob(src, dst, l, stats).await?;
                }
            }
            dst.push_manifest(bytes, &desc.media_type, None).await?;
            stats.manifests_copied += 1;
        } else {
            stats.manifests_skipped += 1;
        }
        if let Some(t) = tag {
            // Tagging an existing manifest is a PUT of the same bytes: idempotent and cheap.
            dst.push_manifest(bytes, &desc.media_type, Some(t)).await?;
        }
        Ok(())
    }
    .boxed()
}
