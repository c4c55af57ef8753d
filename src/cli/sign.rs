use std::path::PathBuf;

use base64::Engine as _;
use clap::Args;

use super::Global;
use crate::oci::attach::{self, Attached};
use crate::oci::reference::Location;
use crate::oci::store::{self, Store};
use crate::trust;

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Artifact to sign: REGISTRY/REPO@DIGEST (a tag is resolved once, with a warning) or oci:DIR:NAME:TAG.
    pub reference: String,
    /// cosign private key (password from COSIGN_PASSWORD or the terminal).
    #[arg(long)]
    pub key: PathBuf,
    /// Extra signed claim KEY=VALUE in the payload's `optional` (repeatable).
    #[arg(short = 'a', long = "annotations", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Also write the base64 signature here.
    #[arg(long)]
    pub output_signature: Option<PathBuf>,
    /// Also write the signed payload here.
    #[arg(long)]
    pub output_payload: Option<PathBuf>,
}

pub async fn run(g: &Global, a: SignArgs) -> anyhow::Result<()> {
    let key = super::keys::load_signing_key(&a.key)?;
    let annotations = super::parse_annotations(&a.annotations)?;
    let (loc, st) = super::open(g, &a.reference, true).await?;
    let (_, desc) = store::fetch_resolved(st.as_ref(), &loc).await?;
    if loc.digest().is_none() {
        crate::progress::note(format!(
            "WARNING: {} names a tag; signing the digest it points at now, {}. Sign by digest to be sure of what you sign.",
            a.reference, desc.digest
        ));
    }
    let out = sign_digest(
        g,
        &loc,
        st.as_ref(),
        &desc.digest,
        &key,
        &annotations,
        &a.output_signature,
        &a.output_payload,
    )
    .await?;
    if g.json {
        return super::print_json(&out);
    }
    println!("{}", out.signed);
    Ok(())
}

#[derive(serde::Serialize)]
pub struct SignOutput {
    pub signed: String,
    pub digest: String,
    #[serde(rename = "signatureTag")]
    pub signature_tag: String,
    #[serde(rename = "alreadySigned")]
    pub already_signed: bool,
    pub signer: String,
}

/// Sign `digest` of `loc` and attach the signature (used by `sign` and `push --sign`).
#[allow(clippy::too_many_arguments)]
pub async fn sign_digest(
    g: &Global,
    loc: &Location,
    st: &dyn Store,
    digest: &str,
    key: &trust::SigningKey,
    annotations: &std::collections::BTreeMap<String, String>,
    out_sig: &Option<PathBuf>,
    out_payload: &Option<PathBuf>,
) -> anyhow::Result<SignOutput> {
    let payload = trust::simple_signing_payload(&loc.repo_name(), digest, annotations);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload)?);
    if let Some(p) = out_sig {
        crate::tree::write_atomic(p, sig.as_bytes())?;
    }
    if let Some(p) = out_payload {
        crate::tree::write_atomic(p, &payload)?;
    }
    let over = attach::signature_store_override(&g.store_options(), true).await?;
    let sigs: &dyn Store = over.as_deref().unwrap_or(st);
    let signer = key.public_key();
    let new = trust::NewSignature {
        payload,
        signature_b64: sig,
        annotations: Default::default(),
    };
    let res = attach::attach(sigs, digest, &new, &signer).await?;
    let already = matches!(res, Attached::AlreadySigned);
    crate::progress::note(if already {
        format!(
            "{digest} already carries this signature in {}; nothing pushed",
            sigs.describe()
        )
    } else {
        format!(
            "Pushed signature to {}:{}",
            sigs.describe(),
            trust::signature_tag(digest)
        )
    });
    Ok(SignOutput {
        signed: loc.pinned(digest),
        digest: digest.to_string(),
        signature_tag: trust::signature_tag(digest),
        already_signed: already,
        signer: signer.fingerprint(),
    })
}
