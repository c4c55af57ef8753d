//! The transport against real registries: what users see when a registry is not there,
//! not trusted, or answers with something wrong; credentials under concurrency and in
//! helpers; references that do not parse; per-side TLS settings for copy and mirror.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::fixtures::*;
use common::*;

fn pushed(home: &Home, reg: &Registry, repo: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let tree = write_plugin(dir.path(), "hello", "1.0.0", repo);
    let out = run_ok(
        home.kplug()
            .arg("push")
            .arg(&tree)
            .arg(format!("{}/{repo}:1", reg.host())),
    );
    stdout(&out).trim().to_string()
}

/// The blob file of `digest` in a registry's filesystem storage.
fn stored_blob(reg: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn layer_digest(reg: &Registry, repo: &str, reference: &str) -> String {
    let (_, body, _) = get_manifest(reg, repo, reference);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_string()
}

fn no_ansi(s: &str) {
    assert!(!s.contains('\u{1b}'), "ANSI escape in output:\n{s}");
}

#[test]
fn unreachable_untrusted_and_wrong_scheme_registries_say_what_to_do() {
    let tls = Registry::start(Variant::Tls);
    let (_, home) = kplug();
    let work = tempfile::tempdir().unwrap();

    // Nothing listens: one line naming host and port; retries only with -v.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_fail(
        home.kplug()
            .current_dir(work.path())
            .args(["pull", &format!("127.0.0.1:{port}/kong/hello:1")]),
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{port}"))
            && err.contains("connection refused")
            && err.contains("is the registry running? wrong port?"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // -v shows the retries, without colours when stderr is a pipe (NO_COLOR unset).
    let out = run_fail(
        home.kplug()
            .env_remove("NO_COLOR")
            .current_dir(work.path())
            .args(["-v", "pull", &format!("127.0.0.1:{port}/kong/hello:1")]),
        1,
    );
    let err = stderr(&out);
    assert!(err.contains("retry 1/"), "{err}");
    no_ansi(&err);

    // TLS with a CA that did not sign the server's certificate: not retried, names the fix.
    let other_ca = work.path().join("other-ca.pem");
    std::fs::write(&other_ca, rcgen_ca_pem()).unwrap();
    let t = std::time::Instant::now();
    let out = run_fail(
        home.kplug().env_remove("NO_COLOR").args([
            "-v",
            "--ca-file",
            other_ca.to_str().unwrap(),
            "list-tags",
            &format!("{}/kong/hello", tls.host()),
        ]),
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("--ca-file") && err.contains("--insecure") && err.contains("not trusted"),
        "{err}"
    );
    assert!(
        !err.contains("retry"),
        "certificate errors are not retried:\n{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "{err}");
    no_ansi(&err);

    // Plain HTTP to the TLS port (the loopback default): says it speaks HTTPS.
    let out = run_fail(
        home.kplug()
            .args(["list-tags", &format!("{}/kong/hello", tls.host())]),
        2,
    );
    let err = stderr(&out);
    assert!(err.contains("speaks HTTPS"), "{err}");
}

/// A CA certificate nobody used to sign anything.
fn rcgen_ca_pem() -> String {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    ca.self_signed(&key).unwrap().pem()
}

#[test]
fn unparsable_references_are_usage_errors() {
    let (_, home) = kplug();
    for r in [
        "A:kong/hello:0.1.0",
        "reg.example.com:99999/a:1",
        "Kong/Hello:1",
    ] {
        let out = run_fail(home.kplug().args(["pull", r]), 2);
        let err = stderr(&out);
        assert!(
            err.contains("invalid reference") && err.contains("REGISTRY/REPO[:TAG]"),
            "{r}: {err}"
        );
        assert!(!err.contains("Generic error"), "{err}");
    }
    let err = stderr(&run_fail(
        home.kplug().args(["pull", "A:kong/hello:0.1.0"]),
        2,
    ));
    assert!(err.contains("`A:` is not a transport"), "{err}");
}

#[test]
fn corrupt_or_short_blobs_are_integrity_failures() {
    let reg = Registry::start(Variant::Anonymous);
    let (_, home) = kplug();
    let work = tempfile::tempdir().unwrap();
    let pinned = pushed(&home, &reg, "kong/hello");
    let layer = layer_digest(&reg, "kong/hello", &digest_of(&pinned));
    let blob = stored_blob(&reg, &layer);
    let good = std::fs::read(&blob).unwrap();

    // One bit flipped in storage: the registry serves it as is.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    let out_file = work.path().join("out.tar.gz");
    let out = run_fail(
        home.kplug()
            .current_dir(work.path())
            .args(["pull", &pinned, "-o"])
            .arg(&out_file),
        5,
    );
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "a temp file was left"
    );
    let prefix = work.path().join("prefix");
    let conf = home.path().join("kong.conf");
    std::fs::write(&conf, "").unwrap();
    run_fail(
        home.kplug()
            .args(["install", &pinned, "--insecure-skip-verify", "--kong-conf"])
            .arg(&conf)
            .arg("--prefix")
            .arg(&prefix),
        5,
    );
    assert!(!prefix.join("kong/plugins/hello").exists());
    run_fail(
        home.kplug()
            .args(["copy", &pinned])
            .arg(format!("oci:{}:x:1", work.path().join("layout").display())),
        5,
    );

    // Truncated: the registry announces and sends the shorter file.
    std::fs::write(&blob, &good[..good.len() - 10]).unwrap();
    let out = run_fail(
        home.kplug()
            .current_dir(work.path())
            .args(["pull", &pinned, "-o"])
            .arg(&out_file),
        5,
    );
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    assert!(!out_file.exists());
}

#[test]
fn logins_keep_every_entry_and_never_echo_secrets() {
    let reg = Registry::start(Variant::htpasswd("alice", "s3cret"));
    let home = Home::new();
    // Six names for one registry: itself and five forwarders.
    let proxies: Vec<Proxy> = (0..5).map(|_| Proxy::start(&reg.host())).collect();
    let mut hosts = vec![reg.host()];
    hosts.extend(proxies.iter().map(|p| p.addr().to_string()));
    let children: Vec<_> = hosts
        .iter()
        .map(|h| {
            let mut c = home.kplug();
            c.args(["login", h, "-u", "alice", "--password-stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
            child
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.docker_config().join("config.json")).unwrap())
            .unwrap();
    let auths = cfg["auths"].as_object().unwrap();
    for h in &hosts {
        assert!(auths.contains_key(h), "{h} lost: {cfg}");
    }

    // A wrong password: exit 4, no internal URL.
    let out = login(&home, &reg.host(), "wrong");
    assert_exit(&out, 4);
    let err = stderr(&out);
    assert!(
        err.contains("rejected") && !err.contains("login-probe") && !err.contains("/v2/"),
        "{err}"
    );

    // A credential helper that fails after printing the secret.
    let bin = tempfile::tempdir().unwrap();
    write_helper(
        bin.path(),
        "leaky",
        "{\"Username\":\"alice\",\"Secret\":\"TOPSECRET-42\"}",
        3,
    );
    std::fs::write(
        home.docker_config().join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"leaky"}}}}"#, reg.host()),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = run_fail(
        home.kplug()
            .env("PATH", &path)
            .args(["list-tags", &format!("{}/kong/hello", reg.host())]),
        4,
    );
    let err = stderr(&out);
    assert!(
        err.contains("docker-credential-leaky") && err.contains("exit code 3"),
        "{err}"
    );
    assert!(!err.contains("TOPSECRET"), "{err}");
    let out = login_with_path(&home, &reg.host(), "s3cret", &path);
    assert_exit(&out, 4);
    assert!(!stderr(&out).contains("TOPSECRET"), "{}", stderr(&out));
}

fn write_helper(dir: &Path, name: &str, print: &str, code: i32) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&p, format!("#!/bin/sh\ncat >/dev/null\necho '{print}'\necho 'TOPSECRET on stderr' >&2\nexit {code}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn login(home: &Home, host: &str, pw: &str) -> std::process::Output {
    login_with_path(home, host, pw, &std::env::var("PATH").unwrap())
}

fn login_with_path(home: &Home, host: &str, pw: &str, path: &str) -> std::process::Output {
    let mut c = home.kplug();
    c.env("PATH", path)
        .args(["login", host, "-u", "alice", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn copy_and_mirror_between_a_plain_registry_and_a_tls_one() {
    let plain = Registry::start(Variant::Anonymous);
    let tls = Registry::start(Variant::Tls);
    let (_, home) = kplug();
    let pinned = pushed(&home, &plain, "kong/hello");
    let ca = tls.ca_file().display().to_string();
    let dst = format!("{}/kong/hello:1", tls.host());
    // The global --ca-file makes every loopback registry TLS: the plain side fails…
    run_fail(
        home.kplug().args(["--ca-file", &ca, "copy", &pinned, &dst]),
        1,
    );
    // …the destination's own flag does not.
    let out = run_ok(
        home.kplug()
            .args(["copy", &pinned, &dst, "--to-ca-file", &ca]),
    );
    assert!(
        stdout(&out).contains(&digest_of(&pinned)),
        "{}",
        stdout(&out)
    );
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f.tgz");
    run_ok(
        home.kplug()
            .args(["--ca-file", &ca, "pull", &dst, "-o"])
            .arg(&f),
    );
    // mirror takes the same per-side flags (issue 11.10): plain → TLS, sources on the
    // command line…
    let tls_copy = format!("{}/m/kong/hello:1", tls.host());
    let out = run(home.kplug().args([
        "mirror",
        &format!("{}/kong/hello:1", plain.host()),
        "--to",
        &format!("{}/m", tls.host()),
    ]));
    assert!(!out.status.success(), "{}", stderr(&out));
    run_ok(home.kplug().args([
        "mirror",
        &format!("{}/kong/hello:1", plain.host()),
        "--to",
        &format!("{}/m", tls.host()),
        "--to-ca-file",
        &ca,
    ]));
    run_ok(
        home.kplug()
            .args(["--ca-file", &ca, "pull", &tls_copy, "-o"])
            .arg(work.path().join("m.tgz")),
    );
    // …and TLS → plain from a mirror manifest, the CA given for the source side only.
    let spec = work.path().join("mirror.yaml");
    std::fs::write(
        &spec,
        format!(
            "destination: {}/back\nrepositories:\n  - source: {tls_copy}\n",
            plain.host()
        ),
    )
    .unwrap();
    let spec = spec.display().to_string();
    let out = run(home
        .kplug()
        .args(["--ca-file", &ca, "mirror", "--manifest", &spec]));
    assert!(!out.status.success(), "{}", stderr(&out));
    run_ok(
        home.kplug()
            .args(["mirror", "--manifest", &spec, "--from-ca-file", &ca]),
    );
    run_ok(
        home.kplug()
            .args([
                "pull",
                &format!("{}/back/m/kong/hello:1", plain.host()),
                "-o",
            ])
            .arg(work.path().join("back.tgz")),
    );
    // A per-side flag for a local side is refused.
    let out = run_fail(
        home.kplug().args([
            "copy",
            &pinned,
            "oci:/nonexistent-dir:x:1",
            "--to-plain-http",
        ]),
        2,
    );
    assert!(stderr(&out).contains("local store"), "{}", stderr(&out));
}
