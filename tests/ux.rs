//! What a Kong operator new to kplug, peer tools (ORAS, skopeo's grammar, cosign) and
//! hostile files meet at the command line: issue 11, items 2, 5–7 and 11–16.
//!
//! Every test starts its own `docker-registry`; ORAS is the PyPI `oras` client
//! (scripts/test.sh installs it).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use common::fixtures::*;
use common::*;

const TITLE: &str = "org.opencontainers.image.title";
const VERSION: &str = "org.opencontainers.image.version";

/// Runs a Python snippet with the PyPI `oras` client in `cwd`; panics unless it succeeds.
fn oras_py(script: &str, cwd: &Path) -> Output {
    let probe = Command::new("python3").args(["-c", "import oras"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        panic!("the Python package `oras` is missing: `python3 -m pip install oras` (scripts/test.sh does)");
    }
    let code = format!("import oras.client\n{script}");
    run_ok(Command::new("python3").args(["-c", &code]).current_dir(cwd))
}

fn manifest(env: &Env, repo: &str, tag: &str) -> Value {
    let (status, body, _) = get_manifest(&env.reg, repo, tag);
    assert_eq!(status, 200, "{repo}:{tag}");
    serde_json::from_slice(&body).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `kplug install REF --key cosign.pub --prefix DIR/lua --kong-conf DIR/kong.conf --json`.
fn install_json(env: &Env, reference: &str) -> Value {
    let conf = env.dir().join("kong.conf");
    if !conf.exists() {
        std::fs::write(&conf, "plugins = bundled\n").unwrap();
    }
    let out = run_ok(
        env.home
            .kplug()
            .args(["install", "--json", reference, "--key"])
            .arg(&env.key.public)
            .arg("--prefix")
            .arg(env.dir().join("lua"))
            .arg("--kong-conf")
            .arg(&conf),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const KONG_PLUGIN_TYPE: &str = "application/vnd.konghq.plugin.v1+tar+gzip";

/// Item 2: `push --version` of a directory pushed the same bytes as the tree's own version
/// (same digest), the manifest said nothing of name or version, and `oras pull` saved the
/// layer as `sha256:<hex>`.
#[test]
fn push_version_is_in_the_artifact_and_oras_names_the_file() {
    let env = Env::new();
    let repo = format!("{}/plugins/hello", env.reg.host());
    let plain = push(&env.home, &hello_example(), &format!("{repo}:0.1.0"));
    let out = run_ok(
        env.home
            .kplug()
            .arg("push")
            .arg(hello_example())
            .arg(format!("{repo}:0.1.1"))
            .args(["--version", "0.1.1"])
            .args(["--artifact-type", KONG_PLUGIN_TYPE]),
    );
    let bumped = stdout(&out).trim().to_string();
    assert_ne!(
        digest_of(&plain),
        digest_of(&bumped),
        "the version is pushed"
    );
    let m = manifest(&env, "plugins/hello", "0.1.1");
    assert_eq!(m["annotations"][VERSION], "0.1.1", "{m}");
    assert_eq!(m["annotations"][TITLE], "hello");
    assert_eq!(m["layers"][0]["annotations"][TITLE], "hello-0.1.1.tar.gz");
    // Issue 12.1: oras' --artifact-type sets the OCI 1.1 artifactType; a non-media-type
    // is a usage error before anything is sent.
    assert_eq!(m["artifactType"], KONG_PLUGIN_TYPE, "{m}");
    assert!(manifest(&env, "plugins/hello", "0.1.0")
        .get("artifactType")
        .is_none());
    let out = run_fail(
        env.home
            .kplug()
            .arg("push")
            .arg(hello_example())
            .arg(format!("{repo}:bad"))
            .args(["--artifact-type", "kong plugin"]),
        2,
    );
    assert!(
        stderr(&out).contains("not a media type"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        manifest(&env, "plugins/hello", "0.1.0")["annotations"][VERSION],
        "0.1.0"
    );

    // ORAS saves the layer under its title.
    let got = env.dir().join("oras-out");
    std::fs::create_dir(&got).unwrap();
    oras_py(
        &format!(
            "oras.client.OrasClient(hostname={h:?}, insecure=True).pull(target={t:?}, outdir={o:?})",
            h = env.reg.host(),
            t = format!("{repo}:0.1.1"),
            o = got.display().to_string()
        ),
        env.dir(),
    );
    assert!(got.join("hello-0.1.1.tar.gz").is_file());

    // What gets installed is 0.1.1, and list says so.
    sign(&env.home, &env.key, &bumped);
    let j = install_json(&env, &bumped);
    assert_eq!(j["version"], "0.1.1", "{j}");
    let out = run_ok(
        env.home
            .kplug()
            .args(["list", "--json", "--prefix"])
            .arg(env.dir().join("lua")),
    );
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l[0]["version"], "0.1.1", "{l}");
}

/// Item 7: `oras push REF handler.lua schema.lua` (one file per layer, each titled) was
/// refused by pull and install.
#[test]
fn oras_file_per_layer_artifact_is_a_flat_plugin() {
    let mut env = Env::new();
    let src = env.dir().join("src");
    write_plugin(&src, "orasy", "1.2.0", "from oras");
    let files = src.join("kong/plugins/orasy");
    let reference = format!("{}/plugins/orasy:1.2.0", env.reg.host());
    oras_py(
        &format!(
            "oras.client.OrasClient(hostname={h:?}, insecure=True).push(files=['handler.lua', 'schema.lua'], target={t:?})",
            h = env.reg.host(),
            t = reference
        ),
        &files,
    );
    let m = manifest(&env, "plugins/orasy", "1.2.0");
    assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{m}");

    let out_dir = env.dir().join("pulled");
    run_ok(
        env.home
            .kplug()
            .args(["pull", &reference, "--output-dir"])
            .arg(&out_dir),
    );
    for f in ["handler.lua", "schema.lua"] {
        assert_eq!(
            std::fs::read(out_dir.join("kong/plugins/orasy").join(f)).unwrap(),
            std::fs::read(files.join(f)).unwrap()
        );
    }
    // As one file: a plain tar of the two.
    let tar_path = env.dir().join("orasy.tar");
    run_ok(
        env.home
            .kplug()
            .args(["pull", &reference, "-o"])
            .arg(&tar_path),
    );
    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&tar_path).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["handler.lua", "schema.lua"]);

    // Signed, it installs like any plugin.
    let pinned = format!(
        "{}/plugins/orasy@{}",
        env.reg.host(),
        sha256_digest(&get_manifest(&env.reg, "plugins/orasy", "1.2.0").1)
    );
    sign(&env.home, &env.key, &pinned);
    let j = install_json(&env, &pinned);
    assert_eq!(j["name"], "orasy", "{j}");
    assert!(env
        .dir()
        .join("lua/kong/plugins/orasy/handler.lua")
        .is_file());

    // A title that climbs out of the plugin directory is refused before any download.
    let mut hostile = m.clone();
    hostile["layers"][1]["annotations"][TITLE] = "../../evil.lua".into();
    let body = serde_json::to_vec(&hostile).unwrap();
    push_manifest(
        &env.reg,
        "plugins/orasy",
        "evil",
        "application/vnd.oci.image.manifest.v1+json",
        &body,
    );
    let before = env.reg.request_count("GET", "/blobs/");
    let out = run_fail(
        env.home
            .kplug()
            .args([
                "pull",
                &format!("{}/plugins/orasy:evil", env.reg.host()),
                "--output-dir",
            ])
            .arg(env.dir().join("evil")),
        6,
    );
    assert!(stderr(&out).contains("`..`"), "{}", stderr(&out));
    assert_eq!(env.reg.request_count("GET", "/blobs/"), before);
}

/// Items 5 and 6: one `oci:DIR[:REF]` grammar for copy, pull, verify and list-tags;
/// untagged layouts and archives take their only artifact instead of looking for `latest`.
#[test]
fn oci_layout_references_agree_across_verbs() {
    let env = Env::new();
    let host = env.reg.host();
    let layout = env.dir().join("store");
    let oci = |r: &str| format!("oci:{}{r}", layout.display());
    let k = |args: &[&str]| {
        let mut c = env.home.kplug();
        c.args(args);
        c
    };
    // One artifact: a reference without REF takes it (it was looked up as `latest`).
    push(&env.home, &hello_example(), &oci(":hello:0.1.0"));
    run_ok(&mut k(&[
        "pull",
        &oci(""),
        "-o",
        &env.dir().join("a.tgz").display().to_string(),
    ]));

    // copy to a bare layout stores REPOSITORY:TAG, as save does, and prints what it wrote.
    let v2 = write_plugin(&env.dir().join("v2"), "hello", "0.2.0", "two");
    let pinned = push(&env.home, &v2, &format!("{host}/plugins/hello:0.2.0"));
    sign(&env.home, &env.key, &pinned);
    let out = run_ok(&mut k(&[
        "copy",
        &format!("{host}/plugins/hello:0.2.0"),
        &oci(""),
    ]));
    let written = stdout(&out).trim().to_string();
    assert_eq!(
        written,
        format!("{}@{}", oci(":plugins/hello:0.2.0"), digest_of(&pinned))
    );
    // verify and pull read what copy wrote.
    let key = env.key.public.display().to_string();
    run_ok(&mut k(&[
        "verify",
        "--key",
        &key,
        &oci(":plugins/hello:0.2.0"),
    ]));
    run_ok(&mut k(&["verify", "--key", &key, &written]));

    // list-tags: every REF of the layout; a NAME's tags; an unknown NAME is not found.
    let out = run_ok(&mut k(&["list-tags", &oci("")]));
    assert_eq!(stdout(&out), "hello:0.1.0\nplugins/hello:0.2.0\n");
    let out = run_ok(&mut k(&["list-tags", &oci(":plugins/hello")]));
    assert!(stdout(&out).starts_with("0.2.0\n"), "{}", stdout(&out));
    let out = run_fail(&mut k(&["list-tags", &oci(":nothere")]), 3);
    assert!(stderr(&out).contains("nothere"), "{}", stderr(&out));

    // Two artifacts and no REF: an error naming them, not a guess.
    let x = env.dir().join("x.tgz").display().to_string();
    let out = run_fail(&mut k(&["pull", &oci(""), "-o", &x]), 2);
    let e = stderr(&out);
    assert!(
        e.contains("hello:0.1.0") && e.contains("plugins/hello:0.2.0"),
        "{e}"
    );

    // A single word is a tag (skopeo): said so when it looks like the plugin's name.
    let other = env.dir().join("other");
    let out = run_ok(&mut k(&[
        "copy",
        &format!("{host}/plugins/hello:0.2.0"),
        &format!("oci:{}:hello", other.display()),
    ]));
    assert!(stderr(&out).contains("is the tag"), "{}", stderr(&out));
    let out = run_ok(&mut k(&["list-tags", &format!("oci:{}", other.display())]));
    assert_eq!(stdout(&out), "hello\n");

    // An oci-archive with one artifact (and its signature) needs no REF either.
    let bundle = env.dir().join("bundle.tar");
    run_ok(&mut k(&[
        "save",
        &format!("{host}/plugins/hello:0.2.0"),
        "-o",
        &bundle.display().to_string(),
    ]));
    let archive = format!("oci-archive:{}", bundle.display());
    run_ok(&mut k(&["verify", "--key", &key, &archive]));
    let out = run_ok(&mut k(&["list-tags", &archive]));
    assert_eq!(stdout(&out), "plugins/hello:0.2.0\n");
}

/// Item 11: push published anything (random bytes, a public key, a .rock zip) and files
/// over the node's limits; binary garbage reached the terminal raw.
#[test]
fn push_refuses_what_no_node_installs() {
    let mut env = Env::new();
    let reference = format!("{}/plugins/junk:1", env.reg.host());
    let garbage = env.dir().join("garbage.tar.gz");
    let mut bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    bytes[..4].copy_from_slice(b"\x1b[2J");
    std::fs::write(&garbage, &bytes).unwrap();
    let rock = env.dir().join("hello-0.1.0-1.all.rock");
    std::fs::write(&rock, b"PK\x03\x04\x14\x00\x00\x00\x08\x00junk").unwrap();
    for f in [&garbage, &env.key.public, &rock] {
        let out = run(env.home.kplug().arg("push").arg(f).arg(&reference));
        assert!(matches!(out.status.code(), Some(2 | 6)), "{}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains("--force") && e.contains("not a plugin archive"),
            "{e}"
        );
        assert!(!e.chars().any(|c| c.is_control() && c != '\n'), "{e:?}");
    }
    assert_eq!(env.reg.request_count("PUT", ""), 0, "nothing was sent");
    // --force pushes the opaque file all the same.
    run_ok(
        env.home
            .kplug()
            .args(["push", "--force"])
            .arg(&garbage)
            .arg(&reference),
    );

    // Over the per-file limit: neither packed nor pushed.
    let src = write_plugin(&env.dir().join("big"), "big", "1.0.0", "big");
    std::fs::write(src.join("kong/plugins/big/data.bin"), vec![b'x'; 3000]).unwrap();
    let out = run_fail(
        env.home
            .kplug()
            .args(["push", "--max-file-bytes", "1000"])
            .arg(&src)
            .arg(format!("{}/plugins/big:1", env.reg.host())),
        6,
    );
    assert!(stderr(&out).contains("1000"), "{}", stderr(&out));
    let packed = env.dir().join("big.tar.gz");
    run_fail(
        env.home
            .kplug()
            .args(["pack", "--max-file-bytes", "1000", "-o"])
            .arg(&packed)
            .arg(&src),
        6,
    );
    assert!(!packed.exists());
    // The limits are install's defaults, and --help says them.
    for verb in ["push", "pack", "install"] {
        let h = stdout(&run_ok(env.home.kplug().args([verb, "--help"])));
        assert!(
            h.contains("[default: 67108864]") && h.contains("[default: 10000]"),
            "{verb}: {h}"
        );
    }
}

fn umask_022(cmd: &mut Command) -> &mut Command {
    // SAFETY: umask is async-signal-safe and touches nothing but the child's mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        })
    }
}

/// Item 12: files written for the user were 0600, a temp staging path showed in `save`'s
/// output, and `pull -o missing/dir/f` did not say which directory was missing.
#[test]
fn written_files_modes_and_messages_without_temp_names() {
    let env = Env::new();
    let host = env.reg.host();
    let d = |n: &str| env.dir().join(n);
    let tgz = d("hello.tar.gz");
    run_ok(umask_022(
        env.home
            .kplug()
            .arg("pack")
            .arg(hello_example())
            .arg("-o")
            .arg(&tgz),
    ));
    let reference = format!("{host}/plugins/hello:0.1.0");
    push(&env.home, &tgz, &reference);
    run_ok(umask_022(
        env.home
            .kplug()
            .args(["pull", &reference, "-o"])
            .arg(d("pulled.tgz")),
    ));
    let out = run_ok(umask_022(
        env.home
            .kplug()
            .args(["save", &reference, "-o"])
            .arg(d("b.tar")),
    ));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(".kplug"), "{all}");
    assert!(
        all.contains(&format!("oci-archive:{}", d("b.tar").display())),
        "{all}"
    );
    run_ok(
        umask_022(env.home.kplug().env("COSIGN_PASSWORD", PASSWORD))
            .args(["sign-blob", "--key"])
            .arg(&env.key.key)
            .arg("--output-signature")
            .arg(d("hello.sig"))
            .arg(&tgz),
    );
    for f in ["hello.tar.gz", "pulled.tgz", "b.tar", "hello.sig"] {
        assert_eq!(mode(&d(f)), 0o644, "{f}");
    }
    assert_eq!(mode(&env.key.key), 0o600);
    assert_eq!(mode(&env.key.public), 0o644);

    let out = run_fail(
        env.home
            .kplug()
            .args(["pull", &reference, "-o"])
            .arg(d("missing/dir/f.tar.gz")),
        2,
    );
    let e = stderr(&out);
    assert!(
        e.contains(&format!("{} does not exist", d("missing/dir").display())),
        "{e}"
    );
    assert!(!e.contains(".kplug"), "{e}");
}

/// Keys of JSON objects, recursively, outside annotation maps (whose keys are OCI's).
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                if k != "annotations" {
                    keys(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Item 13: some verbs printed nothing with --json, and install said `verified_at` where
/// list said `verifiedAt`. Every verb's --json is JSON, keys camelCase.
#[test]
fn every_verb_prints_camel_case_json() {
    let env = Env::new();
    let host = env.reg.host();
    let d = |n: &str| env.dir().join(n).display().to_string();
    let reference = format!("{host}/plugins/hello:0.1.0");
    let lua = d("lua");
    let conf = d("kong.conf");
    std::fs::write(&conf, "plugins = bundled,hello\n").unwrap();
    let pinned = push(&env.home, &hello_example(), &reference);
    let key = env.key.key.display().to_string();
    let public = env.key.public.display().to_string();
    // An unencrypted EC P-256 key, as `import-key-pair` takes.
    run_ok(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &d("ec.pem"),
    ]));
    let node = ["--prefix", &lua, "--kong-conf", &conf];
    let v2 = format!("{host}/plugins/hello:0.2.0");
    let runs: Vec<Vec<String>> = vec![
        vec!["pack", HELLO_DIR, "-o", &d("h.tgz")],
        vec!["push", &d("h.tgz"), &reference],
        vec!["pull", &reference, "-o", &d("p.tgz")],
        vec!["pull", &reference, "--output-dir", &d("unpacked")],
        vec!["copy", &reference, &format!("{host}/copy/hello:0.1.0")],
        vec!["save", &reference, "-o", &d("bundle")],
        vec!["load", &d("bundle"), &format!("{host}/loaded")],
        vec![
            "mirror",
            &reference,
            "--to",
            &format!("oci:{}", d("mirror")),
        ],
        vec!["list-tags", &format!("{host}/plugins/hello")],
        vec!["login", &host, "-u", "someone", "--password-stdin"],
        vec!["logout", &host],
        vec!["generate-key-pair", "--output-key-prefix", &d("k2")],
        vec![
            "import-key-pair",
            "--key",
            &d("ec.pem"),
            "--output-key-prefix",
            &d("k3"),
        ],
        vec!["sign", "--key", &key, &pinned],
        vec!["sign-blob", "--key", &key, &d("h.tgz")],
        vec!["install", &pinned, "--key", &public],
        vec!["install", &v2, "--key", &public],
        vec!["list"],
        vec!["rollback", "hello"],
        vec!["doctor"],
        vec!["uninstall", "hello"],
        vec!["man", "--output-dir", &d("")],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_string).collect())
    .collect();
    // A second version to roll back from.
    let second = write_plugin(&env.dir().join("v2"), "hello", "0.2.0", "two");
    let p2 = push(&env.home, &second, &v2);
    sign(&env.home, &env.key, &p2);
    let mut seen = Vec::new();
    for args in &runs {
        let mut cmd = env.home.kplug();
        cmd.env("COSIGN_PASSWORD", PASSWORD)
            .arg("--json")
            .args(args);
        if ["install", "list", "rollback", "doctor", "uninstall"].contains(&args[0].as_str()) {
            cmd.args(node);
        }
        if args[0] == "login" {
            cmd.stdin(std::process::Stdio::piped());
        }
        let out = if args[0] == "login" {
            let mut child = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
            child.wait_with_output().unwrap()
        } else {
            run(&mut cmd)
        };
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {:?}", stdout(&out)));
        let mut ks = Vec::new();
        keys(&v, &mut ks);
        for k in &ks {
            assert!(
                k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && k.chars().all(|c| c.is_ascii_alphanumeric()),
                "{args:?}: key {k:?} is not camelCase in {v}"
            );
        }
        if args[0] == "install" {
            assert!(v.get("verifiedAt").is_some(), "{v}");
        }
        seen.push(args[0].clone());
    }
    // verify: cosign's array, each element with kplug's summary under "kplug" (and
    // cosign's --insecure-ignore-tlog accepted, with a note).
    let out = run_ok(env.home.kplug().args([
        "verify",
        "--json",
        "--insecure-ignore-tlog",
        "--key",
        &public,
        &pinned,
    ]));
    assert!(
        stderr(&out).contains("--insecure-ignore-tlog changes nothing"),
        "{}",
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[0]["critical"]["image"]["docker-manifest-digest"],
        digest_of(&pinned)
    );
    assert_eq!(v[0]["kplug"]["digest"], digest_of(&pinned));
    assert!(v[0]["kplug"]["signer"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let out = run_ok(env.home.kplug().args(["verify", "--key", &public, &pinned]));
    let plain: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        plain[0].get("kplug").is_none(),
        "without --json, cosign's array as is"
    );
    let sig = stdout(&run_ok(
        env.home.kplug().env("COSIGN_PASSWORD", PASSWORD).args([
            "sign-blob",
            "--key",
            &key,
            &d("h.tgz"),
        ]),
    ));
    let out = run_ok(env.home.kplug().args([
        "verify-blob",
        "--json",
        "--key",
        &public,
        "--signature",
        sig.trim(),
        &d("h.tgz"),
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["key"], public.as_str());
}

/// examples/hello-plugin, as a string argument.
const HELLO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-plugin");

/// Items 14–16: cosign's flag spellings, no `--insecure` suggested for a signature flag,
/// completion, man pages, version, help layout and words, one exit code per cause, no
/// ANSI in piped logs.
#[test]
fn cli_conventions() {
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let k = |args: &[&str]| {
        let mut c = home.kplug();
        c.args(args);
        c
    };
    // Signature-looking flags never get "did you mean --insecure" (nor --insecure-skip-verify).
    for (verb, flag) in [
        ("verify", "--insecure-ignore-sct"),
        ("verify", "--insecure-skip-tlog-verify"),
        ("install", "--insecure-ignore-sct"),
        ("verify", "--certificate-identity"),
    ] {
        let out = run_fail(&mut k(&[verb, flag, "x", "r"]), 2);
        let e = stderr(&out);
        assert!(
            !e.contains("'--insecure'") && !e.contains("'--insecure-skip-verify'"),
            "{verb} {flag}: {e}"
        );
    }
    // A plain typo still gets its suggestion.
    let e = stderr(&run_fail(&mut k(&["pull", "--insecur", "r"]), 2));
    assert!(e.contains("'--insecure'"), "{e}");

    for sh in ["bash", "zsh", "fish", "powershell"] {
        let out = run_ok(&mut k(&["completion", sh]));
        assert!(
            stdout(&out).contains("kplug") && stdout(&out).contains("sign-blob"),
            "{sh}"
        );
    }
    let out = run_ok(&mut k(&["man"]));
    assert!(
        stdout(&out).starts_with(".ie") || stdout(&out).contains(".TH kplug"),
        "{}",
        stdout(&out)
    );
    run_ok(&mut k(&[
        "man",
        "--output-dir",
        &tmp.path().display().to_string(),
    ]));
    for p in ["kplug.1", "kplug-push.1", "kplug-verify-blob.1"] {
        assert!(tmp.path().join(p).is_file(), "{p}");
    }
    let v = stdout(&run_ok(&mut k(&["--version"])));
    let re = regex::Regex::new(
        r"^kplug \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown), built \d{4}-\d\d-\d\d\)\n$",
    )
    .unwrap();
    assert!(re.is_match(&v), "{v:?}");

    let help = |verb: &str| stdout(&run_ok(&mut k(&[verb, "--help"])));
    for verb in ["verify", "install", "verify-blob"] {
        let h = help(verb);
        assert!(
            h.contains("Exit codes:") && h.contains("12 ") && h.contains("11 "),
            "{verb}: {h}"
        );
    }
    let h = help("push");
    let (own, global) = h
        .split_once("Global options:")
        .expect("a heading for global flags");
    assert!(
        global.contains("--ca-file") && !own.contains("--ca-file"),
        "{h}"
    );
    let h = help("install");
    assert!(
        h.contains("lua_package_path") && h.contains("Not Kong's own `prefix`"),
        "{h}"
    );
    assert!(help("rollback").contains("toggle"));
    assert!(help("list").contains("sha256 of the public key"));

    // --lua-tree is --prefix.
    let conf = tmp.path().join("kong.conf");
    std::fs::write(&conf, "").unwrap();
    run_ok(&mut k(&[
        "list",
        "--lua-tree",
        &tmp.path().display().to_string(),
        "--kong-conf",
        &conf.display().to_string(),
    ]));

    // One exit code per cause: a local input file that is not there is 2, wherever.
    let missing = tmp.path().join("missing");
    let m = missing.display().to_string();
    for args in [
        vec!["push", &m, "127.0.0.1:1/x:1"],
        vec!["mirror", "--manifest", &m, "--to", "127.0.0.1:1/x"],
        vec!["verify", "--key", &m, "127.0.0.1:1/x:1"],
        vec!["sign-blob", "--key", &m, &m],
        vec!["verify-blob", "--key", &m, "--signature", "AAAA", &m],
    ] {
        let out = run_fail(&mut k(&args), 2);
        assert!(
            stderr(&out).contains("missing"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // Logs in a pipe carry no ANSI, NO_COLOR or not.
    let out = run(home
        .kplug()
        .env_remove("NO_COLOR")
        .args(["-vv", "pull", "127.0.0.1:1/x:1", "-o"])
        .arg(tmp.path().join("x")));
    assert!(!stderr(&out).contains('\x1b'), "{}", stderr(&out));
    assert!(!stderr(&out).is_empty());
}

/// sign-blob's signature is cosign's: kplug's verify-blob and `install --signature` take it,
/// and a real cosign signature verifies (fixture in tests/fixtures/cosign).
#[test]
fn sign_blob_and_verify_blob_round_trip() {
    let env = Env::new();
    let tgz = env.dir().join("hello.tar.gz");
    run_ok(
        env.home
            .kplug()
            .arg("pack")
            .arg(hello_example())
            .arg("-o")
            .arg(&tgz),
    );
    let sig = env.dir().join("hello.tar.gz.sig");
    run_ok(
        env.home
            .kplug()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(["sign-blob", "--key"])
            .arg(&env.key.key)
            .arg("--output-signature")
            .arg(&sig)
            .arg(&tgz),
    );
    // The same signature openssl checks (ECDSA over SHA-256 of the file).
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(std::fs::read_to_string(&sig).unwrap())
        .unwrap();
    std::fs::write(env.dir().join("sig.der"), der).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&env.key.public)
            .arg("-signature")
            .arg(env.dir().join("sig.der"))
            .arg(&tgz),
    );
    assert!(stdout(&out).contains("Verified OK"));
    let verify = |file: &Path, code: i32| {
        run_fail(
            env.home
                .kplug()
                .arg("verify-blob")
                .arg("--key")
                .arg(&env.key.public)
                .arg("--signature")
                .arg(&sig)
                .arg(file),
            code,
        )
    };
    verify(&tgz, 0);
    let other = env.dir().join("other");
    std::fs::write(&other, b"not the plugin").unwrap();
    verify(&other, 12);
    // install --signature takes it.
    std::fs::write(env.dir().join("kong.conf"), "").unwrap();
    run_ok(
        env.home
            .kplug()
            .arg("install")
            .arg(&tgz)
            .arg("--signature")
            .arg(&sig)
            .arg("--key")
            .arg(&env.key.public)
            .arg("--prefix")
            .arg(env.dir().join("lua"))
            .arg("--kong-conf")
            .arg(env.dir().join("kong.conf")),
    );
    // A signature cosign made.
    let dir = cosign_fixture("cimage");
    run_ok(
        env.home
            .kplug()
            .arg("verify-blob")
            .arg("--key")
            .arg(dir.join("cosign.pub"))
            .arg("--signature")
            .arg(dir.join("dir-img-cosign-valid/payload.json.sig"))
            .arg(dir.join("dir-img-cosign-valid/payload.json")),
    );
}
