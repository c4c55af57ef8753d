//! Shared helpers for the signing and install tests: cosign fixtures, key pairs made
//! by kplug, plugin trees and the push/sign steps most tests start with.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{run_ok, stdout, Home};

/// Password of every key pair made by [`KeyPair::generate`].
pub const PASSWORD: &str = "kplug-test-password";

/// A file under `tests/fixtures/cosign/` (see its SOURCES.md).
pub fn cosign_fixture(rel: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cosign"
    ))
    .join(rel)
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    let p = cosign_fixture(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// `examples/hello-plugin` (plugin `hello` 0.1.0, LuaRocks layout).
pub fn hello_example() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hello-plugin"
    ))
    .to_path_buf()
}

/// A cosign key pair written by `kplug generate-key-pair`.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub key: PathBuf,
    pub public: PathBuf,
}

impl KeyPair {
    /// `kplug generate-key-pair --output-key-prefix DIR/PREFIX` with [`PASSWORD`].
    pub fn generate(home: &Home, dir: &Path, prefix: &str) -> KeyPair {
        let p = dir.join(prefix);
        run_ok(
            home.kplug()
                .env("COSIGN_PASSWORD", PASSWORD)
                .arg("generate-key-pair")
                .arg("--output-key-prefix")
                .arg(&p),
        );
        KeyPair {
            key: p.with_extension("key"),
            public: p.with_extension("pub"),
        }
    }
}

/// `kplug sign --key KEY [extra…] REF` with [`PASSWORD`] (not run).
pub fn sign_cmd(home: &Home, key: &KeyPair, reference: &str, extra: &[&str]) -> Command {
    let mut cmd = home.kplug();
    cmd.env("COSIGN_PASSWORD", PASSWORD)
        .arg("sign")
        .arg("--key")
        .arg(&key.key)
        .args(extra)
        .arg(reference);
    cmd
}

/// Signs `reference`, panicking on failure.
pub fn sign(home: &Home, key: &KeyPair, reference: &str) -> Output {
    run_ok(&mut sign_cmd(home, key, reference, &[]))
}

/// `kplug push SRC REF`; returns the pinned reference it prints (`REG/REPO@sha256:…`).
pub fn push(home: &Home, src: &Path, reference: &str) -> String {
    let out = run_ok(home.kplug().arg("push").arg(src).arg(reference));
    let pinned = stdout(&out).trim().to_string();
    assert!(pinned.contains("@sha256:"), "push printed {pinned:?}");
    pinned
}

/// The `sha256:…` part of a pinned reference.
pub fn digest_of(pinned: &str) -> String {
    let (_, d) = pinned.rsplit_once('@').expect("a pinned reference");
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    d.to_string()
}

/// cosign's signature tag for a digest: `sha256-<hex>.sig`.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// Writes `DIR/kong/plugins/<name>/` with a handler.lua declaring `VERSION = version`
/// (and `marker` in a comment, to tell versions apart) and a schema.lua. Returns DIR.
pub fn write_plugin(dir: &Path, name: &str, version: &str, marker: &str) -> PathBuf {
    let p = dir.join("kong/plugins").join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("handler.lua"),
        format!(
            "-- {marker}\nlocal Handler = {{\n  PRIORITY = 1000,\n  VERSION = \"{version}\",\n}}\n\n\
             function Handler:access(conf)\n  kong.response.set_header(\"X-{name}\", conf.message)\nend\n\n\
             return Handler\n"
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("schema.lua"),
        format!(
            "return {{\n  name = \"{name}\",\n  fields = {{\n    {{ config = {{\n        type = \"record\",\n        \
             fields = {{\n          {{ message = {{ type = \"string\", default = \"{marker}\" }} }},\n        }},\n    }} }},\n  }},\n}}\n"
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// `sha256:<hex of sha256(DER public key)>`, computed with openssl: the signer
/// fingerprint kplug records.
pub fn openssl_fingerprint(public_pem: &Path) -> String {
    super::require_bin("openssl", "openssl");
    let out = run_ok(Command::new("sh").arg("-c").arg(format!(
        "openssl pkey -pubin -in '{}' -outform DER | sha256sum",
        public_pem.display()
    )));
    let hex = stdout(&out).split_whitespace().next().unwrap().to_string();
    assert_eq!(hex.len(), 64, "{hex}");
    format!("sha256:{hex}")
}

/// A registry, an isolated home and a scratch directory with one key pair in it: where
/// the signing and install tests start. Each test file adds its own methods.
pub struct Env {
    pub reg: super::Registry,
    pub home: Home,
    pub tmp: tempfile::TempDir,
    pub key: KeyPair,
}

impl Env {
    pub fn new() -> Env {
        let reg = super::Registry::start(super::Variant::Anonymous);
        let home = Home::new();
        let tmp = tempfile::tempdir().unwrap();
        let key = KeyPair::generate(&home, tmp.path(), "cosign");
        Env {
            reg,
            home,
            tmp,
            key,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }
}
