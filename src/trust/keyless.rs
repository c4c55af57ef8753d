//! Keyless (Fulcio certificate) signatures, verified offline against a trusted root.
//!
//! `sigstore-verify` does the cryptography: the signing times (Rekor v1 SET integrated
//! time, RFC 3161 timestamps; never "now"), the chain to a Fulcio CA valid at those times,
//! the embedded SCT, the inclusion proof and checkpoint, the tlog body against the
//! signature and certificate, and the signature over the payload or DSSE PAE. This module
//! adds what kplug needs around it: cosign's identity/issuer matching (regexps, every SAN),
//! a legacy `.sig` layer turned into the v0.1 bundle it is equivalent to, and checks that
//! give a named reason for bundle defects the library would only reject indirectly.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde::Deserialize;
use serde_json::{json, Value};

use super::identity::{subject_alt_names, CertificateIdentity};
use super::keys::pem_decode;
use super::trusted_root::TrustedRoot;
use crate::bail_kind;
use crate::error::Kind;
use crate::oci;

/// Keyless trust: a trusted root and the signers accepted (any of them).
#[derive(Debug, Clone)]
pub struct Keyless {
    pub root: Arc<TrustedRoot>,
    pub identities: Vec<CertificateIdentity>,
}

impl Keyless {
    /// At least one identity is required (cosign refuses keyless verification without one),
    /// and the root must hold a certificate authority.
    pub fn new(root: Arc<TrustedRoot>, identities: Vec<CertificateIdentity>) -> Result<Self> {
        if identities.is_empty() {
            bail_kind!(
                Kind::Usage,
                "keyless verification needs --certificate-identity (or -regexp) and --certificate-oidc-issuer (or -regexp)"
            );
        }
        if !root.has_certificate_authorities() {
            bail_kind!(
                Kind::Usage,
                "trusted root {} has no certificate authority: it cannot verify keyless signatures",
                root.origin()
            );
        }
        Ok(Keyless { root, identities })
    }
}

/// What the signed thing is: the bytes (a `.sig` payload) or a sha256 (hex) digest.
#[derive(Clone, Copy)]
pub(crate) enum Artifact<'a> {
    Blob(&'a [u8]),
    Sha256(&'a str),
}

/// A keyless signature that passed.
pub(crate) struct KeylessOk {
    /// `<identity> (issuer <issuer>)`: the SAN that matched the policy.
    pub signer: String,
    /// The earliest verified signing time (Unix seconds).
    pub time: i64,
}

/// Verify a Sigstore bundle signed with a Fulcio certificate.
pub(crate) fn verify_bundle(
    json: &str,
    artifact: Artifact,
    keyless: &Keyless,
) -> Result<KeylessOk> {
    let bundle = sigstore_verify::types::Bundle::from_json(json)
        .map_err(|e| anyhow!("malformed Sigstore bundle: {}", printable(&e.to_string())))?;
    precheck(&serde_json::from_str(json)?)?;
    let mut policy = sigstore_verify::VerificationPolicy::any_identity();
    if !keyless.root.has_ct_logs() {
        policy = policy.skip_sct();
    }
    let artifact = match artifact {
        Artifact::Blob(b) => sigstore_verify::types::Artifact::from_blob(b),
        Artifact::Sha256(hex) => {
            let d = sigstore_verify::types::Sha256Hash::from_hex(hex)
                .map_err(|e| anyhow!("bad artifact digest {hex:?}: {e}"))?;
            sigstore_verify::types::Artifact::from_digest(d)
        }
    };
    let result = keyless
        .root
        .verifier
        .verify(artifact, &bundle, &policy)
        .map_err(|e| anyhow!("{}", printable(&e.to_string())))?;
    let cert = bundle
        .signing_certificate()
        .ok_or_else(|| anyhow!("the bundle has no signing certificate"))?;
    let sans = subject_alt_names(cert.as_bytes());
    let issuer = result.issuer();
    let matched = keyless
        .identities
        .iter()
        .find(|id| id.matches(&sans, issuer))
        .ok_or_else(|| identity_mismatch(&sans, issuer, &keyless.identities))?;
    let san = sans
        .iter()
        .find(|s| matched.identity.matches(s))
        .expect("matches() found one");
    let time = result
        .verified_timestamps()
        .iter()
        .min()
        .ok_or_else(|| anyhow!("no verified signing time"))?
        .as_second();
    Ok(KeylessOk {
        signer: format!("{san} (issuer {})", issuer.unwrap_or_default()),
        time,
    })
}

fn identity_mismatch(
    sans: &[String],
    issuer: Option<&str>,
    wanted: &[CertificateIdentity],
) -> anyhow::Error {
    let wanted: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
    anyhow!(
        "identity mismatch: the certificate is for [{}] from issuer {}, wanted {}",
        printable_list(sans),
        issuer.map_or("(none)".to_string(), |i| format!("\"{}\"", printable(i))),
        wanted.join(" or ")
    )
}

/// Certificate fields and library messages quote untrusted bytes: escape control
/// characters and cap the length before they reach a terminal or a log.
pub(crate) fn printable(s: &str) -> String {
    const MAX: usize = 400;
    let mut out = String::new();
    for c in s.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

fn printable_list(items: &[String]) -> String {
    let mut shown: Vec<String> = items.iter().take(8).map(|s| printable(s)).collect();
    if items.len() > 8 {
        shown.push(format!("… {} more", items.len() - 8));
    }
    shown.join(", ")
}

/// Defects `sigstore-verify` rejects only indirectly (or not at all), each with its reason.
fn precheck(raw: &Value) -> Result<()> {
    let material = &raw["verificationMaterial"];
    if let Some(chain) = material.get("x509CertificateChain") {
        let certs = chain["certificates"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        ensure!(!certs.is_empty(), "the bundle's certificate chain is empty");
        for c in &certs[1..] {
            let der = c["rawBytes"].as_str().and_then(|s| B64.decode(s).ok());
            if let Some(name) = der.as_deref().and_then(self_issued) {
                bail!(
                    "the bundle's certificate chain includes the root certificate {name}: \
                     roots come only from the trusted root"
                );
            }
        }
    }
    for e in material["tlogEntries"].as_array().into_iter().flatten() {
        check_inclusion_proof(e)?;
    }
    Ok(())
}

/// The subject of a self-issued (root) certificate.
fn self_issued(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = &cert.tbs_certificate;
    (tbs.subject == tbs.issuer).then(|| tbs.subject.to_string())
}

/// A Rekor v1 inclusion proof must lead from the entry's leaf to the proof's root hash
/// (at the proof's shard-local index; the entry's own logIndex is global). Rekor v2 proofs
/// are checked against their checkpoint by `sigstore-verify`.
fn check_inclusion_proof(entry: &Value) -> Result<()> {
    let proof = &entry["inclusionProof"];
    if proof.is_null()
        || entry["kindVersion"]["version"] == "0.0.2"
            && entry["kindVersion"]["kind"] == "hashedrekord"
    {
        return Ok(());
    }
    let int = |v: &Value| match v {
        Value::String(s) => s.parse::<u64>().ok(),
        other => other.as_u64(),
    };
    let hash = |v: &Value| {
        v.as_str()
            .and_then(|s| B64.decode(s).ok())
            .and_then(|b| sigstore_verify::types::Sha256Hash::try_from(b.as_slice()).ok())
    };
    let body = entry["canonicalizedBody"]
        .as_str()
        .and_then(|s| B64.decode(s).ok());
    let hashes: Option<Vec<_>> = proof["hashes"]
        .as_array()
        .map(|a| a.iter().map(hash).collect())
        .unwrap_or(Some(Vec::new()));
    let (Some(body), Some(index), Some(size), Some(root), Some(hashes)) = (
        body,
        int(&proof["logIndex"]),
        int(&proof["treeSize"]),
        hash(&proof["rootHash"]),
        hashes,
    ) else {
        // Malformed: the bundle parser names the field.
        return Ok(());
    };
    let leaf = sigstore_merkle::hash_leaf(&body);
    sigstore_merkle::verify_inclusion_proof(&leaf, index, size, &hashes, &root).map_err(|e| {
        anyhow!(
            "tlog entry {}: its inclusion proof does not lead to its root hash, so the entry \
             is not the one the log holds ({e})",
            entry["logIndex"]
        )
    })
}

/// The `dev.sigstore.cosign/bundle` annotation of a `.sig` layer.
#[derive(Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(Deserialize)]
struct RekorPayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// The Sigstore bundle v0.1 a keyless `.sig` layer amounts to: the leaf certificate, the
/// SET-only Rekor entry and a message signature over the payload. The `chain` annotation is
/// only a hint; intermediates and roots come from the trusted root.
pub(crate) fn legacy_sig_bundle(
    payload: &[u8],
    signature_b64: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<String> {
    let cert_pem = annotations
        .get(oci::ANN_COSIGN_CERTIFICATE)
        .ok_or_else(|| anyhow!("no certificate (dev.sigstore.cosign/certificate)"))?;
    let cert = match pem_decode(cert_pem) {
        Ok((label, der)) if label == "CERTIFICATE" => der,
        _ => bail!("the dev.sigstore.cosign/certificate annotation is not a PEM certificate"),
    };
    let rekor = annotations.get(oci::ANN_COSIGN_BUNDLE).ok_or_else(|| {
        anyhow!(
            "no transparency log entry (dev.sigstore.cosign/bundle): a keyless signature needs \
             the Rekor SET to prove when it was signed"
        )
    })?;
    let rekor: RekorBundle = serde_json::from_str(rekor)
        .map_err(|e| anyhow!("malformed dev.sigstore.cosign/bundle: {e}"))?;
    let body: Value = B64
        .decode(&rekor.payload.body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| anyhow!("the Rekor entry body is not base64 JSON"))?;
    let log_id = hex::decode(&rekor.payload.log_id)
        .map_err(|_| anyhow!("the Rekor logID {:?} is not hex", rekor.payload.log_id))?;
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "x509CertificateChain": {"certificates": [{"rawBytes": B64.encode(&cert)}]},
            "tlogEntries": [{
                "logIndex": rekor.payload.log_index.to_string(),
                "logId": {"keyId": B64.encode(log_id)},
                "kindVersion": {"kind": body["kind"], "version": body["apiVersion"]},
                "integratedTime": rekor.payload.integrated_time.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": rekor.set},
                "canonicalizedBody": rekor.payload.body,
            }],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(sha256(payload))},
            "signature": signature_b64,
        },
    });
    Ok(bundle.to_string())
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// The SANs and issuer of a PEM certificate, for telling a user what signed a signature
/// they could not verify.
pub(crate) fn describe_certificate(pem: &str) -> String {
    let Ok((_, der)) = pem_decode(pem) else {
        return "an unreadable certificate".into();
    };
    let sans = subject_alt_names(&der);
    let issuer = sigstore_verify::crypto::parse_certificate_info(&der.as_slice().into())
        .ok()
        .and_then(|i| i.issuer);
    format!(
        "a certificate for [{}] from issuer {}",
        printable_list(&sans),
        issuer.map_or("(none)".into(), |i| printable(&i))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_escaped_and_capped() {
        assert_eq!(printable("a\x1b[31mb\nc"), "a\\u{1b}[31mb\\nc");
        let long = "x".repeat(1000);
        assert_eq!(printable(&long).chars().count(), 401);
        let many: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(printable_list(&many), "0, 1, 2, 3, 4, 5, 6, 7, … 2 more");
    }
}
