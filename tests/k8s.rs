//! Kubernetes: KongPluginInstallation images checked against the Kong Operator's rules,
//! the YAML of `kplug k8s` validated offline and parsed back, and the init container run
//! as uid 1000 on a read-only, shell-less root against a real registry.
//!
//! Needs (installed by scripts/test.sh): python3 with `kubernetes-validate`, `kubectl`
//! (for `kubectl patch --local`), `readelf`, `luajit`, `unshare`/`chroot`, and the static
//! binary `scripts/build-static.sh --link-only` writes.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use common::fixtures::*;
use common::*;

const KPI_LAYER_TYPES: [&str; 2] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
const ONE_MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// helpers

/// DIR/kong/plugins/myauth/: handler (tabs, trailing blanks), schema, daos.lua and two
/// migrations; with `odd`, also a file whose name is no ConfigMap key and a binary file.
fn myauth(dir: &Path, odd: bool) -> PathBuf {
    let p = dir.join("kong/plugins/myauth");
    let files: &[(&str, &[u8])] = &[
        (
            "handler.lua",
            b"local H = { PRIORITY = 900, VERSION = \"2.1.0\" }\n\nfunction H:access(conf)\n\tkong.response.set_header(\"X-My\", conf.v)  \nend\n\nreturn H\n",
        ),
        (
            "schema.lua",
            b"return { name = \"myauth\", fields = { { config = { type = \"record\", fields = { { v = { type = \"string\", default = \"x\" } } } } } } }",
        ),
        ("daos.lua", b"return { myauth_keys = { name = \"myauth_keys\", primary_key = { \"id\" } } }\n"),
        ("migrations/init.lua", b"return { \"000_base_myauth\", \"001_210_to_220\" }\n"),
        ("migrations/000_base_myauth.lua", b"return { postgres = { up = [[ CREATE TABLE IF NOT EXISTS myauth_keys (id uuid PRIMARY KEY); ]] } }\n"),
        ("migrations/001_210_to_220.lua", b"return { postgres = { up = [[ ]] } }\n"),
    ];
    for (f, body) in files {
        std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
        std::fs::write(p.join(f), body).unwrap();
    }
    if odd {
        std::fs::create_dir_all(p.join("assets")).unwrap();
        std::fs::write(p.join("assets/read me.txt"), "docs\n").unwrap();
        std::fs::write(p.join("assets/logo.bin"), [0u8, 0xff, 0xfe, 0x80, 10]).unwrap();
    }
    dir.to_path_buf()
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Runs `kplug ARGS` and writes its stdout to `out`.
fn render(home: &Home, args: &[&str], out: &Path) -> String {
    let o = run_ok(home.kplug().args(args));
    std::fs::write(out, &o.stdout).unwrap();
    stdout(&o)
}

/// tests/k8s/check.py on a job (see its docstring); panics with what it found.
fn check(dir: &Path, job: Value) {
    let job_file = dir.join("job.json");
    std::fs::write(&job_file, job.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/k8s/check.py");
    let out = run(Command::new("python3").arg(script).arg(&job_file));
    assert!(
        out.status.success(),
        "check.py (python3 with kubernetes-validate, kubectl; scripts/test.sh installs them):\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn push_signed(env: &Env, src: &Path, reference: &str, extra: &[&str]) -> String {
    let out = run_ok(
        env.home
            .kplug()
            .env("COSIGN_PASSWORD", PASSWORD)
            .arg("push")
            .args(extra)
            .arg(src)
            .arg(reference)
            .arg("--sign")
            .arg("--key")
            .arg(&env.key.key),
    );
    stdout(&out).trim().to_string()
}

// ---------------------------------------------------------------------------------------
// KongPluginInstallation images

/// Go's `filepath.Base`: trailing slashes dropped, then the last element.
fn go_base(name: &str) -> String {
    let t = name.trim_end_matches('/');
    if t.is_empty() {
        return if name.is_empty() {
            ".".into()
        } else {
            "/".into()
        };
    }
    t.rsplit('/').next().unwrap().to_string()
}

/// The Kong Operator's acceptance of a KPI image, re-implemented from its source
/// (kong/kong-operator `controller/kongplugininstallation/image/image.go`, FetchPlugin and
/// extractKongPluginFromLayer): of every blob of the image exactly one has the OCI or
/// Docker tar+gzip layer type; that layer is gunzipped and its tar read through a 1 MiB
/// limit; every entry's base name must be handler.lua or schema.lua and its content read
/// whole within the limit; at the end exactly those two files. Returns them.
fn operator_accepts(
    reg: &Registry,
    repo: &str,
    reference: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let (status, body, _) = get_manifest(reg, repo, reference);
    assert_eq!(status, 200);
    let m: Value = serde_json::from_slice(&body).unwrap();
    let blobs: Vec<&Value> = std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .collect();
    let layers: Vec<&&Value> = blobs
        .iter()
        .filter(|d| KPI_LAYER_TYPES.contains(&d["mediaType"].as_str().unwrap()))
        .collect();
    if layers.len() != 1 {
        return Err(format!(
            "expected exactly one layer with plugin, found {} layers",
            layers.len()
        ));
    }
    let blob = get_blob(reg, repo, layers[0]["digest"].as_str().unwrap());
    let gz = flate2::read::GzDecoder::new(&blob[..]);
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(gz.take(ONE_MIB));
    for e in archive.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let name = go_base(&String::from_utf8_lossy(&e.path_bytes()));
        if name != "handler.lua" && name != "schema.lua" {
            return Err(format!("file {name:?} is unexpected"));
        }
        let mut body = Vec::new();
        e.read_to_end(&mut body).map_err(|e| e.to_string())?;
        if body.len() as u64 != e.size() {
            return Err("plugin size limit of 1.00 MiB exceeded".into());
        }
        files.insert(name, body);
    }
    if files.len() != 2 {
        return Err(format!("expected exactly 2 files, got {}", files.len()));
    }
    Ok(files)
}

/// Beyond the Operator's rules: the bytes are reproducible and the config is a valid
/// image config whose diff_id is the tar's digest.
fn assert_reproducible_image(reg: &Registry, repo: &str, reference: &str) {
    let (_, body, _) = get_manifest(reg, repo, reference);
    let m: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    let config: Value = serde_json::from_slice(&get_blob(
        reg,
        repo,
        m["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let gz = get_blob(reg, repo, m["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(gz[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime 0");
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([sha256_digest(&tar_bytes)])
    );
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    let mut a = tar::Archive::new(&tar_bytes[..]);
    let entries: Vec<(String, u32, u64, u64, u64)> = a
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("handler.lua".to_string(), 0o644, 0, 0, 0),
            ("schema.lua".to_string(), 0o644, 0, 0, 0)
        ]
    );
}

#[test]
fn kpi_images_pass_the_operator_rules_and_pull_back() {
    let env = Env::new();
    let src = write_plugin(&env.dir().join("hello-src"), "hello", "1.0.0", "kpi");
    let plugin = src.join("kong/plugins/hello");
    std::fs::write(plugin.join("README.md"), "not loaded by Kong\n").unwrap();
    let repo = "plugins/hello";
    let pinned = push_signed(
        &env,
        &src,
        &format!("{}/{repo}:1.0.0", env.reg.host()),
        &["--kpi"],
    );
    let files =
        operator_accepts(&env.reg, repo, "1.0.0").unwrap_or_else(|e| panic!("refused: {e}"));
    assert_eq!(
        files["handler.lua"],
        std::fs::read(plugin.join("handler.lua")).unwrap()
    );
    assert_eq!(
        files["schema.lua"],
        std::fs::read(plugin.join("schema.lua")).unwrap()
    );
    assert_reproducible_image(&env.reg, repo, "1.0.0");
    // Same tree, same bytes: pushing again gives the same digest.
    let again = run_ok(
        env.home
            .kplug()
            .args(["push", "--kpi"])
            .arg(&src)
            .arg(format!("{}/{repo}:again", env.reg.host())),
    );
    assert_eq!(digest_of(stdout(&again).trim()), digest_of(&pinned));

    // Signed like any artifact: nodes verify it, kplug pulls it back.
    run_ok(
        env.home
            .kplug()
            .arg("verify")
            .arg("--key")
            .arg(&env.key.public)
            .arg(&pinned),
    );
    let out = env.dir().join("pulled");
    run_ok(
        env.home
            .kplug()
            .arg("pull")
            .arg(&pinned)
            .arg("--output-dir")
            .arg(&out),
    );
    assert_eq!(
        tree(&out.join("kong/plugins/hello")),
        BTreeMap::from([
            ("handler.lua".to_string(), files["handler.lua"].clone()),
            ("schema.lua".to_string(), files["schema.lua"].clone()),
        ])
    );

    // The KPI + GatewayConfiguration / DataPlane for it validate against the CRDs.
    let kpi = env.dir().join("kpi.yaml");
    let yaml = render(
        &env.home,
        &[
            "k8s",
            "kpi",
            &pinned,
            "--key",
            env.key.public.to_str().unwrap(),
            "--pull-secret",
            "regcred",
        ],
        &kpi,
    );
    assert!(yaml.contains(&format!("image: {pinned}")), "{yaml}");
    let dp = env.dir().join("kpi-dp.yaml");
    render(
        &env.home,
        &[
            "k8s",
            "kpi",
            &pinned,
            "--insecure-skip-verify",
            "-n",
            "kong",
            "--dataplane",
            "kong-dp",
        ],
        &dp,
    );
    check(env.dir(), json!({ "objects": [kpi, dp] }));

    // Under another repository name the KPI is still named after the plugin (the title).
    let other = push_signed(
        &env,
        &src,
        &format!("{}/kpi/hello-image:1", env.reg.host()),
        &["--kpi"],
    );
    let o = run_ok(
        env.home
            .kplug()
            .args(["k8s", "kpi", &other, "--key"])
            .arg(&env.key.public),
    );
    assert!(stdout(&o).contains("  name: hello\n"), "{}", stdout(&o));

    // A kplug (cosign blob) artifact is not a KPI image, and `k8s kpi` says so.
    let blob = push_signed(
        &env,
        &src,
        &format!("{}/plugins/blob:1", env.reg.host()),
        &[],
    );
    let e = run_fail(
        env.home
            .kplug()
            .args(["k8s", "kpi", &blob, "--key"])
            .arg(&env.key.public),
        2,
    );
    assert!(stderr(&e).contains("push --kpi"), "{}", stderr(&e));
    assert!(operator_accepts(&env.reg, "plugins/blob", "1").is_err());

    // What KPI cannot carry is refused before anything is pushed, naming the way that can.
    let dao = myauth(&env.dir().join("dao"), false);
    let e = run_fail(
        env.home
            .kplug()
            .args(["push", "--kpi"])
            .arg(&dao)
            .arg(format!("{}/plugins/dao:1", env.reg.host())),
        2,
    );
    for want in [
        "daos.lua",
        "migrations/init.lua",
        "migrations/000_base_myauth.lua",
        "init-container",
    ] {
        assert!(stderr(&e).contains(want), "{want}: {}", stderr(&e));
    }
    let big = write_plugin(&env.dir().join("big"), "big", "1.0.0", "big");
    let handler = big.join("kong/plugins/big/handler.lua");
    let mut body = std::fs::read(&handler).unwrap();
    body.extend(std::iter::repeat_n(b'-', ONE_MIB as usize));
    std::fs::write(&handler, body).unwrap();
    let e = run_fail(
        env.home
            .kplug()
            .args(["push", "--kpi"])
            .arg(&big)
            .arg(format!("{}/plugins/big:1", env.reg.host())),
        2,
    );
    assert!(
        stderr(&e).contains("1 MiB") && stderr(&e).contains("init-container"),
        "{}",
        stderr(&e)
    );
    for repo in ["plugins/dao", "plugins/big"] {
        let (status, _, _) = http_get(&env.reg, &format!("/v2/{repo}/tags/list"), "");
        assert_eq!(status, 404, "{repo} was pushed");
    }
}

// ---------------------------------------------------------------------------------------
// ConfigMaps, patches, Helm values

#[test]
fn manifests_validate_and_rebuild_the_tree() {
    let env = Env::new();
    let d = env.dir();
    let key = env.key.public.to_str().unwrap().to_string();
    let odd = myauth(&d.join("odd"), true);
    let pinned = push_signed(
        &env,
        &odd,
        &format!("{}/plugins/myauth:2.1.0", env.reg.host()),
        &[],
    );

    // From a reference: verified first; without a key, or unsigned, nothing is rendered.
    let cm = d.join("cm.yaml");
    let yaml = render(
        &env.home,
        &["k8s", "configmap", &pinned, "--key", &key, "-n", "kong"],
        &cm,
    );
    assert!(yaml.contains(&format!("kplug/source: {pinned}")), "{yaml}");
    let patch = d.join("patch.yaml");
    render(
        &env.home,
        &["k8s", "configmap", &pinned, "--key", &key, "--patch"],
        &patch,
    );
    run_fail(env.home.kplug().args(["k8s", "configmap", &pinned]), 2);
    let unsigned = push(
        &env.home,
        &odd,
        &format!("{}/plugins/unsigned:1", env.reg.host()),
    );
    run_fail(
        env.home
            .kplug()
            .args(["k8s", "configmap", &unsigned, "--key", &key]),
        11,
    );

    let init = d.join("init.yaml");
    let yaml = render(
        &env.home,
        &[
            "k8s",
            "init-container",
            &pinned,
            "--key",
            &key,
            "--pull-secret",
            "regcred",
            "--key-secret",
            "kplug-key",
        ],
        &init,
    );
    for want in [
        pinned.as_str(),
        "/keys/cosign.pub",
        "readOnlyRootFilesystem: true",
        "runAsUser: 1000",
        "value: bundled,myauth",
    ] {
        assert!(yaml.contains(want), "{want}: {yaml}");
    }
    // The chart mounts plugin ConfigMaps without items: a file name that is no key is refused.
    let e = run_fail(
        env.home
            .kplug()
            .arg("k8s")
            .arg("helm-values")
            .arg(odd.join("kong/plugins/myauth")),
        2,
    );
    assert!(stderr(&e).contains("read me.txt"), "{}", stderr(&e));

    let plain = myauth(&d.join("plain"), false);
    let cm2 = d.join("cm2.yaml");
    render(
        &env.home,
        &["k8s", "configmap", plain.to_str().unwrap()],
        &cm2,
    );
    let hv = d.join("helm-configmaps.yaml");
    let yaml = render(
        &env.home,
        &["k8s", "helm-values", plain.to_str().unwrap()],
        &hv,
    );
    assert!(yaml.contains("path: migrations"), "{yaml}");
    let hi = d.join("helm-init.yaml");
    render(
        &env.home,
        &[
            "k8s",
            "helm-values",
            plain.to_str().unwrap(),
            "--way",
            "init-container",
            "--ref",
            &pinned,
        ],
        &hi,
    );
    let e = run_fail(
        env.home.kplug().args([
            "k8s",
            "helm-values",
            plain.to_str().unwrap(),
            "--way",
            "init-container",
        ]),
        2,
    );
    assert!(stderr(&e).contains("--ref"), "{}", stderr(&e));

    // Over the ConfigMap limit: refused, naming the init-container way.
    let big = myauth(&d.join("big"), false);
    std::fs::write(
        big.join("kong/plugins/myauth/handler.lua"),
        vec![b'-'; ONE_MIB as usize],
    )
    .unwrap();
    let e = run_fail(
        env.home
            .kplug()
            .args(["k8s", "configmap", "--version", "1.0.0"])
            .arg(&big),
        2,
    );
    assert!(
        stderr(&e).contains("1 MiB") && stderr(&e).contains("init-container"),
        "{}",
        stderr(&e)
    );

    check(
        d,
        json!({
            "objects": [cm, cm2],
            "patches": [
                { "patch": patch, "out": d.join("merged-cm.yaml"), "configmaps": cm, "tree": d.join("t1") },
                { "patch": init, "out": d.join("merged-init.yaml") },
            ],
            "helm_configmaps": [{ "values": hv, "configmaps": cm2, "out": d.join("helm-cm-deploy.yaml"), "tree": d.join("t2") }],
            "helm_init": [{ "values": hi, "out": d.join("helm-init-deploy.yaml") }],
        }),
    );
    let t1 = tree(&d.join("t1/opt/kong/plugins/myauth"));
    assert_eq!(t1, tree(&odd.join("kong/plugins/myauth")));
    let t2 = tree(&d.join("t2/opt/kong/plugins/myauth"));
    assert_eq!(t2, tree(&plain.join("kong/plugins/myauth")));
    for f in [
        "migrations/init.lua",
        "migrations/000_base_myauth.lua",
        "daos.lua",
    ] {
        assert!(t1.contains_key(f) && t2.contains_key(f), "{f}");
    }
}

// ---------------------------------------------------------------------------------------
// The init container, as the image runs it

/// What the Dockerfile's final stage puts in the image.
struct Recipe {
    /// `(source in the build stage, path in the image)`
    copies: Vec<(String, String)>,
    user: (u32, u32),
    entrypoint: Vec<String>,
}

/// Reads the Dockerfile: the last stage must be an empty base with no RUN (there is no
/// shell to run it), a numeric non-root USER and an exec-form ENTRYPOINT.
fn recipe() -> Recipe {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let stages: Vec<&str> = text.split("\nFROM ").collect();
    assert!(stages.len() >= 2, "a multi-stage Dockerfile");
    assert!(
        stages[1].contains("scripts/build-static.sh --release"),
        "the build stage builds the static binary"
    );
    let last = stages.last().unwrap();
    assert!(
        last.starts_with("scratch\n"),
        "final stage FROM scratch: {last}"
    );
    let mut r = Recipe {
        copies: Vec::new(),
        user: (0, 0),
        entrypoint: Vec::new(),
    };
    for line in last
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (cmd, rest) = line.split_once(' ').unwrap();
        match cmd {
            "COPY" => {
                let parts: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|p| !p.starts_with("--"))
                    .collect();
                r.copies.push((parts[0].to_string(), parts[1].to_string()));
            }
            "USER" => {
                let (u, g) = rest.split_once(':').unwrap();
                r.user = (u.parse().unwrap(), g.parse().unwrap());
            }
            "ENTRYPOINT" => {
                r.entrypoint = serde_json::from_str(rest).expect("exec-form ENTRYPOINT")
            }
            other => panic!("{other} in the final stage: it has no shell"),
        }
    }
    assert_ne!(r.user.0, 0, "runs as non-root");
    r
}

/// The static binary scripts/test.sh builds (`scripts/build-static.sh --link-only`),
/// checked to be static and newer than the sources.
fn static_binary() -> PathBuf {
    let p = std::env::var_os("KPLUG_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/static/kplug"))
        });
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} missing: run scripts/build-static.sh --link-only (scripts/test.sh does)",
                p.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    let mut dirs = vec![root.join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                dirs.push(e)
            } else {
                sources.push(e)
            }
        }
    }
    for s in sources {
        let m = std::fs::metadata(&s).unwrap().modified().unwrap();
        assert!(
            m <= built,
            "{} is older than {}: run scripts/build-static.sh --link-only",
            p.display(),
            s.display()
        );
    }
    require_bin("readelf", "binutils");
    let l = stdout(&run_ok(Command::new("readelf").arg("-lW").arg(&p)));
    let dynamic = stdout(&run_ok(Command::new("readelf").arg("-dW").arg(&p)));
    assert!(
        !l.contains("program interpreter") && !dynamic.contains("(NEEDED)"),
        "{} is not static:\n{dynamic}",
        p.display()
    );
    p
}

/// Single-quoted for sh.
fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A container simulated without an engine: a root directory holding only the image's
/// files, host directories bind-mounted at the manifest's mount paths, the root
/// remounted read-only, then `chroot` as the manifest's uid:gid with only its env.
struct Sandbox {
    root: PathBuf,
    /// `(host dir, path in the container, read-only)`
    mounts: Vec<(PathBuf, String, bool)>,
}

impl Sandbox {
    fn run(&self, uid_gid: (u32, u32), env: &[(String, String)], argv: &[String]) -> Output {
        let r = self.root.display().to_string();
        let mut script = format!("set -e; mount --bind {0} {0}; ", shq(&r));
        for (src, dst, ro) in &self.mounts {
            let target = shq(&format!("{r}{dst}"));
            script += &format!(
                "mount --bind {} {target}; ",
                shq(&src.display().to_string())
            );
            if *ro {
                script += &format!("mount -o remount,bind,ro {target}; ");
            }
        }
        script += &format!("mount -o remount,bind,ro {}; exec env -i ", shq(&r));
        for (k, v) in env {
            script += &shq(&format!("{k}={v}"));
            script.push(' ');
        }
        let chroot = require_bin("chroot", "coreutils");
        script += &format!(
            "{} --userspec={}:{} {}",
            shq(&chroot.display().to_string()),
            uid_gid.0,
            uid_gid.1,
            shq(&r)
        );
        for a in argv {
            script.push(' ');
            script += &shq(a);
        }
        run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script))
    }
}

/// Whether this machine can build the sandbox (root, mount namespaces, chroot).
fn sandbox_available() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("chroot")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A root holding only `files` (host file → path inside), everything traversable.
fn rootfs(dir: &Path, files: &[(PathBuf, String)], mount_points: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (src, dst) in files {
        let to = dir.join(dst.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src, &to).unwrap();
    }
    for m in mount_points {
        std::fs::create_dir_all(dir.join(m.trim_start_matches('/'))).unwrap();
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            }
        }
    }
    dir.to_path_buf()
}

/// `luajit` and the shared libraries `ldd` lists, for a "Kong container" root.
fn luajit_files() -> Vec<(PathBuf, String)> {
    let lj = require_bin("luajit", "luajit");
    let ldd = stdout(&run_ok(Command::new("ldd").arg(&lj)));
    let mut files = vec![(lj.clone(), "/usr/bin/luajit".to_string())];
    for line in ldd.lines() {
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push((PathBuf::from(p), p.to_string()));
        }
    }
    files
}

/// The init container's part of the rendered patch.
struct InitSpec {
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(String, String, bool)>,
    user: (u32, u32),
    kong_mount: String,
}

fn init_spec(yaml: &str) -> InitSpec {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let pod = &v["spec"]["template"]["spec"];
    let c = &pod["initContainers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    let strs = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    InitSpec {
        args: strs(&c["args"]),
        env: c["env"].as_array().map_or(Vec::new(), |e| {
            e.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().into(),
                        e["value"].as_str().unwrap().into(),
                    )
                })
                .collect()
        }),
        mounts: c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().into(),
                    m["mountPath"].as_str().unwrap().into(),
                    m["readOnly"] == true,
                )
            })
            .collect(),
        user: (
            sc["runAsUser"].as_u64().unwrap() as u32,
            sc["runAsGroup"].as_u64().unwrap() as u32,
        ),
        kong_mount: pod["containers"][0]["volumeMounts"][0]["mountPath"]
            .as_str()
            .unwrap()
            .into(),
    }
}

#[test]
fn init_container_installs_read_only_as_uid_1000() {
    let image = recipe();
    let bin = static_binary();
    let reg = Registry::start(Variant::htpasswd("puller", "s3cret-pass"));
    let home = Home::new();
    home.docker_login(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let key = KeyPair::generate(&home, d, "cosign");
    let src = myauth(&d.join("src"), false);
    let env = Env {
        reg,
        home,
        tmp: tempfile::tempdir().unwrap(),
        key: key.clone(),
    };
    let pinned = push_signed(
        &env,
        &src,
        &format!("{}/plugins/myauth:2.1.0", env.reg.host()),
        &[],
    );
    let yaml = render(
        &env.home,
        &[
            "k8s",
            "init-container",
            &pinned,
            "--key",
            key.public.to_str().unwrap(),
            "--pull-secret",
            "regcred",
        ],
        &d.join("init.yaml"),
    );
    let spec = init_spec(&yaml);
    assert_eq!(spec.user, (1000, 1000));

    // The volumes: an emptyDir (0777 as the kubelet makes it), the key ConfigMap's item,
    // the pull Secret's .dockerconfigjson as config.json.
    let empty = d.join("emptydir");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o777)).unwrap();
    let keys = d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(&key.public, keys.join("cosign.pub")).unwrap();
    let docker = d.join("docker");
    std::fs::create_dir(&docker).unwrap();
    std::fs::copy(
        env.home.docker_config().join("config.json"),
        docker.join("config.json"),
    )
    .unwrap();
    for p in [&keys, &docker] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in std::fs::read_dir(p).unwrap() {
            std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
    }
    let host_dir = |volume: &str| match volume {
        "kong-plugins" => empty.clone(),
        "kplug-keys" => keys.clone(),
        "kplug-docker-config" => docker.clone(),
        v => panic!("unexpected volume {v}"),
    };

    let argv: Vec<String> = image
        .entrypoint
        .iter()
        .cloned()
        .chain(spec.args.clone())
        .collect();
    let env_file = empty.join("kplug.env");
    let installed = empty.join("kong/plugins/myauth");
    if sandbox_available() {
        let ca = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
        let files: Vec<(PathBuf, String)> = image
            .copies
            .iter()
            .map(|(_, to)| {
                (
                    if to == "/kplug" {
                        bin.clone()
                    } else {
                        ca.clone()
                    },
                    to.clone(),
                )
            })
            .filter(|(from, _)| from.exists())
            .collect();
        let points: Vec<&str> = spec.mounts.iter().map(|m| m.1.as_str()).collect();
        let root = rootfs(&d.join("rootfs"), &files, &points);
        assert!(
            !root.join("bin/sh").exists() && !root.join("bin").exists(),
            "no shell in the image"
        );
        let pod = Sandbox {
            root,
            mounts: spec
                .mounts
                .iter()
                .map(|(v, p, ro)| (host_dir(v), p.clone(), *ro))
                .collect(),
        };
        let mut env_vars = spec.env.clone();
        env_vars.push(("HOME".into(), "/".into()));
        let out = pod.run(spec.user, &env_vars, &argv);
        assert!(
            out.status.success(),
            "init container failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("verified against the specified public key"),
            "{}",
            stderr(&out)
        );
        // A restart of the pod's init container (emptyDir kept): nothing to do.
        let again = pod.run(spec.user, &env_vars, &argv);
        assert!(again.status.success(), "{}", stderr(&again));
        // The root really is read-only for it: writing outside the mounts fails.
        let mut pull = image.entrypoint.clone();
        pull.extend([
            "pull".into(),
            pinned.clone(),
            "--output-dir".into(),
            "/x".into(),
        ]);
        let ro = pod.run(spec.user, &env_vars, &pull);
        assert!(
            !ro.status.success() && stderr(&ro).contains("Read-only file system"),
            "{}",
            stderr(&ro)
        );
        assert_eq!(
            std::fs::metadata(installed.join("handler.lua"))
                .unwrap()
                .uid(),
            1000
        );
    } else {
        // No namespaces here: the same binary and arguments, host paths for the mounts,
        // with a HOME and working directory it cannot write to.
        let ro_dir = d.join("read-only");
        std::fs::create_dir(&ro_dir).unwrap();
        std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut args = spec.args.clone();
        for a in args.iter_mut() {
            for (v, p, _) in &spec.mounts {
                if let Some(rest) = a.strip_prefix(p.as_str()) {
                    *a = format!("{}{rest}", host_dir(v).display());
                }
            }
        }
        let out = run(Command::new(&bin)
            .args(&args)
            .current_dir(&ro_dir)
            .env_clear()
            .env("HOME", &ro_dir)
            .env("DOCKER_CONFIG", &docker));
        assert!(out.status.success(), "{}", stderr(&out));
    }

    assert_eq!(tree(&installed), tree(&src.join("kong/plugins/myauth")));
    let env_text = std::fs::read_to_string(&env_file).unwrap();
    let prefix = spec.args[spec.args.iter().position(|a| a == "--prefix").unwrap() + 1].clone();
    let vars: BTreeMap<&str, &str> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars["KONG_PLUGINS"], "bundled,myauth", "{env_text}");
    let lua_path = vars["KONG_LUA_PACKAGE_PATH"].to_string();
    assert_eq!(lua_path, format!("{prefix}/?.lua;{prefix}/?/init.lua;;"));
    assert!(
        yaml.contains(&format!("value: {lua_path}")),
        "the patch gives Kong the same path"
    );

    // The Kong container: the emptyDir read-only at the manifest's path, LuaJIT loading the
    // plugin, its DAO and every migration through the printed KONG_LUA_PACKAGE_PATH.
    let lua = "local h = require('kong.plugins.myauth.handler'); \
               local s = require('kong.plugins.myauth.schema'); \
               local d = require('kong.plugins.myauth.daos'); \
               local m = require('kong.plugins.myauth.migrations'); \
               for _, n in ipairs(m) do assert(require('kong.plugins.myauth.migrations.' .. n).postgres) end; \
               print(h.VERSION, s.name, d.myauth_keys.name, table.concat(m, ','))";
    let want = "2.1.0\tmyauth\tmyauth_keys\t000_base_myauth,001_210_to_220";
    let out = if sandbox_available() {
        let kong = Sandbox {
            root: rootfs(&d.join("kong-root"), &luajit_files(), &[&spec.kong_mount]),
            mounts: vec![(empty.clone(), spec.kong_mount.clone(), true)],
        };
        kong.run(
            (1000, 1000),
            &[("LUA_PATH".into(), lua_path)],
            &["/usr/bin/luajit".into(), "-e".into(), lua.into()],
        )
    } else {
        let host_path = lua_path.replace(&prefix, &empty.display().to_string());
        run(Command::new(require_bin("luajit", "luajit"))
            .env("LUA_PATH", host_path)
            .arg("-e")
            .arg(lua))
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), want);
}
