//! The OCI side of signatures: finding, fetching, attaching and carrying them.
//!
//! cosign's classic `.sig` manifests (see [`tagscheme`](crate::oci::tagscheme)) and
//! Sigstore bundles attached as OCI 1.1 referrers (the `sha256-<hex>` fallback index).
//! Everything read here is untrusted and bounded; the cryptography is in
//! [`crate::trust`], and `ops::verify` puts the two together.

use std::collections::HashMap;

use crate::error::{fail, Kind};
use crate::oci::copy::{copy_blob, copy_manifest, may_have, Cx, Target};
use crate::oci::store::{self, Found, ReadStore, WriteStore};
use crate::oci::tagscheme;
use crate::oci::{self, Descriptor, Index, Manifest};

/// Payloads and bundles are small; anything bigger is refused before download.
pub const SIG_BLOB_CAP: u64 = 1 << 20;

/// The classic `.sig` manifest for `digest`, or `None` when the tag does not exist.
pub async fn fetch_sig_manifest(
    sigs: &dyn ReadStore,
    digest: &str,
) -> anyhow::Result<Option<(Vec<u8>, Manifest)>> {
    fetch_tagged_manifest(sigs, &tagscheme::sig_tag(digest)).await
}

/// Every layer blob of a signature manifest that can be fetched within the cap, fetched
/// concurrently. A layer that is missing, too large or corrupt does not stop the others:
/// it is left out and its problem returned, so one bad layer cannot hide a good signature.
pub async fn fetch_layers(
    sigs: &dyn ReadStore,
    m: &Manifest,
) -> (HashMap<String, Vec<u8>>, Vec<String>) {
    let futs = m.layers.iter().map(|l| async move {
        let r = store::fetch_blob_bytes(sigs, l, SIG_BLOB_CAP).await;
        (l.digest.clone(), r)
    });
    let mut blobs = HashMap::new();
    let mut problems = Vec::new();
    for (d, r) in futures_util::future::join_all(futs).await {
        match r {
            Ok(b) => {
                blobs.insert(d, b);
            }
            Err(e) => problems.push(format!("layer {d}: {e}")),
        }
    }
    (blobs, problems)
}

/// The OCI 1.1 referrers of `digest` (through the registry's referrers API, the
/// `sha256-<hex>` fallback index, or a layout's index.json), `None` when there are none.
/// A corrupt index is an integrity error, not "unsigned".
pub async fn fetch_referrers(sigs: &dyn ReadStore, digest: &str) -> anyhow::Result<Option<Index>> {
    let idx = sigs.referrers(digest, None).await?;
    Ok((!idx.manifests.is_empty()).then_some(idx))
}

/// The Sigstore bundle blob a referrer carries, checked to be a bundle about `digest`.
pub async fn fetch_bundle(
    sigs: &dyn ReadStore,
    digest: &str,
    referrer: &Descriptor,
) -> anyhow::Result<Vec<u8>> {
    let (bytes, _) = sigs.fetch_manifest(&referrer.digest).await?;
    let m: Manifest = serde_json::from_slice(&bytes)?;
    let is_bundle = m.artifact_type.as_deref() == Some(oci::SIGSTORE_BUNDLE_V03)
        || m.layers
            .iter()
            .any(|l| l.media_type == oci::SIGSTORE_BUNDLE_V03);
    if !is_bundle {
        anyhow::bail!("referrer {} is not a Sigstore bundle", referrer.digest);
    }
    if m.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest) {
        anyhow::bail!("referrer {} has another subject", referrer.digest);
    }
    let layer = m
        .layers
        .iter()
        .find(|l| l.media_type == oci::SIGSTORE_BUNDLE_V03)
        .ok_or_else(|| anyhow::anyhow!("referrer {} has no bundle layer", referrer.digest))?;
    Ok(store::fetch_blob_bytes(sigs, layer, SIG_BLOB_CAP).await?)
}

/// Store a new `.sig` manifest for `digest`: its config, the new layer (`payload`), then
/// the manifest under the `.sig` tag. Returns the manifest's digest.
pub async fn push_sig_manifest(
    sigs: &dyn WriteStore,
    digest: &str,
    manifest: &[u8],
    config: &[u8],
    layer: &Descriptor,
    payload: &[u8],
) -> anyhow::Result<String> {
    store::push_bytes(sigs, oci::CONFIG_V1, config).await?;
    if !sigs.blob_exists(&layer.digest).await? {
        let src = store::BlobSource::Bytes(bytes::Bytes::copy_from_slice(payload));
        sigs.push_blob(layer, &src).await?;
    }
    Ok(sigs
        .push_manifest(
            manifest,
            oci::MANIFEST_V1,
            Some(&tagscheme::sig_tag(digest)),
        )
        .await?)
}

/// Merge the layers of `theirs` into `ours` (two `.sig` manifests for one digest): keep
/// every layer of `ours`, append each layer of `theirs` not already there (same digest and
/// annotations), rebuild the config. `None` when `ours` already holds them all.
pub fn merge_sig_manifests(ours: &Manifest, theirs: &Manifest) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut merged = ours.clone();
    for l in &theirs.layers {
        if !merged
            .layers
            .iter()
            .any(|m| m.digest == l.digest && m.annotations == l.annotations)
        {
            merged.layers.push(l.clone());
        }
    }
    if merged.layers.len() == ours.layers.len() {
        return None;
    }
    let diff_ids: Vec<String> = merged.layers.iter().map(|l| l.digest.clone()).collect();
    let config = oci::cosign_config(&diff_ids);
    merged.config = Descriptor::new(
        &ours.config.media_type,
        &crate::digest::sha256(&config),
        config.len() as u64,
    );
    Some((oci::to_json(&merged), config))
}

/// Copy the signatures of `digest` (its `.sig` and `.att` manifests and its referrers)
/// from `src` to `dst`, merging with what `dst` already has instead of overwriting it.
pub async fn copy_signatures(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    digest: &str,
    cx: &mut Cx,
) -> anyhow::Result<()> {
    for tag in [tagscheme::sig_tag(digest), tagscheme::att_tag(digest)] {
        if !may_have(&cx.src_tags, &tag) {
            continue;
        }
        if let Some((bytes, theirs)) = fetch_tagged_manifest(src, &tag).await? {
            merge_tagged_manifest(src, dst, &tag, &bytes, &theirs, cx).await?;
        }
    }
    copy_referrers(src, dst, digest, cx).await
}

/// Copy the referrers of `digest` that the destination lacks. Each is stored untagged;
/// the destination keeps its own list of referrers (a registry's API or fallback index,
/// a layout's index.json), so the copy is found there by either route.
async fn copy_referrers(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    digest: &str,
    cx: &mut Cx,
) -> anyhow::Result<()> {
    let rtag = tagscheme::referrers_tag(digest);
    if !may_have(&cx.src_tags, &rtag) && !src.referrers_beyond_tags() {
        return Ok(());
    }
    let theirs = src.referrers(digest, None).await?;
    if theirs.manifests.is_empty() {
        return Ok(());
    }
    let ours = match may_have(&cx.dst_tags, &rtag) || dst.referrers_beyond_tags() {
        true => dst.referrers(digest, None).await?,
        false => Index::empty(),
    };
    for d in &theirs.manifests {
        if ours.manifests.iter().any(|m| m.digest == d.digest) {
            cx.stats.manifests_skipped += 1;
            continue;
        }
        let (b, cd) = src.fetch_manifest(&d.digest).await?;
        let cd = Descriptor {
            media_type: d.media_type.clone(),
            ..cd
        };
        if dst.manifest_exists(&d.digest).await? {
            // Stored by an earlier run that did not get to list it: store it again, so
            // that the destination lists it now.
            if !cx.dry_run {
                dst.push_manifest(&b, &cd.media_type, None).await?;
            }
            cx.stats.manifests_copied += 1;
        } else {
            copy_manifest(src, dst, &cd, &b, Target::Untagged, cx).await?;
        }
    }
    Ok(())
}

async fn fetch_tagged_manifest(
    st: &dyn ReadStore,
    tag: &str,
) -> anyhow::Result<Option<(Vec<u8>, Manifest)>> {
    let Some((bytes, _)) = st.fetch_manifest(tag).await.found()? else {
        return Ok(None);
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        fail(
            Kind::Integrity,
            format!("{tag} in {} is not a valid manifest: {e}", st.describe()),
        )
    })?;
    Ok(Some((bytes, m)))
}

/// Put the `.sig`/`.att` manifest `theirs` (bytes `bytes`, from `src`) at `dst` under
/// `tag`: as is when `dst` has none, else merged into the one `dst` has.
pub async fn merge_tagged_manifest(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    tag: &str,
    bytes: &[u8],
    theirs: &Manifest,
    cx: &mut Cx,
) -> anyhow::Result<()> {
    let desc = store::manifest_descriptor(bytes, Some(oci::MANIFEST_V1));
    let existing = match may_have(&cx.dst_tags, tag) {
        true => fetch_tagged_manifest(dst, tag).await?,
        false => None,
    };
    let Some((_, ours)) = existing else {
        return copy_manifest(src, dst, &desc, bytes, Target::NewTag(tag), cx).await;
    };
    let Some((mbytes, config)) = merge_sig_manifests(&ours, theirs) else {
        cx.stats.manifests_skipped += 1;
        return Ok(());
    };
    for l in &theirs.layers {
        copy_blob(src, dst, l, cx).await?;
    }
    if !cx.dry_run {
        store::push_bytes(dst, oci::CONFIG_V1, &config).await?;
        dst.push_manifest(&mbytes, oci::MANIFEST_V1, Some(tag))
            .await?;
    }
    cx.stats.manifests_copied += 1;
    Ok(())
}

/// Attach a referrer manifest (`manifest`, with its `config` and one `layer`) to
/// `subject`: blobs first, then the manifest by digest. The store lists it among the
/// subject's referrers itself (a registry's API, else its `sha256-<hex>` fallback index;
/// a layout's index.json). Returns the referrer manifest's digest.
pub async fn attach_referrer(
    sigs: &dyn WriteStore,
    subject: &Descriptor,
    manifest: &[u8],
    blobs: &[(&Descriptor, &[u8])],
) -> anyhow::Result<String> {
    for (d, bytes) in blobs {
        if !sigs.blob_exists(&d.digest).await? {
            let src = store::BlobSource::Bytes(bytes::Bytes::copy_from_slice(bytes));
            sigs.push_blob(d, &src).await?;
        }
    }
    let m: Manifest = serde_json::from_slice(manifest)?;
    if m.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject.digest.as_str()) {
        anyhow::bail!(
            "the referrer manifest does not name {} as its subject",
            subject.digest
        );
    }
    Ok(sigs.push_manifest(manifest, oci::MANIFEST_V1, None).await?)
}
