//! Writing cosign v3 signatures: a DSSE envelope over cosign's in-toto "sign" statement,
//! packed as a Sigstore bundle v0.3 with a public key hint and no tlog entry, and the OCI
//! 1.1 referrer manifest that attaches it to the signed manifest. No I/O.

use std::collections::BTreeMap;

use anyhow::Result;
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde::Serialize;

use super::bundle::{pae, COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE};
use super::keys::SigningKey;
use crate::digest::sha256;
use crate::oci::{self, Descriptor, Manifest};

/// The referrer manifest annotation saying what the bundle holds.
pub const ANN_BUNDLE_CONTENT: &str = "dev.sigstore.bundle.content";
/// The referrer manifest annotation naming the statement's predicate type.
pub const ANN_BUNDLE_PREDICATE_TYPE: &str = "dev.sigstore.bundle.predicateType";
const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    kind: &'a str,
    subject: [Subject<'a>; 1],
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
}

#[derive(Serialize)]
struct Subject<'a> {
    digest: BTreeMap<&'a str, &'a str>,
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    media_type: &'a str,
    verification_material: Material,
    dsse_envelope: Envelope,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    public_key: Hint,
}

#[derive(Serialize)]
struct Hint {
    hint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: &'static str,
    signatures: [Sig; 1],
}

#[derive(Serialize)]
struct Sig {
    sig: String,
}

/// The in-toto statement `cosign sign` (v3) signs: subject = the manifest digest with no
/// `name`, the `-a` annotations on the subject, predicate type sign/v1 and no predicate.
pub fn cosign_sign_statement(
    manifest_digest: &str,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let (alg, hex) = manifest_digest
        .split_once(':')
        .unwrap_or(("sha256", manifest_digest));
    let statement = Statement {
        kind: IN_TOTO_STATEMENT_V1,
        subject: [Subject {
            digest: BTreeMap::from([(alg, hex)]),
            annotations,
        }],
        predicate_type: COSIGN_SIGN_PREDICATE,
    };
    serde_json::to_vec(&statement).expect("the statement always serialises")
}

/// Sign `manifest_digest` with `key` as `cosign sign --key` v3 does: a Sigstore bundle v0.3
/// (`application/vnd.dev.sigstore.bundle.v0.3+json`) holding a DSSE envelope over
/// [`cosign_sign_statement`], the key's hint (base64 of the SHA-256 of its PKIX DER) and no
/// transparency log entry. Returns the bundle's JSON bytes (the referrer's layer blob).
pub fn sign_bundle(
    key: &SigningKey,
    manifest_digest: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let statement = cosign_sign_statement(manifest_digest, annotations);
    let sig = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &statement))?;
    let public = key.public_key();
    let digest = sha256(public.der());
    let hint = hex::decode(&digest["sha256:".len()..]).expect("sha256 is hex");
    let bundle = Bundle {
        media_type: oci::SIGSTORE_BUNDLE_V03,
        verification_material: Material {
            public_key: Hint {
                hint: B64.encode(hint),
            },
        },
        dsse_envelope: Envelope {
            payload: B64.encode(&statement),
            payload_type: IN_TOTO_PAYLOAD_TYPE,
            signatures: [Sig {
                sig: B64.encode(sig),
            }],
        },
    };
    Ok(serde_json::to_vec(&bundle)?)
}

/// The OCI 1.1 referrer that attaches a bundle to `subject`, as cosign v3 writes it.
#[derive(Debug, Clone)]
pub struct BundleReferrer {
    /// The manifest bytes (push with media type `application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Vec<u8>,
    /// Push the bundle bytes as this blob (the manifest's one layer).
    pub layer: Descriptor,
    /// Push `{}` as this blob (the empty config).
    pub config: Descriptor,
}

/// Build the referrer manifest for `bundle` (from [`sign_bundle`]) about `subject`:
/// artifactType and layer type = the bundle media type, the empty config `{}`, annotations
/// `dev.sigstore.bundle.content: dsse-envelope`, `dev.sigstore.bundle.predicateType` and,
/// when given, `org.opencontainers.image.created` (cosign writes the signing time, RFC 3339).
/// The config descriptor repeats the artifactType, as cosign's does.
pub fn bundle_referrer_manifest(
    subject: &Descriptor,
    bundle: &[u8],
    created: Option<&str>,
) -> BundleReferrer {
    let mut config = Descriptor::new(oci::EMPTY_V1, oci::EMPTY_DIGEST, 2);
    config.artifact_type = Some(oci::SIGSTORE_BUNDLE_V03.to_string());
    let layer = Descriptor::new(
        oci::SIGSTORE_BUNDLE_V03,
        &sha256(bundle),
        bundle.len() as u64,
    );
    let mut annotations = BTreeMap::from([
        (ANN_BUNDLE_CONTENT.to_string(), "dsse-envelope".to_string()),
        (
            ANN_BUNDLE_PREDICATE_TYPE.to_string(),
            COSIGN_SIGN_PREDICATE.to_string(),
        ),
    ]);
    if let Some(t) = created {
        annotations.insert(oci::ANN_CREATED.to_string(), t.to_string());
    }
    let subject = Descriptor {
        media_type: subject.media_type.clone(),
        size: subject.size,
        digest: subject.digest.clone(),
        ..Default::default()
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.to_string()),
        config: config.clone(),
        layers: vec![layer.clone()],
        annotations,
        subject: Some(subject),
        artifact_type: Some(oci::SIGSTORE_BUNDLE_V03.to_string()),
    };
    BundleReferrer {
        manifest: oci::to_json(&manifest),
        layer,
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{verify_signature_bundle, verify_signature_layers, Policy};

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/cosign/v3-bundle/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn statement_is_cosigns() {
        let bundle: serde_json::Value =
            serde_json::from_slice(&fixture("bundle-sigstore.json")).unwrap();
        let payload = B64
            .decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let digest = "sha256:d7d5640c741c60b47fa4b5530daa20a6469b55754a89dd42adbadadb59f9093c";
        assert_eq!(cosign_sign_statement(digest, &BTreeMap::new()), payload);
    }

    #[test]
    fn referrer_manifest_is_byte_exact() {
        let want = fixture("bundle-referring-manifest.json");
        let m: Manifest = serde_json::from_slice(&want).unwrap();
        let created = m.annotations[oci::ANN_CREATED].clone();
        let r = bundle_referrer_manifest(
            m.subject.as_ref().unwrap(),
            &fixture("bundle-sigstore.json"),
            Some(&created),
        );
        assert_eq!(
            String::from_utf8(r.manifest).unwrap(),
            String::from_utf8(want).unwrap()
        );
        assert_eq!(r.layer, m.layers[0]);
        assert_eq!(r.config, m.config);
    }

    /// One key signs both formats; the key verifies both, another key neither.
    #[test]
    fn same_key_verifies_both_formats() {
        use crate::trust::{append_signature, simple_signing_payload, Append, NewSignature};
        let key = SigningKey::generate().unwrap();
        let digest = sha256(b"manifest");
        let ann = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let bundle = sign_bundle(&key, &digest, &ann).unwrap();
        let policy = |k: &SigningKey| Policy {
            keys: vec![k.public_key()],
            annotations: ann.clone(),
            ..Default::default()
        };
        let v = verify_signature_bundle(&digest, &bundle, &policy(&key)).unwrap();
        assert_eq!(
            (v.kind, v.signer.clone()),
            ("sigstore-bundle", key.public_key().fingerprint())
        );
        assert_eq!(v.payload, cosign_sign_statement(&digest, &ann));

        let payload = simple_signing_payload("r.example/p", &digest, &ann);
        let sig = NewSignature {
            signature_b64: B64.encode(key.sign(&payload).unwrap()),
            payload: payload.clone(),
            annotations: BTreeMap::new(),
        };
        let Append::Updated { manifest, .. } = append_signature(None, &sig, &key.public_key())
        else {
            panic!("expected a manifest")
        };
        let m: Manifest = serde_json::from_slice(&manifest).unwrap();
        let blob = |_: &Descriptor| Some(payload.clone());
        let v = verify_signature_layers(&digest, &m, &blob, &policy(&key)).unwrap();
        assert_eq!(
            (v[0].kind, v[0].signer.clone()),
            ("cosign-sig", key.public_key().fingerprint())
        );

        let other = SigningKey::generate().unwrap();
        let e = verify_signature_bundle(&digest, &bundle, &policy(&other)).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
        assert!(verify_signature_layers(&digest, &m, &blob, &policy(&other)).is_err());
    }

    /// An independent check: Python's standard library rebuilds the DSSE PAE from the
    /// bundle JSON and openssl verifies the signature with the public key PEM.
    #[test]
    fn openssl_verifies_the_bundle_independently() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let digest = sha256(b"plugin manifest");
        let bundle = sign_bundle(&key, &digest, &BTreeMap::new()).unwrap();
        std::fs::write(dir.path().join("bundle.json"), &bundle).unwrap();
        std::fs::write(dir.path().join("pub.pem"), key.public_key().to_pem()).unwrap();
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(INDEPENDENT_CHECK)
            .arg(&digest["sha256:".len()..])
            .current_dir(dir.path())
            .output()
            .expect("python3 is installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("Verified OK"), "{text}");
        assert!(text.contains("statement OK"), "{text}");
    }

    const INDEPENDENT_CHECK: &str = r#"
import base64, hashlib, json, subprocess, sys
want = sys.argv[1]
b = json.load(open("bundle.json"))
assert b["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json", b["mediaType"]
assert "tlogEntries" not in b["verificationMaterial"]
env = b["dsseEnvelope"]
body = base64.b64decode(env["payload"])
ptype = env["payloadType"].encode()
pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(body), body)
open("pae.bin", "wb").write(pae)
open("sig.der", "wb").write(base64.b64decode(env["signatures"][0]["sig"]))
der = subprocess.run(["openssl", "pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"],
                     check=True, capture_output=True).stdout
hint = b["verificationMaterial"]["publicKey"]["hint"]
assert base64.b64decode(hint) == hashlib.sha256(der).digest(), "hint"
st = json.loads(body)
assert st["_type"] == "https://in-toto.io/Statement/v1"
assert st["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
assert st["subject"] == [{"digest": {"sha256": want}, "annotations": {}}], st["subject"]
print("statement OK")
r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature",
                    "sig.der", "pae.bin"], capture_output=True, text=True)
print(r.stdout, r.stderr)
sys.exit(r.returncode)
"#;
}
