//! Signatures end to end through the CLI: real keyless signatures verified offline from a
//! trusted root (both cosign formats), and kplug's own Sigstore bundles carried into an
//! air gap and installed with only the public key.

mod common;

use common::fixtures::*;
use common::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const KUBEWARDEN: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const KUBEWARDEN_ID: &str =
    "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const GITHUB: &str = "https://token.actions.githubusercontent.com";

fn keyless(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sigstore-keyless")
        .join(rel)
}

fn production_root() -> String {
    keyless("trusted_root/production.trusted_root.json")
        .display()
        .to_string()
}

/// Attach `bundle` to `subject` the way cosign v3 does on a registry without the
/// referrers API: the referrer manifest by digest, then the `sha256-<hex>` index.
fn attach_bundle(reg: &Registry, repo: &str, subject: &str, bundle: &[u8]) {
    let layer = push_blob(reg, repo, bundle);
    let config = push_blob(reg, repo, b"{}");
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "digest": layer, "size": bundle.len()}],
        "subject": {"mediaType": OCI_INDEX, "digest": subject, "size": 1},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                        "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
    })
    .to_string();
    let d = push_manifest(
        reg,
        repo,
        &sha256_digest(m.as_bytes()),
        OCI_MANIFEST,
        m.as_bytes(),
    );
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d, "size": m.len(),
         "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]})
    .to_string();
    push_manifest(
        reg,
        repo,
        &subject.replace(':', "-"),
        OCI_INDEX,
        idx.as_bytes(),
    );
}

fn verify_keyless(
    home: &Home,
    reference: &str,
    identity: &str,
    issuer: &str,
) -> std::process::Output {
    run(home.kplug().args([
        "verify",
        reference,
        "--trusted-root",
        &production_root(),
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        issuer,
    ]))
}

/// Issue 12.3: a cosign v3 keyless bundle (GitHub Actions → Fulcio, Rekor) attached as a
/// referrer verifies offline from the production trusted root, and only for its identity.
#[test]
fn cosign_v3_keyless_bundle_verifies_offline() {
    let reg = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let bundle = std::fs::read(keyless(
        "bundles/cosign-v3-sign-kubewarden-controller-v1.34.0.sigstore.json",
    ))
    .unwrap();
    attach_bundle(&reg, "kubewarden/controller", KUBEWARDEN, &bundle);
    let r = format!("{}/kubewarden/controller@{KUBEWARDEN}", reg.host());
    let out = verify_keyless(&home, &r, KUBEWARDEN_ID, GITHUB);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    let payloads: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        payloads[0]["predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    let out = verify_keyless(&home, &r, "https://github.com/someone/else", GITHUB);
    assert_exit(&out, 12);
    assert!(
        stderr(&out).contains("someone/else") || stderr(&out).contains("identity"),
        "{}",
        stderr(&out)
    );
    // Neither --key nor --trusted-root: a usage error naming both.
    let out = run(home.kplug().args(["verify", &r]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--trusted-root"), "{}", stderr(&out));
}

/// Issue 12.3: a cosign keyless `.sig` layer (certificate, chain, Rekor SET; the 2023
/// certificate has only the legacy issuer extension) verifies offline.
#[test]
fn cosign_keyless_sig_layer_verifies_offline() {
    let reg = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let subject = sha256_digest(&std::fs::read(keyless("legacy-sig/manifest.json")).unwrap());
    let sig = std::fs::read(keyless("legacy-sig/signature-1")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&sig[b"\x00sigstore-json\n".len()..]).unwrap();
    let payload = std::fs::read(keyless("legacy-sig/payload.json")).unwrap();
    let repo = "cosign-signed/fulcio-rekor-1";
    let layer = push_blob(&reg, repo, &payload);
    let config = push_blob(&reg, repo, b"{}");
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": layer,
                    "size": payload.len(), "annotations": json["annotations"]}],
    })
    .to_string();
    push_manifest(&reg, repo, &sig_tag(&subject), OCI_MANIFEST, m.as_bytes());
    let r = format!("{}/{repo}@{subject}", reg.host());
    let oauth = "https://github.com/login/oauth";
    assert_exit(&verify_keyless(&home, &r, "mitr@redhat.com", oauth), 0);
    assert_exit(&verify_keyless(&home, &r, "mitr@redhat.com", GITHUB), 12);
}

/// Issue 12.2: what `kplug sign --new-bundle-format` attaches has cosign v3's shape, and a
/// node holding only the public key installs from an air-gapped copy.
#[test]
fn kplug_bundle_signature_installs_in_an_air_gap() {
    let mut env = Env::new();
    let repo = format!("{}/plugins/hello", env.reg.host());
    let pinned = push(&env.home, &hello_example(), &format!("{repo}:0.1.0"));
    let digest = digest_of(&pinned);
    let out = run_ok(&mut sign_cmd(
        &env.home,
        &env.key,
        &pinned,
        &["--new-bundle-format", "--json"],
    ));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["format"], "sigstore-bundle", "{report}");
    // No .sig: the signature is a referrer in the fallback index (no referrers API here).
    let (code, _, _) = get_manifest(&env.reg, "plugins/hello", &sig_tag(&digest));
    assert_eq!(code, 404);
    let (code, idx, _) = get_manifest(&env.reg, "plugins/hello", &digest.replace(':', "-"));
    assert_eq!(code, 200);
    let idx: serde_json::Value = serde_json::from_slice(&idx).unwrap();
    let referrer = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let (_, m, _) = get_manifest(&env.reg, "plugins/hello", &referrer);
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(
        m["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(m["subject"]["digest"], digest.as_str());
    assert_eq!(
        m["annotations"]["dev.sigstore.bundle.content"],
        "dsse-envelope"
    );
    let out = run_ok(
        env.home
            .kplug()
            .arg("verify")
            .arg("--key")
            .arg(&env.key.public)
            .arg(&pinned),
    );
    assert!(stderr(&out).contains("sigstore-bundle"), "{}", stderr(&out));
    // Carry it across the gap in one file, then install with the registry gone.
    let bundle = env.dir().join("bundle.tar");
    run_ok(
        env.home
            .kplug()
            .arg("save")
            .arg(format!("{repo}:0.1.0"))
            .arg("-o")
            .arg(&bundle),
    );
    env.reg.stop();
    let prefix = env.dir().join("lua");
    run_ok(
        env.home
            .kplug()
            .arg("install")
            .arg(format!(
                "oci-archive:{}:plugins/hello:0.1.0",
                bundle.display()
            ))
            .arg("--key")
            .arg(&env.key.public)
            .arg("--prefix")
            .arg(&prefix),
    );
    assert!(prefix.join("kong/plugins/hello/handler.lua").is_file());
}
