//! Checks the test harness itself (tests/common) against a real registry.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Pushes an OCI artifact (empty config + one layer) by hand; returns (manifest digest, layer).
fn push_artifact(reg: &Registry, repo: &str, tag: &str) -> (String, Vec<u8>) {
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let config_digest = push_blob(reg, repo, b"{}");
    let layer_digest = push_blob(reg, repo, &layer);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.kplug.test","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config_digest}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer_digest}","size":{}}}]}}"#,
        layer.len()
    );
    let digest = push_manifest(
        reg,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    (digest, layer)
}

fn check_artifact(reg: &Registry, repo: &str, tag: &str, digest: &str, layer: &[u8]) {
    let (status, body, headers) = get_manifest(reg, repo, tag);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(sha256_digest(&body), digest);
    assert_eq!(headers.get("docker-content-digest"), Some(digest));
    assert_eq!(
        headers.get("Content-Type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let layer_digest = sha256_digest(layer);
    assert!(String::from_utf8_lossy(&body).contains(&layer_digest));
    assert_eq!(get_blob(reg, repo, &layer_digest), layer);
    let (status, body, headers) = http_head(reg, &format!("/v2/{repo}/blobs/{layer_digest}"), "");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(
        headers.get("content-length"),
        Some(layer.len().to_string().as_str())
    );
}

#[test]
fn anonymous_push_by_hand_and_read_back() {
    let t = Instant::now();
    let mut reg = Registry::start(Variant::Anonymous);
    eprintln!("registry started in {} ms", t.elapsed().as_millis());
    assert!(!reg.is_tls());
    assert!(reg.host().starts_with("127.0.0.1:"));
    let (status, body, _) = http_get(&reg, "/v2/", "");
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));

    let (digest, layer) = push_artifact(&reg, "plugins/demo", "1.0.0");
    check_artifact(&reg, "plugins/demo", "1.0.0", &digest, &layer);
    check_artifact(&reg, "plugins/demo", &digest, &digest, &layer);
    let (status, _, _) = get_manifest(&reg, "plugins/demo", "nope");
    assert_eq!(status, 404);

    // delete is enabled
    let (status, _, _) = http_delete(&reg, &format!("/v2/plugins/demo/manifests/{digest}"));
    assert_eq!(status, 202);
    assert_eq!(get_manifest(&reg, "plugins/demo", "1.0.0").0, 404);

    // access log counting: 2 blob uploads, 1 manifest PUT, harness requests excluded
    assert_eq!(
        reg.request_count("POST", "/v2/plugins/demo/blobs/uploads/"),
        2
    );
    assert_eq!(reg.request_count("PUT", "/manifests/1.0.0"), 1);
    assert_eq!(reg.request_count("GET", "/manifests/"), 4);
    assert_eq!(reg.request_count("", "/manifests/"), 6);
    assert_eq!(reg.request_count("GET", "/_harness"), 0);
    let reqs = reg.requests();
    let last = reqs.last().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("GET", 404));
    assert!(reg.log().contains("response completed"));
    assert!(reg
        .storage_dir()
        .join("docker/registry/v2/repositories/plugins/demo")
        .is_dir());
}

#[test]
fn htpasswd_requires_credentials() {
    let mut reg = Registry::start(Variant::htpasswd("alice", "s3cret"));
    assert_eq!(reg.credentials(), Some(("alice", "s3cret")));
    let (status, _, headers) = curl(&reg.url("/v2/"), &[] as &[&str]).unwrap();
    assert_eq!(status, 401);
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    assert_eq!(
        curl(&reg.url("/v2/"), &["-u", "alice:wrong"]).unwrap().0,
        401
    );
    assert_eq!(curl(&reg.url("/v2/"), &reg.curl_args()).unwrap().0, 200);
    assert_eq!(http_get(&reg, "/v2/", "").0, 200);

    let (digest, layer) = push_artifact(&reg, "team/p", "v1");
    check_artifact(&reg, "team/p", "v1", &digest, &layer);
    assert_eq!(
        curl(&reg.url("/v2/team/p/manifests/v1"), &[] as &[&str])
            .unwrap()
            .0,
        401
    );
    assert!(reg.request_count("GET", "/v2/team/p/manifests/v1") >= 2);
}

#[test]
fn tls_needs_the_ca() {
    let reg = Registry::start(Variant::Tls);
    assert!(reg.url("/v2/").starts_with("https://127.0.0.1:"));
    let ca = reg.ca_file().to_str().unwrap();
    assert!(std::fs::read_to_string(ca)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(curl(&reg.url("/v2/"), &["--cacert", ca]).unwrap().0, 200);
    // localhost is in the certificate too
    let localhost = format!("https://localhost:{}/v2/", reg.port());
    assert_eq!(curl(&localhost, &["--cacert", ca]).unwrap().0, 200);
    // without our CA (system bundle only), verification fails
    let err = curl(
        &reg.url("/v2/"),
        &["--cacert", "/etc/ssl/certs/ca-certificates.crt"],
    )
    .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let err = curl(&reg.url("/v2/"), &[] as &[&str]).unwrap_err();
    assert!(err.contains("certificate"), "{err}");

    let (digest, layer) = push_artifact(&reg, "tls/p", "v1");
    check_artifact(&reg, "tls/p", "v1", &digest, &layer);
}

#[test]
fn tls_htpasswd() {
    let reg = Registry::start(Variant::tls_htpasswd("bob", "pw"));
    let ca = reg.ca_file().to_str().unwrap();
    assert_eq!(curl(&reg.url("/v2/"), &["--cacert", ca]).unwrap().0, 401);
    assert_eq!(
        curl(&reg.url("/v2/"), &["--cacert", ca, "-u", "bob:pw"])
            .unwrap()
            .0,
        200
    );
    assert!(curl(&reg.url("/v2/"), &["-u", "bob:pw"]).is_err());
    let (digest, layer) = push_artifact(&reg, "p", "v1");
    check_artifact(&reg, "p", "v1", &digest, &layer);
}

#[test]
fn stop_and_restart_keep_data_and_port() {
    let mut reg = Registry::start(Variant::htpasswd("u", "p"));
    let host = reg.host();
    let (digest, layer) = push_artifact(&reg, "r/p", "v1");
    // an upload session started before the restart stays valid
    let location = start_upload(&reg, "r/p");

    reg.stop();
    assert!(!reg.is_running());
    assert!(
        curl(&reg.url("/v2/"), &[] as &[&str]).is_err(),
        "registry still answers after stop()"
    );
    reg.restart();
    assert!(reg.is_running());
    assert_eq!(reg.host(), host);
    check_artifact(&reg, "r/p", "v1", &digest, &layer);

    let blob = b"after restart".to_vec();
    let blob_digest = sha256_digest(&blob);
    let (status, body, _) = http_put(
        &reg,
        &with_query(&location, "digest", &blob_digest),
        "application/octet-stream",
        &blob,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get_blob(&reg, "r/p", &blob_digest), blob);
    // both runs are in the log
    assert_eq!(reg.log().matches("listening on 127.0.0.1").count(), 2);
    assert_eq!(reg.request_count("PUT", "/manifests/v1"), 1);
}

#[test]
fn drop_kills_the_registry() {
    let reg = Registry::start(Variant::Anonymous);
    let (host, dir) = (reg.host(), reg.dir().to_path_buf());
    drop(reg);
    assert!(std::net::TcpStream::connect(&host).is_err());
    assert!(!dir.exists());
}

#[test]
fn proxy_forwards_with_delay_and_counts() {
    let reg = Registry::start(Variant::Anonymous);
    let proxy = Proxy::start(&reg.host());
    let via = |path: &str| format!("http://{}{path}", proxy.addr());
    assert_eq!(http_get(&reg, &via("/v2/"), "").0, 200);
    assert_eq!(proxy.connections(), 1);
    assert!(proxy.bytes_up() > 50 && proxy.bytes_down() > 50);

    // 3 MiB through the proxy: content intact, counted
    let blob: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let location = via("/v2/big/blobs/uploads/");
    let (status, _, headers) = http_post(&reg, &location, "", b"");
    assert_eq!(status, 202);
    let location = headers.get("location").unwrap();
    assert!(location.contains(proxy.addr()), "{location}");
    let digest = sha256_digest(&blob);
    assert_eq!(
        http_put(
            &reg,
            &with_query(location, "digest", &digest),
            "application/octet-stream",
            &blob
        )
        .0,
        201
    );
    let (status, body, _) = http_get(&reg, &via(&format!("/v2/big/blobs/{digest}")), "");
    assert_eq!(status, 200);
    assert!(body == blob);
    assert!(proxy.bytes_up() > 3 << 20 && proxy.bytes_down() > 3 << 20);
    assert_eq!(proxy.connections(), 4);

    // 40 ms round trip: one request costs at least one RTT more than direct
    let slow = Proxy::with_rtt(&reg.host(), Duration::from_millis(40));
    let t = Instant::now();
    assert_eq!(
        http_get(&reg, &format!("http://{}/v2/", slow.addr()), "").0,
        200
    );
    let elapsed = t.elapsed();
    assert!(elapsed >= Duration::from_millis(40), "{elapsed:?}");
    let slow_addr = slow.addr().to_string();
    drop(slow);
    assert!(
        std::net::TcpStream::connect(&slow_addr).is_err(),
        "proxy still listening after drop"
    );
}

#[test]
fn proxy_close_connections_cuts_a_transfer() {
    let reg = Registry::start(Variant::Anonymous);
    // responses are held back 500 ms: the GET is still in flight when cut
    let blob = vec![42u8; 8 << 20];
    let digest = push_blob(&reg, "cut", &blob);
    let proxy = Proxy::with_delay(&reg.host(), Duration::ZERO, Duration::from_millis(500));
    let url = format!("http://{}/v2/cut/blobs/{digest}", proxy.addr());
    let t = std::thread::spawn(move || curl(&url, &[] as &[&str]));
    std::thread::sleep(Duration::from_millis(200));
    proxy.close_connections();
    let res = t.join().unwrap();
    assert!(res.is_err() || res.unwrap().1.len() < blob.len());
}

#[test]
fn kplug_command_is_isolated() {
    let (cmd, home) = kplug();
    let env: std::collections::HashMap<_, _> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_str().unwrap().to_string(), v.map(|v| v.to_owned())))
        .collect();
    assert_eq!(env["HOME"].as_deref(), Some(home.path().as_os_str()));
    assert_eq!(
        env["DOCKER_CONFIG"].as_deref(),
        Some(home.docker_config().as_os_str())
    );
    assert_eq!(env["NO_COLOR"].as_deref(), Some("1".as_ref()));
    assert_eq!(env["COSIGN_PASSWORD"], None); // removed
    assert!(cmd.get_program().to_str().unwrap().ends_with("kplug"));
    assert!(home.docker_config().is_dir());

    let reg = Registry::start(Variant::htpasswd("u", "p"));
    home.docker_login(&reg);
    let config = std::fs::read_to_string(home.docker_config().join("config.json")).unwrap();
    assert!(
        config.contains(&reg.host()) && config.contains("dTpw"),
        "{config}"
    );
    let dir = home.path().to_path_buf();
    drop(home);
    assert!(!dir.exists());
}

#[test]
fn run_helpers() {
    let out = run_ok(Command::new("sh").args(["-c", "echo hi; echo there >&2"]));
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("hi\n", "there\n")
    );
    let out = run_fail(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]), 3);
    assert_exit(&out, 3);
    let panic = std::panic::catch_unwind(|| {
        run_ok(Command::new("sh").args(["-c", "echo why >&2; exit 1"]))
    });
    let msg = *panic.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("why") && msg.contains("exit status: 1"),
        "{msg}"
    );
}

#[test]
fn access_log_parsing() {
    let line = r#"127.0.0.1 - - [21/Nov/2026:06:23:29 +0000] "GET /v2/a/b/manifests/x HTTP/1.1" 404 91 "" "curl/7.88.1""#;
    let r = parse_access_line(line).unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.status),
        ("GET", "/v2/a/b/manifests/x", 404)
    );
    let line = r#"time="2026-11-21T06:23:29Z" level=info msg="response completed" http.request.method=GET"#;
    assert_eq!(parse_access_line(line), None);
}
