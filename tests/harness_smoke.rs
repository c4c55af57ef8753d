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

/// 1 MiB of varied bytes pushed as a blob of `repo`; returns (digest, bytes).
fn big_blob(reg: &Registry, repo: &str) -> (String, Vec<u8>) {
    let blob: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    (push_blob(reg, repo, &blob), blob)
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_string()
}

#[test]
fn fault_proxy_injects_each_fault() {
    let reg = Registry::start(Variant::Anonymous);
    let (digest, blob) = big_blob(&reg, "f/p");
    let fp = FaultProxy::start(&reg.host());
    let via = |path: &str| format!("http://{}{path}", fp.addr());
    let blob_url = via(&format!("/v2/f/p/blobs/{digest}"));
    let get = |url: &str| curl(url, &[] as &[&str]);

    // no rule: byte-exact pass-through, keep-alive kept (two requests, one connection)
    let (status, body, _) = get(&blob_url).unwrap();
    assert!(status == 200 && body == blob);
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--noproxy",
            "*",
        ])
        .args([&via("/v2/"), &via("/v2/")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(fp.connections(), 2);

    // 5xx N times, then pass; GET rules leave HEAD alone
    let r = fp.add(
        Rule::new(Fault::Status(503))
            .method("GET")
            .path("/blobs/")
            .times(2),
    );
    assert_eq!(http_head(&reg, &blob_url, "").0, 200);
    for _ in 0..2 {
        let (status, body, _) = get(&blob_url).unwrap();
        assert_eq!((status, error_code(&body).as_str()), (503, "UNAVAILABLE"));
    }
    assert_eq!(get(&blob_url).unwrap().0, 200);
    assert_eq!(fp.hits(r), 2);

    // 429 with Retry-After and a code other than TOOMANYREQUESTS; skip lets the first through
    let r = fp.add(
        Rule::new(Fault::too_many_requests(8))
            .path("/v2/$")
            .skip(1)
            .times(1),
    );
    assert_eq!(get(&via("/v2/")).unwrap().0, 200);
    let (status, body, headers) = get(&via("/v2/")).unwrap();
    assert_eq!((status, headers.get("retry-after")), (429, Some("8")));
    assert_eq!(error_code(&body), "DENIED");
    assert_eq!((get(&via("/v2/")).unwrap().0, fp.hits(r)), (200, 1));

    // 401 carries a challenge, 404 a code that fits the path
    fp.add(
        Rule::new(Fault::Status(401))
            .path("/manifests/x401")
            .times(1),
    );
    let (status, _, headers) = get(&via("/v2/f/p/manifests/x401")).unwrap();
    assert_eq!(status, 401);
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .starts_with("Basic "));
    fp.add(Rule::new(Fault::Status(404)).path("/blobs/").times(1));
    assert_eq!(error_code(&get(&blob_url).unwrap().1), "BLOB_UNKNOWN");

    // close before any response; close mid-body
    fp.add(Rule::new(Fault::CloseBeforeResponse).path("/v2/$").times(1));
    let err = get(&via("/v2/")).unwrap_err();
    assert!(err.contains("(52)") || err.contains("Empty reply"), "{err}");
    fp.add(
        Rule::new(Fault::CloseMidBody { after: None })
            .path("/blobs/")
            .times(1),
    );
    let err = get(&blob_url).unwrap_err();
    assert!(err.contains("(18)"), "{err}");
    let cut = fp
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.action == Some("close-mid-body"))
        .unwrap();
    assert_eq!((cut.status, cut.bytes), (Some(200), blob.len() as u64 / 2));

    // one flipped bit; a short body with consistent framing
    fp.add(
        Rule::new(Fault::FlipBit { offset: Some(1000) })
            .path("/blobs/")
            .times(1),
    );
    let (status, body, _) = get(&blob_url).unwrap();
    assert_eq!((status, body.len()), (200, blob.len()));
    let diff: Vec<usize> = (0..blob.len()).filter(|&i| body[i] != blob[i]).collect();
    assert_eq!(diff, [1000]);
    assert_eq!(body[1000] ^ blob[1000], 1);
    fp.add(
        Rule::new(Fault::Truncate { keep: 4096 })
            .path("/blobs/")
            .times(1),
    );
    let (status, body, headers) = get(&blob_url).unwrap();
    assert_eq!((status, body.as_slice()), (200, &blob[..4096]));
    assert_eq!(headers.get("content-length"), Some("4096"));

    // stall: before the head (a client timeout fires), and mid-body (completes, late)
    fp.add(
        Rule::new(Fault::stall(Duration::from_millis(1500)))
            .path("/v2/$")
            .times(1),
    );
    let err = curl(&via("/v2/"), &["--max-time", "0.3"]).unwrap_err();
    assert!(err.contains("(28)"), "{err}");
    fp.add(
        Rule::new(Fault::stall_mid_body(1000, Duration::from_millis(300)))
            .path("/blobs/")
            .times(1),
    );
    let t = Instant::now();
    assert!(get(&blob_url).unwrap().1 == blob);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // request bodies: monolithic, chunked and Expect: 100-continue uploads; a response
    // dropped after the registry stored the manifest
    let data = b"chunked upload through the proxy".to_vec();
    let loc = start_upload(&reg, "f/p").replace(&reg.host(), fp.addr());
    let (status, _, headers) = curl(
        &loc,
        &[
            "-X",
            "PATCH",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &String::from_utf8(data.clone()).unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(status, 202);
    let loc = headers.get("location").unwrap().to_string();
    let d = sha256_digest(&data);
    let put = with_query(&loc, "digest", &d);
    let (status, _, _) = curl(
        &put,
        &[
            "-X",
            "PUT",
            "-H",
            "Expect: 100-continue",
            "-H",
            "Content-Length: 0",
        ],
    )
    .unwrap();
    assert_eq!(status, 201);
    assert_eq!(get_blob(&reg, "f/p", &d), data);
    fp.add(
        Rule::new(Fault::DropResponse)
            .method("PUT")
            .path("/manifests/")
            .times(1),
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/octet-stream","digest":"{d}","size":{}}},"layers":[]}}"#,
        data.len()
    );
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &manifest).unwrap();
    let err = curl(
        &via("/v2/f/p/manifests/dropped"),
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", tmp.path().display()),
        ],
    )
    .unwrap_err();
    assert!(err.contains("(52)"), "{err}");
    assert_eq!(get_manifest(&reg, "f/p", "dropped").0, 200);

    // the log
    assert_eq!(fp.request_count("GET", "/blobs/"), 9);
    assert_eq!(fp.request_count("HEAD", ""), 1);
    let reqs = fp.requests();
    assert!(reqs.iter().all(|r| r.target.starts_with("/v2/")));
    assert_eq!(reqs.iter().filter(|r| r.action.is_some()).count(), 12);
    fp.clear_rules();
    assert_eq!(get(&via("/v2/")).unwrap().0, 200);
}

#[test]
fn fault_proxy_composes_with_latency() {
    let reg = Registry::start(Variant::Anonymous);
    let rtt = Duration::from_millis(60);
    // client -> fault proxy -> 60 ms link -> registry
    let slow = Proxy::with_rtt(&reg.host(), rtt);
    let fp = FaultProxy::start(slow.addr());
    fp.add(Rule::new(Fault::Status(500)).path("/v2/$").times(1));
    let url = format!("http://{}/v2/", fp.addr());
    assert_eq!(curl(&url, &[] as &[&str]).unwrap().0, 500);
    assert_eq!(
        slow.connections(),
        0,
        "injected answers do not cross the link"
    );
    let t = Instant::now();
    assert_eq!(curl(&url, &[] as &[&str]).unwrap().0, 200);
    assert!(t.elapsed() >= rtt);
    assert_eq!(slow.connections(), 1);

    // client -> 60 ms link -> fault proxy -> registry
    let fp = FaultProxy::start(&reg.host());
    let slow = Proxy::with_rtt(fp.addr(), rtt);
    fp.add(Rule::new(Fault::Status(502)).times(1));
    let url = format!("http://{}/v2/", slow.addr());
    let t = Instant::now();
    assert_eq!(curl(&url, &[] as &[&str]).unwrap().0, 502);
    assert!(t.elapsed() >= rtt);
    assert_eq!(curl(&url, &[] as &[&str]).unwrap().0, 200);

    // and a port where nothing listens, for "connection refused"
    let err = curl(&format!("http://{}/v2/", refused_addr()), &[] as &[&str]).unwrap_err();
    assert!(err.contains("(7)"), "{err}");
}

#[test]
fn kplug_pushes_and_pulls_through_the_fault_proxy() {
    // a real client (reqwest/hyper, keep-alive, chunked or sized uploads) through the proxy
    let reg = Registry::start(Variant::Anonymous);
    let fp = FaultProxy::start(&reg.host());
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let tgz = tmp.path().join("hello.tar.gz");
    run_ok(
        home.kplug()
            .args([
                "pack",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-plugin"),
                "-o",
            ])
            .arg(&tgz),
    );
    let r = format!("{}/plugins/hello:0.1.0", fp.addr());
    run_ok(home.kplug().arg("push").arg(&tgz).arg(&r));
    let got = tmp.path().join("got.tar.gz");
    run_ok(home.kplug().args(["pull", &r, "-o"]).arg(&got));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&tgz).unwrap());
    assert!(fp.request_count("PUT", "/manifests/0.1.0") == 1);
    assert!(fp
        .requests()
        .iter()
        .all(|r| r.status.is_some() && r.action.is_none()));
}

#[test]
fn token_registry_issues_scoped_tokens_and_records_scopes() {
    let mut reg = Registry::start(Variant::token("alice", "pw"));
    let ts = reg.token_server();
    assert_eq!(reg.credentials(), Some(("alice", "pw")));
    let (status, _, headers) = curl(&reg.url("/v2/"), &[] as &[&str]).unwrap();
    assert_eq!(status, 401);
    let challenge = headers.get("www-authenticate").unwrap();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}\"", ts.realm()))
            && challenge.contains("service=\"kplug-test-registry\""),
        "{challenge}"
    );

    // the Docker token flow by hand: two scopes (a cross-repository mount asks for both)
    let token_url = format!(
        "{}?service=kplug-test-registry&scope=repository:team/dst:pull,push&scope=repository:team/src:pull",
        ts.realm()
    );
    let (status, body, _) = curl(&token_url, &["-u", "alice:pw"]).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = v["token"].as_str().unwrap();
    assert_eq!(v["access_token"].as_str(), Some(token));
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(
        curl(&reg.url("/v2/team/dst/tags/list"), &["-H", &bearer])
            .unwrap()
            .0,
        404
    ); // authorised; no such repo yet
    assert_eq!(
        curl(&reg.url("/v2/other/tags/list"), &["-H", &bearer])
            .unwrap()
            .0,
        401
    );
    let (status, _, _) = curl(
        &reg.url("/v2/team/dst/blobs/uploads/"),
        &["-X", "POST", "-H", &bearer],
    )
    .unwrap();
    assert_eq!(status, 202);
    let req = ts.requests().pop().unwrap();
    assert_eq!(
        (req.user.as_deref(), req.service.as_str(), req.status),
        (Some("alice"), "kplug-test-registry", 200)
    );
    assert_eq!(
        ts.requested_scopes(),
        ["repository:team/dst:pull,push", "repository:team/src:pull"]
    );

    // bad password: 401; anonymous: a token without access
    assert_eq!(curl(&token_url, &["-u", "alice:nope"]).unwrap().0, 401);
    let (status, body, _) = curl(&token_url, &[] as &[&str]).unwrap();
    assert_eq!(status, 200);
    let anon: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let anon_bearer = format!("Authorization: Bearer {}", anon["token"].as_str().unwrap());
    assert_eq!(
        curl(&reg.url("/v2/team/dst/tags/list"), &["-H", &anon_bearer])
            .unwrap()
            .0,
        401
    );
    assert!(ts.requests().last().unwrap().granted.is_empty());

    // a token signed by another key is refused: the registry checks the chain
    let foreign = TokenServer::start("alice", "pw")
        .mint("alice", &[Scope::repository("team/dst", &["pull"])]);
    let foreign = format!("Authorization: Bearer {foreign}");
    assert_eq!(
        curl(&reg.url("/v2/team/dst/tags/list"), &["-H", &foreign])
            .unwrap()
            .0,
        401
    );

    // the policy decides what is granted; POST (OAuth2 password grant) works too
    ts.set_policy(|user, s| {
        if user.is_some() && s.name == "ro" {
            vec!["pull".into()]
        } else {
            s.actions.clone()
        }
    });
    let (status, body, _) = curl(
        &ts.realm(),
        &["--data", "grant_type=password&username=alice&password=pw&service=kplug-test-registry&scope=repository:ro:pull,push"],
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let req = ts.requests().pop().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.granted, [Scope::repository("ro", &["pull"])]);

    // the harness's curl helpers mint their own tokens (not recorded)
    let before = ts.requests().len();
    let (digest, layer) = push_artifact(&reg, "team/p", "v1");
    check_artifact(&reg, "team/p", "v1", &digest, &layer);
    assert_eq!(ts.requests().len(), before);

    // a real client through the Docker token flow: its scopes are recorded
    let home = Home::new();
    home.docker_login(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let tgz = tmp.path().join("hello.tar.gz");
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-plugin");
    run_ok(home.kplug().args(["pack", hello, "-o"]).arg(&tgz));
    run_ok(
        home.kplug()
            .arg("push")
            .arg(&tgz)
            .arg(format!("{}/k/hello:0.1.0", reg.host())),
    );
    assert!(ts
        .requested_scopes()
        .iter()
        .any(|s| s == "repository:k/hello:pull,push"));
    assert!(ts.requests()[before..]
        .iter()
        .all(|r| r.user.as_deref() == Some("alice")));
    assert_eq!(libtrust_key_id(b"x").len(), 59); // 12 groups of 4, 11 colons
    assert_eq!(reg.request_count("PUT", "/v2/team/p/manifests/v1"), 1);
}

#[test]
fn pull_through_cache_serves_from_upstream_once() {
    let mut upstream = Registry::start(Variant::Anonymous);
    let (digest, layer) = push_artifact(&upstream, "lib/p", "1.0");
    let layer_digest = sha256_digest(&layer);
    let mut cache = upstream.pull_through();
    assert_eq!(cache.cache_of().unwrap().remote_url, upstream.url(""));
    assert!(
        cache.log().contains("remoteurl") || cache.log().contains("proxy"),
        "{}",
        cache.log()
    );

    check_artifact(&cache, "lib/p", "1.0", &digest, &layer);
    // distribution 2.8 reads a cold blob at least twice upstream (one stream to the
    // client, one to its storage, committed asynchronously; a read before the commit
    // goes upstream again)
    let blob_path = format!("/blobs/{layer_digest}");
    assert!(cache.wait_for_blob(&layer_digest, Duration::from_secs(5)));
    let cold = upstream.request_count("GET", &blob_path);
    assert!(cold >= 2, "{cold}");
    assert_eq!(
        upstream.bytes_served("GET", &blob_path),
        cold as u64 * layer.len() as u64
    );
    // warm: the same blob again adds no upstream blob fetch
    assert_eq!(get_blob(&cache, "lib/p", &layer_digest), layer);
    assert_eq!(upstream.request_count("GET", &blob_path), cold);
    // the cache's requests (Go's user agent), each preceded by a /v2/ probe
    let log = upstream.access_log();
    let by_cache: Vec<_> = log
        .iter()
        .filter(|e| e.user_agent.starts_with("Go-http-client"))
        .collect();
    let probes = by_cache.iter().filter(|e| e.path == "/v2/").count();
    assert!(probes >= by_cache.len() / 2 && by_cache.iter().any(|e| e.path.ends_with(&blob_path)));
    assert!(cache.bytes_served("GET", "/blobs/") >= 2 * layer.len() as u64);
    // read-only: pushes to a cache are refused
    let (status, _, _) = http_post(&cache, "/v2/lib/p/blobs/uploads/", "", b"");
    assert!(status >= 400, "push to a cache answered {status}");

    // token-auth upstream with credentials (the Docker Hub case)
    let tok = Registry::start(Variant::token("bob", "pw"));
    let (digest, layer) = push_artifact(&tok, "priv/p", "v1");
    let mut cache = tok.pull_through();
    check_artifact(&cache, "priv/p", "v1", &digest, &layer);
    let reqs = tok.token_server().requests();
    assert!(reqs
        .iter()
        .any(|r| r.user.as_deref() == Some("bob") && r.status == 200));
    assert!(tok
        .token_server()
        .requested_scopes()
        .iter()
        .any(|s| s == "repository:priv/p:pull"));

    // the cache dies: connection refused
    cache.stop();
    assert!(curl(&cache.url("/v2/"), &[] as &[&str]).is_err());
}

#[test]
fn referrers_proxy_serves_the_api_and_hides_the_fallback() {
    const MT: &str = "application/vnd.oci.image.manifest.v1+json";
    let reg = Registry::start(Variant::Anonymous);
    let rp = ReferrersProxy::start(&reg);
    let via = |path: &str| format!("http://{}{path}", rp.addr());
    let (subject, _) = push_artifact(&reg, "r/p", "v1");
    let subject_size = get_manifest(&reg, "r/p", "v1").1.len();
    let fallback = subject.replace(':', "-");
    let referrers = format!("/v2/r/p/referrers/{subject}");

    let index = |q: &str| {
        let (status, body, headers) = http_get(&reg, &via(&format!("{referrers}{q}")), "");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            headers.get("content-type"),
            Some("application/vnd.oci.image.index.v1+json")
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (v["manifests"].as_array().unwrap().clone(), headers)
    };
    assert!(index("").0.is_empty());

    // two referrers pushed through the proxy: answered with OCI-Subject, indexed
    let empty = push_blob(&reg, "r/p", b"{}");
    let mut referrer_digests = vec![];
    for (kind, title) in [
        ("application/vnd.dev.sigstore.bundle.v0.3+json", "sig"),
        ("application/spdx+json", "sbom"),
    ] {
        let layer = push_blob(&reg, "r/p", title.as_bytes());
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT}","artifactType":"{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{MT}","digest":"{subject}","size":{subject_size}}},"annotations":{{"kind":"{title}"}}}}"#,
            title.len()
        );
        let d = sha256_digest(m.as_bytes());
        let (status, body, headers) = http_put(
            &reg,
            &via(&format!("/v2/r/p/manifests/{d}")),
            MT,
            m.as_bytes(),
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers.get("oci-subject"), Some(subject.as_str()));
        referrer_digests.push(d);
    }
    let (all, headers) = index("");
    assert_eq!(all.len(), 2);
    assert_eq!(headers.get("oci-filters-applied"), None);
    assert_eq!(all[0]["digest"], referrer_digests[0].as_str());
    assert_eq!(
        all[0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(all[0]["annotations"]["kind"], "sig");
    let (sboms, headers) = index("?artifactType=application/spdx%2Bjson");
    assert_eq!(sboms.len(), 1);
    assert_eq!(sboms[0]["digest"], referrer_digests[1].as_str());
    assert_eq!(headers.get("oci-filters-applied"), Some("artifactType"));

    // the fallback tag: in the registry, invisible and read-only through the proxy
    assert_eq!(get_manifest(&reg, "r/p", &fallback).0, 200);
    assert_eq!(
        http_get(&reg, &via(&format!("/v2/r/p/manifests/{fallback}")), "").0,
        404
    );
    assert_eq!(
        http_head(&reg, &via(&format!("/v2/r/p/manifests/{fallback}")), "").0,
        404
    );
    let tags = |url: &str| String::from_utf8(http_get(&reg, url, "").1).unwrap();
    assert!(tags(&reg.url("/v2/r/p/tags/list")).contains(&fallback));
    let listed = tags(&via("/v2/r/p/tags/list"));
    assert!(
        listed.contains("v1") && !listed.contains(&fallback),
        "{listed}"
    );
    let (status, _, _) = http_put(
        &reg,
        &via(&format!("/v2/r/p/manifests/{fallback}")),
        "application/vnd.oci.image.index.v1+json",
        b"{}",
    );
    assert_eq!(status, 405);
    assert_eq!(rp.count("refused-fallback-write"), 1);
    assert_eq!(rp.count("hidden-fallback-read"), 2);

    // deleting a referrer unindexes it; a bad digest is refused
    assert_eq!(
        http_delete(
            &reg,
            &via(&format!("/v2/r/p/manifests/{}", referrer_digests[1]))
        )
        .0,
        202
    );
    assert_eq!(index("").0.len(), 1);
    assert_eq!(
        http_get(&reg, &via("/v2/r/p/referrers/sha256:abc"), "").0,
        400
    );
    // other requests pass through untouched and are recorded
    let (status, body, headers) = http_get(&reg, &via("/v2/r/p/manifests/v1"), MANIFEST_ACCEPT);
    assert_eq!((status, sha256_digest(&body)), (200, subject.clone()));
    assert_eq!(headers.get("docker-content-digest"), Some(subject.as_str()));
    assert_eq!(
        http_get(&reg, &via(&format!("/v2/r/p/blobs/{empty}")), "").1,
        b"{}"
    );
    assert_eq!(rp.request_count("GET", "/manifests/v1"), 1);
    assert_eq!(rp.count("subject-indexed"), 2);
    assert_eq!(rp.count("subject-unindexed"), 1);
    assert_eq!(rp.count("referrers-api"), 5);
    assert_eq!(rp.request_count("GET", "/referrers/"), 5);
}
