//! cosign v3 signatures: a Sigstore bundle (v0.3) holding a DSSE envelope over an in-toto
//! statement whose subject is the signed manifest. No I/O.

use anyhow::{anyhow, bail, ensure, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::keyless;
use super::keys::PublicKey;
use super::rekor::{check_key, entry_body, hex_sha256, same_b64, verify_set, SetPayload};
use super::verify::{check_annotations, check_policy, Policy, Verified};
use crate::error::{fail, Kind};

pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type of a `cosign sign` (not `attest`) statement.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: Material,
    dsse_envelope: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<Value>,
    x509_certificate_chain: Option<Value>,
    /// Parsed one by one as [`TlogEntry`] on the key path; keyless bundles (Rekor v2
    /// entries have no integrated time) are read by `sigstore-verify`.
    #[serde(default)]
    tlog_entries: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    log_id: LogId,
    #[serde(deserialize_with = "int64")]
    integrated_time: i64,
    inclusion_promise: Option<InclusionPromise>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: Option<serde_json::Map<String, Value>>,
}

/// protojson writes int64 as a string but accepts a number too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Num(i64),
        Str(String),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// DSSE pre-authentication encoding: what the envelope signature covers.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verify a cosign v3 signature: a Sigstore bundle holding a DSSE envelope over an in-toto
/// statement with cosign's sign predicate whose subject is the manifest `subject_digest`,
/// signed with one of the keys or keyless by one of the identities. Failures are
/// [`Kind::NoMatchingSignature`].
pub fn verify_signature_bundle(
    subject_digest: &str,
    bundle_json: &[u8],
    policy: &Policy,
) -> Result<Verified> {
    check_policy(policy)?;
    let check = || {
        let (v, statement) = check_bundle(subject_digest, bundle_json, policy)?;
        let statement = statement.ok_or_else(|| {
            anyhow!(
                "the bundle holds a message signature, not a DSSE envelope as cosign sign writes"
            )
        })?;
        ensure!(
            statement.predicate_type == COSIGN_SIGN_PREDICATE,
            "the bundle is an attestation of {:?}, not a cosign signature",
            statement.predicate_type
        );
        Ok(v)
    };
    check().map_err(|e| fail(Kind::NoMatchingSignature, format!("{e:#}")))
}

/// Verify any Sigstore bundle (v0.1, v0.2, v0.3; a DSSE in-toto statement of any predicate,
/// or a message signature) for the artifact whose digest is `artifact_digest`
/// (`sha256:<hex>`): the statement must name it as a subject, or the message digest be it.
/// Message signatures verify keyless only. Failures are [`Kind::NoMatchingSignature`].
pub fn verify_bundle(
    artifact_digest: &str,
    bundle_json: &[u8],
    policy: &Policy,
) -> Result<Verified> {
    check_policy(policy)?;
    check_bundle(artifact_digest, bundle_json, policy)
        .map(|(v, _)| v)
        .map_err(|e| fail(Kind::NoMatchingSignature, format!("{e:#}")))
}

fn check_bundle(
    subject_digest: &str,
    bundle_json: &[u8],
    policy: &Policy,
) -> Result<(Verified, Option<Statement>)> {
    let bundle: Bundle = serde_json::from_slice(bundle_json)
        .map_err(|e| anyhow!("malformed Sigstore bundle: {e}"))?;
    ensure!(
        bundle
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle"),
        "not a Sigstore bundle (mediaType {:?})",
        bundle.media_type
    );
    let material = &bundle.verification_material;
    let (signer, integrated_time) =
        if material.certificate.is_some() || material.x509_certificate_chain.is_some() {
            keyless_bundle(subject_digest, bundle_json, policy)?
        } else {
            key_bundle(&bundle, policy)?
        };
    let (payload, statement) = match &bundle.dsse_envelope {
        Some(env) => {
            let payload = B64
                .decode(&env.payload)
                .map_err(|_| anyhow!("the DSSE payload is not base64"))?;
            let statement = check_statement(&payload, subject_digest, &policy.annotations)?;
            (payload, Some(statement))
        }
        None => (Vec::new(), None),
    };
    let v = Verified {
        payload,
        signer,
        integrated_time,
        kind: "sigstore-bundle",
    };
    Ok((v, statement))
}

/// A bundle with a certificate: verify it keyless, or say why it cannot be.
fn keyless_bundle(
    subject_digest: &str,
    bundle_json: &[u8],
    policy: &Policy,
) -> Result<(String, Option<i64>)> {
    let Some(keyless) = &policy.keyless else {
        bail!("bad signature: the bundle is signed keyless (with a certificate); verify it with --trusted-root and --certificate-identity/--certificate-oidc-issuer");
    };
    let json = std::str::from_utf8(bundle_json)
        .map_err(|_| anyhow!("malformed Sigstore bundle: not UTF-8"))?;
    let hex = subject_digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("{subject_digest} is not a sha256 digest"))?;
    let ok = keyless::verify_bundle(json, keyless::Artifact::Sha256(hex), keyless)
        .map_err(|e| anyhow!("keyless: {e:#}"))?;
    Ok((format!("keyless {}", ok.signer), Some(ok.time)))
}

/// A bundle with a public key hint: its DSSE signature by one of the keys, and its tlog
/// entry when there are Rekor keys to check it with.
fn key_bundle(bundle: &Bundle, policy: &Policy) -> Result<(String, Option<i64>)> {
    let env = bundle.dsse_envelope.as_ref().ok_or_else(|| {
        anyhow!("the bundle holds a message signature, not a DSSE envelope as cosign sign writes")
    })?;
    ensure!(
        env.payload_type == IN_TOTO_PAYLOAD_TYPE,
        "DSSE payload type is {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
        env.payload_type
    );
    let payload = B64
        .decode(&env.payload)
        .map_err(|_| anyhow!("the DSSE payload is not base64"))?;
    let signed = pae(&env.payload_type, &payload);
    let (signer, sig_b64) = env
        .signatures
        .iter()
        .find_map(|s| {
            let sig = B64.decode(&s.sig).ok()?;
            let key = policy.keys.iter().find(|k| k.verify(&signed, &sig))?;
            Some((key, s.sig.as_str()))
        })
        .ok_or_else(|| {
            if policy.keys.is_empty() {
                anyhow!("the bundle is signed with a key, not keyless: give --key")
            } else {
                anyhow!("bad signature: the DSSE envelope does not verify with the given key(s)")
            }
        })?;
    let rekor_keys = policy.set_keys();
    let mut integrated_time = None;
    if !rekor_keys.is_empty() {
        let mut errors = Vec::new();
        for e in &bundle.verification_material.tlog_entries {
            let entry = serde_json::from_value::<TlogEntry>(e.clone())
                .map_err(|e| anyhow!("malformed tlog entry: {e}"));
            match entry.and_then(|e| check_tlog_entry(&e, &rekor_keys, &payload, sig_b64, signer)) {
                Ok(t) => {
                    integrated_time = Some(t);
                    break;
                }
                Err(err) => errors.push(format!("{err:#}")),
            }
        }
        ensure!(
            errors.is_empty() || integrated_time.is_some(),
            "bad SET: {}",
            errors.join("; ")
        );
    }
    ensure!(
        !policy.require_tlog || integrated_time.is_some(),
        "no transparency log entry in the bundle"
    );
    Ok((signer.fingerprint(), integrated_time))
}

/// The DSSE payload is an in-toto statement naming `subject_digest`, with the wanted
/// annotations on that subject.
fn check_statement(
    payload: &[u8],
    subject_digest: &str,
    wanted: &std::collections::BTreeMap<String, String>,
) -> Result<Statement> {
    let statement: Statement = serde_json::from_slice(payload)
        .map_err(|e| anyhow!("the DSSE payload is not an in-toto statement: {e}"))?;
    ensure!(
        statement.kind.starts_with("https://in-toto.io/Statement/"),
        "the DSSE payload is not an in-toto statement (_type {:?})",
        statement.kind
    );
    let want = subject_digest
        .strip_prefix("sha256:")
        .unwrap_or(subject_digest);
    let subject = statement
        .subject
        .iter()
        .find(|s| s.digest.get("sha256").is_some_and(|d| d == want))
        .ok_or_else(|| {
            let signed: Vec<String> = statement
                .subject
                .iter()
                .filter_map(|s| s.digest.get("sha256").map(|d| format!("sha256:{d}")))
                .collect();
            anyhow!(
                "digest mismatch: signature is for {} not {subject_digest}",
                signed.join(", ")
            )
        })?;
    check_annotations(wanted, subject.annotations.as_ref()).map_err(|e| anyhow!(e))?;
    Ok(statement)
}

/// The entry's SET verifies and its dsse body is for this payload and signature by `signer`.
fn check_tlog_entry(
    entry: &TlogEntry,
    rekor_keys: &[PublicKey],
    payload: &[u8],
    sig_b64: &str,
    signer: &PublicKey,
) -> Result<i64> {
    let promise = entry
        .inclusion_promise
        .as_ref()
        .ok_or_else(|| anyhow!("the tlog entry has no inclusion promise (SET)"))?;
    let log_id = B64
        .decode(&entry.log_id.key_id)
        .map_err(|_| anyhow!("the tlog entry's log ID is not base64"))?;
    let set_payload = SetPayload {
        body: entry.canonicalized_body.clone(),
        integrated_time: entry.integrated_time,
        log_index: entry.log_index,
        log_id: hex::encode(log_id),
    };
    verify_set(&set_payload, &promise.signed_entry_timestamp, rekor_keys)?;

    let body = entry_body(&entry.canonicalized_body)?;
    ensure!(
        body["kind"] == "dsse" && body["apiVersion"] == "0.0.1",
        "unsupported Rekor entry {} {} (want dsse 0.0.1)",
        body["kind"],
        body["apiVersion"]
    );
    let hash = &body["spec"]["payloadHash"];
    ensure!(
        hash["algorithm"] == "sha256" && hash["value"] == hex_sha256(payload),
        "the Rekor entry is for another payload (hash {})",
        hash["value"]
    );
    let sigs = body["spec"]["signatures"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let entry_sig = sigs
        .iter()
        .find(|s| same_b64(&s["signature"], sig_b64))
        .ok_or_else(|| anyhow!("the Rekor entry holds another signature"))?;
    check_key(&entry_sig["verifier"], signer)?;
    Ok(entry.integrated_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/cosign/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn key(name: &str) -> PublicKey {
        PublicKey::from_pem(&String::from_utf8(fixture(name)).unwrap()).unwrap()
    }

    fn subject() -> String {
        let m: crate::oci::Manifest =
            serde_json::from_slice(&fixture("v3-bundle/bundle-referring-manifest.json")).unwrap();
        m.subject.unwrap().digest
    }

    fn policy() -> Policy {
        Policy {
            keys: vec![key("v3-bundle/bundle-cosign.pub")],
            ..Default::default()
        }
    }

    #[test]
    fn v3_bundle_verifies() {
        let bundle = fixture("v3-bundle/bundle-sigstore.json");
        let v = verify_signature_bundle(&subject(), &bundle, &policy()).unwrap();
        assert_eq!(v.kind, "sigstore-bundle");
        assert_eq!(v.signer, key("v3-bundle/bundle-cosign.pub").fingerprint());
        assert_eq!(v.integrated_time, None);
        assert!(v
            .payload
            .starts_with(br#"{"_type":"https://in-toto.io/Statement/v1""#));

        let mut p = policy();
        p.rekor_keys = vec![key("cimage/rekor.pub")];
        p.require_tlog = true;
        let v = verify_signature_bundle(&subject(), &bundle, &p).unwrap();
        assert_eq!(v.integrated_time, Some(1786568008));
    }

    #[test]
    fn v3_bundle_failures() {
        let bundle = fixture("v3-bundle/bundle-sigstore.json");
        let fails = |digest: &str, bundle: &[u8], p: &Policy| {
            let e = verify_signature_bundle(digest, bundle, p).unwrap_err();
            assert_eq!(kind_of(&e), Kind::NoMatchingSignature, "{e}");
            e.to_string()
        };
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let msg = fails(other, &bundle, &policy());
        assert!(
            msg.contains(&format!("signature is for {} not {other}", subject())),
            "{msg}"
        );

        let wrong_key = Policy {
            keys: vec![key("cimage/cosign.pub")],
            ..Default::default()
        };
        assert!(fails(&subject(), &bundle, &wrong_key).contains("bad signature"));

        let mut p = policy();
        p.annotations.insert("env".into(), "prod".into());
        assert!(fails(&subject(), &bundle, &p).contains("annotation mismatch"));

        // A SET that does not verify (tampered integrated time).
        let tampered = String::from_utf8(bundle.clone())
            .unwrap()
            .replace("\"1786568008\"", "\"1786568009\"");
        let mut p = policy();
        p.rekor_keys = vec![key("cimage/rekor.pub")];
        assert!(fails(&subject(), tampered.as_bytes(), &p).contains("bad SET"));
        // Without Rekor keys the SET is not looked at.
        assert!(verify_signature_bundle(&subject(), tampered.as_bytes(), &policy()).is_ok());
    }
}
