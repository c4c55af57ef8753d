//! Test harness for kplug's integration tests: `mod common;` then `use common::*;`.
//!
//! - [`Registry`]: a real `docker-registry` (CNCF distribution) per test.
//! - [`kplug`] / [`Home`]: the kplug binary with an isolated `HOME`.
//! - [`run_ok`], [`run_fail`], [`assert_exit`]: run and check a command.
//! - `http_*`, [`push_blob`], [`push_manifest`]: raw HTTP through `curl`.
//! - [`Proxy`]: TCP forwarder with latency and counters.
//! - [`FaultProxy`]: HTTP fault injection by rule (close, 5xx, 429, stall, bit flip, …).
//! - [`TokenServer`]: the realm of a [`Variant::Token`] registry; records scopes.
//! - [`Registry::pull_through`]: a pull-through cache of another registry.
//! - [`ReferrersProxy`]: the OCI 1.1 referrers API in front of a registry.
#![allow(dead_code, unused_imports)]

mod fault;
pub mod fixtures;
mod http;
mod http1;
mod proxy;
mod referrers;
mod registry;
mod token;

pub use fault::{Fault, FaultProxy, ProxiedRequest, Rule, RuleId};
pub use http::*;
pub use proxy::Proxy;
pub use referrers::ReferrersProxy;
pub use registry::{
    parse_access_entry, parse_access_line, AccessEntry, CacheOf, LoggedRequest, Registry, Variant,
};
pub use token::{libtrust_key_id, Scope, TokenRequest, TokenServer};

/// `127.0.0.1:PORT` where nothing listens (connection refused), for fallback tests.
pub fn refused_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Finds `bin` on PATH, or panics naming the Debian package that provides it.
/// Tests never skip: run `scripts/test.sh`, which installs what is missing.
pub fn require_bin(bin: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{bin}` not found on PATH: install the Debian package `{package}` (apt-get install {package}) or run scripts/test.sh")
        })
}

/// An isolated home for kplug: `HOME`, `DOCKER_CONFIG` (= HOME/.docker) and the
/// XDG directories point into a temp dir removed on drop.
pub struct Home {
    dir: TempDir,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("kplug-home-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join(".docker")).unwrap();
        Home { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// `DOCKER_CONFIG`; `config.json` goes here.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join(".docker")
    }
    /// Writes `config.json` with `auths` for `reg` (plain `user:password` base64 entry).
    pub fn docker_login(&self, reg: &Registry) {
        use base64::Engine;
        let (user, password) = reg.credentials().expect("registry has no credentials");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let json = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host());
        std::fs::write(self.docker_config().join("config.json"), json).unwrap();
    }
    /// The kplug binary, environment isolated to this home.
    pub fn kplug(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kplug"));
        let home = self.dir.path();
        cmd.env("HOME", home)
            .env("DOCKER_CONFIG", self.docker_config())
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for var in [
            "COSIGN_PASSWORD",
            "COSIGN_REPOSITORY",
            "REGISTRY_AUTH_FILE",
            "XDG_RUNTIME_DIR",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// kplug in a fresh [`Home`]; keep the guard alive while the command runs.
pub fn kplug() -> (Command, Home) {
    let home = Home::new();
    (home.kplug(), home)
}

/// Runs `cmd` to completion, capturing stdout and stderr.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!("expected success of {cmd:?}\n{}", describe(&out));
    }
    out
}

/// Runs `cmd`, panics with its output unless it exits with `code`.
pub fn run_fail(cmd: &mut Command, code: i32) -> Output {
    let out = run(cmd);
    assert_exit(&out, code);
    out
}

/// Panics with stdout and stderr unless `out` exited with `code`.
pub fn assert_exit(out: &Output, code: i32) {
    if out.status.code() != Some(code) {
        panic!("expected exit code {code}\n{}", describe(out));
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}
