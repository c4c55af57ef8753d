//! cosign-compatible keys, signing and verification against a real registry.
//!
//! Every test starts its own `docker-registry`. The real cosign signatures come from
//! `tests/fixtures/cosign` (see its SOURCES.md).

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use common::fixtures::*;
use common::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

impl Env {
    /// `REG/REPO`
    fn repo(&self, repo: &str) -> String {
        format!("{}/{repo}", self.reg.host())
    }

    /// Pushes examples/hello-plugin to `REG/plugins/hello:0.1.0`; returns the pinned reference.
    fn push_hello(&self) -> String {
        push(
            &self.home,
            &hello_example(),
            &format!("{}:0.1.0", self.repo("plugins/hello")),
        )
    }

    /// Pushes a generated plugin `hello` `version` to `REG/plugins/hello:version`.
    fn push_version(&self, version: &str) -> String {
        let src = write_plugin(
            &self.dir().join(format!("src-{version}")),
            "hello",
            version,
            version,
        );
        push(
            &self.home,
            &src,
            &format!("{}:{version}", self.repo("plugins/hello")),
        )
    }

    fn key(&self, prefix: &str) -> KeyPair {
        KeyPair::generate(&self.home, self.dir(), prefix)
    }

    /// `kplug verify --key K… [extra…] REF` (not run).
    fn verify_cmd(&self, keys: &[&Path], extra: &[&str], reference: &str) -> Command {
        let mut cmd = self.home.kplug();
        cmd.arg("verify");
        for k in keys {
            cmd.arg("--key").arg(k);
        }
        cmd.args(extra).arg(reference);
        cmd
    }

    /// The `.sig` manifest of `digest` in `repo`: (raw bytes, parsed, digest header).
    fn sig_manifest(&self, repo: &str, digest: &str) -> (Vec<u8>, Value, String) {
        let (status, body, headers) = get_manifest(&self.reg, repo, &sig_tag(digest));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let d = headers.get("docker-content-digest").unwrap().to_string();
        assert_eq!(d, sha256_digest(&body));
        (body, v, d)
    }
}

/// Parses verify's stdout: a JSON array of payloads.
fn payloads(out: &std::process::Output) -> Vec<Value> {
    let v: Value = serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("verify stdout is not JSON ({e}): {}", stdout(out)));
    v.as_array().expect("a JSON array").clone()
}

fn signed_digest(payload: &Value) -> &str {
    payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap()
}

/// Writes `bytes` into the registry's filesystem storage as the manifest `sha256(bytes)`
/// of `repo`, the way distribution stores a pushed manifest (blob data + revision link).
/// This serves manifests whose config and layer blobs we do not have, which a PUT would
/// refuse (distribution checks that referenced blobs exist).
fn inject_manifest(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let hex = &digest["sha256:".len()..];
    let root = reg.storage_dir().join("docker/registry/v2");
    let blob = root.join("blobs/sha256").join(&hex[..2]).join(hex);
    std::fs::create_dir_all(&blob).unwrap();
    std::fs::write(blob.join("data"), bytes).unwrap();
    let link = root
        .join("repositories")
        .join(repo)
        .join("_manifests/revisions/sha256")
        .join(hex);
    std::fs::create_dir_all(&link).unwrap();
    std::fs::write(link.join("link"), &digest).unwrap();
    digest
}

/// Pushes a one-layer cosign `.sig` manifest for `subject` built from `payload` and the
/// base64 `signature`, as cosign would (config = cosign's config for that layer).
fn push_sig_manifest(
    reg: &Registry,
    repo: &str,
    subject: &str,
    payload: &[u8],
    signature: &str,
) -> String {
    let layer = push_blob(reg, repo, payload);
    let config = kplug::oci::cosign_config(std::slice::from_ref(&layer));
    let config_digest = push_blob(reg, repo, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": SIMPLESIGNING, "size": payload.len(), "digest": layer,
                    "annotations": {SIG_ANNOTATION: signature}}],
    });
    push_manifest(
        reg,
        repo,
        &sig_tag(subject),
        OCI_MANIFEST,
        manifest.to_string().as_bytes(),
    )
}

fn public_key(rel: &str) -> kplug::trust::PublicKey {
    kplug::trust::PublicKey::from_pem(&String::from_utf8(read_fixture(rel)).unwrap()).unwrap()
}

/// `kplug::oci::attach::verify` through a `RemoteStore` on `REG/REPO`.
fn library_verify(
    reg: &Registry,
    repo: &str,
    digest: &str,
    policy: &kplug::trust::Policy,
) -> anyhow::Result<Vec<kplug::trust::Verified>> {
    let loc = kplug::oci::reference::parse(&format!("{}/{repo}", reg.host())).unwrap();
    let kplug::oci::reference::Location::Registry(r) = loc else {
        panic!("not a registry reference")
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store =
            kplug::oci::store::remote::RemoteStore::new(&r, &kplug::oci::store::Options::default())
                .await?;
        kplug::ops::verify::verify_digest(&store, digest, policy).await
    })
}

#[test]
fn sign_then_verify_round_trip() {
    let env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    let out = sign(&env.home, &env.key, &pinned);
    assert_eq!(stdout(&out).trim(), pinned);
    assert!(
        !stderr(&out).contains("WARNING"),
        "signing by digest warns: {}",
        stderr(&out)
    );

    let out = run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &pinned));
    let p = payloads(&out);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(signed_digest(&p[0]), digest);
    assert_eq!(
        p[0]["critical"]["identity"]["docker-reference"],
        env.repo("plugins/hello")
    );
    assert_eq!(p[0]["critical"]["type"], "cosign container image signature");
    assert_eq!(p[0]["optional"], Value::Null);
    let err = stderr(&out);
    assert!(err.contains(&format!("Verification for {pinned}")), "{err}");
    assert!(
        err.contains(&openssl_fingerprint(&env.key.public)),
        "the check list names the signer: {err}"
    );

    // By tag: the tag is resolved and the same signature verifies.
    let tagged = format!("{}:0.1.0", env.repo("plugins/hello"));
    let out = run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &tagged));
    assert_eq!(signed_digest(&payloads(&out)[0]), digest);
}

#[test]
fn signing_a_tag_warns_and_signs_its_digest() {
    let env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    let tagged = format!("{}:0.1.0", env.repo("plugins/hello"));
    let out = sign(&env.home, &env.key, &tagged);
    assert!(
        stderr(&out).contains("WARNING") && stderr(&out).contains(&digest),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), pinned);
    let (_, m, _) = env.sig_manifest("plugins/hello", &digest);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &pinned));
}

/// A signature made by the real cosign (containers/image fixture): the signed image
/// manifest is served by digest and the `.sig` manifest is rebuilt from the payload and
/// the signature annotation.
#[test]
fn verifies_a_real_cosign_signature() {
    let env = Env::new();
    let manifest = read_fixture("cimage/dir-img-cosign-valid/manifest.json");
    // Its config and 2.9 MB layer are not in the fixtures, so a PUT would be refused:
    // place the manifest in the registry's storage instead.
    let digest = inject_manifest(&env.reg, "cimg", &manifest);
    let (status, body, _) = get_manifest(&env.reg, "cimg", &digest);
    assert_eq!((status, body.as_slice()), (200, manifest.as_slice()));

    let payload = read_fixture("cimage/dir-img-cosign-valid/payload.json");
    let raw = read_fixture("cimage/dir-img-cosign-valid/signature-1");
    let doc: Value = serde_json::from_slice(&raw[b"\x00sigstore-json\n".len()..]).unwrap();
    let signature = doc["annotations"][SIG_ANNOTATION].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(doc["payload"].as_str().unwrap())
            .unwrap(),
        payload
    );
    push_sig_manifest(&env.reg, "cimg", &digest, &payload, signature);

    let reference = format!("{}@{digest}", env.repo("cimg"));
    let cosign_pub = cosign_fixture("cimage/cosign.pub");
    let out = run_ok(&mut env.verify_cmd(&[&cosign_pub], &[], &reference));
    let p = payloads(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0], serde_json::from_slice::<Value>(&payload).unwrap());
    assert_eq!(signed_digest(&p[0]), digest);
    // Any other key: signatures present, none verifies.
    run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &reference), 12);
    // Both keys: the fixture key verifies it.
    run_ok(&mut env.verify_cmd(&[&env.key.public, &cosign_pub], &[], &reference));
}

/// cosign v3.0.4's classic `.sig` manifest, pushed byte for byte with its blobs.
#[test]
fn cosign_v3_classic_sig_manifest_through_the_registry() {
    let env = Env::new();
    let sig_manifest = read_fixture("v3-classic-sig/sig-manifest.json");
    let payload = read_fixture("v3-classic-sig/payload.json");
    let subject = serde_json::from_slice::<Value>(&payload).unwrap()["critical"]["image"]
        ["docker-manifest-digest"]
        .as_str()
        .unwrap()
        .to_string();
    push_blob(
        &env.reg,
        "tobby/fixture",
        &read_fixture("v3-classic-sig/config.json"),
    );
    push_blob(&env.reg, "tobby/fixture", &payload);
    let d = push_manifest(
        &env.reg,
        "tobby/fixture",
        &sig_tag(&subject),
        OCI_MANIFEST,
        &sig_manifest,
    );
    assert_eq!(env.sig_manifest("tobby/fixture", &subject).0, sig_manifest);
    assert_eq!(d, sha256_digest(&sig_manifest));

    // Verification by digest needs only the signatures (the signed manifest's bytes are
    // not in the fixtures): cosign's own signature verifies through the CLI.
    let reference = format!("{}@{subject}", env.repo("tobby/fixture"));
    let fixture_pub = cosign_fixture("v3-classic-sig/cosign.pub");
    let out = run_ok(&mut env.verify_cmd(&[&fixture_pub], &[], &reference));
    assert!(stdout(&out).contains(&subject), "{}", stdout(&out));

    // The signature lookup and checks, through the registry, without the subject.
    let key = public_key("v3-classic-sig/cosign.pub");
    let policy = kplug::trust::Policy {
        keys: vec![key.clone()],
        ..Default::default()
    };
    let v = library_verify(&env.reg, "tobby/fixture", &subject, &policy).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].payload, payload);
    assert_eq!(v[0].signer, key.fingerprint());
    assert_eq!(v[0].signer, openssl_fingerprint(&fixture_pub));
    assert_eq!(v[0].kind, "cosign-sig");

    let wrong = kplug::trust::Policy {
        keys: vec![public_key("cimage/cosign.pub")],
        ..Default::default()
    };
    let e = library_verify(&env.reg, "tobby/fixture", &subject, &wrong).unwrap_err();
    assert_eq!(
        kplug::error::kind_of(&e),
        kplug::error::Kind::NoMatchingSignature,
        "{e:#}"
    );
}

/// cosign v3's default format: a Sigstore bundle attached as a referrer (fallback tag
/// `sha256-<hex>` holding an index).
#[test]
fn cosign_v3_bundle_through_the_registry() {
    let env = Env::new();
    let repo = "tobby/bundle";
    let referring = read_fixture("v3-bundle/bundle-referring-manifest.json");
    let index = read_fixture("v3-bundle/bundle-referrers-index.json");
    let m: Value = serde_json::from_slice(&referring).unwrap();
    let subject = m["subject"]["digest"].as_str().unwrap().to_string();
    assert_eq!(
        push_blob(&env.reg, repo, b"{}"),
        m["config"]["digest"].as_str().unwrap()
    );
    assert_eq!(
        push_blob(
            &env.reg,
            repo,
            &read_fixture("v3-bundle/bundle-sigstore.json")
        ),
        m["layers"][0]["digest"].as_str().unwrap()
    );
    let rd = sha256_digest(&referring);
    push_manifest(&env.reg, repo, &rd, OCI_MANIFEST, &referring);
    push_manifest(
        &env.reg,
        repo,
        &subject.replace(':', "-"),
        OCI_INDEX,
        &index,
    );

    // By digest, the v3 bundle verifies through the CLI without the subject index's bytes.
    let bundle_pub = cosign_fixture("v3-bundle/bundle-cosign.pub");
    let reference = format!("{}@{subject}", env.repo(repo));
    let out = run_ok(&mut env.verify_cmd(&[&bundle_pub], &[], &reference));
    assert!(
        stdout(&out).contains("sigstore.dev/cosign/sign/v1")
            || stdout(&out).contains(subject.trim_start_matches("sha256:")),
        "{}",
        stdout(&out)
    );

    let key = public_key("v3-bundle/bundle-cosign.pub");
    let policy = kplug::trust::Policy {
        keys: vec![key.clone()],
        ..Default::default()
    };
    let v = library_verify(&env.reg, repo, &subject, &policy).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, "sigstore-bundle");
    assert_eq!(v[0].signer, key.fingerprint());
    let statement: Value = serde_json::from_slice(&v[0].payload).unwrap();
    assert_eq!(
        statement["predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        subject
    );

    // With the production Rekor key the inclusion promise is checked too.
    let with_rekor = kplug::trust::Policy {
        keys: vec![key],
        rekor_keys: vec![public_key("cimage/rekor.pub")],
        require_tlog: true,
        ..Default::default()
    };
    let v = library_verify(&env.reg, repo, &subject, &with_rekor).unwrap();
    assert_eq!(v[0].integrated_time, Some(1786568008));

    // Another key: the bundle is there but does not verify.
    let wrong = kplug::trust::Policy {
        keys: vec![public_key("cimage/cosign.pub")],
        ..Default::default()
    };
    let e = library_verify(&env.reg, repo, &subject, &wrong).unwrap_err();
    assert_eq!(
        kplug::error::kind_of(&e),
        kplug::error::Kind::NoMatchingSignature,
        "{e:#}"
    );
    // And a digest nobody signed has neither a .sig tag nor referrers.
    let other = sha256_digest(b"unsigned");
    let e = library_verify(&env.reg, repo, &other, &policy).unwrap_err();
    assert_eq!(
        kplug::error::kind_of(&e),
        kplug::error::Kind::SigTagNotFound,
        "{e:#}"
    );
}

#[test]
fn two_signers_are_both_kept() {
    let mut env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    let second = env.key("second");
    let third = env.key("third");
    sign(&env.home, &env.key, &pinned);
    let (_, first_manifest, _) = env.sig_manifest("plugins/hello", &digest);
    sign(&env.home, &second, &pinned);

    let (_, m, _) = env.sig_manifest("plugins/hello", &digest);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{m}");
    // The first layer is kept as it was; both carry a signature.
    assert_eq!(layers[0], first_manifest["layers"][0]);
    assert_ne!(
        layers[0]["annotations"][SIG_ANNOTATION],
        layers[1]["annotations"][SIG_ANNOTATION]
    );
    // Both sign the same payload: one blob.
    assert_eq!(layers[0]["digest"], layers[1]["digest"]);
    assert_eq!(env.reg.request_count("PUT", &sig_tag(&digest)), 2);

    for k in [&env.key, &second] {
        let out = run_ok(&mut env.verify_cmd(&[&k.public], &[], &pinned));
        assert_eq!(payloads(&out).len(), 1);
    }
    let out = run_ok(&mut env.verify_cmd(&[&env.key.public, &second.public], &[], &pinned));
    assert_eq!(payloads(&out).len(), 2);
    run_fail(&mut env.verify_cmd(&[&third.public], &[], &pinned), 12);
}

#[test]
fn signing_again_with_the_same_key_is_a_no_op() {
    let mut env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    sign(&env.home, &env.key, &pinned);
    let (bytes, _, d1) = env.sig_manifest("plugins/hello", &digest);
    let out = sign(&env.home, &env.key, &pinned);
    assert!(
        stderr(&out).contains("already carries this signature"),
        "{}",
        stderr(&out)
    );
    let (bytes2, m, d2) = env.sig_manifest("plugins/hello", &digest);
    assert_eq!(d1, d2);
    assert_eq!(bytes, bytes2);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        env.reg.request_count("PUT", &sig_tag(&digest)),
        1,
        "the second sign pushed a manifest"
    );
    // --json says so too.
    let out = run_ok(&mut sign_cmd(&env.home, &env.key, &pinned, &["--json"]));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["alreadySigned"], true);
    assert_eq!(v["digest"], digest);
    assert_eq!(v["signatureTag"], sig_tag(&digest));
    assert_eq!(v["signer"], openssl_fingerprint(&env.key.public));
}

#[test]
fn tampered_payload_is_rejected() {
    let env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    sign(&env.home, &env.key, &pinned);
    let (_, mut m, _) = env.sig_manifest("plugins/hello", &digest);
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let payload = get_blob(&env.reg, "plugins/hello", &layer_digest);
    let text = String::from_utf8(payload).unwrap();
    let tampered = text.replace("plugins/hello", "plugins/evil");
    assert_ne!(text, tampered);
    // Rewrite the blob and the descriptor, keep the signature: a consistent manifest
    // whose signature no longer covers its payload.
    let new_digest = push_blob(&env.reg, "plugins/hello", tampered.as_bytes());
    m["layers"][0]["digest"] = Value::String(new_digest);
    m["layers"][0]["size"] = Value::from(tampered.len());
    push_manifest(
        &env.reg,
        "plugins/hello",
        &sig_tag(&digest),
        OCI_MANIFEST,
        m.to_string().as_bytes(),
    );
    let out = run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &pinned), 12);
    assert!(stderr(&out).contains("bad signature"), "{}", stderr(&out));
    assert!(stdout(&out).trim().is_empty());
}

#[test]
fn signature_replayed_onto_another_digest_is_rejected() {
    let env = Env::new();
    let a = env.push_version("1.0.0");
    let b = env.push_version("2.0.0");
    let (da, db) = (digest_of(&a), digest_of(&b));
    assert_ne!(da, db);
    sign(&env.home, &env.key, &a);
    let (bytes, _, _) = env.sig_manifest("plugins/hello", &da);
    push_manifest(
        &env.reg,
        "plugins/hello",
        &sig_tag(&db),
        OCI_MANIFEST,
        &bytes,
    );
    let out = run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &b), 12);
    assert!(
        stderr(&out).contains(&format!("signature is for {da} not {db}")),
        "{}",
        stderr(&out)
    );
    run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &a));
}

#[test]
fn wrong_key_is_rejected() {
    let env = Env::new();
    let pinned = env.push_hello();
    sign(&env.home, &env.key, &pinned);
    let other = env.key("other");
    let out = run_fail(&mut env.verify_cmd(&[&other.public], &[], &pinned), 12);
    assert!(stdout(&out).trim().is_empty());
    assert!(stderr(&out).contains("bad signature"), "{}", stderr(&out));
}

#[test]
fn annotations_must_match() {
    let env = Env::new();
    let pinned = env.push_hello();
    run_ok(&mut sign_cmd(
        &env.home,
        &env.key,
        &pinned,
        &["-a", "env=prod"],
    ));
    let out = run_fail(
        &mut env.verify_cmd(&[&env.key.public], &["-a", "env=dev"], &pinned),
        12,
    );
    assert!(
        stderr(&out).contains("annotation mismatch"),
        "{}",
        stderr(&out)
    );
    run_fail(
        &mut env.verify_cmd(&[&env.key.public], &["-a", "team=x"], &pinned),
        12,
    );
    let out = run_ok(&mut env.verify_cmd(&[&env.key.public], &["-a", "env=prod"], &pinned));
    let p = payloads(&out);
    assert_eq!(p[0]["optional"]["env"], "prod");
    // No -a: any annotation is accepted.
    run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &pinned));
}

#[test]
fn unsigned_artifact_is_exit_11() {
    let env = Env::new();
    let pinned = env.push_hello();
    let out = run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &pinned), 11);
    assert!(stdout(&out).trim().is_empty());
    assert!(
        stderr(&out).contains(&sig_tag(&digest_of(&pinned))),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_signature_manifest_is_exit_10() {
    let env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    let config = kplug::oci::cosign_config(&[]);
    let config_digest = push_blob(&env.reg, "plugins/hello", &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [],
    });
    push_manifest(
        &env.reg,
        "plugins/hello",
        &sig_tag(&digest),
        OCI_MANIFEST,
        manifest.to_string().as_bytes(),
    );
    run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &pinned), 10);
}

/// The `.sig` manifest kplug writes has the shape of the one cosign v3 wrote: same keys in
/// the same order at every level, same media types, config size 233 for one layer.
#[test]
fn signature_manifest_has_cosigns_shape() {
    let env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    sign(&env.home, &env.key, &pinned);
    let (ours, m, _) = env.sig_manifest("plugins/hello", &digest);
    let theirs = read_fixture("v3-classic-sig/sig-manifest.json");

    let normalise = |bytes: &[u8]| {
        let s = String::from_utf8(bytes.to_vec()).unwrap();
        let s = regex::Regex::new("sha256:[0-9a-f]{64}")
            .unwrap()
            .replace_all(&s, "sha256:D");
        let s = regex::Regex::new(r#""dev.cosignproject.cosign/signature":"[A-Za-z0-9+/=]+""#)
            .unwrap()
            .replace_all(&s, r#""dev.cosignproject.cosign/signature":"SIG""#);
        regex::Regex::new(
            r#"("mediaType":"application/vnd.dev.cosign.simplesigning.v1\+json","size":)\d+"#,
        )
        .unwrap()
        .replace_all(&s, "${1}N")
        .into_owned()
    };
    assert_eq!(normalise(&ours), normalise(&theirs));

    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(m["config"]["size"], 233);
    assert_eq!(m["layers"][0]["mediaType"], SIMPLESIGNING);
    let ann = m["layers"][0]["annotations"].as_object().unwrap();
    assert_eq!(ann.keys().collect::<Vec<_>>(), [SIG_ANNOTATION]);
    // The config is cosign's, over the payload digest, and is in the registry.
    let config = get_blob(
        &env.reg,
        "plugins/hello",
        m["config"]["digest"].as_str().unwrap(),
    );
    assert_eq!(
        config,
        kplug::oci::cosign_config(&[m["layers"][0]["digest"].as_str().unwrap().to_string()])
    );
    // The payload is cosign's simple signing payload: 245 bytes for the fixture's
    // 29-character docker-reference, so ours differs by the difference in length.
    let repo = env.repo("plugins/hello");
    assert_eq!(
        m["layers"][0]["size"].as_u64().unwrap() as usize,
        245 - "localhost:15381/tobby/fixture".len() + repo.len()
    );
}

#[test]
fn output_signature_and_payload_verify_with_openssl() {
    let env = Env::new();
    require_bin("openssl", "openssl");
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    let (sig_file, payload_file) = (env.dir().join("sig.b64"), env.dir().join("payload.json"));
    run_ok(&mut sign_cmd(
        &env.home,
        &env.key,
        &pinned,
        &[
            "--output-signature",
            sig_file.to_str().unwrap(),
            "--output-payload",
            payload_file.to_str().unwrap(),
        ],
    ));
    let sig_b64 = std::fs::read_to_string(&sig_file).unwrap();
    let payload = std::fs::read(&payload_file).unwrap();
    // The files hold what was pushed.
    let (_, m, _) = env.sig_manifest("plugins/hello", &digest);
    assert_eq!(
        m["layers"][0]["annotations"][SIG_ANNOTATION],
        sig_b64.trim()
    );
    assert_eq!(
        get_blob(
            &env.reg,
            "plugins/hello",
            m["layers"][0]["digest"].as_str().unwrap()
        ),
        payload
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .unwrap();
    let der_file = env.dir().join("sig.der");
    std::fs::write(&der_file, der).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&env.key.public)
            .arg("-signature")
            .arg(&der_file)
            .arg(&payload_file),
    );
    assert_eq!(stdout(&out).trim(), "Verified OK");
    let p: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(signed_digest(&p), digest);
}

#[test]
fn cosign_repository_holds_the_signatures() {
    let mut env = Env::new();
    let pinned = env.push_hello();
    let digest = digest_of(&pinned);
    let sigs = env.repo("signatures/hello");
    run_ok(sign_cmd(&env.home, &env.key, &pinned, &[]).env("COSIGN_REPOSITORY", &sigs));
    assert_eq!(
        get_manifest(&env.reg, "plugins/hello", &sig_tag(&digest)).0,
        404
    );
    let (_, m, _) = env.sig_manifest("signatures/hello", &digest);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert!(
        env.reg
            .request_count("PUT", "/v2/signatures/hello/manifests/")
            >= 1
    );

    let out = run_ok(
        env.verify_cmd(&[&env.key.public], &[], &pinned)
            .env("COSIGN_REPOSITORY", &sigs),
    );
    assert_eq!(signed_digest(&payloads(&out)[0]), digest);
    // Without the variable, kplug looks beside the artifact and finds nothing.
    run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &pinned), 11);
}

#[test]
fn sign_and_verify_in_an_oci_layout() {
    let env = Env::new();
    let layout = env.dir().join("layout");
    let reference = format!("oci:{}:hello:0.1.0", layout.display());
    let pinned = push(&env.home, &hello_example(), &reference);
    let digest = digest_of(&pinned);
    assert!(layout.join("index.json").is_file());
    run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &reference), 11);

    let out = sign(&env.home, &env.key, &reference);
    assert!(stderr(&out).contains("WARNING"), "{}", stderr(&out));
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(index.contains(&sig_tag(&digest)), "{index}");

    let out = run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &reference));
    let p = payloads(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(signed_digest(&p[0]), digest);
    // By digest too, and a wrong key fails there as in a registry.
    run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &pinned));
    let other = env.key("other");
    run_fail(&mut env.verify_cmd(&[&other.public], &[], &reference), 12);
    // Signing again is a no-op here as well.
    let before = std::fs::read(layout.join("index.json")).unwrap();
    let out = sign(&env.home, &env.key, &pinned);
    assert!(
        stderr(&out).contains("already carries this signature"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), before);
}

#[test]
fn wrong_password_is_reported() {
    let env = Env::new();
    let pinned = env.push_hello();
    let out = run(env
        .home
        .kplug()
        .env("COSIGN_PASSWORD", "not-the-password")
        .args(["sign", "--key"])
        .arg(&env.key.key)
        .arg(&pinned));
    assert!(!out.status.success(), "signed with a wrong password");
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert_eq!(
        get_manifest(&env.reg, "plugins/hello", &sig_tag(&digest_of(&pinned))).0,
        404,
        "nothing may be pushed"
    );
}

#[test]
fn generate_key_pair_writes_cosign_keys_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let kp = KeyPair::generate(&home, tmp.path(), "cosign");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&kp.key), 0o600);
    let private = std::fs::read_to_string(&kp.key).unwrap();
    let public = std::fs::read_to_string(&kp.public).unwrap();
    assert!(
        private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
        "{private}"
    );
    assert!(
        public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{public}"
    );
    // openssl reads the public key: EC P-256.
    let out = run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-text", "-in"])
            .arg(&kp.public),
    );
    assert!(stdout(&out).contains("prime256v1") || stdout(&out).contains("P-256"));

    let prefix = tmp.path().join("cosign");
    let again = |force: bool| {
        let mut cmd = home.kplug();
        cmd.env("COSIGN_PASSWORD", PASSWORD)
            .arg("generate-key-pair")
            .arg("--output-key-prefix")
            .arg(&prefix);
        if force {
            cmd.arg("--force");
        }
        run(&mut cmd)
    };
    let out = again(false);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&kp.key).unwrap(), private);
    assert_eq!(std::fs::read_to_string(&kp.public).unwrap(), public);
    // Only the .pub there: still refused, and the .key is not written either.
    std::fs::remove_file(&kp.key).unwrap();
    assert_exit(&again(false), 2);
    assert!(!kp.key.exists());

    assert_exit(&again(true), 0);
    assert_ne!(std::fs::read_to_string(&kp.public).unwrap(), public);
    assert_eq!(mode(&kp.key), 0o600);
}

/// Reads the scrypt N of a cosign private key PEM.
fn scrypt_n(pem: &str) -> u64 {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let json = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    v["kdf"]["params"]["N"].as_u64().unwrap()
}

#[test]
fn legacy_header_key_signs_and_verifies() {
    let env = Env::new();
    let prefix = env.dir().join("legacy");
    run_ok(
        env.home
            .kplug()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args([
                "generate-key-pair",
                "--legacy-header",
                "--output-key-prefix",
            ])
            .arg(&prefix),
    );
    let kp = KeyPair {
        key: prefix.with_extension("key"),
        public: prefix.with_extension("pub"),
    };
    let pem = std::fs::read_to_string(&kp.key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
            && pem
                .trim_end()
                .ends_with("-----END ENCRYPTED COSIGN PRIVATE KEY-----"),
        "{pem}"
    );
    assert_eq!(scrypt_n(&pem), 32768);
    assert_eq!(
        scrypt_n(&std::fs::read_to_string(&env.key.key).unwrap()),
        65536
    );
    let pinned = env.push_hello();
    sign(&env.home, &kp, &pinned);
    run_ok(&mut env.verify_cmd(&[&kp.public], &[], &pinned));
    run_fail(&mut env.verify_cmd(&[&env.key.public], &[], &pinned), 12);
}

#[test]
fn imported_openssl_key_signs_and_verifies() {
    let env = Env::new();
    let pem = env.dir().join("ec.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
            ])
            .arg(&pem),
    );
    let prefix = env.dir().join("imported");
    run_ok(
        env.home
            .kplug()
            .env("COSIGN_PASSWORD", PASSWORD)
            .arg("import-key-pair")
            .arg("--key")
            .arg(&pem)
            .arg("--output-key-prefix")
            .arg(&prefix),
    );
    let kp = KeyPair {
        key: prefix.with_extension("key"),
        public: prefix.with_extension("pub"),
    };
    // The public half is the openssl key's.
    let out = run_ok(
        Command::new("openssl")
            .args(["ec", "-pubout", "-in"])
            .arg(&pem),
    );
    assert_eq!(
        std::fs::read_to_string(&kp.public).unwrap().trim(),
        stdout(&out).trim()
    );
    let pinned = env.push_hello();
    sign(&env.home, &kp, &pinned);
    run_ok(&mut env.verify_cmd(&[&kp.public], &[], &pinned));
}

#[test]
fn push_with_sign_signs_the_pushed_digest() {
    let mut env = Env::new();
    let tagged = format!("{}:0.1.0", env.repo("plugins/hello"));
    let push_sign = |password: &str| {
        let mut cmd = env.home.kplug();
        cmd.env("COSIGN_PASSWORD", password)
            .arg("push")
            .arg(hello_example())
            .arg(&tagged)
            .arg("--sign")
            .arg("--key")
            .arg(&env.key.key);
        cmd
    };
    // A wrong password fails before anything is uploaded.
    let out = run(&mut push_sign("not-the-password"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert_eq!(env.reg.request_count("PUT", ""), 0);
    assert_eq!(env.reg.request_count("POST", ""), 0);

    let out = run_ok(&mut push_sign(PASSWORD));
    let pinned = stdout(&out).trim().to_string();
    let digest = digest_of(&pinned);
    let (_, m, _) = env.sig_manifest("plugins/hello", &digest);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    let out = run_ok(&mut env.verify_cmd(&[&env.key.public], &[], &pinned));
    assert_eq!(signed_digest(&payloads(&out)[0]), digest);

    // --key without --sign, and --sign without --key, are usage errors.
    let mut cmd = env.home.kplug();
    cmd.arg("push")
        .arg(hello_example())
        .arg(&tagged)
        .arg("--key")
        .arg(&env.key.key);
    run_fail(&mut cmd, 2);
    let mut cmd = env.home.kplug();
    cmd.arg("push")
        .arg(hello_example())
        .arg(&tagged)
        .arg("--sign");
    run_fail(&mut cmd, 2);
}
