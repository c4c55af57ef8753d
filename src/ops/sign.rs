//! `sign`: cosign's `.sig` layout — a simple-signing payload signed with a cosign key,
//! appended to the `.sig` manifest of the digest (cosign's dedup rule).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use crate::oci::reference::Location;
use crate::oci::store::{self, WriteStore};
use crate::oci::{signatures, tagscheme};
use crate::trust;

/// What `sign` asks for.
pub struct SignOptions {
    /// Artifact to sign; a tag is resolved once (with a warning).
    pub reference: String,
    pub key: PathBuf,
    /// Extra signed claims in the payload's `optional`.
    pub annotations: BTreeMap<String, String>,
    /// Also write the base64 signature here.
    pub output_signature: Option<PathBuf>,
    /// Also write the signed payload here.
    pub output_payload: Option<PathBuf>,
    pub store: store::Options,
}

/// What was signed, and where the signature went.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignReport {
    /// `REPO@DIGEST`.
    pub signed: String,
    pub digest: String,
    pub signature_tag: String,
    pub already_signed: bool,
    /// sha256 of the signer's public key (DER).
    pub signer: String,
}

pub async fn sign(o: &SignOptions) -> anyhow::Result<SignReport> {
    // Decrypt first: a wrong password fails before any request.
    let key = super::keys::load_signing_key(&o.key)?;
    let loc = crate::oci::reference::parse(&o.reference)?;
    let st = store::open_writable(&loc, &o.store).await?;
    let (_, desc) = store::fetch_resolved(st.as_ref(), &loc).await?;
    if loc.digest().is_none() {
        crate::progress::note(format!(
            "WARNING: {} names a tag; signing the digest it points at now, {}. Sign by digest to be sure of what you sign.",
            o.reference, desc.digest
        ));
    }
    let target = SignTarget {
        loc: &loc,
        store: st.as_ref(),
        digest: &desc.digest,
    };
    sign_digest(&target, &key, o, &o.store).await
}

/// An artifact already resolved to a digest in an open store (`push --sign` signs what it
/// just pushed, in the store it pushed to: no second lookup or login).
pub struct SignTarget<'a> {
    pub loc: &'a Location,
    pub store: &'a dyn WriteStore,
    pub digest: &'a str,
}

/// Sign `t.digest` and attach the signature (to `COSIGN_REPOSITORY` when set).
pub async fn sign_digest(
    t: &SignTarget<'_>,
    key: &trust::SigningKey,
    o: &SignOptions,
    transport: &store::Options,
) -> anyhow::Result<SignReport> {
    let payload = trust::simple_signing_payload(&t.loc.repo_name(), t.digest, &o.annotations);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload)?);
    if let Some(p) = &o.output_signature {
        crate::tree::write_atomic(p, sig.as_bytes())?;
    }
    if let Some(p) = &o.output_payload {
        crate::tree::write_atomic(p, &payload)?;
    }
    let over = match tagscheme::cosign_repository()? {
        Some(loc) => Some(store::open_writable(&loc, transport).await?),
        None => None,
    };
    let sigs: &dyn WriteStore = over.as_deref().unwrap_or(t.store);
    let signer = key.public_key();
    let new = trust::NewSignature {
        payload,
        signature_b64: sig,
        annotations: Default::default(),
    };
    let existing = signatures::fetch_sig_manifest(sigs, t.digest).await?;
    let already = match trust::append_signature(existing.as_ref().map(|(_, m)| m), &new, &signer) {
        trust::Append::Duplicate => true,
        trust::Append::Updated {
            manifest,
            config,
            layer,
        } => {
            signatures::push_sig_manifest(sigs, t.digest, &manifest, &config, &layer, &new.payload)
                .await?;
            false
        }
    };
    let tag = tagscheme::sig_tag(t.digest);
    crate::progress::note(if already {
        format!(
            "{} already carries this signature in {}; nothing pushed",
            t.digest,
            sigs.describe()
        )
    } else {
        format!("Pushed signature to {}:{tag}", sigs.describe())
    });
    Ok(SignReport {
        signed: t.loc.pinned(t.digest),
        digest: t.digest.to_string(),
        signature_tag: tag,
        already_signed: already,
        signer: signer.fingerprint(),
    })
}
