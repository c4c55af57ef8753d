//! Fleet bootstrap through a pull-through cache (`cargo bench --bench fleet`).
//!
//! One "upstream" registry behind a 40 ms RTT proxy; one distribution registry in
//! `proxy:` (pull-through cache) mode on loopback, whose own upstream link goes through
//! the same latency. N concurrent `kplug install REF@digest` processes, each with its own
//! prefix: straight from upstream, then with the cache as mirror (registries.conf), cold
//! and warmed; then the cache is killed mid-run (every install completes by fallback),
//! and `--no-fallback` installs with the cache dead fail cleanly, nothing installed.
//! `FLEET_N="50 200"` (default) sets the sizes. Figures only; nothing asserts a timing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

const RTT: Duration = Duration::from_millis(40);

struct Fleet {
    home: Home,
    work: tempfile::TempDir,
    key: KeyPair,
    reference: String,
    upstream_addr: String,
}

/// One batch: wall time, per-install times, failures, installed plugin dirs.
struct Batch {
    wall: Duration,
    times: Vec<Duration>,
    failed: usize,
    installed: usize,
}

impl Fleet {
    fn install(&self, conf: Option<&Path>, prefix: &Path, extra: &[&str]) -> Command {
        let mut c = self.home.kplug();
        if let Some(f) = conf {
            c.arg("--registries-conf").arg(f);
        }
        c.args(extra)
            .arg("install")
            .arg(&self.reference)
            .arg("--key")
            .arg(&self.key.public)
            .arg("--prefix")
            .arg(prefix)
            .arg("--kong-conf")
            .arg(prefix.join("kong.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// `n` installs at once; `during` runs once the processes are started.
    fn batch(&self, n: usize, conf: Option<&Path>, extra: &[&str], during: impl FnOnce()) -> Batch {
        let root = tempfile::tempdir_in(self.work.path()).unwrap();
        let t0 = Instant::now();
        let mut kids: Vec<(Instant, Child, PathBuf)> = (0..n)
            .map(|i| {
                let p = root.path().join(format!("node{i}"));
                std::fs::create_dir_all(&p).unwrap();
                let child = self.install(conf, &p, extra).spawn().unwrap();
                (Instant::now(), child, p)
            })
            .collect();
        during();
        let mut times = Vec::new();
        let mut failed = 0;
        let mut installed = 0;
        for (start, child, p) in kids.drain(..) {
            let out = child.wait_with_output().unwrap();
            times.push(start.elapsed());
            if !out.status.success() {
                failed += 1;
            }
            if p.join("kong/plugins/hello").exists() {
                installed += 1;
            }
        }
        Batch {
            wall: t0.elapsed(),
            times,
            failed,
            installed,
        }
    }
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ms[((ms.len() - 1) as f64 * p).round() as usize]
}

/// Requests, blob GETs and bytes the upstream served since `from` (all clients).
fn upstream_since(up: &mut Registry, from: usize) -> (usize, usize, u64, usize) {
    let log = up.access_log();
    let new = &log[from.min(log.len())..];
    let blobs = new
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/"))
        .count();
    let bytes = new.iter().map(|e| e.bytes).sum();
    (new.len(), blobs, bytes, log.len())
}

fn cache_of(up: &str) -> Registry {
    Registry::start(Variant::PullThrough(CacheOf {
        remote_url: format!("http://{up}"),
        credentials: None,
        ca_file: None,
    }))
}

fn conf(dir: &Path, upstream: &str, mirror: &str) -> PathBuf {
    let p = dir.join(format!("registries-{}.conf", mirror.replace(':', "_")));
    std::fs::write(
        &p,
        format!(
            "[[registry]]\nprefix = \"{upstream}/kong\"\nlocation = \"{upstream}/kong\"\n\
             [[registry.mirror]]\nlocation = \"{mirror}/kong\"\npull-from-mirror = \"digest-only\"\n"
        ),
    )
    .unwrap();
    p
}

fn row(label: &str, n: usize, b: &Batch, up: (usize, usize, u64, usize)) {
    println!(
        "| {label} | {n} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
        b.wall.as_secs_f64(),
        pct(&b.times, 0.5),
        pct(&b.times, 0.99),
        up.0,
        up.1,
        up.2,
        n - b.failed,
        b.installed
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut up = Registry::start(Variant::Anonymous);
    let proxy = Proxy::with_rtt(&up.host(), RTT);
    let home = Home::new();
    let work = tempfile::Builder::new()
        .prefix("kplug-fleet-")
        .tempdir()
        .unwrap();
    let key = KeyPair::generate(&home, work.path(), "cosign");
    let tree = write_plugin(work.path(), "hello", "1.0.0", "fleet");
    let pinned = push(&home, &tree, &format!("{}/kong/hello:1", up.host()));
    sign(&home, &key, &pinned);
    let digest = digest_of(&pinned);
    let f = Fleet {
        reference: format!("{}/kong/hello@{digest}", proxy.addr()),
        upstream_addr: proxy.addr().to_string(),
        home,
        work,
        key,
    };
    let sizes: Vec<usize> = std::env::var("FLEET_N")
        .unwrap_or_else(|_| "50 200".into())
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    println!(
        "# Fleet bootstrap (upstream behind {} ms RTT)\n",
        RTT.as_millis()
    );
    println!("| run | N | wall s | p50 ms | p99 ms | upstream requests | upstream blob GETs | upstream bytes | completed | installed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let mark = upstream_since(&mut up, usize::MAX).3;
        let b = f.batch(n, None, &[], || {});
        row(
            "straight from upstream",
            n,
            &b,
            upstream_since(&mut up, mark),
        );

        let mut cache = cache_of(&f.upstream_addr);
        let c = conf(f.work.path(), &f.upstream_addr, &cache.host());
        let mark = upstream_since(&mut up, usize::MAX).3;
        let b = f.batch(n, Some(&c), &[], || {});
        row("cache, cold", n, &b, upstream_since(&mut up, mark));
        let mark = upstream_since(&mut up, usize::MAX).3;
        let b = f.batch(n, Some(&c), &[], || {});
        row("cache, warmed", n, &b, upstream_since(&mut up, mark));

        // The cache dies while the installs run: every one completes by fallback.
        let mark = upstream_since(&mut up, usize::MAX).3;
        let b = f.batch(n, Some(&c), &[], || {
            std::thread::sleep(Duration::from_millis(150));
            cache.stop();
        });
        row("cache killed mid-run", n, &b, upstream_since(&mut up, mark));
        // And with --no-fallback, with the cache dead: clean failures, nothing installed.
        let mark = upstream_since(&mut up, usize::MAX).3;
        let b = f.batch(n, Some(&c), &["--no-fallback"], || {});
        row(
            "cache dead, --no-fallback",
            n,
            &b,
            upstream_since(&mut up, mark),
        );
    }
    println!("\nupstream: requests/bytes count every client of the upstream registry (kplug straight, or the cache).");
}
