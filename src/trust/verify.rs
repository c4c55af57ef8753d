//! What `cosign verify` checks on a `.sig` manifest (docs/formats.md §4), with keys or keyless
//! against a trusted root. No I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde_json::Value;

use super::keyless::{self, describe_certificate, legacy_sig_bundle, Artifact, Keyless};
use super::keys::PublicKey;
use super::payload::{Claims, SIMPLE_SIGNING_TYPE};
use super::rekor::check_rekor_bundle;
use crate::bail_kind;
use crate::digest::sha256;
use crate::error::Kind;
use crate::oci::{self, Descriptor, Manifest};

/// What a signature must satisfy: signed by one of the keys, or keyless by one of the
/// identities of a trusted root (or either, when both are given).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Any of these may have signed.
    pub keys: Vec<PublicKey>,
    /// Each must equal the payload's `optional[k]` (bundles: the subject's annotation).
    pub annotations: BTreeMap<String, String>,
    /// Rekor keys to check the SETs of key-signed signatures with (the trusted root's Rekor
    /// keys are added); none means those SETs are not checked. Keyless signatures are always
    /// checked against the trusted root's logs.
    pub rekor_keys: Vec<PublicKey>,
    /// Refuse key-signed signatures without a valid SET.
    pub require_tlog: bool,
    /// Keyless (Fulcio certificate) trust.
    pub keyless: Option<Arc<Keyless>>,
}

impl Policy {
    /// The Rekor keys for key-signed signatures' SETs: the given ones and the trusted root's.
    pub(crate) fn set_keys(&self) -> Vec<PublicKey> {
        let mut keys = self.rekor_keys.clone();
        if let Some(k) = &self.keyless {
            for r in k.root.rekor_keys() {
                if !keys.contains(&r) {
                    keys.push(r);
                }
            }
        }
        keys
    }
}

/// A signature that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed payload bytes (simple signing JSON, or the in-toto statement of a bundle;
    /// empty for a bundle holding a message signature).
    pub payload: Vec<u8>,
    /// Key signatures: the key's fingerprint ([`PublicKey::fingerprint`]). Keyless ones:
    /// `keyless <identity> (issuer <issuer>)`, the certificate identity that matched.
    pub signer: String,
    /// Key signatures: the Rekor integrated time (Unix seconds) when a SET was verified.
    /// Keyless ones: the earliest verified signing time (tlog or RFC 3161 timestamp).
    pub integrated_time: Option<i64>,
    /// `"cosign-sig"` or `"sigstore-bundle"`: the format that verified.
    pub kind: &'static str,
}

pub(crate) fn check_policy(policy: &Policy) -> Result<()> {
    if policy.keys.is_empty() && policy.keyless.is_none() {
        bail_kind!(
            Kind::Usage,
            "no public key or trusted root to verify signatures with"
        );
    }
    if policy.require_tlog && policy.set_keys().is_empty() {
        bail_kind!(
            Kind::Usage,
            "a transparency log entry is required but no Rekor public key was given"
        );
    }
    Ok(())
}

/// Verify every layer of the `.sig` manifest of `manifest_digest`; return those that pass.
/// `blob` returns a layer's bytes (`None` if unavailable).
pub fn verify_signature_layers(
    manifest_digest: &str,
    sig_manifest: &Manifest,
    blob: &dyn Fn(&Descriptor) -> Option<Vec<u8>>,
    policy: &Policy,
) -> Result<Vec<Verified>> {
    check_policy(policy)?;
    if sig_manifest.layers.is_empty() {
        bail_kind!(
            Kind::NoSignatures,
            "no signatures found for {manifest_digest}: the signature manifest has no layers"
        );
    }
    let mut verified = Vec::new();
    let mut failures = Vec::new();
    for (i, layer) in sig_manifest.layers.iter().enumerate() {
        match verify_layer(manifest_digest, layer, blob, policy) {
            Ok(v) => verified.push(v),
            Err(why) => failures.push(format!("  signature {} ({}): {why}", i + 1, layer.digest)),
        }
    }
    if verified.is_empty() {
        bail_kind!(
            Kind::NoMatchingSignature,
            "no matching signatures for {manifest_digest}:\n{}",
            failures.join("\n")
        );
    }
    Ok(verified)
}

fn verify_layer(
    manifest_digest: &str,
    layer: &Descriptor,
    blob: &dyn Fn(&Descriptor) -> Option<Vec<u8>>,
    policy: &Policy,
) -> Result<Verified, String> {
    let payload = blob(layer).ok_or("the payload blob is not available")?;
    let got = sha256(&payload);
    if got != layer.digest || payload.len() as u64 != layer.size {
        return Err(format!(
            "payload digest mismatch: content is {got} ({} bytes)",
            payload.len()
        ));
    }
    let sig_b64 = layer
        .annotations
        .get(oci::ANN_COSIGN_SIGNATURE)
        .ok_or("no dev.cosignproject.cosign/signature annotation")?;
    let sig = B64
        .decode(sig_b64)
        .map_err(|_| "bad signature: the annotation is not base64")?;
    let (signer, integrated_time) = match policy.keys.iter().find(|k| k.verify(&payload, &sig)) {
        Some(key) => (
            key.fingerprint(),
            key_tlog(layer, policy, &payload, sig_b64, key)?,
        ),
        None => keyless_layer(layer, policy, &payload, sig_b64)?,
    };
    check_claims(&payload, manifest_digest, &policy.annotations)?;
    Ok(Verified {
        payload,
        signer,
        integrated_time,
        kind: "cosign-sig",
    })
}

/// The SET of a key-signed layer, when there are Rekor keys to check it with.
fn key_tlog(
    layer: &Descriptor,
    policy: &Policy,
    payload: &[u8],
    sig_b64: &str,
    signer: &PublicKey,
) -> Result<Option<i64>, String> {
    let rekor_keys = policy.set_keys();
    let integrated_time = match layer.annotations.get(oci::ANN_COSIGN_BUNDLE) {
        Some(bundle) if !rekor_keys.is_empty() => Some(
            check_rekor_bundle(bundle, &rekor_keys, payload, sig_b64, Some(signer))
                .map_err(|e| format!("bad SET: {e:#}"))?,
        ),
        _ => None,
    };
    if policy.require_tlog && integrated_time.is_none() {
        return Err("no transparency log entry (dev.sigstore.cosign/bundle) to check".into());
    }
    Ok(integrated_time)
}

/// No key verified the layer: verify it keyless, or say why it cannot be.
fn keyless_layer(
    layer: &Descriptor,
    policy: &Policy,
    payload: &[u8],
    sig_b64: &str,
) -> Result<(String, Option<i64>), String> {
    let cert = layer.annotations.get(oci::ANN_COSIGN_CERTIFICATE);
    match (cert, &policy.keyless) {
        (Some(_), Some(keyless)) => {
            let bundle = legacy_sig_bundle(payload, sig_b64, &layer.annotations)
                .map_err(|e| format!("keyless: {e:#}"))?;
            let ok = keyless::verify_bundle(&bundle, Artifact::Blob(payload), keyless)
                .map_err(|e| format!("keyless: {e:#}"))?;
            Ok((format!("keyless {}", ok.signer), Some(ok.time)))
        }
        (Some(cert), None) => Err(format!(
            "bad signature: it does not verify with the given key(s); it is signed keyless, by {} \
             (verify it with --trusted-root and --certificate-identity/--certificate-oidc-issuer)",
            describe_certificate(cert)
        )),
        (None, _) if !policy.keys.is_empty() => {
            Err("bad signature: it does not verify with the given key(s)".into())
        }
        (None, _) => Err(
            "signed with a key, not keyless (no dev.sigstore.cosign/certificate): give --key"
                .into(),
        ),
    }
}

/// The payload is cosign's simple signing document for `manifest_digest` with the wanted
/// annotations.
fn check_claims(
    payload: &[u8],
    manifest_digest: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<(), String> {
    let claims: Claims = serde_json::from_slice(payload)
        .map_err(|e| format!("the payload is not a cosign simple signing document: {e}"))?;
    if claims.critical.kind != SIMPLE_SIGNING_TYPE {
        return Err(format!(
            "payload type is {:?}, not {SIMPLE_SIGNING_TYPE:?}",
            claims.critical.kind
        ));
    }
    let signed = &claims.critical.image.docker_manifest_digest;
    if signed != manifest_digest {
        return Err(format!(
            "digest mismatch: signature is for {signed} not {manifest_digest}"
        ));
    }
    check_annotations(wanted, claims.optional.as_ref())
}

/// Each wanted annotation must be present with that string value.
pub(crate) fn check_annotations(
    wanted: &BTreeMap<String, String>,
    have: Option<&serde_json::Map<String, Value>>,
) -> Result<(), String> {
    for (k, v) in wanted {
        match have.and_then(|m| m.get(k)) {
            Some(Value::String(s)) if s == v => {}
            Some(other) => {
                return Err(format!("annotation mismatch: {k} is {other}, wanted {v:?}"))
            }
            None => return Err(format!("annotation mismatch: {k} is missing, wanted {v:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;
    use crate::trust::keys::SigningKey;
    use crate::trust::payload::simple_signing_payload;
    use crate::trust::sigmanifest::{append_signature, Append, NewSignature};

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

    fn policy(keys: Vec<PublicKey>) -> Policy {
        Policy {
            keys,
            ..Default::default()
        }
    }

    /// A `.sig` manifest of one layer and a blob lookup serving `payload`.
    fn one_layer(payload: Vec<u8>, sig_b64: &str) -> (Manifest, Vec<u8>) {
        let mut layer = Descriptor::new(
            oci::SIMPLESIGNING_V1,
            &sha256(&payload),
            payload.len() as u64,
        );
        layer
            .annotations
            .insert(oci::ANN_COSIGN_SIGNATURE.into(), sig_b64.into());
        let m = Manifest {
            schema_version: 2,
            media_type: Some(oci::MANIFEST_V1.into()),
            config: Descriptor::new(oci::CONFIG_V1, oci::EMPTY_DIGEST, 2),
            layers: vec![layer],
            annotations: BTreeMap::new(),
            subject: None,
            artifact_type: None,
        };
        (m, payload)
    }

    fn run(digest: &str, m: &Manifest, payload: &[u8], p: &Policy) -> Result<Vec<Verified>> {
        let blob = |d: &Descriptor| (d.digest == sha256(payload)).then(|| payload.to_vec());
        verify_signature_layers(digest, m, &blob, p)
    }

    fn classic() -> (String, Manifest, Vec<u8>, PublicKey) {
        let m: Manifest =
            serde_json::from_slice(&fixture("v3-classic-sig/sig-manifest.json")).unwrap();
        let digest =
            "sha256:f20c43161d73848408ef247f0ec7111b19fe58ffebc0cbcaa0d2c8bda4967268".to_string();
        (
            digest,
            m,
            fixture("v3-classic-sig/payload.json"),
            key("v3-classic-sig/cosign.pub"),
        )
    }

    #[test]
    fn classic_fixture_verifies() {
        let (digest, m, payload, k) = classic();
        let v = run(&digest, &m, &payload, &policy(vec![k.clone()])).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].payload, payload);
        assert_eq!(v[0].signer, k.fingerprint());
        assert_eq!(v[0].kind, "cosign-sig");
        assert_eq!(v[0].integrated_time, None);
    }

    #[test]
    fn cimage_fixture_verifies() {
        let raw = fixture("cimage/dir-img-cosign-valid/signature-1");
        let doc: Value = serde_json::from_slice(&raw[b"\x00sigstore-json\n".len()..]).unwrap();
        let sig = doc["annotations"][oci::ANN_COSIGN_SIGNATURE]
            .as_str()
            .unwrap();
        let payload = fixture("cimage/dir-img-cosign-valid/payload.json");
        let (m, payload) = one_layer(payload, sig);
        let digest = sha256(&fixture("cimage/dir-img-cosign-valid/manifest.json"));
        let k = key("cimage/cosign.pub");
        // The first key does not match; the second does.
        let keys = vec![key("v3-classic-sig/cosign.pub"), k.clone()];
        let v = run(&digest, &m, &payload, &policy(keys)).unwrap();
        assert_eq!(v[0].signer, k.fingerprint());
    }

    #[test]
    fn failures_have_the_right_kind_and_reason() {
        let (digest, m, payload, k) = classic();
        let fails = |d: &str, m: &Manifest, payload: &[u8], p: &Policy| {
            let e = run(d, m, payload, p).unwrap_err();
            (kind_of(&e), e.to_string())
        };

        // Tampered payload: the blob no longer matches its descriptor.
        let mut tampered = payload.clone();
        tampered[10] ^= 1;
        let blob = |_: &Descriptor| Some(tampered.clone());
        let e = verify_signature_layers(&digest, &m, &blob, &policy(vec![k.clone()])).unwrap_err();
        assert_eq!(kind_of(&e), Kind::NoMatchingSignature);
        assert!(e.to_string().contains("payload digest mismatch"), "{e}");

        // Tampered payload with a matching descriptor: the signature fails.
        let sig = m.layers[0].annotations[oci::ANN_COSIGN_SIGNATURE].clone();
        let (m2, p2) = one_layer(tampered.clone(), &sig);
        let (kind, msg) = fails(&digest, &m2, &p2, &policy(vec![k.clone()]));
        assert_eq!(kind, Kind::NoMatchingSignature);
        assert!(msg.contains("bad signature"), "{msg}");

        // Wrong key.
        let (kind, msg) = fails(
            &digest,
            &m,
            &payload,
            &policy(vec![key("cimage/cosign.pub")]),
        );
        assert_eq!(kind, Kind::NoMatchingSignature);
        assert!(msg.contains("bad signature"), "{msg}");

        // Replay onto another digest.
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let (kind, msg) = fails(other, &m, &payload, &policy(vec![k.clone()]));
        assert_eq!(kind, Kind::NoMatchingSignature);
        assert!(
            msg.contains(&format!("signature is for {digest} not {other}")),
            "{msg}"
        );

        // Annotation required but absent.
        let mut p = policy(vec![k.clone()]);
        p.annotations.insert("env".into(), "prod".into());
        let (kind, msg) = fails(&digest, &m, &payload, &p);
        assert_eq!(kind, Kind::NoMatchingSignature);
        assert!(msg.contains("annotation mismatch: env is missing"), "{msg}");

        // No tlog entry while one is required.
        let mut p = policy(vec![k.clone()]);
        p.rekor_keys = vec![key("cimage/rekor.pub")];
        p.require_tlog = true;
        let (kind, msg) = fails(&digest, &m, &payload, &p);
        assert_eq!(kind, Kind::NoMatchingSignature);
        assert!(msg.contains("no transparency log entry"), "{msg}");

        // Empty manifest.
        let mut empty = m.clone();
        empty.layers.clear();
        let (kind, _) = fails(&digest, &empty, &payload, &policy(vec![k]));
        assert_eq!(kind, Kind::NoSignatures);
    }

    #[test]
    fn annotations_and_several_layers() {
        let signer = SigningKey::generate().unwrap();
        let stranger = SigningKey::generate().unwrap();
        let digest = sha256(b"manifest");
        let sign = |k: &SigningKey, optional: &BTreeMap<String, String>| {
            let payload = simple_signing_payload("r.example/p", &digest, optional);
            NewSignature {
                signature_b64: B64.encode(k.sign(&payload).unwrap()),
                payload,
                annotations: BTreeMap::new(),
            }
        };
        let prod = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let dev = BTreeMap::from([("env".to_string(), "dev".to_string())]);
        let mut blobs = BTreeMap::new();
        let mut manifest: Option<Manifest> = None;
        for (k, opt) in [(&stranger, &prod), (&signer, &dev), (&signer, &prod)] {
            let sig = sign(k, opt);
            let Append::Updated { manifest: m, .. } =
                append_signature(manifest.as_ref(), &sig, &k.public_key())
            else {
                panic!("expected an append")
            };
            blobs.insert(sha256(&sig.payload), sig.payload);
            manifest = Some(serde_json::from_slice(&m).unwrap());
        }
        let m = manifest.unwrap();
        let blob = |d: &Descriptor| blobs.get(&d.digest).cloned();
        let mut p = policy(vec![signer.public_key()]);
        p.annotations = prod.clone();
        let v = verify_signature_layers(&digest, &m, &blob, &p).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].payload, blobs[&m.layers[2].digest]);

        p.annotations.insert("env".into(), "staging".into());
        let e = verify_signature_layers(&digest, &m, &blob, &p).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("signature 1") && msg.contains("bad signature"),
            "{msg}"
        );
        assert!(msg.contains(r#"env is "dev", wanted "staging""#), "{msg}");
        assert!(msg.contains(r#"env is "prod", wanted "staging""#), "{msg}");
    }

    /// A key-signed layer with a SET from a stand-in Rekor key.
    #[test]
    fn layer_with_rekor_bundle() {
        use crate::trust::rekor::{hex_sha256, SetPayload};
        let signer = SigningKey::generate().unwrap();
        let rekor = SigningKey::generate().unwrap();
        let digest = sha256(b"manifest");
        let payload = simple_signing_payload("r.example/p", &digest, &BTreeMap::new());
        let sig_b64 = B64.encode(signer.sign(&payload).unwrap());
        let bundle_for = |entry_key: &PublicKey| {
            let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex_sha256(&payload)}},
                "signature": {"content": sig_b64, "publicKey": {"content": B64.encode(entry_key.to_pem())}}}});
            let set_payload = SetPayload {
                body: B64.encode(body.to_string()),
                integrated_time: 1_700_000_000,
                log_index: 42,
                log_id: hex_sha256(rekor.public_key().der()),
            };
            let set = rekor
                .sign(&serde_json_canonicalizer::to_vec(&set_payload).unwrap())
                .unwrap();
            serde_json::json!({"SignedEntryTimestamp": B64.encode(set), "Payload": set_payload})
                .to_string()
        };
        let check = |bundle: String| {
            let sig = NewSignature {
                payload: payload.clone(),
                signature_b64: sig_b64.clone(),
                annotations: BTreeMap::from([(oci::ANN_COSIGN_BUNDLE.to_string(), bundle)]),
            };
            let Append::Updated { manifest, .. } =
                append_signature(None, &sig, &signer.public_key())
            else {
                panic!("expected a manifest")
            };
            let m: Manifest = serde_json::from_slice(&manifest).unwrap();
            let p = Policy {
                keys: vec![signer.public_key()],
                rekor_keys: vec![rekor.public_key()],
                require_tlog: true,
                ..Default::default()
            };
            run(&digest, &m, &payload, &p)
        };
        let v = check(bundle_for(&signer.public_key())).unwrap();
        assert_eq!(v[0].integrated_time, Some(1_700_000_000));
        let e = check(bundle_for(&rekor.public_key())).unwrap_err();
        assert_eq!(kind_of(&e), Kind::NoMatchingSignature);
        assert!(e.to_string().contains("bad SET"), "{e}");
    }

    #[test]
    fn policy_needs_keys() {
        let (digest, m, payload, _) = classic();
        let e = run(&digest, &m, &payload, &Policy::default()).unwrap_err();
        assert_eq!(kind_of(&e), Kind::Usage);
    }
}
