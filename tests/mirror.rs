//! Signatures travel with `kplug copy`, merge at the destination, and verify offline.

mod common;

use common::*;

const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-plugin");

fn keygen(home: &Home, dir: &std::path::Path, prefix: &str) -> (String, String) {
    let p = dir.join(prefix).display().to_string();
    run_ok(home.kplug().env("COSIGN_PASSWORD", "pw").args([
        "generate-key-pair",
        "--output-key-prefix",
        &p,
    ]));
    (format!("{p}.key"), format!("{p}.pub"))
}

fn sig_layers(reg: &Registry, repo: &str, digest: &str) -> usize {
    let (status, body, _) = get_manifest(reg, repo, &format!("{}.sig", digest.replace(':', "-")));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    m["layers"].as_array().unwrap().len()
}

#[test]
fn copy_carries_and_merges_signatures_and_installs_offline() {
    let a = Registry::start(Variant::Anonymous);
    let b = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let (k1, p1) = keygen(&home, tmp.path(), "one");
    let (k2, p2) = keygen(&home, tmp.path(), "two");
    let (k3, p3) = keygen(&home, tmp.path(), "three");
    let src = format!("{}/plugins/hello:0.1.0", a.host());
    let out = run_ok(
        home.kplug()
            .env("COSIGN_PASSWORD", "pw")
            .args(["push", "--sign", "--key", &k1, HELLO, &src]),
    );
    let pinned = stdout(&out).trim().to_string();
    let digest = pinned.rsplit_once('@').unwrap().1.to_string();

    let dst = format!("{}/mirror/hello:0.1.0", b.host());
    run_ok(home.kplug().args(["copy", &src, &dst]));
    let at_b = format!("{}/mirror/hello@{digest}", b.host());
    run_ok(home.kplug().args(["verify", "--key", &p1, &at_b]));

    // The destination gains a signature of its own; the source a third one.
    run_ok(
        home.kplug()
            .env("COSIGN_PASSWORD", "pw")
            .args(["sign", "--key", &k2, &at_b]),
    );
    run_ok(
        home.kplug()
            .env("COSIGN_PASSWORD", "pw")
            .args(["sign", "--key", &k3, &pinned]),
    );
    run_ok(home.kplug().args(["copy", &src, &dst]));
    assert_eq!(
        sig_layers(&b, "mirror/hello", &digest),
        3,
        "merged, nothing lost"
    );
    for p in [&p1, &p2, &p3] {
        run_ok(home.kplug().args(["verify", "--key", p, &at_b]));
    }
    // Copying again changes nothing.
    run_ok(home.kplug().args(["copy", &src, &dst]));
    assert_eq!(sig_layers(&b, "mirror/hello", &digest), 3);

    // --no-signatures copies the artifact alone.
    let bare = format!("{}/bare/hello:0.1.0", b.host());
    run_ok(home.kplug().args(["copy", "--no-signatures", &src, &bare]));
    run_fail(
        home.kplug().args([
            "verify",
            "--key",
            &p1,
            &format!("{}/bare/hello@{digest}", b.host()),
        ]),
        11,
    );

    // Into a layout, then verify and install with both registries gone.
    let layout = tmp.path().join("bundle");
    let oci_ref = format!("oci:{}:hello:0.1.0", layout.display());
    run_ok(home.kplug().args(["copy", &src, &oci_ref]));
    drop(a);
    drop(b);
    run_ok(home.kplug().args(["verify", "--key", &p3, &oci_ref]));
    let prefix = tmp.path().join("lua");
    let conf = tmp.path().join("kong.conf");
    run_ok(
        home.kplug()
            .args(["install", &oci_ref, "--key", &p1])
            .arg("--prefix")
            .arg(&prefix)
            .arg("--kong-conf")
            .arg(&conf),
    );
    assert!(prefix.join("kong/plugins/hello/handler.lua").is_file());
}
