//! The OCI side of signatures: where they live and how they are fetched and attached.
//!
//! cosign's tag scheme (`sha256-<hex>.sig` in the artifact's repository, or in
//! `$COSIGN_REPOSITORY`) and cosign v3's Sigstore bundles attached as referrers (the
//! referrers API or the `sha256-<hex>` fallback index). The cryptography is in
//! [`crate::trust`]; this module only moves bytes between stores and that code.

use std::collections::HashMap;

use crate::error::{fail, kind_of, Kind};
use crate::oci::copy::{copy_blob, copy_manifest, Cx};
use crate::oci::store::{self, Store};
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::trust::{self, Policy, Verified};

/// Payloads and bundles are small; anything bigger is refused before download.
const SIG_BLOB_CAP: u64 = 1 << 20;

/// Where signatures live when `COSIGN_REPOSITORY` is set (else: beside the artifact).
pub async fn signature_store_override(
    opts: &store::Options,
    writable: bool,
) -> anyhow::Result<Option<Box<dyn Store>>> {
    match std::env::var("COSIGN_REPOSITORY") {
        Ok(repo) if !repo.is_empty() => {
            let sloc = crate::oci::reference::parse(&repo)?;
            Ok(Some(store::open(&sloc, opts, writable).await?))
        }
        _ => Ok(None),
    }
}

/// The classic `.sig` manifest for `digest`, or `None` when the tag does not exist.
pub async fn fetch_sig_manifest(
    sigs: &dyn Store,
    digest: &str,
) -> anyhow::Result<Option<(Vec<u8>, Manifest)>> {
    fetch_tagged_manifest(sigs, &trust::signature_tag(digest)).await
}

/// Fetch every layer blob of a signature manifest, concurrently.
pub async fn fetch_layers(
    sigs: &dyn Store,
    m: &Manifest,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let futs = m.layers.iter().map(|l| async move {
        let b = store::fetch_blob_bytes(sigs, l, SIG_BLOB_CAP).await?;
        Ok::<_, anyhow::Error>((l.digest.clone(), b))
    });
    futures_util::future::try_join_all(futs)
        .await
        .map(|v| v.into_iter().collect())
}

/// Referrers of `digest` (fallback tag scheme `sha256-<hex>`), if any.
pub async fn fetch_referrers(sigs: &dyn Store, digest: &str) -> anyhow::Result<Option<Index>> {
    let tag = digest.replace(':', "-");
    match sigs.fetch_manifest(&tag).await {
        Ok((bytes, _)) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if kind_of(&e) == Kind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Verify the v3 Sigstore bundles attached to `digest`.
async fn verify_bundles(
    sigs: &dyn Store,
    digest: &str,
    idx: &Index,
    policy: &Policy,
) -> (Vec<Verified>, Vec<String>) {
    let mut ok = Vec::new();
    let mut why = Vec::new();
    for d in &idx.manifests {
        let res: anyhow::Result<Verified> = async {
            let (bytes, _) = sigs.fetch_manifest(&d.digest).await?;
            let m: Manifest = serde_json::from_slice(&bytes)?;
            let is_bundle = m.artifact_type.as_deref() == Some(oci::SIGSTORE_BUNDLE_V03)
                || m.layers
                    .iter()
                    .any(|l| l.media_type == oci::SIGSTORE_BUNDLE_V03);
            if !is_bundle {
                anyhow::bail!("referrer {} is not a Sigstore bundle", d.digest);
            }
            if m.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest) {
                anyhow::bail!("referrer {} has another subject", d.digest);
            }
            let layer = m
                .layers
                .iter()
                .find(|l| l.media_type == oci::SIGSTORE_BUNDLE_V03)
                .ok_or_else(|| anyhow::anyhow!("referrer {} has no bundle layer", d.digest))?;
            let blob = store::fetch_blob_bytes(sigs, layer, SIG_BLOB_CAP).await?;
            trust::verify_sigstore_bundle(digest, &blob, policy)
        }
        .await;
        match res {
            Ok(v) => ok.push(v),
            Err(e) => why.push(format!("{}: {e:#}", d.digest)),
        }
    }
    (ok, why)
}

/// Everything that verifies for `digest` under `policy`: classic `.sig` layers and v3
/// bundles. Errors carry cosign's exit codes: 11 nothing attached, 10 an empty signature
/// manifest, 12 signatures present but none verifies.
pub async fn verify(
    sigs: &dyn Store,
    digest: &str,
    policy: &Policy,
) -> anyhow::Result<Vec<Verified>> {
    let classic = fetch_sig_manifest(sigs, digest).await?;
    let mut verified = Vec::new();
    let mut reasons = Vec::new();
    let mut any = false;
    if let Some((_, m)) = &classic {
        let blobs = fetch_layers(sigs, m).await?;
        let lookup = |d: &Descriptor| blobs.get(&d.digest).cloned();
        match trust::verify_signature_manifest(digest, m, &lookup, policy) {
            Ok(v) => return Ok(v),
            Err(e) => {
                any = !m.layers.is_empty();
                reasons.push(format!("{e:#}"));
                if kind_of(&e) != Kind::NoSignatures && kind_of(&e) != Kind::NoMatchingSignature {
                    return Err(e);
                }
            }
        }
    }
    if let Some(idx) = fetch_referrers(sigs, digest).await? {
        let (ok, why) = verify_bundles(sigs, digest, &idx, policy).await;
        any |= !idx.manifests.is_empty();
        verified.extend(ok);
        reasons.extend(why);
    }
    if !verified.is_empty() {
        return Ok(verified);
    }
    if classic.is_none() && !any {
        crate::bail_kind!(
            Kind::SigTagNotFound,
            "no signatures found for {digest} in {}: no {} tag and no Sigstore bundle referrers; sign it with `kplug sign --key cosign.key REF`",
            sigs.describe(),
            trust::signature_tag(digest)
        );
    }
    if !any {
        crate::bail_kind!(
            Kind::NoSignatures,
            "the signature manifest for {digest} in {} holds no signatures",
            sigs.describe()
        );
    }
    crate::bail_kind!(
        Kind::NoMatchingSignature,
        "no signature for {digest} verifies with the given key(s): {}",
        reasons.join("; ")
    )
}

/// Outcome of attaching a signature.
pub enum Attached {
    Added { sig_manifest_digest: String },
    AlreadySigned,
}

/// Append a signature layer to the `.sig` manifest of `digest` (cosign's rules: keep the
/// existing layers, skip an identical signature by the same key).
pub async fn attach(
    sigs: &dyn Store,
    digest: &str,
    sig: &trust::NewSignature,
    signer: &trust::PublicKey,
) -> anyhow::Result<Attached> {
    let existing = fetch_sig_manifest(sigs, digest).await?;
    match trust::append_signature(existing.as_ref().map(|(_, m)| m), sig, signer) {
        trust::Append::Duplicate => Ok(Attached::AlreadySigned),
        trust::Append::Updated {
            manifest,
            config,
            layer,
        } => {
            store::push_bytes(sigs, oci::CONFIG_V1, &config).await?;
            if !sigs.blob_exists(&layer.digest).await? {
                sigs.push_blob(&layer, Box::new(std::io::Cursor::new(sig.payload.clone())))
                    .await?;
            }
            let d = sigs
                .push_manifest(
                    &manifest,
                    oci::MANIFEST_V1,
                    Some(&trust::signature_tag(digest)),
                )
                .await?;
            Ok(Attached::Added {
                sig_manifest_digest: d,
            })
        }
    }
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
    src: &dyn Store,
    dst: &dyn Store,
    digest: &str,
    cx: &mut Cx,
) -> anyhow::Result<()> {
    let sig_tag = trust::signature_tag(digest);
    let att_tag = sig_tag.replace(".sig", ".att");
    for tag in [sig_tag, att_tag] {
        if !crate::oci::copy::may_have(&cx.src_tags, &tag) {
            continue;
        }
        if let Some((bytes, theirs)) = fetch_tagged_manifest(src, &tag).await? {
            merge_tagged_manifest(src, dst, &tag, &bytes, &theirs, cx).await?;
        }
    }
    let rtag = digest.replace(':', "-");
    if !crate::oci::copy::may_have(&cx.src_tags, &rtag) {
        return Ok(());
    }
    if let Some(theirs) = fetch_referrers(src, digest).await? {
        let mut ours = match crate::oci::copy::may_have(&cx.dst_tags, &rtag) {
            true => fetch_referrers(dst, digest).await?,
            false => None,
        }
        .unwrap_or_else(Index::empty);
        let before = ours.manifests.len();
        for d in &theirs.manifests {
            let (b, cd) = src.fetch_manifest(&d.digest).await?;
            let cd = Descriptor {
                media_type: d.media_type.clone(),
                ..cd
            };
            copy_manifest(src, dst, &cd, &b, None, cx).await?;
            if !ours.manifests.iter().any(|m| m.digest == d.digest) {
                ours.manifests.push(d.clone());
            }
        }
        if ours.manifests.len() != before {
            if !cx.dry_run {
                dst.push_manifest(&oci::to_json(&ours), oci::INDEX_V1, Some(&rtag))
                    .await?;
            }
            cx.stats.manifests_copied += 1;
        }
    }
    Ok(())
}

async fn fetch_tagged_manifest(
    st: &dyn Store,
    tag: &str,
) -> anyhow::Result<Option<(Vec<u8>, Manifest)>> {
    match st.fetch_manifest(tag).await {
        Ok((bytes, _)) => {
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                fail(
                    Kind::Integrity,
                    format!("{tag} in {} is not a valid manifest: {e}", st.describe()),
                )
            })?;
            Ok(Some((bytes, m)))
        }
        Err(e) if kind_of(&e) == Kind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Put the `.sig`/`.att` manifest `theirs` (bytes `bytes`, from `src`) at `dst` under
/// `tag`: as is when `dst` has none, else merged into the one `dst` has.
pub async fn merge_tagged_manifest(
    src: &dyn Store,
    dst: &dyn Store,
    tag: &str,
    bytes: &[u8],
    theirs: &Manifest,
    cx: &mut Cx,
) -> anyhow::Result<()> {
    let desc = store::manifest_descriptor(bytes, Some(oci::MANIFEST_V1));
    let existing = match crate::oci::copy::may_have(&cx.dst_tags, tag) {
        true => fetch_tagged_manifest(dst, tag).await?,
        false => None,
    };
    let Some((_, ours)) = existing else {
        return crate::oci::copy::copy_manifest_new_tag(src, dst, &desc, bytes, tag, cx).await;
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
