//! A Fulcio-like CA, a Rekor key and a trusted_root.json minted here, to cover what real
//! data cannot: expiry, wrong issuer or SAN, regexps, the legacy issuer extension, a
//! missing SET, an untrusted root, an unknown log, a CA not yet valid.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::*;
use kplug::trust::{import_private_key, simple_signing_payload, SigningKey};

/// 2024-01-01T00:00:00Z: the leaf certificates are valid for 10 minutes from here.
const T0: i64 = 1_704_067_200;
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SAN: &str = "https://github.com/acme/plugins/.github/workflows/release.yml@refs/tags/v1.0.0";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "kplug test");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    let key = KeyPair::generate().unwrap();
    let der = p.self_signed(&key).unwrap().der().to_vec();
    Ca {
        issuer: Issuer::new(p, key),
        der,
    }
}

enum IssuerExt {
    /// 1.3.6.1.4.1.57264.1.8, a DER UTF8String (Fulcio since 2022).
    Current,
    /// 1.3.6.1.4.1.57264.1.1, the raw string (older Fulcio).
    Legacy,
}

/// A Fulcio-like leaf: one SAN, the OIDC issuer extension, code signing, 10 minutes.
fn leaf(ca: &Ca, san: SanType, ext: IssuerExt) -> (String, SigningKey) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.subject_alt_names = vec![san];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    p.use_authority_key_identifier_extension = true;
    let (oid, content) = match ext {
        IssuerExt::Current => {
            let mut der = vec![0x0c, ISSUER.len() as u8];
            der.extend_from_slice(ISSUER.as_bytes());
            (&[1, 3, 6, 1, 4, 1, 57264, 1, 8][..], der)
        }
        IssuerExt::Legacy => (
            &[1, 3, 6, 1, 4, 1, 57264, 1, 1][..],
            ISSUER.as_bytes().to_vec(),
        ),
    };
    p.custom_extensions = vec![CustomExtension::from_oid_content(oid, content)];
    let t0 = rcgen::date_time_ymd(2024, 1, 1);
    p.not_before = t0;
    p.not_after = t0 + Duration::from_secs(600);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (
        cert.pem(),
        import_private_key(&key.serialize_pem()).unwrap(),
    )
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// A trusted_root.json with one Fulcio CA and one Rekor log.
fn trusted_root(ca: &Ca, rekor: &PublicKey, ca_from: &str) -> Arc<TrustedRoot> {
    let json = trusted_root_json(ca, rekor, ca_from);
    Arc::new(TrustedRoot::from_json(json.as_bytes(), "test root").unwrap())
}

fn trusted_root_json(ca: &Ca, rekor: &PublicKey, ca_from: &str) -> String {
    let log_id = B64.encode(hex::decode(&rekor.fingerprint()["sha256:".len()..]).unwrap());
    let json = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": B64.encode(rekor.der()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            },
            "logId": {"keyId": log_id},
        }],
        "certificateAuthorities": [{
            "subject": {"organization": "kplug test", "commonName": "test fulcio"},
            "uri": "https://fulcio.test",
            "certChain": {"certificates": [{"rawBytes": B64.encode(&ca.der)}]},
            "validFor": {"start": ca_from},
        }],
        "ctlogs": [],
        "timestampAuthorities": [],
    });
    json.to_string()
}

/// A `.sig` layer signed by the leaf, with a Rekor SET (when `rekor` is given) at `time`.
fn layer(
    digest: &str,
    cert_pem: &str,
    key: &SigningKey,
    rekor: Option<&SigningKey>,
    time: i64,
) -> (Descriptor, Vec<u8>) {
    let payload = simple_signing_payload("registry.test/acme/plugin", digest, &BTreeMap::new());
    let sig = B64.encode(key.sign(&payload).unwrap());
    let mut d = Descriptor::new(
        oci::SIMPLESIGNING_V1,
        &sha256(&payload),
        payload.len() as u64,
    );
    d.annotations
        .insert(oci::ANN_COSIGN_SIGNATURE.into(), sig.clone());
    d.annotations
        .insert(oci::ANN_COSIGN_CERTIFICATE.into(), cert_pem.into());
    if let Some(rekor) = rekor {
        let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": &sha256(&payload)["sha256:".len()..]}},
            "signature": {"content": sig, "publicKey": {"content": B64.encode(cert_pem)}}}});
        let set_payload = serde_json::json!({
            "body": B64.encode(body.to_string()),
            "integratedTime": time,
            "logIndex": 42,
            "logID": &rekor.public_key().fingerprint()["sha256:".len()..],
        });
        let canonical = serde_json_canonicalizer::to_vec(&set_payload).unwrap();
        let set = B64.encode(rekor.sign(&canonical).unwrap());
        let bundle = serde_json::json!({"SignedEntryTimestamp": set, "Payload": set_payload});
        d.annotations
            .insert(oci::ANN_COSIGN_BUNDLE.into(), bundle.to_string());
    }
    (d, payload)
}

fn manifest(layers: Vec<Descriptor>) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.into()),
        config: Descriptor::new(oci::CONFIG_V1, oci::EMPTY_DIGEST, 2),
        layers,
        annotations: BTreeMap::new(),
        subject: None,
        artifact_type: None,
    }
}

fn check(
    digest: &str,
    layers: Vec<(Descriptor, Vec<u8>)>,
    p: &Policy,
) -> anyhow::Result<Vec<Verified>> {
    let blobs: BTreeMap<String, Vec<u8>> = layers
        .iter()
        .map(|(d, b)| (d.digest.clone(), b.clone()))
        .collect();
    let m = manifest(layers.into_iter().map(|(d, _)| d).collect());
    verify_signature_layers(
        digest,
        &m,
        &|d: &Descriptor| blobs.get(&d.digest).cloned(),
        p,
    )
}

#[test]
fn test_ca_keyless_policy() {
    let fulcio = ca("test fulcio");
    let rekor = SigningKey::generate().unwrap();
    let root = trusted_root(&fulcio, &rekor.public_key(), "2020-01-01T00:00:00Z");
    let digest = sha256(b"plugin manifest");
    let (cert, key) = leaf(&fulcio, uri(SAN), IssuerExt::Current);
    let good = || layer(&digest, &cert, &key, Some(&rekor), T0 + 60);

    let v = check(&digest, vec![good()], &policy(root.clone(), SAN, ISSUER)).unwrap();
    assert_eq!(v[0].signer, format!("keyless {SAN} (issuer {ISSUER})"));
    assert_eq!(v[0].integrated_time, Some(T0 + 60));
    let re = regexp_policy(
        root.clone(),
        r"^https://github\.com/acme/",
        r"^https://token\.actions\.githubusercontent\.com$",
    );
    check(&digest, vec![good()], &re).unwrap();
    // Unanchored as in cosign: a fragment matches...
    check(
        &digest,
        vec![good()],
        &regexp_policy(root.clone(), "acme/plugins", "token.actions"),
    )
    .unwrap();
    // ...an anchored pattern that does not fit does not.
    let msg = refused(check(
        &digest,
        vec![good()],
        &regexp_policy(root.clone(), "^acme/", ".*"),
    ));
    assert_has(&msg, "wanted identity matching /^acme//");

    let msg = refused(check(
        &digest,
        vec![good()],
        &policy(root.clone(), "https://github.com/acme/other", ISSUER),
    ));
    assert_has(
        &msg,
        &format!("identity mismatch: the certificate is for [{SAN}]"),
    );
    let msg = refused(check(
        &digest,
        vec![good()],
        &policy(root.clone(), SAN, "https://accounts.google.com"),
    ));
    assert_has(&msg, &format!("from issuer \"{ISSUER}\", wanted identity \"{SAN}\" from issuer \"https://accounts.google.com\""));

    // Only the legacy issuer extension, and an email identity: both matched.
    let (old_cert, old_key) = leaf(
        &fulcio,
        SanType::Rfc822Name("dev@acme.test".try_into().unwrap()),
        IssuerExt::Legacy,
    );
    let v = check(
        &digest,
        vec![layer(&digest, &old_cert, &old_key, Some(&rekor), T0 + 1)],
        &policy(root.clone(), "dev@acme.test", ISSUER),
    )
    .unwrap();
    assert_eq!(
        v[0].signer,
        format!("keyless dev@acme.test (issuer {ISSUER})")
    );

    // Logged after the certificate expired: validity is checked at the log time, not now.
    let late = layer(&digest, &cert, &key, Some(&rekor), T0 + 3600);
    assert_has(
        &refused(check(
            &digest,
            vec![late],
            &policy(root.clone(), SAN, ISSUER),
        )),
        "CertExpired",
    );
    // No SET: no signing time.
    let unlogged = layer(&digest, &cert, &key, None, 0);
    assert_has(
        &refused(check(
            &digest,
            vec![unlogged],
            &policy(root.clone(), SAN, ISSUER),
        )),
        "no transparency log entry (dev.sigstore.cosign/bundle)",
    );
    // A SET from a log the root does not hold.
    let stranger = SigningKey::generate().unwrap();
    let other_log = layer(&digest, &cert, &key, Some(&stranger), T0 + 60);
    assert_has(
        &refused(check(
            &digest,
            vec![other_log],
            &policy(root.clone(), SAN, ISSUER),
        )),
        "No log key valid at integrated time",
    );
    // A leaf from a CA the root does not hold.
    let rogue = ca("rogue fulcio");
    let (rogue_cert, rogue_key) = leaf(&rogue, uri(SAN), IssuerExt::Current);
    let untrusted = layer(&digest, &rogue_cert, &rogue_key, Some(&rekor), T0 + 60);
    assert_has(
        &refused(check(
            &digest,
            vec![untrusted],
            &policy(root.clone(), SAN, ISSUER),
        )),
        "certificate chain is invalid",
    );
    // The CA entered the root after the signature was made.
    let later_root = trusted_root(&fulcio, &rekor.public_key(), "2025-01-01T00:00:00Z");
    assert_has(
        &refused(check(
            &digest,
            vec![good()],
            &policy(later_root, SAN, ISSUER),
        )),
        "no trusted certificate authority is valid",
    );
}

/// One policy with a key and a trusted root: a key-signed and a keyless layer both verify;
/// the root's Rekor key checks the key-signed layer's SET too.
#[test]
fn test_ca_keys_and_keyless_in_one_policy() {
    let fulcio = ca("test fulcio");
    let rekor = SigningKey::generate().unwrap();
    let root = trusted_root(&fulcio, &rekor.public_key(), "2020-01-01T00:00:00Z");
    let digest = sha256(b"plugin manifest");
    let (cert, leaf_key) = leaf(&fulcio, uri(SAN), IssuerExt::Current);
    let keyless = layer(&digest, &cert, &leaf_key, Some(&rekor), T0 + 60);

    let signer = SigningKey::generate().unwrap();
    let payload = simple_signing_payload("registry.test/acme/plugin", &digest, &BTreeMap::new());
    let sig = B64.encode(signer.sign(&payload).unwrap());
    let mut keyed = Descriptor::new(
        oci::SIMPLESIGNING_V1,
        &sha256(&payload),
        payload.len() as u64,
    );
    keyed
        .annotations
        .insert(oci::ANN_COSIGN_SIGNATURE.into(), sig);
    let mut p = policy(root, SAN, ISSUER);
    p.keys = vec![signer.public_key()];
    let v = check(
        &digest,
        vec![(keyed.clone(), payload.clone()), keyless.clone()],
        &p,
    )
    .unwrap();
    let signers: Vec<&str> = v.iter().map(|v| v.signer.as_str()).collect();
    assert_eq!(
        signers,
        [
            signer.public_key().fingerprint().as_str(),
            &format!("keyless {SAN} (issuer {ISSUER})")
        ]
    );

    // require_tlog for the key layer is satisfied by the root's Rekor key.
    p.require_tlog = true;
    let msg = refused(check(&digest, vec![(keyed, payload)], &p));
    assert_has(
        &msg,
        "no transparency log entry (dev.sigstore.cosign/bundle) to check",
    );
}

/// Issue 12.4: `save` and `mirror` carry a trusted_root.json (checked before anything is
/// copied) into the bundle; with the registry gone, `verify` and `install` read it from
/// the bundle they received and verify a keyless signature.
#[test]
fn test_ca_keyless_crosses_the_air_gap_with_its_trusted_root() {
    use common::{assert_exit, run, run_ok, stderr};
    let mut reg = common::Registry::start(common::Variant::Anonymous);
    let home = common::Home::new();
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n).display().to_string();
    let tree = common::fixtures::write_plugin(&work.path().join("src"), "hello", "1.0.0", "x");
    let reference = format!("{}/acme/hello:1.0.0", reg.host());
    let pinned = common::fixtures::push(&home, &tree, &reference);
    let digest = pinned.split_once('@').unwrap().1.to_string();

    // A keyless `.sig` from the test CA, logged by the test Rekor key.
    let fulcio = ca("test fulcio");
    let rekor = SigningKey::generate().unwrap();
    let root = trusted_root_json(&fulcio, &rekor.public_key(), "2020-01-01T00:00:00Z");
    std::fs::write(w("root.json"), &root).unwrap();
    let (cert, key) = leaf(&fulcio, uri(SAN), IssuerExt::Current);
    let (desc, payload) = layer(&digest, &cert, &key, Some(&rekor), T0 + 60);
    common::push_blob(&reg, "acme/hello", &payload);
    common::push_blob(&reg, "acme/hello", b"{}");
    let sig = oci::to_json(&manifest(vec![desc]));
    let sig_tag = common::fixtures::sig_tag(&digest);
    common::push_manifest(&reg, "acme/hello", &sig_tag, oci::MANIFEST_V1, &sig);

    // Refused before anything is written: not a trusted root.
    std::fs::write(w("bogus.json"), "{\"mediaType\": \"nope\"}").unwrap();
    let out = run(home.kplug().args([
        "save",
        &reference,
        "-o",
        &w("bad.tar"),
        "--trusted-root",
        &w("bogus.json"),
    ]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("bogus.json"), "{}", stderr(&out));
    assert!(!work.path().join("bad.tar").exists());
    // A registry destination carries nothing; without --signed-only the flag is refused.
    let out = run(home.kplug().args([
        "mirror",
        &reference,
        "--to",
        &format!("{}/m", reg.host()),
        "--trusted-root",
        &w("root.json"),
    ]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("oci:DIR"), "{}", stderr(&out));

    run_ok(home.kplug().args([
        "save",
        &reference,
        "-o",
        &w("bundle.tar"),
        "--trusted-root",
        &w("root.json"),
    ]));
    run_ok(home.kplug().args([
        "mirror",
        &reference,
        "--to",
        &format!("oci:{}", w("mirror")),
        "--trusted-root",
        &w("root.json"),
    ]));
    assert_eq!(
        std::fs::read_to_string(w("mirror/trusted_root.json")).unwrap(),
        root
    );
    let listed = run_ok(std::process::Command::new("tar").args(["tf", &w("bundle.tar")]));
    assert!(
        common::stdout(&listed)
            .lines()
            .any(|l| l == "trusted_root.json"),
        "{}",
        common::stdout(&listed)
    );
    reg.stop();

    // The isolated side: only the bundle it received.
    let verify = |artifact: &str, root_from: &str, identity: &str| {
        run(home.kplug().args([
            "verify",
            artifact,
            "--trusted-root",
            root_from,
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer",
            ISSUER,
        ]))
    };
    let in_tar = format!("oci-archive:{}:acme/hello:1.0.0", w("bundle.tar"));
    let in_dir = format!("oci:{}:acme/hello:1.0.0", w("mirror"));
    assert_exit(&verify(&in_tar, &w("bundle.tar"), SAN), 0);
    assert_exit(&verify(&in_dir, &w("mirror"), SAN), 0);
    let out = verify(&in_tar, &w("bundle.tar"), "https://github.com/acme/other");
    assert_exit(&out, 12);
    assert!(
        stderr(&out).contains("identity mismatch"),
        "{}",
        stderr(&out)
    );
    // A bundle saved without a root says so.
    let out = verify(&in_tar, &w("src"), SAN);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("holds no trusted_root.json"),
        "{}",
        stderr(&out)
    );

    std::fs::write(w("kong.conf"), "").unwrap();
    run_ok(home.kplug().args([
        "install",
        &in_tar,
        "--trusted-root",
        &w("bundle.tar"),
        "--certificate-identity",
        SAN,
        "--certificate-oidc-issuer",
        ISSUER,
        "--prefix",
        &w("lua"),
        "--kong-conf",
        &w("kong.conf"),
    ]));
    assert!(work
        .path()
        .join("lua/kong/plugins/hello/handler.lua")
        .is_file());
}
