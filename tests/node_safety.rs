//! The node under attack and faults (issue 10, and 11.3/11.4/11.12): kplug never takes
//! over or deletes a directory it did not create, every trust flag binds every path,
//! unsigned content is refused before it fills the disk, receipts never point outside
//! their plugin, bad signature layers cannot hide a good one, a crash or a signal leaves
//! the old version and no temp file, and the lock says who holds it.
//!
//! Every test starts its own `docker-registry` and works in its own temp prefix.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::fixtures::*;
use common::*;

impl Env {
    fn prefix(&self) -> PathBuf {
        self.dir().join("lua")
    }

    fn plugin_dir(&self, name: &str) -> PathBuf {
        self.prefix().join("kong/plugins").join(name)
    }

    fn state_dir(&self) -> PathBuf {
        self.prefix().join("kong/plugins/.kplug")
    }

    fn conf(&self) -> PathBuf {
        self.dir().join("kong.conf")
    }

    fn repo(&self, name: &str) -> String {
        format!("{}/plugins/{name}", self.reg.host())
    }

    /// Plugin `name` `version`, pushed to `plugins/<repo>:<version>` and signed.
    fn push_signed_to(&self, repo: &str, name: &str, version: &str) -> String {
        let src = self.dir().join(format!("src-{name}-{version}"));
        if !src.exists() {
            write_plugin(&src, name, version, &format!("{name} {version}"));
        }
        let pinned = push(&self.home, &src, &format!("{}:{version}", self.repo(repo)));
        sign(&self.home, &self.key, &pinned);
        pinned
    }

    fn push_signed(&self, name: &str, version: &str) -> String {
        self.push_signed_to(name, name, version)
    }

    /// `kplug <verb> --prefix P [--kong-conf C when it exists]` (not run).
    fn node(&self, verb: &str) -> Command {
        let mut cmd = self.home.kplug();
        cmd.arg(verb).arg("--prefix").arg(self.prefix());
        if self.conf().exists() {
            cmd.arg("--kong-conf").arg(self.conf());
        }
        cmd
    }

    fn install_cmd(&self, reference: &str, extra: &[&str]) -> Command {
        let mut cmd = self.node("install");
        cmd.arg(reference)
            .arg("--key")
            .arg(&self.key.public)
            .args(extra);
        cmd
    }

    fn receipt_path(&self, name: &str) -> PathBuf {
        self.state_dir().join(format!("{name}.json"))
    }

    fn receipt(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.receipt_path(name)).unwrap()).unwrap()
    }

    fn version(&self, name: &str) -> String {
        self.receipt(name)["version"].as_str().unwrap().to_string()
    }

    /// Names under the state dir that a dead run could have left: staging dirs, temp files.
    fn leftovers(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.state_dir()) else {
            return Vec::new();
        };
        rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [
                    ".staging-",
                    ".kplug-tmp",
                    ".tmp",
                    ".kplug-new-",
                    ".incoming",
                    ".journal",
                ]
                .iter()
                .any(|p| n.starts_with(p))
            })
            .collect()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// 10.1 ownership
// ---------------------------------------------------------------------------------------

/// A directory kplug did not install is refused (exit 2, named); `--adopt` keeps its
/// files through two signed installs, and uninstall puts them back.
#[test]
fn a_directory_kplug_did_not_install_is_refused_adopted_and_restored() {
    let env = Env::new();
    let v1 = env.push_signed("hello", "1.0.0");
    let v2 = env.push_signed("hello", "2.0.0");
    let v3 = env.push_signed("hello", "3.0.0");
    let dir = env.plugin_dir("hello");
    std::fs::create_dir_all(&dir).unwrap();
    let original = "-- hand-copied, not kplug's\nreturn {}\n";
    std::fs::write(dir.join("handler.lua"), original).unwrap();
    std::fs::write(dir.join("NOTES"), "mine\n").unwrap();

    let out = run_fail(&mut env.install_cmd(&v1, &[]), 2);
    let err = stderr(&out);
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("--adopt"),
        "{err}"
    );
    assert_eq!(read(&dir.join("handler.lua")), original);
    assert!(!env.receipt_path("hello").exists());

    let out = run_ok(&mut env.install_cmd(&v1, &["--adopt"]));
    let adopted = env.state_dir().join("adopted/hello");
    assert!(
        stderr(&out).contains(&adopted.display().to_string()),
        "{}",
        stderr(&out)
    );
    run_ok(&mut env.install_cmd(&v2, &[]));
    run_ok(&mut env.install_cmd(&v3, &[]));
    assert_eq!(env.version("hello"), "3.0.0");
    assert_eq!(read(&adopted.join("handler.lua")), original);
    assert_eq!(env.receipt("hello")["adopted"], true);

    let out = run_ok(env.node("uninstall").arg("hello"));
    assert!(
        stderr(&out).contains("put back the original"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&dir.join("handler.lua")), original);
    assert_eq!(read(&dir.join("NOTES")), "mine\n");
    assert!(!adopted.exists() && !env.receipt_path("hello").exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// A custom plugin named like one Kong ships is refused unless asked for, and doctor
/// flags it.
#[test]
fn a_bundled_plugin_name_is_refused_and_flagged_by_doctor() {
    let env = Env::new();
    let rl = env.push_signed("rate-limiting", "1.0.0");
    let out = run_fail(&mut env.install_cmd(&rl, &[]), 2);
    assert!(
        stderr(&out).contains("a plugin Kong ships")
            && stderr(&out).contains("--allow-bundled-name"),
        "{}",
        stderr(&out)
    );
    assert!(!env.plugin_dir("rate-limiting").exists());
    run_ok(&mut env.install_cmd(&rl, &["--allow-bundled-name"]));
    std::fs::write(
        env.conf(),
        format!(
            "plugins = bundled,rate-limiting\nlua_package_path = {}/?.lua;;\n",
            env.prefix().display()
        ),
    )
    .unwrap();
    let out = run_ok(env.node("doctor").arg("--json"));
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["plugin"] == "rate-limiting"
                && f["severity"] == "warning"
                && f["message"]
                    .as_str()
                    .unwrap()
                    .contains("a plugin Kong ships")),
        "{findings:#}"
    );
}

// ---------------------------------------------------------------------------------------
// 10.2 trust on every path
// ---------------------------------------------------------------------------------------

#[test]
fn every_trust_flag_binds_every_path() {
    let env = Env::new();
    // A local file with a detached signature cannot satisfy -a or --require-tlog.
    let src = env.dir().join("src-file");
    write_plugin(&src, "hello", "1.0.0", "file");
    let file = env.dir().join("hello-1.0.0.tar.gz");
    run_ok(env.home.kplug().arg("pack").arg(&src).arg("-o").arg(&file));
    let sig = env.dir().join("hello.sig");
    std::fs::write(&sig, "MEUCIQDfake\n").unwrap();
    let f = file.to_str().unwrap();
    let s = sig.to_str().unwrap();
    let rekor = env.key.public.to_str().unwrap();
    for (extra, flag) in [
        (vec!["-a", "env=prod"], "-a"),
        (
            vec!["--require-tlog", "--rekor-key", rekor],
            "--require-tlog",
        ),
        (vec!["--strict-identity"], "--strict-identity"),
    ] {
        let mut args = vec!["--signature", s];
        args.extend(extra);
        let out = run_fail(&mut env.install_cmd(f, &args), 2);
        assert!(stderr(&out).contains(flag), "{flag}: {}", stderr(&out));
    }
    assert!(!env.plugin_dir("hello").exists());

    // The "already installed" shortcut applies only to what the receipt says was checked.
    let pinned = env.push_signed("hello", "1.0.0");
    run_ok(&mut env.install_cmd(&pinned, &[]));
    let out = run_fail(
        &mut env.install_cmd(&pinned, &["--require-tlog", "--rekor-key", rekor]),
        12,
    );
    assert!(
        stderr(&out).contains("transparency log"),
        "{}",
        stderr(&out)
    );
    let out = run_fail(&mut env.install_cmd(&pinned, &["-a", "env=prod"]), 12);
    assert!(!stderr(&out).contains("already installed"));
    // Signed again with the claim: verified once, then the shortcut holds for it.
    run_ok(&mut sign_cmd(
        &env.home,
        &env.key,
        &pinned,
        &["-a", "env=prod"],
    ));
    let out = run_ok(&mut env.install_cmd(&pinned, &["-a", "env=prod"]));
    assert!(
        stderr(&out).contains("Verification for"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.receipt("hello")["trusted"]["claims"]["env"], "prod");
    let out = run_ok(&mut env.install_cmd(&pinned, &["-a", "env=prod"]));
    assert!(
        stderr(&out).contains("already installed") && !stderr(&out).contains("Verification for"),
        "{}",
        stderr(&out)
    );
    run_fail(&mut env.install_cmd(&pinned, &["-a", "env=dev"]), 12);
}

// ---------------------------------------------------------------------------------------
// 10.3 verify before download
// ---------------------------------------------------------------------------------------

/// Pushes an unsigned artifact whose one layer is `size` zero bytes (streamed from a
/// sparse file); returns its pinned reference through `host`.
fn push_zero_layer(env: &Env, size: u64, host: &str) -> String {
    let file = env.dir().join("zeros.tar.gz");
    std::fs::File::create(&file).unwrap().set_len(size).unwrap();
    let out = run_ok(Command::new("sha256sum").arg(&file));
    let digest = format!("sha256:{}", &stdout(&out)[..64]);
    let repo = "plugins/big";
    let location = start_upload(&env.reg, repo);
    let (status, body, _) = http_put_file(
        &env.reg,
        &with_query(&location, "digest", &digest),
        "application/octet-stream",
        &file,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    std::fs::remove_file(&file).unwrap();
    let config = b"{}";
    let config_digest = push_blob(&env.reg, repo, config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": size, "digest": digest}],
    });
    let m = push_manifest(
        &env.reg,
        repo,
        "1.0.0",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    format!("{host}/{repo}@{m}")
}

/// An unsigned 400 MiB layer is refused with exit 11 having downloaded nothing (it is
/// over what the install limits allow); with the limits raised to allow it, the download
/// is cancelled the moment verification fails.
#[test]
fn an_unsigned_huge_layer_is_refused_before_it_fills_the_disk() {
    let env = Env::new();
    let size = 400u64 << 20;
    let proxy = Proxy::start(&env.reg.host());
    let pinned = push_zero_layer(&env, size, proxy.addr());

    let out = run_fail(&mut env.install_cmd(&pinned, &[]), 11);
    assert!(
        stderr(&out).contains("no signatures found"),
        "{}",
        stderr(&out)
    );
    let down = proxy.bytes_down();
    eprintln!("default limits: {down} bytes came down for a {size}-byte unsigned layer");
    assert!(down < 1 << 20, "{down} bytes downloaded");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());

    // Signatures looked up through a slower path (COSIGN_REPOSITORY behind 100 ms of
    // latency), so that the download is well under way when verification fails.
    let slow = Proxy::with_rtt(&env.reg.host(), Duration::from_millis(100));
    let before = proxy.bytes_down();
    let out = run_fail(
        env.install_cmd(&pinned, &["--max-bytes", "1073741824"])
            .env("COSIGN_REPOSITORY", format!("{}/plugins/big", slow.addr())),
        11,
    );
    assert!(
        stderr(&out).contains("no signatures found"),
        "{}",
        stderr(&out)
    );
    let down = proxy.bytes_down() - before;
    eprintln!("--max-bytes 1 GiB: {down} bytes came down before the download was cancelled");
    assert!(down > 1 << 20, "the download did not start: {down} bytes");
    assert!(down < size, "{down} of {size} bytes downloaded");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    assert!(!env.plugin_dir("big").exists());
}

// ---------------------------------------------------------------------------------------
// 10.4 receipts
// ---------------------------------------------------------------------------------------

#[test]
fn a_receipt_never_reaches_outside_its_plugin_directory() {
    let env = Env::new();
    let pinned = env.push_signed("hello", "1.0.0");
    run_ok(&mut env.install_cmd(&pinned, &[]));
    let good = env.receipt("hello");
    let dir = env.plugin_dir("hello");
    let with_file = |path: &str, sha: &str, size: u64| {
        let mut r = good.clone();
        r["files"].as_array_mut().unwrap().push(serde_json::json!({
            "path": path, "sha256": sha, "size": size, "mode": 0o644
        }));
        std::fs::write(env.receipt_path("hello"), r.to_string()).unwrap();
    };

    // uninstall refuses before removing anything: no half-removed plugin.
    with_file("zz/../../x.lua", "sha256:00", 1);
    let out = run_fail(env.node("uninstall").arg("hello"), 5);
    assert!(stderr(&out).contains("zz/../../x.lua"), "{}", stderr(&out));
    assert!(dir.join("handler.lua").exists() && dir.join("schema.lua").exists());
    assert!(env.receipt_path("hello").exists());

    // list never hashes a file outside the plugin: an absolute path, or a name with
    // backslashes that older code turned into one.
    let outside = env.dir().join("outside.txt");
    std::fs::write(&outside, "secret\n").unwrap();
    let sha = sha256_digest(b"secret\n");
    for p in [outside.display().to_string(), r"\etc\passwd".to_string()] {
        with_file(&p, &sha, 7);
        let out = run_fail(env.node("list").arg("--json"), 5);
        let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(listed[0]["intact"], false, "{listed}");
        assert!(listed[0]["error"]
            .as_str()
            .unwrap()
            .contains("leaves the plugin directory"));
    }

    // Control characters from the archive (here: the version) are printed escaped.
    let mut r = good.clone();
    r["version"] = Value::from("1.0\u{1b}[31mRED\nfake line");
    std::fs::write(env.receipt_path("hello"), r.to_string()).unwrap();
    let out = run_ok(&mut env.node("list"));
    let text = stdout(&out);
    assert!(
        !text.contains('\u{1b}') && text.lines().count() == 2,
        "{text:?}"
    );
    assert!(text.contains(r"\u{1b}[31mRED\nfake"), "{text}");
    std::fs::write(env.receipt_path("hello"), good.to_string()).unwrap();
    run_ok(env.node("uninstall").arg("hello"));
    assert!(!dir.exists());
}

// ---------------------------------------------------------------------------------------
// 10.5 bad .sig layers
// ---------------------------------------------------------------------------------------

fn sig_layer(digest: &str, size: usize) -> Value {
    serde_json::json!({
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "size": size, "digest": digest,
        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDjunk"},
    })
}

/// Replaces the `.sig` manifest of `digest` in `plugins/hello` by `sig` with `layers`.
fn put_sig(env: &Env, sig: &Value, digest: &str, layers: Vec<Value>) {
    let mut m = sig.clone();
    m["layers"] = Value::from(layers);
    push_manifest(
        &env.reg,
        "plugins/hello",
        &sig_tag(digest),
        "application/vnd.oci.image.manifest.v1+json",
        m.to_string().as_bytes(),
    );
}

fn verify(env: &Env, pinned: &str, code: i32) -> Output {
    let mut cmd = env.home.kplug();
    cmd.arg("verify")
        .arg("--key")
        .arg(&env.key.public)
        .arg(pinned);
    let out = run(&mut cmd);
    assert_exit(&out, code);
    out
}

#[test]
fn bad_signature_layers_do_not_hide_a_good_one_and_stay_bounded() {
    let mut env = Env::new();
    let pinned = env.push_signed("hello", "1.0.0");
    let digest = digest_of(&pinned);
    let repo = "plugins/hello";
    let (_, body, _) = get_manifest(&env.reg, repo, &sig_tag(&digest));
    let sig: Value = serde_json::from_slice(&body).unwrap();
    let good = sig["layers"][0].clone();

    // A layer whose blob is gone from the repository (pushed, referenced, then unlinked).
    let gone = push_blob(&env.reg, repo, b"soon gone");
    put_sig(&env, &sig, &digest, vec![sig_layer(&gone, 9), good.clone()]);
    let hex = &gone["sha256:".len()..];
    std::fs::remove_dir_all(
        env.reg
            .storage_dir()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_layers/sha256")
            .join(hex),
    )
    .unwrap();
    let (status, _, _) = http_get(&env.reg, &format!("/v2/{repo}/blobs/{gone}"), "");
    assert_eq!(status, 404);
    verify(&env, &pinned, 0);

    // A 2 MiB junk layer, over the 1 MiB a signature payload may be.
    let junk = vec![b'x'; 2 << 20];
    let junk_digest = push_blob(&env.reg, repo, &junk);
    put_sig(
        &env,
        &sig,
        &digest,
        vec![sig_layer(&junk_digest, junk.len()), good.clone()],
    );
    verify(&env, &pinned, 0);
    run_ok(&mut env.install_cmd(&pinned, &[]));

    // 500 untrusted layers and no good one: exit 12 with bounded output and work.
    let small = push_blob(&env.reg, repo, b"{}");
    put_sig(
        &env,
        &sig,
        &digest,
        (0..500).map(|_| sig_layer(&small, 2)).collect(),
    );
    let before = env.reg.request_count("GET", "/blobs/");
    let out = verify(&env, &pinned, 12);
    let fetched = env.reg.request_count("GET", "/blobs/") - before;
    let err_len = out.stderr.len();
    eprintln!("500 untrusted layers: {err_len} bytes of stderr, {fetched} blob GETs");
    assert!(err_len < 4096, "{err_len} bytes:\n{}", stderr(&out));
    assert!(fetched <= 2, "{fetched} blob GETs");
    assert!(stderr(&out).contains("not examined"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// 10.7 crash window, 10.8 lock wait
// ---------------------------------------------------------------------------------------

/// After a crash mid-swap, doctor finishes the swap instead of reporting "enabled but not
/// installed"; staging dirs and temp files of dead runs go with the next command.
#[test]
fn doctor_finishes_an_interrupted_swap_and_leftovers_are_removed() {
    let env = Env::new();
    let v1 = env.push_signed("hello", "1.0.0");
    let v2 = env.push_signed("hello", "2.0.0");
    run_ok(&mut env.install_cmd(&v1, &[]));
    std::fs::write(
        env.conf(),
        format!(
            "plugins = bundled,hello\nlua_package_path = {}/?.lua;;\n",
            env.prefix().display()
        ),
    )
    .unwrap();
    let out = run(env
        .install_cmd(&v2, &[])
        .env("KPLUG_TEST_FAIL_AT", "mid-swap"));
    assert!(!out.status.success());
    assert!(!env.plugin_dir("hello").exists());
    let state = env.state_dir();
    std::fs::write(state.join(".kplug-tmpAbC123"), "{\"name\":\"hel").unwrap();
    std::fs::write(state.join(".tmpXyZ"), "half").unwrap();
    std::fs::create_dir(state.join(".staging-dead")).unwrap();
    std::fs::write(state.join(".staging-dead/blob"), vec![0u8; 1 << 16]).unwrap();

    let out = run_ok(env.node("doctor").arg("--json"));
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let msgs: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(
        msgs.iter().any(|m| m.contains("interrupted mid-swap"))
            && !msgs.iter().any(|m| m.contains("enabled but not installed")),
        "{msgs:#?}"
    );
    assert_eq!(env.version("hello"), "1.0.0");
    assert!(env.plugin_dir("hello").join("handler.lua").exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_held_lock_names_its_holder_and_lock_timeout_gives_up() {
    let env = Env::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let lock = std::fs::File::create(env.state_dir().join("lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(env.state_dir().join("lock"), "4242\n").unwrap();
    let t = Instant::now();
    let out = run_fail(env.node("list").args(["--lock-timeout", "1s"]), 1);
    let took = t.elapsed();
    let err = stderr(&out);
    assert!(
        err.contains("held by pid 4242") && err.contains("gave up after"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    drop(lock);
    run_ok(env.node("list").args(["--lock-timeout", "1s"]));
}

// ---------------------------------------------------------------------------------------
// 10.11 downgrade and identity, 11.3 rollback, 11.4 kong.conf
// ---------------------------------------------------------------------------------------

#[test]
fn downgrades_need_a_flag_and_a_foreign_signature_is_flagged() {
    let env = Env::new();
    let v1 = env.push_signed("hello", "1.0.0");
    let v2 = env.push_signed("hello", "2.0.0");
    run_ok(&mut env.install_cmd(&v2, &[]));
    let out = run_fail(&mut env.install_cmd(&v1, &[]), 2);
    assert!(
        stderr(&out).contains("downgrade") && stderr(&out).contains("--allow-downgrade"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.version("hello"), "2.0.0");
    run_ok(&mut env.install_cmd(&v1, &["--allow-downgrade"]));
    assert_eq!(env.version("hello"), "1.0.0");

    // Signed for plugins/elsewhere, then copied (with its signature) to plugins/hello.
    let other = env.push_signed_to("elsewhere", "hello", "3.0.0");
    let copied = format!("{}@{}", env.repo("hello"), digest_of(&other));
    run_ok(
        env.home
            .kplug()
            .arg("copy")
            .arg(&other)
            .arg(format!("{}:3.0.0", env.repo("hello"))),
    );
    let out = run_fail(&mut env.install_cmd(&copied, &["--strict-identity"]), 12);
    assert!(
        stderr(&out).contains("plugins/elsewhere"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.version("hello"), "1.0.0");
    let out = run_ok(&mut env.install_cmd(&copied, &[]));
    assert!(
        stderr(&out).contains("WARNING") && stderr(&out).contains("plugins/elsewhere"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.version("hello"), "3.0.0");

    // A registries.conf mirror that stands in for plugins/elsewhere is accepted.
    let conf = env.dir().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{0}\"\nlocation = \"{0}\"\n[[registry.mirror]]\nlocation = \"{1}\"\n",
            env.repo("elsewhere"),
            env.repo("hello")
        ),
    )
    .unwrap();
    run_ok(&mut env.install_cmd(&v2, &["--allow-downgrade"]));
    let out = run_ok(
        env.install_cmd(&copied, &["--strict-identity"])
            .env("CONTAINERS_REGISTRIES_CONF", &conf),
    );
    assert!(!stderr(&out).contains("WARNING"), "{}", stderr(&out));
    assert_eq!(env.version("hello"), "3.0.0");
}

#[test]
fn rollback_refuses_a_backup_changed_since_install() {
    let env = Env::new();
    let v1 = env.push_signed("hello", "1.0.0");
    run_ok(&mut env.install_cmd(&v1, &[]));
    let handler = env.plugin_dir("hello").join("handler.lua");
    std::fs::write(&handler, "-- edited by hand\n").unwrap();
    let out = run_ok(&mut env.install_cmd(&v1, &[]));
    assert!(
        stderr(&out).contains("handler.lua (modified)"),
        "{}",
        stderr(&out)
    );
    assert_ne!(read(&handler), "-- edited by hand\n");

    let out = run_fail(env.node("rollback").arg("hello"), 5);
    assert!(
        stderr(&out).contains("handler.lua (modified)") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_ne!(read(&handler), "-- edited by hand\n");
    run_ok(env.node("rollback").arg("hello").arg("--force"));
    assert_eq!(read(&handler), "-- edited by hand\n");
}

#[test]
fn enable_checks_the_kong_conf_and_the_environment() {
    let env = Env::new();
    let pinned = env.push_signed("hello", "1.0.0");
    let out = run_fail(
        &mut env.install_cmd(&pinned, &["--enable", "--kong-conf", "/no/such/kong.conf"]),
        2,
    );
    assert!(
        stderr(&out).contains("/no/such/kong.conf"),
        "{}",
        stderr(&out)
    );
    assert!(!env.plugin_dir("hello").exists());

    std::fs::write(env.conf(), "plugins = bundled\n").unwrap();
    let out = run_ok(
        env.install_cmd(&pinned, &["--enable"])
            .env("KONG_PLUGINS", "bundled,other"),
    );
    let err = stderr(&out);
    assert!(
        err.contains("overrides") && err.contains("KONG_PLUGINS=bundled,other,hello"),
        "{err}"
    );
    assert!(
        read(&env.conf()).contains("plugins = bundled,hello"),
        "{}",
        read(&env.conf())
    );
}

// ---------------------------------------------------------------------------------------
// 11.12 signals, SIGKILL
// ---------------------------------------------------------------------------------------

/// A signed plugin with `mib` MiB of incompressible data, pushed as `plugins/big:<version>`.
fn push_big(env: &Env, version: &str, mib: usize) -> String {
    let src = env.dir().join(format!("big-{version}"));
    write_plugin(&src, "big", version, "big");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("kong/plugins/big/data.bin"), data).unwrap();
    let pinned = push(&env.home, &src, &format!("{}:{version}", env.repo("big")));
    sign(&env.home, &env.key, &pinned);
    pinned
}

/// Waits until a file under `dir` (recursively) holds at least `bytes`.
fn wait_for_partial_file(dir: &Path, bytes: u64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.len() >= bytes {
                    return;
                }
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the signal"
        );
        assert!(
            Instant::now() < deadline,
            "no partial download in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn wait(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// SIGINT during install and push, SIGTERM during pull: one line, 130/143, no staging
/// dir or temp file; SIGKILL mid-install: the previous version intact, and the next command
/// removes what the killed run left.
#[test]
fn signals_and_kills_leave_the_old_version_and_no_temp_file() {
    let env = Env::new();
    let v1 = push_big(&env, "1.0.0", 1);
    let v2 = push_big(&env, "2.0.0", 24);
    run_ok(&mut env.install_cmd(&v1, &[]));
    // 150 ms per chunk: a few MiB/s, so the 24 MiB download is under way for seconds.
    let slow = Proxy::with_delay(&env.reg.host(), Duration::ZERO, Duration::from_millis(150));
    let through = v2.replace(&env.reg.host(), slow.addr());
    let piped = |mut c: Command| {
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut child = piped(env.install_cmd(&through, &[]));
    wait_for_partial_file(&env.state_dir(), 1 << 20, &mut child);
    signal(&child, libc::SIGINT);
    let out = wait(child);
    assert_exit(&out, 130);
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.contains("interrupted")).count(),
        1,
        "{err}"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    assert_eq!(env.version("big"), "1.0.0");

    let outdir = env.dir().join("pulled");
    std::fs::create_dir(&outdir).unwrap();
    let mut pull = env.home.kplug();
    pull.arg("pull")
        .arg(&through)
        .arg("-o")
        .arg(outdir.join("big.tar.gz"));
    let mut child = piped(pull);
    wait_for_partial_file(&outdir, 1 << 20, &mut child);
    signal(&child, libc::SIGTERM);
    assert_exit(&wait(child), 143);
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 0);

    // SIGINT during push (it used to say nothing): one line, 130, its scratch dir gone.
    let slow_up = Proxy::with_delay(&env.reg.host(), Duration::from_millis(150), Duration::ZERO);
    let scratch = env.dir().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let mut push = env.home.kplug();
    push.env("TMPDIR", &scratch)
        .arg("push")
        .arg(env.dir().join("big-2.0.0"))
        .arg(format!("{}/plugins/pushed:3", slow_up.addr()));
    let mut child = piped(push);
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow_up.bytes_up() < 1 << 20 {
        if child.try_wait().unwrap().is_some() {
            panic!("push ended early: {}", stderr(&wait(child)));
        }
        assert!(Instant::now() < deadline, "push sent nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, libc::SIGINT);
    let out = wait(child);
    assert_exit(&out, 130);
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.contains("interrupted")).count(),
        1,
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);

    let mut child = piped(env.install_cmd(&through, &[]));
    wait_for_partial_file(&env.state_dir(), 1 << 20, &mut child);
    signal(&child, libc::SIGKILL);
    wait(child);
    assert!(
        !env.leftovers().is_empty(),
        "a killed run leaves its staging dir"
    );
    assert_eq!(env.version("big"), "1.0.0");
    run_ok(&mut env.node("list"));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    assert_eq!(env.version("big"), "1.0.0");
}

// ---------------------------------------------------------------------------------------
// Fault injection (issue 10 "Tests"): network faults and SIGKILLs over install
// ---------------------------------------------------------------------------------------

/// The exit codes README documents for a failed run.
const DOCUMENTED: [i32; 8] = [1, 3, 4, 5, 6, 10, 11, 12];

/// What a run over the `big` plugin left: `Some(version)` when `list` shows one whole,
/// intact version and no leftover remains after it; `None` otherwise (unsafe).
fn whole_version(env: &Env) -> Option<String> {
    let out = run(env.node("list").arg("--json"));
    let listed: Value = serde_json::from_str(&stdout(&out)).ok()?;
    let l = listed.as_array()?.first()?;
    let ok = out.status.success() && l["intact"] == true && env.leftovers().is_empty();
    ok.then(|| l["version"].as_str().unwrap_or_default().to_string())
}

#[derive(Default)]
struct Tally {
    tried: u32,
    completed: u32,
    refused: u32,
    unsafe_: Vec<String>,
}

/// Network faults on each request install makes (manifest, plugin layer, signature
/// manifest, signature payload) and SIGKILLs at spread-out moments: every run ends with
/// the new version installed whole (exit 0), or a documented exit code and the old version
/// whole; never a temp file or staging dir after the next command.
#[test]
fn faults_and_kills_over_install_leave_a_whole_version() {
    let env = Env::new();
    let v1 = push_big(&env, "1.0.0", 1);
    let v2 = push_big(&env, "2.0.0", 2);
    run_ok(&mut env.install_cmd(&v1, &[]));
    let d2 = digest_of(&v2);
    let (_, m, _) = get_manifest(&env.reg, "plugins/big", &d2);
    let layer = serde_json::from_slice::<Value>(&m).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, s, _) = get_manifest(&env.reg, "plugins/big", &sig_tag(&d2));
    let payload = serde_json::from_slice::<Value>(&s).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let targets = [
        ("manifest", format!("/manifests/{d2}")),
        ("layer", format!("/blobs/{layer}")),
        ("sig manifest", format!("/manifests/{}", sig_tag(&d2))),
        ("sig payload", format!("/blobs/{payload}")),
    ];
    let faults: Vec<(&str, Fault, Option<usize>)> = vec![
        ("close before response", Fault::CloseBeforeResponse, Some(1)),
        (
            "close mid-body",
            Fault::CloseMidBody { after: None },
            Some(1),
        ),
        ("503 once", Fault::Status(503), Some(1)),
        ("500 always", Fault::Status(500), None),
        ("429 Retry-After 1", Fault::too_many_requests(1), Some(1)),
        ("stall 1 s", Fault::stall(Duration::from_secs(1)), Some(1)),
        ("bit flip", Fault::FlipBit { offset: None }, None),
        ("truncate", Fault::Truncate { keep: 10 }, None),
    ];
    let mut tally = std::collections::BTreeMap::<&str, Tally>::new();
    let other = |v: &str| {
        if v == "1.0.0" {
            (&v2, "2.0.0")
        } else {
            (&v1, "1.0.0")
        }
    };
    let mut current = whole_version(&env).expect("v1 whole");
    for (fname, fault, times) in &faults {
        for (tname, path) in &targets {
            let fp = FaultProxy::start(&env.reg.host());
            let mut rule = Rule::new(fault.clone())
                .method("GET")
                .path(&regex::escape(path));
            if let Some(t) = times {
                rule = rule.times(*t);
            }
            fp.add(rule);
            let (target, want) = other(&current);
            let through = target.replace(&env.reg.host(), fp.addr());
            let out = run(&mut env.install_cmd(&through, &["--allow-downgrade"]));
            let code = out.status.code().unwrap_or(-1);
            let after = whole_version(&env);
            let t = tally.entry(fname).or_default();
            t.tried += 1;
            match (code, after.as_deref()) {
                (0, Some(v)) if v == want => t.completed += 1,
                (c, Some(v)) if v == current && DOCUMENTED.contains(&c) => t.refused += 1,
                _ => t.unsafe_.push(format!(
                    "{fname} on {tname}: exit {code}, left {after:?}\n{}",
                    stderr(&out)
                )),
            }
            current = after.unwrap_or(current);
        }
    }
    // SIGKILL at 12 moments spread over an install (resolve, verify, download, unpack,
    // swap), after timing one.
    let (target, _) = other(&current);
    let t0 = Instant::now();
    run_ok(&mut env.install_cmd(target, &["--allow-downgrade"]));
    let took = t0.elapsed();
    current = whole_version(&env).unwrap();
    let kills = tally.entry("SIGKILL").or_default();
    for i in 0..12u32 {
        let (target, want) = other(&current);
        let at = took * i / 11;
        let mut child = env
            .install_cmd(target, &["--allow-downgrade"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        kills.tried += 1;
        let after = whole_version(&env);
        match after.as_deref() {
            Some(v) if v == want => kills.completed += 1,
            Some(v) if v == current => kills.refused += 1,
            _ => kills
                .unsafe_
                .push(format!("kill after {at:?}: left {after:?}")),
        }
        current = after.unwrap_or(current);
    }
    eprintln!("one install takes {took:?}");
    eprintln!("| class | tried | completed | refused, old version whole | unsafe |");
    eprintln!("|---|---|---|---|---|");
    for (k, t) in &tally {
        eprintln!(
            "| {k} | {} | {} | {} | {} |",
            t.tried,
            t.completed,
            t.refused,
            t.unsafe_.len()
        );
    }
    let unsafe_: Vec<&String> = tally.values().flat_map(|t| &t.unsafe_).collect();
    assert!(unsafe_.is_empty(), "{unsafe_:#?}");
}
