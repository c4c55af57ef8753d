//! Faults between kplug and a real registry (the harness's fault proxy): what is retried,
//! how long kplug waits, what resumes; token scopes for cross-repository mounts; the
//! referrers API as the only way to a signature.

mod common;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

/// A pushed plugin (`REPO:1`) and its archive bytes.
fn pushed(home: &Home, host: &str, repo: &str, size_hint: usize) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let tree = write_plugin(dir.path(), "hello", "1.0.0", &noise(size_hint));
    let tgz = dir.path().join("p.tar.gz");
    run_ok(home.kplug().arg("pack").arg(&tree).arg("-o").arg(&tgz));
    run_ok(
        home.kplug()
            .arg("push")
            .arg(&tgz)
            .arg(format!("{host}/{repo}:1")),
    );
    (format!("{host}/{repo}:1"), std::fs::read(&tgz).unwrap())
}

/// Letters that gzip cannot shrink much, so the archive is about `n` bytes.
fn noise(n: usize) -> String {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

fn pull_ok(home: &Home, r: &str, extra: &[&str], want: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("got.tgz");
    let out = run_ok(
        home.kplug()
            .args(extra)
            .args(["-v", "pull", r, "-o"])
            .arg(&f),
    );
    assert_eq!(std::fs::read(&f).unwrap(), want);
    stderr(&out)
}

#[test]
fn transient_faults_are_retried_and_resumed() {
    let reg = Registry::start(Variant::Anonymous);
    let fp = FaultProxy::start(&reg.host());
    let home = Home::new();
    let (r, tgz) = pushed(&home, fp.addr(), "kong/hello", 200_000);

    // 5xx twice, then the manifest.
    let rule = fp.add(
        Rule::new(Fault::Status(503))
            .method("GET")
            .path("/manifests/1$")
            .times(2),
    );
    let err = pull_ok(&home, &r, &[], &tgz);
    assert_eq!(fp.hits(rule), 2, "{err}");
    assert!(
        err.contains("HTTP 503") && err.contains("retry 2/"),
        "{err}"
    );

    // 429 with Retry-After: 2 and a body code other than TOOMANYREQUESTS.
    let rule = fp.add(
        Rule::new(Fault::too_many_requests(2))
            .method("GET")
            .path("/blobs/")
            .times(1),
    );
    let t = Instant::now();
    pull_ok(&home, &r, &[], &tgz);
    assert_eq!(fp.hits(rule), 1);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());

    // The connection closed before any response, on a GET.
    let rule = fp.add(
        Rule::new(Fault::CloseBeforeResponse)
            .method("GET")
            .path("/manifests/")
            .times(1),
    );
    pull_ok(&home, &r, &[], &tgz);
    assert_eq!(fp.hits(rule), 1);

    // Closed in the middle of the blob: resumed with a ranged GET, hashed once through.
    let before = fp.request_count("GET", "/blobs/");
    let rule = fp.add(
        Rule::new(Fault::CloseMidBody {
            after: Some(50_000),
        })
        .method("GET")
        .path("/blobs/")
        .times(1),
    );
    let err = pull_ok(&home, &r, &[], &tgz);
    assert_eq!(fp.hits(rule), 1);
    assert!(err.contains("resuming at byte"), "{err}");
    assert_eq!(fp.request_count("GET", "/blobs/") - before, 2, "{err}");

    // The body stalls: --stall-timeout cuts it and the rest comes by a ranged GET.
    let rule = fp.add(
        Rule::new(Fault::stall_mid_body(10_000, Duration::from_secs(5)))
            .method("GET")
            .path("/blobs/")
            .times(1),
    );
    let t = Instant::now();
    let err = pull_ok(&home, &r, &["--stall-timeout", "500ms"], &tgz);
    assert_eq!(fp.hits(rule), 1);
    assert!(err.contains("--stall-timeout"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A registry that never answers: --timeout per attempt, retried, then one clear error.
    fp.add(
        Rule::new(Fault::stall(Duration::from_secs(3)))
            .method("GET")
            .path("/manifests/1$"),
    );
    let out = run_fail(
        home.kplug()
            .args(["--timeout", "300ms", "pull", &r, "-o", "/tmp/never"]),
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("no answer") && err.contains("--timeout"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    fp.clear_rules();

    // Uploads: a 500 on the PUT, then a reset of the PUT: the upload starts again.
    let dir = tempfile::tempdir().unwrap();
    let tree = write_plugin(dir.path(), "other", "2.0.0", &noise(100_000));
    let r500 = fp.add(
        Rule::new(Fault::Status(500))
            .method("PUT")
            .path("/blobs/uploads/")
            .times(1),
    );
    let rcut = fp.add(
        Rule::new(Fault::CloseBeforeResponse)
            .method("PUT")
            .path("/blobs/uploads/")
            .times(1),
    );
    let posts = fp.request_count("POST", "/blobs/uploads/");
    let out = run_ok(
        home.kplug()
            .args(["-v", "push"])
            .arg(&tree)
            .arg(format!("{}/kong/other:2", fp.addr())),
    );
    assert_eq!((fp.hits(r500), fp.hits(rcut)), (1, 1), "{}", stderr(&out));
    // config + layer, each once more for each failed PUT
    assert_eq!(
        fp.request_count("POST", "/blobs/uploads/") - posts,
        4,
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("starting the upload again"),
        "{}",
        stderr(&out)
    );
    let got = tempfile::tempdir().unwrap();
    run_ok(
        home.kplug()
            .args(["pull", &format!("{}/kong/other:2", reg.host()), "-o"])
            .arg(got.path().join("o.tgz")),
    );
}

/// Issue 10 "Tests": the fault proxy over verify and mirror too. Transient faults are
/// ridden out; a bit flip is a documented failure (12 when the only signature payload is
/// corrupt, 5 for corrupt content copied) that leaves nothing half-written.
#[test]
fn verify_and_mirror_ride_out_faults_or_fail_with_their_code() {
    let reg = Registry::start(Variant::Anonymous);
    let fp = FaultProxy::start(&reg.host());
    let home = Home::new();
    let work = tempfile::tempdir().unwrap();
    let key = KeyPair::generate(&home, work.path(), "cosign");
    let (r, tgz) = pushed(&home, &reg.host(), "kong/hello", 100_000);
    sign(&home, &key, &r);
    let through = r.replace(&reg.host(), fp.addr());
    let verify = || {
        run(home
            .kplug()
            .args(["verify", "--key"])
            .arg(&key.public)
            .arg(&through))
    };

    // 503 twice on the signature manifest, a close before the payload's response.
    let sig = fp.add(
        Rule::new(Fault::Status(503))
            .method("GET")
            .path(r"/manifests/sha256-[0-9a-f]+\.sig$")
            .times(2),
    );
    let cut = fp.add(
        Rule::new(Fault::CloseBeforeResponse)
            .method("GET")
            .path("/blobs/")
            .times(1),
    );
    let out = verify();
    assert_exit(&out, 0);
    assert_eq!((fp.hits(sig), fp.hits(cut)), (2, 1), "{}", stderr(&out));
    // The one signature payload arrives corrupt, every time: nothing verifies (12), and
    // the message says why.
    fp.add(
        Rule::new(Fault::FlipBit { offset: None })
            .method("GET")
            .path("/blobs/"),
    );
    let out = verify();
    assert_exit(&out, 12);
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    fp.clear_rules();

    // mirror: a cut mid-blob is resumed and the copy is byte-exact…
    let layout = work.path().join("mirror");
    let mirror = || {
        run(home
            .kplug()
            .args(["mirror", &through, "--to"])
            .arg(format!("oci:{}", layout.display())))
    };
    fp.add(
        Rule::new(Fault::CloseMidBody {
            after: Some(30_000),
        })
        .method("GET")
        .path("/blobs/")
        .times(1),
    );
    assert_exit(&mirror(), 0);
    let got = work.path().join("got.tgz");
    run_ok(
        home.kplug()
            .args(["pull"])
            .arg(format!("oci:{}:kong/hello:1", layout.display()))
            .arg("-o")
            .arg(&got),
    );
    assert_eq!(std::fs::read(&got).unwrap(), tgz);
    fp.clear_rules();
    // …and corrupt content is 5, with no blob or temp file written for it.
    let other = work.path().join("other");
    fp.add(
        Rule::new(Fault::FlipBit { offset: None })
            .method("GET")
            .path("/blobs/"),
    );
    let out = run(home
        .kplug()
        .args(["mirror", &through, "--to"])
        .arg(format!("oci:{}", other.display())));
    assert_exit(&out, 5);
    let blobs: Vec<_> = std::fs::read_dir(other.join("blobs/sha256"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "{blobs:?}");
}

#[test]
fn token_scopes_let_cross_repository_mounts_happen() {
    let mut reg = Registry::start(Variant::token("alice", "pw"));
    let home = Home::new();
    home.docker_login(&reg);
    let (src, _) = pushed(&home, &reg.host(), "team/src", 1000);
    let dst = format!("{}/team/dst:1", reg.host());
    let out = run_ok(home.kplug().args(["copy", &src, &dst]));
    let mounted = reg
        .requests()
        .iter()
        .filter(|q| q.method == "POST" && q.path.contains("mount=") && q.status == 201)
        .count();
    assert_eq!(mounted, 2, "config and layer mounted: {}", stderr(&out));
    assert!(
        reg.token_server()
            .requested_scopes()
            .iter()
            .any(|s| s == "repository:team/src:pull"),
        "{:?}",
        reg.token_server().requested_scopes()
    );
    assert_eq!(reg.request_count("PUT", "/v2/team/dst/blobs/uploads/"), 0);
}

#[test]
fn referrers_found_through_the_api_alone() {
    let reg = Registry::start(Variant::Anonymous);
    let plain = Registry::start(Variant::Anonymous);
    let rp = ReferrersProxy::start(&reg);
    let home = Home::new();
    let repo = "tobby/bundle";
    let referring = read_fixture("v3-bundle/bundle-referring-manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&referring).unwrap();
    let subject = m["subject"]["digest"].as_str().unwrap().to_string();
    push_blob(&reg, repo, b"{}");
    push_blob(&reg, repo, &read_fixture("v3-bundle/bundle-sigstore.json"));
    // Pushed through the proxy: it indexes the referrer; the fallback tag stays hidden.
    let (status, _, headers) = http_put(
        &reg,
        &format!(
            "http://{}/v2/{repo}/manifests/{}",
            rp.addr(),
            sha256_digest(&referring)
        ),
        OCI_MANIFEST,
        &referring,
    );
    assert_eq!(status, 201);
    assert!(headers.get("oci-subject").is_some());
    let key = cosign_fixture("v3-bundle/bundle-cosign.pub");
    let via_api = format!("{}/{repo}@{subject}", rp.addr());
    let out = run_ok(
        home.kplug()
            .arg("verify")
            .arg("--key")
            .arg(&key)
            .arg(&via_api),
    );
    assert!(
        rp.request_count("GET", "/referrers/") >= 1,
        "{}",
        stderr(&out)
    );
    // Copied to a registry without the API: kplug writes its fallback index there.
    let dst = format!("{}/{repo}@{subject}", plain.host());
    let layout = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}:{repo}@{subject}", layout.path().display());
    for to in [&dst, &oci] {
        let mut cx = kplug::oci::copy::Cx::default();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let open = |r: &str| {
                let loc = kplug::oci::reference::parse(r).unwrap();
                async move {
                    kplug::oci::store::open_writable(&loc, &Default::default())
                        .await
                        .unwrap()
                }
            };
            let src = open(&via_api).await;
            let d = open(to).await;
            kplug::oci::signatures::copy_signatures(src.as_ref(), d.as_ref(), &subject, &mut cx)
                .await
                .unwrap();
        });
        run_ok(home.kplug().arg("verify").arg("--key").arg(&key).arg(to));
    }
    let (status, _, _) = get_manifest(&plain, repo, &subject.replace(':', "-"));
    assert_eq!(status, 200, "fallback index written where there is no API");
}

/// A file of 64 MiB or more is hashed while it uploads: POST, one streamed PATCH, then the
/// digest in an empty PUT. Pushed again, the hash finds the blob on the registry and the
/// upload already under way is cancelled with a DELETE. A PATCH that fails is started
/// over from a new POST.
#[test]
fn a_large_file_is_hashed_while_it_uploads() {
    let reg = Registry::start(Variant::Anonymous);
    let fp = FaultProxy::start(&reg.host());
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(64u32 << 20) + 7).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let digest = sha256_digest(&data);
    let r = format!("{}/big/blob:1", fp.addr());
    let fail = fp.add(Rule::new(Fault::Status(500)).method("PATCH").times(1));

    let out = run_ok(
        home.kplug()
            .args(["-v", "push", "--force"])
            .arg(&file)
            .arg(&r),
    );
    assert_eq!(fp.hits(fail), 1, "{}", stderr(&out));
    assert_eq!(fp.request_count("PATCH", "/blobs/uploads/"), 2);
    assert_eq!(
        fp.request_count("POST", "/blobs/uploads/"),
        3,
        "config + 2 tries"
    );
    let commits = fp.request_count("PUT", &format!("digest={}", digest.replace(':', "%3A")));
    assert_eq!(commits, 1, "{:?}", fp.requests());
    assert_eq!(get_blob(&reg, "big/blob", &digest), data);

    let before_put = fp.request_count("PUT", "/blobs/uploads/");
    let out = run_ok(home.kplug().args(["push", "--force"]).arg(&file).arg(&r));
    assert!(
        stderr(&out).contains(&format!("layer {digest} already present")),
        "{}",
        stderr(&out)
    );
    assert_eq!(fp.request_count("PUT", "/blobs/uploads/"), before_put);
    assert_eq!(fp.request_count("DELETE", "/blobs/uploads/"), 1);
}
