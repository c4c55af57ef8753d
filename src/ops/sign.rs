//! `sign`: with a cosign key, in either of cosign's formats — the `.sig` layout (a
//! simple-signing payload appended to the `.sig` manifest, cosign's dedup rule) or, with
//! `new_bundle_format`, a Sigstore bundle v0.3 attached as an OCI 1.1 referrer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use crate::oci::reference::Location;
use crate::oci::store::{self, WriteStore};
use crate::oci::{signatures, tagscheme, Descriptor};
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
    /// Write a Sigstore bundle referrer instead of a `.sig` layer (docs/signatures.md).
    pub new_bundle_format: bool,
    pub store: store::Options,
}

/// What was signed, and where the signature went.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignReport {
    /// `REPO@DIGEST`.
    pub signed: String,
    pub digest: String,
    /// `cosign-sig` or `sigstore-bundle`.
    pub format: &'static str,
    /// `.sig` format: the tag the signature is under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_tag: Option<String>,
    /// Bundle format: the digest of the referrer manifest that carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
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
        desc: &desc,
    };
    sign_digest(&target, &key, o, &o.store).await
}

/// An artifact already resolved to a digest in an open store (`push --sign` signs what it
/// just pushed, in the store it pushed to: no second lookup or login).
pub struct SignTarget<'a> {
    pub loc: &'a Location,
    pub store: &'a dyn WriteStore,
    /// The signed manifest.
    pub desc: &'a Descriptor,
}

/// Sign `t.desc` and attach the signature (to `COSIGN_REPOSITORY` when set).
pub async fn sign_digest(
    t: &SignTarget<'_>,
    key: &trust::SigningKey,
    o: &SignOptions,
    transport: &store::Options,
) -> anyhow::Result<SignReport> {
    let over = match tagscheme::cosign_repository()? {
        Some(loc) => Some(store::open_writable(&loc, transport).await?),
        None => None,
    };
    let sigs: &dyn WriteStore = over.as_deref().unwrap_or(t.store);
    let digest = t.desc.digest.as_str();
    let (format, signature, already) = match o.new_bundle_format {
        true => attach_bundle(sigs, t.desc, key, o).await?,
        false => attach_sig(sigs, t.loc, digest, key, o).await?,
    };
    crate::progress::note(match already {
        true => format!(
            "{digest} already carries this signature in {}; nothing pushed",
            sigs.describe()
        ),
        false => format!("Pushed signature to {}: {signature}", sigs.describe()),
    });
    let (signature_tag, referrer) = match o.new_bundle_format {
        true => (None, Some(signature)),
        false => (Some(signature), None),
    };
    Ok(SignReport {
        signed: t.loc.pinned(digest),
        digest: digest.to_string(),
        format,
        signature_tag,
        referrer,
        already_signed: already,
        signer: key.public_key().fingerprint(),
    })
}

/// The `.sig` layout: a simple-signing payload appended to the `.sig` manifest.
async fn attach_sig(
    sigs: &dyn WriteStore,
    loc: &Location,
    digest: &str,
    key: &trust::SigningKey,
    o: &SignOptions,
) -> anyhow::Result<(&'static str, String, bool)> {
    let payload = trust::simple_signing_payload(&loc.repo_name(), digest, &o.annotations);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload)?);
    write_outputs(o, sig.as_bytes(), &payload)?;
    let new = trust::NewSignature {
        payload,
        signature_b64: sig,
        annotations: Default::default(),
    };
    let existing = signatures::fetch_sig_manifest(sigs, digest).await?;
    let already =
        match trust::append_signature(existing.as_ref().map(|(_, m)| m), &new, &key.public_key()) {
            trust::Append::Duplicate => true,
            trust::Append::Updated {
                manifest,
                config,
                layer,
            } => {
                signatures::push_sig_manifest(
                    sigs,
                    digest,
                    &manifest,
                    &config,
                    &layer,
                    &new.payload,
                )
                .await?;
                false
            }
        };
    Ok(("cosign-sig", tagscheme::sig_tag(digest), already))
}

/// cosign v3's format: a bundle (DSSE over an in-toto statement) as an OCI 1.1 referrer.
async fn attach_bundle(
    sigs: &dyn WriteStore,
    subject: &Descriptor,
    key: &trust::SigningKey,
    o: &SignOptions,
) -> anyhow::Result<(&'static str, String, bool)> {
    let bundle = trust::sign_bundle(key, &subject.digest, &o.annotations)?;
    write_outputs(
        o,
        &bundle,
        &trust::cosign_sign_statement(&subject.digest, &o.annotations),
    )?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = trust::bundle_referrer_manifest(subject, &bundle, Some(&created));
    let blobs = [(&r.config, &b"{}"[..]), (&r.layer, &bundle[..])];
    let digest = signatures::attach_referrer(sigs, subject, &r.manifest, &blobs).await?;
    Ok(("sigstore-bundle", digest, false))
}

/// `--output-signature` / `--output-payload`.
fn write_outputs(o: &SignOptions, signature: &[u8], payload: &[u8]) -> anyhow::Result<()> {
    if let Some(p) = &o.output_signature {
        crate::tree::write_atomic(p, signature)?;
    }
    if let Some(p) = &o.output_payload {
        crate::tree::write_atomic(p, payload)?;
    }
    Ok(())
}
