//! Offline Rekor checks: the signed entry timestamp (SET) and the entry body.

use anyhow::{anyhow, bail, ensure, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{pem_decode, PublicKey};
use crate::error::{fail, Kind};

/// What the SET signs, as RFC 8785 canonical JSON.
#[derive(Serialize, Deserialize)]
pub(crate) struct SetPayload {
    pub body: String,
    #[serde(rename = "integratedTime")]
    pub integrated_time: i64,
    #[serde(rename = "logIndex")]
    pub log_index: i64,
    #[serde(rename = "logID")]
    pub log_id: String,
}

/// The `dev.sigstore.cosign/bundle` annotation.
#[derive(Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: SetPayload,
}

/// Check the SET of a `dev.sigstore.cosign/bundle` annotation with the Rekor keys, and that
/// its hashedrekord entry is for `payload` and `signature_b64`. Returns the integrated time.
pub fn verify_rekor_set(
    bundle_json: &str,
    rekor_keys: &[PublicKey],
    payload: &[u8],
    signature_b64: &str,
) -> Result<i64> {
    check_rekor_bundle(bundle_json, rekor_keys, payload, signature_b64, None)
        .map_err(|e| fail(Kind::NoMatchingSignature, format!("bad SET: {e:#}")))
}

/// [`verify_rekor_set`], also checking that the entry names `signer` when given.
pub(crate) fn check_rekor_bundle(
    bundle_json: &str,
    rekor_keys: &[PublicKey],
    payload: &[u8],
    signature_b64: &str,
    signer: Option<&PublicKey>,
) -> Result<i64> {
    let bundle: RekorBundle =
        serde_json::from_str(bundle_json).map_err(|e| anyhow!("malformed Rekor bundle: {e}"))?;
    verify_set(&bundle.payload, &bundle.set, rekor_keys)?;
    let body = entry_body(&bundle.payload.body)?;
    ensure!(
        body["kind"] == "hashedrekord" && body["apiVersion"] == "0.0.1",
        "unsupported Rekor entry {} {} (want hashedrekord 0.0.1)",
        body["kind"],
        body["apiVersion"]
    );
    let hash = &body["spec"]["data"]["hash"];
    ensure!(
        hash["algorithm"] == "sha256" && hash["value"] == hex_sha256(payload),
        "the Rekor entry is for another payload (hash {})",
        hash["value"]
    );
    ensure!(
        same_b64(&body["spec"]["signature"]["content"], signature_b64),
        "the Rekor entry holds another signature"
    );
    if let Some(signer) = signer {
        check_key(&body["spec"]["signature"]["publicKey"]["content"], signer)?;
    }
    Ok(bundle.payload.integrated_time)
}

/// The SET is an ECDSA signature by the log whose ID is `payload.log_id`.
pub(crate) fn verify_set(
    payload: &SetPayload,
    set_b64: &str,
    rekor_keys: &[PublicKey],
) -> Result<()> {
    let key = rekor_keys
        .iter()
        .find(|k| hex_sha256(k.der()) == payload.log_id)
        .ok_or_else(|| {
            anyhow!(
                "log ID {} is not that of any given Rekor key",
                payload.log_id
            )
        })?;
    let canonical = serde_json_canonicalizer::to_vec(payload)?;
    let set = B64
        .decode(set_b64)
        .map_err(|_| anyhow!("the SET is not base64"))?;
    ensure!(
        key.verify(&canonical, &set),
        "the SET does not verify with the Rekor key"
    );
    Ok(())
}

/// The base64 JSON body of a Rekor entry.
pub(crate) fn entry_body(b64: &str) -> Result<Value> {
    let raw = B64
        .decode(b64)
        .map_err(|_| anyhow!("the Rekor entry body is not base64"))?;
    serde_json::from_slice(&raw).map_err(|e| anyhow!("the Rekor entry body is not JSON: {e}"))
}

/// A Rekor `publicKey`/`verifier` field: base64 of a PEM `PUBLIC KEY` that must be `signer`.
pub(crate) fn check_key(b64_pem: &Value, signer: &PublicKey) -> Result<()> {
    let pem = b64_pem
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| anyhow!("the Rekor entry has no readable public key"))?;
    let (label, der) = pem_decode(&pem)?;
    if label != "PUBLIC KEY" || der != signer.der() {
        bail!("the Rekor entry names another key or a certificate, not the signing key");
    }
    Ok(())
}

/// Both base64 strings decode to the same bytes.
pub(crate) fn same_b64(a: &Value, b: &str) -> bool {
    match (a.as_str().map(|a| B64.decode(a)), B64.decode(b)) {
        (Some(Ok(a)), Ok(b)) => a == b,
        _ => false,
    }
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    crate::digest::sha256(bytes)["sha256:".len()..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/cosign/cimage/keyless-rekor/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn keyless_fixture_set_verifies() {
        let rekor = [PublicKey::from_pem(&fixture("rekor.pub")).unwrap()];
        assert_eq!(
            rekor[0].fingerprint(),
            "sha256:c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
        );
        let set = fixture("rekor-set");
        let payload = fixture("rekor-payload");
        let sig = fixture("rekor-sig");
        let sig = sig.trim();
        let t = verify_rekor_set(&set, &rekor, payload.as_bytes(), sig).unwrap();
        assert_eq!(t, 1670870899);

        let err = |r: Result<i64>| format!("{:#}", r.unwrap_err());
        // Another payload, another signature, a tampered SET payload, an unknown log.
        let e = err(verify_rekor_set(&set, &rekor, b"{}", sig));
        assert!(e.contains("another payload"), "{e}");
        let other_sig = "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";
        let e = err(verify_rekor_set(
            &set,
            &rekor,
            payload.as_bytes(),
            other_sig,
        ));
        assert!(e.contains("another signature"), "{e}");
        let tampered = set.replace("1670870899", "1670870900");
        let e = err(verify_rekor_set(&tampered, &rekor, payload.as_bytes(), sig));
        assert!(e.contains("does not verify"), "{e}");
        let stranger = crate::trust::keys::SigningKey::generate().unwrap();
        let e = err(verify_rekor_set(
            &set,
            &[stranger.public_key()],
            payload.as_bytes(),
            sig,
        ));
        assert!(e.contains("log ID"), "{e}");
        // The body names a certificate, so it never passes as a key's entry.
        let e =
            check_rekor_bundle(&set, &rekor, payload.as_bytes(), sig, Some(&rekor[0])).unwrap_err();
        assert!(format!("{e:#}").contains("certificate"), "{e:#}");
    }
}
