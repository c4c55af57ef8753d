//! Signatures travel with `kplug copy`, merge at the destination, and verify offline.

mod common;

use common::fixtures::*;
use common::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

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
    run_ok(
        home.kplug()
            .args(["install", &oci_ref, "--key", &p1])
            .arg("--prefix")
            .arg(&prefix),
    );
    assert!(prefix.join("kong/plugins/hello/handler.lua").is_file());
}

/// `kplug push --sign --key KEY SRC REF`; the pinned reference.
fn push_signed(home: &Home, key: &KeyPair, src: &std::path::Path, reference: &str) -> String {
    let out = run_ok(
        home.kplug()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(["push", "--sign", "--key"])
            .arg(&key.key)
            .arg(src)
            .arg(reference),
    );
    stdout(&out).trim().to_string()
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

fn index_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap()
}

fn verify_ok(home: &Home, key: &KeyPair, reference: &str) {
    run_ok(
        home.kplug()
            .args(["verify", "--key"])
            .arg(&key.public)
            .arg(reference),
    );
}

#[test]
fn save_then_load_across_the_gap() {
    let a = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::generate(&home, tmp.path(), "cosign");
    let other = KeyPair::generate(&home, tmp.path(), "other");
    let hello = push_signed(
        &home,
        &key,
        HELLO.as_ref(),
        &format!("{}/plugins/hello:0.1.0", a.host()),
    );
    sign(&home, &other, &hello);
    let rate_dir = write_plugin(&tmp.path().join("rate"), "rate", "1.0.0", "v1");
    let rate = push_signed(
        &home,
        &key,
        &rate_dir,
        &format!("{}/plugins/rate:1.0.0", a.host()),
    );
    let refs = [
        format!("{}/plugins/hello:0.1.0", a.host()),
        format!("{}/plugins/rate:1.0.0", a.host()),
    ];

    // One carryable file, and the same as a directory; saving twice gives the same bytes.
    let tar = tmp.path().join("bundle.tar");
    let tar2 = tmp.path().join("again.tar");
    let dir = tmp.path().join("bundle");
    for out in [&tar, &tar2, &dir] {
        run_ok(home.kplug().args(["save", "-o"]).arg(out).args(&refs));
    }
    assert_eq!(std::fs::read(&tar).unwrap(), std::fs::read(&tar2).unwrap());
    let idx = index_json(&dir);
    let entries = idx["manifests"].as_array().unwrap();
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == n)
            .unwrap_or_else(|| panic!("no entry {n} in {idx}"))
    };
    let hd = digest_of(&hello);
    assert_eq!(
        by_name("plugins/hello:0.1.0")["annotations"]["kind"],
        "dev.cosignproject.cosign/image"
    );
    assert_eq!(by_name("plugins/hello:0.1.0")["digest"], hd.as_str());
    assert_eq!(
        by_name(&format!("plugins/hello:{}", sig_tag(&hd)))["annotations"]["kind"],
        "dev.cosignproject.cosign/sigs"
    );
    // `tar` can list it: a plain ustar of the layout.
    let listing = run_ok(std::process::Command::new("tar").arg("tf").arg(&tar));
    assert!(stdout(&listing).lines().any(|l| l == "index.json"));
    drop(a);

    // No network at all: verify and install from the bundle.
    for r in [
        format!("oci:{}:plugins/hello:0.1.0", dir.display()),
        format!("oci:{}:0.1.0", dir.display()),
        format!("oci-archive:{}:plugins/hello:0.1.0", tar.display()),
    ] {
        verify_ok(&home, &key, &r);
        verify_ok(&home, &other, &r);
    }
    let prefix = tmp.path().join("lua");
    run_ok(
        home.kplug()
            .arg("install")
            .arg(format!("oci-archive:{}:plugins/rate:1.0.0", tar.display()))
            .arg("--key")
            .arg(&key.public)
            .arg("--prefix")
            .arg(&prefix),
    );
    assert!(prefix.join("kong/plugins/rate/handler.lua").is_file());

    // The isolated registry exists only now.
    let b = Registry::start(Variant::Anonymous);
    let out = run_ok(
        home.kplug()
            .args(["load", "--json", "--signed-only", "--key"])
            .arg(&key.public)
            .arg(&tar)
            .arg(format!("{}/airgap", b.host())),
    );
    let v = json_out(&out);
    assert_eq!(v["totals"]["copied"], 2, "{v}");
    for (pinned, repo) in [(&hello, "plugins/hello"), (&rate, "plugins/rate")] {
        let at_b = format!("{}/airgap/{repo}@{}", b.host(), digest_of(pinned));
        verify_ok(&home, &key, &at_b);
    }
    verify_ok(
        &home,
        &other,
        &format!("{}/airgap/plugins/hello:0.1.0", b.host()),
    );
    // Loading again moves nothing.
    let v = json_out(&run_ok(
        home.kplug()
            .args(["load", "--json"])
            .arg(&dir)
            .arg(format!("{}/airgap", b.host())),
    ));
    assert_eq!(v["totals"]["skipped"], 2, "{v}");
    assert_eq!(v["totals"]["bytesCopied"], 0, "{v}");
}

/// cosign v3's real bundle (a referrer found through the `sha256-<hex>` fallback index)
/// crosses registry → registry and registry → layout → registry and still verifies.
#[test]
fn v3_bundle_fixture_survives_copy() {
    let a = Registry::start(Variant::Anonymous);
    let b = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = "tobby/bundle";
    let referring = read_fixture("v3-bundle/bundle-referring-manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&referring).unwrap();
    let subject = m["subject"]["digest"].as_str().unwrap().to_string();
    push_blob(&a, repo, b"{}");
    push_blob(&a, repo, &read_fixture("v3-bundle/bundle-sigstore.json"));
    push_manifest(
        &a,
        repo,
        &sha256_digest(&referring),
        OCI_MANIFEST,
        &referring,
    );
    push_manifest(
        &a,
        repo,
        &subject.replace(':', "-"),
        OCI_INDEX,
        &read_fixture("v3-bundle/bundle-referrers-index.json"),
    );
    let open = |r: &str| {
        let loc = kplug::oci::reference::parse(r).unwrap();
        async move {
            kplug::oci::store::open_writable(&loc, &kplug::oci::store::Options::default())
                .await
                .unwrap()
        }
    };
    let layout = tmp.path().join("layout");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let src = open(&format!("{}/{repo}", a.host())).await;
        let mid = open(&format!("oci:{}:{repo}", layout.display())).await;
        let dst = open(&format!("{}/{repo}", b.host())).await;
        let mut cx = kplug::oci::copy::Cx::default();
        kplug::oci::signatures::copy_signatures(src.as_ref(), mid.as_ref(), &subject, &mut cx)
            .await
            .unwrap();
        kplug::oci::signatures::copy_signatures(mid.as_ref(), dst.as_ref(), &subject, &mut cx)
            .await
            .unwrap();
        assert!(kplug::oci::store::ReadStore::manifest_exists(
            dst.as_ref(),
            &sha256_digest(&referring)
        )
        .await
        .unwrap());
    });
    let bundle_pub = cosign_fixture("v3-bundle/bundle-cosign.pub");
    for r in [
        format!("oci:{}:{repo}@{subject}", layout.display()),
        format!("{}/{repo}@{subject}", b.host()),
    ] {
        run_ok(
            home.kplug()
                .arg("verify")
                .arg("--key")
                .arg(&bundle_pub)
                .arg(&r),
        );
    }
    // The referring manifest arrived byte for byte.
    let (status, body, _) = get_manifest(&b, repo, &sha256_digest(&referring));
    assert_eq!(status, 200);
    assert_eq!(body, referring);
}

fn mirror_cmd(home: &Home, args: &[&str]) -> std::process::Command {
    let mut c = home.kplug();
    c.arg("mirror").args(args);
    c
}

/// Completed blob uploads (`PUT …/blobs/uploads/…?digest=…` answered 201), by digest.
/// Digests in a registry's storage: blobs and manifests of every repository, as the
/// registry keeps them (once each).
fn stored_blobs(reg: &Registry) -> std::collections::BTreeSet<String> {
    let root = reg.storage_dir().join("docker/registry/v2/blobs/sha256");
    std::fs::read_dir(root)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|b| b.unwrap().path())
        .filter(|p| p.join("data").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn completed_uploads(reg: &mut Registry) -> Vec<String> {
    reg.requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.status == 201)
        .filter_map(|r| {
            r.path
                .split(['?', '&'])
                .find_map(|q| q.strip_prefix("digest="))
                .map(|d| d.replace("%3A", ":"))
        })
        .collect()
}

#[test]
fn mirror_resumes_after_the_destination_dies() {
    let a = Registry::start(Variant::Anonymous);
    let mut b = Registry::start(Variant::Anonymous);
    // 20 ms per round trip to the destination, so that the kill lands mid-run.
    let proxy = Proxy::with_rtt(&b.host(), std::time::Duration::from_millis(20));
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::generate(&home, tmp.path(), "cosign");
    for p in 0..4 {
        for v in 0..5 {
            let dir = write_plugin(
                &tmp.path().join(format!("src-{p}-{v}")),
                &format!("p{p}"),
                &format!("1.{v}.0"),
                &format!("p{p} v{v}"),
            );
            push_signed(
                &home,
                &key,
                &dir,
                &format!("{}/plugins/p{p}:1.{v}.0", a.host()),
            );
        }
    }
    let manifest = tmp.path().join("mirror.yaml");
    let mut yaml = format!(
        "destination: {}/mirror\nconcurrency: 2\nall-tags: true\nrepositories:\n",
        proxy.addr()
    );
    for p in 0..4 {
        yaml.push_str(&format!("  - source: {}/plugins/p{p}\n", a.host()));
    }
    std::fs::write(&manifest, yaml).unwrap();
    let m = manifest.display().to_string();

    let child = mirror_cmd(&home, &["--json", "--manifest", &m])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while b.request_count("PUT", "/manifests/") < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "mirror made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    b.stop();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the run was cut short");
    let first = json_out(&out);
    let failed = first["totals"]["failed"].as_u64().unwrap();
    assert!(failed > 0 && failed < 20, "{first}");
    assert!(stderr(&out).contains("run again"), "{}", stderr(&out));

    b.restart();
    let second = json_out(&run_ok(&mut mirror_cmd(
        &home,
        &["--json", "--manifest", &m],
    )));
    assert_eq!(second["totals"]["failed"], 0, "{second}");
    assert_eq!(second["totals"]["artifacts"], 20, "{second}");
    let third = json_out(&run_ok(&mut mirror_cmd(
        &home,
        &["--json", "--manifest", &m],
    )));
    assert_eq!(third["totals"]["skipped"], 20, "{third}");
    assert_eq!(third["totals"]["bytesCopied"], 0, "{third}");

    // Across the three runs no blob was uploaded twice.
    let uploads = completed_uploads(&mut b);
    let unique: std::collections::BTreeSet<&String> = uploads.iter().collect();
    assert_eq!(unique.len(), uploads.len(), "re-sent: {uploads:?}");
    // 20 artifacts × (config + layer) + 20 signatures × (config + payload). The log may
    // show one upload fewer than happened (a registry killed right after answering a PUT
    // may never write its log line), so completeness is checked in storage: the
    // destination holds exactly the source's blobs and manifests.
    assert!(uploads.len() <= 80, "{uploads:?}");
    assert_eq!(stored_blobs(&b), stored_blobs(&a));
    for p in 0..4 {
        verify_ok(
            &home,
            &key,
            &format!("{}/mirror/plugins/p{p}:1.4.0", b.host()),
        );
    }
}

#[test]
fn mirror_selects_tags_refuses_unsigned_and_mounts() {
    let a = Registry::start(Variant::Anonymous);
    let b = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::generate(&home, tmp.path(), "cosign");
    let mut digests = std::collections::HashMap::new();
    for v in ["0.9.0", "1.0.0", "1.2.0", "1.5.0", "2.0.0"] {
        let dir = write_plugin(&tmp.path().join(v), "rate", v, v);
        let r = format!("{}/plugins/rate:{v}", a.host());
        let pinned = if v == "1.5.0" {
            push(&home, &dir, &r)
        } else {
            push_signed(&home, &key, &dir, &r)
        };
        digests.insert(v, digest_of(&pinned));
    }
    let src = format!("{}/plugins/rate", a.host());

    // --dry-run: every check, no write.
    let dry = tmp.path().join("dry");
    let v = json_out(&run_ok(&mut mirror_cmd(
        &home,
        &[
            "--json",
            "--dry-run",
            &src,
            "--semver",
            ">=1.2 <2",
            "--to",
            &format!("oci:{}", dry.display()),
        ],
    )));
    assert_eq!(v["totals"]["wouldCopy"], 2, "{v}");
    assert_eq!(v["artifacts"][0]["status"], "would-copy");
    assert!(v["totals"]["bytesCopied"].as_u64().unwrap() > 0);
    assert_eq!(index_json(&dry)["manifests"].as_array().unwrap().len(), 0);

    // --signed-only: 1.5.0 is unsigned, refused with cosign's exit code; nothing of it lands.
    let mut refused = mirror_cmd(
        &home,
        &[
            &src,
            "--semver",
            ">=1.2 <2",
            "--to",
            &format!("{}/m", b.host()),
            "--signed-only",
            "--key",
        ],
    );
    let out = run_fail(refused.arg(&key.public), 11);
    assert!(stderr(&out).contains("--signed-only"), "{}", stderr(&out));
    assert_eq!(get_manifest(&b, "m/plugins/rate", "1.2.0").0, 200);
    assert_eq!(get_manifest(&b, "m/plugins/rate", "1.5.0").0, 404);
    assert_eq!(get_manifest(&b, "m/plugins/rate", &digests["1.5.0"]).0, 404);
    verify_ok(&home, &key, &format!("{}/m/plugins/rate:1.2.0", b.host()));
    // The same refusal for a single copy.
    run_fail(
        home.kplug()
            .args(["copy", "--signed-only", "--key"])
            .arg(&key.public)
            .arg(format!("{src}:1.5.0"))
            .arg(format!("{}/single/rate:1.5.0", b.host())),
        11,
    );
    assert_eq!(get_manifest(&b, "single/rate", &digests["1.5.0"]).0, 404);

    // A list file and a tag regex, into a layout.
    let list = tmp.path().join("list.txt");
    std::fs::write(&list, format!("# plugins\n{src}\n")).unwrap();
    let layout = tmp.path().join("layout");
    run_ok(&mut mirror_cmd(
        &home,
        &[
            "--list",
            &list.display().to_string(),
            "--tag-regex",
            r"^1\.",
            "--to",
            &format!("oci:{}", layout.display()),
        ],
    ));
    for t in ["1.0.0", "1.2.0"] {
        verify_ok(
            &home,
            &key,
            &format!("oci:{}:plugins/rate:{t}", layout.display()),
        );
    }
    let tags = stdout(&run_ok(
        home.kplug()
            .arg("list-tags")
            .arg(format!("oci:{}:plugins/rate", layout.display())),
    ));
    assert!(
        tags.contains("1.5.0") && !tags.contains("2.0.0") && !tags.contains("0.9.0"),
        "{tags}"
    );

    // Within one registry, blobs are mounted, not sent.
    let v = json_out(&run_ok(&mut mirror_cmd(
        &home,
        &[
            "--json",
            &format!("{src}:2.0.0"),
            "--to",
            &format!("{}/copy", a.host()),
        ],
    )));
    assert_eq!(v["totals"]["blobsCopied"], 0, "{v}");
    assert_eq!(v["totals"]["blobsMounted"], 4, "{v}");
    verify_ok(
        &home,
        &key,
        &format!("{}/copy/plugins/rate:2.0.0", a.host()),
    );
}

/// A `cosign save --dir` layout has `kind` annotations and no ref.names: `load` takes the
/// repository from the command line and the signatures follow their image.
#[test]
fn load_reads_a_cosign_save_layout() {
    let a = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::generate(&home, tmp.path(), "cosign");
    let pinned = push_signed(
        &home,
        &key,
        HELLO.as_ref(),
        &format!("{}/plugins/hello:0.1.0", a.host()),
    );
    let dir = tmp.path().join("cosign-saved");
    run_ok(
        home.kplug()
            .args(["save", "-o"])
            .arg(&dir)
            .arg(format!("{}/plugins/hello:0.1.0", a.host())),
    );
    // Rewrite index.json the way cosign save writes it: kinds only.
    let mut idx = index_json(&dir);
    for e in idx["manifests"].as_array_mut().unwrap() {
        e["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("org.opencontainers.image.ref.name");
    }
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    drop(a);
    let digest = digest_of(&pinned);
    verify_ok(&home, &key, &format!("oci:{}@{digest}", dir.display()));

    let b = Registry::start(Variant::Anonymous);
    run_fail(home.kplug().arg("load").arg(&dir).arg(b.host()), 2);
    run_ok(
        home.kplug()
            .arg("load")
            .arg(&dir)
            .arg(format!("{}/kong/hello", b.host())),
    );
    verify_ok(&home, &key, &format!("{}/kong/hello@{digest}", b.host()));
}
