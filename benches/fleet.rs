//! Fleet bootstrap through a pull-through cache (`cargo bench --bench fleet`).
//!
//! One "upstream" registry behind a 40 ms RTT proxy; one distribution registry in
//! `proxy:` (pull-through cache) mode on loopback, whose own upstream link goes through
//! the same latency. N concurrent `kplug install REF@digest` processes, each with its own
//! prefix and kong.conf:
//!
//! 1. straight from upstream;
//! 2. through a fresh (cold) cache, configured as `digest-only` mirror in registries.conf;
//! 3. through a second fresh cache warmed the way docs/fleet.md tells operators to (one
//!    install through it), then the N installs;
//! 4. the warm cache killed (SIGKILL) once a quarter of the installs have finished: every
//!    install completes, the rest by fallback to upstream;
//! 5. the same with `--no-fallback` (cache restarted, then killed mid-run): installs
//!    either complete from the cache or fail, leaving the prefix as it was;
//! 6. `--no-fallback` with the cache dead: every install fails, nothing installed.
//!
//! `FLEET_N="50 200"` (default) sets the sizes; `FLEET_ROUNDS=3` (default) how many times
//! straight and warmed batches are then alternated for the side-by-side medians (0: none);
//! `FLEET_LOGS=DIR` keeps the registries' logs.
//! Figures only; nothing asserts a timing.
//! The bench does check and print the outcomes the issue asks for (installed, prefixes
//! left clean), so a regression shows in the table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

const RTT: Duration = Duration::from_millis(40);
const KONG_CONF: &str = "# kong.conf of a fleet node\nlog_level = notice\n";

struct Fleet {
    home: Home,
    work: tempfile::TempDir,
    key: KeyPair,
    reference: String,
    upstream_addr: String,
    /// The latency link to the upstream: every byte that reached or left it.
    link: Proxy,
}

/// One install's outcome.
struct Node {
    ok: bool,
    time: Duration,
    cpu: Duration,
    /// The plugin directory exists.
    installed: bool,
    /// `--json`'s `source`: `mirror …` or `primary …`.
    from_mirror: bool,
    /// No file in the prefix but its kong.conf, unchanged, and no plugin directory
    /// (empty directories aside: see `leftovers`).
    clean: bool,
    /// What the prefix holds besides kong.conf.
    leftovers: Vec<String>,
    stderr: String,
}

struct Batch {
    wall: Duration,
    nodes: Vec<Node>,
}

impl Fleet {
    fn install(&self, conf: Option<&Path>, prefix: &Path, extra: &[&str]) -> Command {
        let mut c = self.home.kplug();
        if let Some(f) = conf {
            c.arg("--registries-conf").arg(f);
        }
        c.args(extra)
            .arg("--json")
            .arg("install")
            .arg(&self.reference)
            .arg("--key")
            .arg(&self.key.public)
            .arg("--prefix")
            .arg(prefix)
            .arg("--kong-conf")
            .arg(prefix.join("kong.conf"))
            .stdout(Stdio::piped());
        c
    }

    /// `n` installs at once, each reaped by its own thread (so that its time is its own).
    /// `kill` runs once `kill_after` installs have finished.
    fn batch(
        &self,
        n: usize,
        conf: Option<&Path>,
        extra: &[&str],
        kill_after: usize,
        kill: impl FnOnce(),
    ) -> Batch {
        let root = tempfile::tempdir_in(self.work.path()).unwrap();
        let prefixes: Vec<PathBuf> = (0..n)
            .map(|i| {
                let p = root.path().join(format!("node{i}"));
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("kong.conf"), KONG_CONF).unwrap();
                p
            })
            .collect();
        let (tx, rx) = mpsc::channel::<(usize, Reaped)>();
        let t0 = Instant::now();
        for (i, p) in prefixes.iter().enumerate() {
            // stderr to a file beside the prefix, stdout (the --json) read by the reaper
            let err = root.path().join(format!("node{i}.err"));
            let child = self
                .install(conf, p, extra)
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .unwrap();
            let (tx, start) = (tx.clone(), Instant::now());
            std::thread::spawn(move || {
                let _ = tx.send((i, reap(child, start, &err)));
            });
        }
        drop(tx);
        let mut kill = Some(kill);
        if kill_after == 0 {
            (kill.take().unwrap())();
        }
        let mut done: Vec<Option<Reaped>> = (0..n).map(|_| None).collect();
        for (k, (i, r)) in rx.iter().enumerate() {
            done[i] = Some(r);
            if k + 1 == kill_after {
                (kill.take().unwrap())();
            }
        }
        let wall = t0.elapsed();
        let nodes = done
            .into_iter()
            .zip(&prefixes)
            .map(|(d, p)| {
                let r = d.expect("every install reaped");
                let json: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_default();
                let (leftovers, conf_kept) = leftovers(p);
                let clean = conf_kept
                    && leftovers
                        .iter()
                        .all(|l| l.ends_with('/') && !l.starts_with("kong/plugins/hello/"));
                Node {
                    ok: r.ok,
                    time: r.time,
                    cpu: r.cpu,
                    installed: p.join("kong/plugins/hello/handler.lua").is_file(),
                    from_mirror: json["source"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("mirror")),
                    clean,
                    leftovers,
                    stderr: r.stderr,
                }
            })
            .collect();
        Batch { wall, nodes }
    }
}

impl Fleet {
    /// `kplug mirror CACHE/kong/hello:1 --to oci:DIR`: success and wall time.
    fn warm_by_mirror(&self, cache: &str) -> (bool, Duration) {
        let dir = tempfile::tempdir_in(self.work.path()).unwrap();
        let t0 = Instant::now();
        let out = self
            .home
            .kplug()
            .arg("mirror")
            .arg(format!("{cache}/kong/hello:1"))
            .arg("--to")
            .arg(format!("oci:{}", dir.path().join("layout").display()))
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "kplug mirror failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (out.status.success(), t0.elapsed())
    }
}

/// One finished install process.
struct Reaped {
    ok: bool,
    time: Duration,
    /// user + system time of the process.
    cpu: Duration,
    stdout: Vec<u8>,
    stderr: String,
}

/// Reads the child's stdout to its end, then reaps it with `wait4` for its CPU time.
fn reap(mut child: Child, start: Instant, err: &Path) -> Reaped {
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let (mut status, mut ru) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: our own child, not reaped elsewhere (std's Child does not wait on drop).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    let time = start.elapsed();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Reaped {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        time,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        stdout,
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

/// Everything under `prefix` but its kong.conf (directories end in `/`), and whether
/// kong.conf still holds what it was given.
fn leftovers(prefix: &Path) -> (Vec<String>, bool) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else if rel != "kong.conf" {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(prefix, prefix, &mut out);
    out.sort();
    let conf = std::fs::read_to_string(prefix.join("kong.conf")).unwrap_or_default();
    (out, conf == KONG_CONF)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ms[((ms.len() - 1) as f64 * p).round() as usize]
}

/// What reached the upstream registry (kplug straight, or the cache) since a mark.
#[derive(Clone, Copy)]
struct Upstream {
    requests: usize,
    /// Sent by kplug itself (straight, or falling back), not by the cache.
    by_kplug: usize,
    manifest_gets: usize,
    blob_gets: usize,
    /// Bytes the upstream sent over the latency link (headers included).
    bytes: u64,
}

fn upstream_mark(f: &Fleet, up: &mut Registry) -> (usize, u64) {
    (up.access_log().len(), f.link.bytes_down())
}

fn upstream_since(f: &Fleet, up: &mut Registry, (from, down): (usize, u64)) -> Upstream {
    let log = up.access_log();
    let new = &log[from.min(log.len())..];
    let count = |kind: &str| {
        new.iter()
            .filter(|e| e.method == "GET" && e.path.contains(kind))
            .count()
    };
    Upstream {
        requests: new.len(),
        by_kplug: new
            .iter()
            .filter(|e| e.user_agent.starts_with("kplug/"))
            .count(),
        manifest_gets: count("/manifests/"),
        blob_gets: count("/blobs/"),
        bytes: f.link.bytes_down() - down,
    }
}

/// `FLEET_LOGS=DIR`: keep a registry's log (access log and its own) as `DIR/NAME.log`.
fn keep_log(reg: &Registry, name: &str) {
    if let Some(dir) = std::env::var_os("FLEET_LOGS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(reg.log_file(), Path::new(&dir).join(format!("{name}.log"))).unwrap();
    }
}

/// A pull-through cache of `up`, reaching it at `addr` (through the latency proxy).
fn cache_of(up: &Registry, addr: &str) -> Registry {
    Registry::start(Variant::PullThrough(CacheOf {
        remote_url: format!("http://{addr}"),
        credentials: up
            .credentials()
            .map(|(u, p)| (u.to_string(), p.to_string())),
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

fn row(label: &str, b: &Batch, up: Option<Upstream>) {
    let n = b.nodes.len();
    let count = |f: fn(&Node) -> bool| b.nodes.iter().filter(|x| f(x)).count();
    let ok: Vec<Duration> = b.nodes.iter().filter(|x| x.ok).map(|x| x.time).collect();
    let times = if ok.is_empty() {
        b.nodes.iter().map(|x| x.time).collect()
    } else {
        ok
    };
    let up = match up {
        Some(u) => format!(
            "{} | {} | {} | {} | {:.1}",
            u.requests,
            u.by_kplug,
            u.manifest_gets,
            u.blob_gets,
            u.bytes as f64 / 1024.0
        ),
        None => "· | · | · | · | ·".into(),
    };
    let cpu: Vec<Duration> = b.nodes.iter().map(|x| x.cpu).collect();
    println!(
        "| {label} | {n} | {:.2} | {:.0} | {:.0} | {:.0} | {up} | {} | {} | {} | {} |",
        b.wall.as_secs_f64(),
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&cpu, 0.5),
        count(|x| x.ok),
        count(|x| x.installed),
        count(|x| x.ok && x.from_mirror),
        count(|x| !x.ok && x.clean),
    );
    // Anything unexpected, once: a failure that is not a clean one, or a success without
    // the plugin on disk.
    if let Some(x) = b
        .nodes
        .iter()
        .find(|x| (!x.ok && !x.clean) || (x.ok && !x.installed))
    {
        eprintln!(
            "{label}: unexpected outcome (ok={}), prefix holds {:?}:\n{}",
            x.ok, x.leftovers, x.stderr
        );
    }
    if let Some(x) = b.nodes.iter().find(|x| !x.ok) {
        let first = x
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        eprintln!(
            "{label}: a failed node's prefix holds {:?}; it says: {first}",
            x.leftovers
        );
    }
}

/// Straight and warmed batches alternated `rounds` times (machine load hits both alike):
/// medians of wall time and p50, and the ratio.
fn side_by_side(f: &Fleet, conf: &Path, n: usize, rounds: usize) -> String {
    let (mut straight, mut warmed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (conf, out) in [(None, &mut straight), (Some(conf), &mut warmed)] {
            let b = f.batch(n, conf, &[], usize::MAX, || {});
            assert!(b.nodes.iter().all(|x| x.ok), "an install failed");
            let times: Vec<Duration> = b.nodes.iter().map(|x| x.time).collect();
            out.push((b.wall, Duration::from_secs_f64(pct(&times, 0.5) / 1000.0)));
        }
    }
    let med = |v: &[(Duration, Duration)], wall: bool| {
        let d: Vec<Duration> = v.iter().map(|x| if wall { x.0 } else { x.1 }).collect();
        pct(&d, 0.5)
    };
    let (sw, ww) = (med(&straight, true), med(&warmed, true));
    let (sp, wp) = (med(&straight, false), med(&warmed, false));
    format!(
        "| {n} | {rounds} | {:.2} | {:.2} | {:.2} | {sp:.0} | {wp:.0} | {:.2} |",
        sw / 1000.0,
        ww / 1000.0,
        sw / ww,
        sp / wp
    )
}

fn fleet(f: &Fleet, up: &mut Registry, n: usize, rounds: usize) -> Option<String> {
    let none = || {};
    let mark = upstream_mark(f, up);
    let b = f.batch(n, None, &[], usize::MAX, none);
    row(
        "straight from upstream",
        &b,
        Some(upstream_since(f, up, mark)),
    );

    let cold = cache_of(up, &f.upstream_addr);
    let c = conf(f.work.path(), &f.upstream_addr, &cold.host());
    let mark = upstream_mark(f, up);
    let b = f.batch(n, Some(&c), &[], usize::MAX, none);
    row("cache, cold", &b, Some(upstream_since(f, up, mark)));
    keep_log(&cold, &format!("cache-cold-{n}"));
    drop(cold);

    // The operator's warm-up (docs/fleet.md): one install through a fresh cache.
    let mut cache = cache_of(up, &f.upstream_addr);
    let c = conf(f.work.path(), &f.upstream_addr, &cache.host());
    let mark = upstream_mark(f, up);
    let b = f.batch(1, Some(&c), &[], usize::MAX, none);
    row(
        "warm-up: 1 install via cache",
        &b,
        Some(upstream_since(f, up, mark)),
    );
    let mark = upstream_mark(f, up);
    let b = f.batch(n, Some(&c), &[], usize::MAX, none);
    row("cache, warmed", &b, Some(upstream_since(f, up, mark)));
    let ab = (rounds > 0).then(|| side_by_side(f, &c, n, rounds));

    // The other warm-up docs/fleet.md gives: `kplug mirror` reading the release (artifact
    // and signature) through another fresh cache into a scratch OCI layout.
    let other = cache_of(up, &f.upstream_addr);
    let mark = upstream_mark(f, up);
    let (ok, wall) = f.warm_by_mirror(&other.host());
    let u = upstream_since(f, up, mark);
    println!(
        "| warm-up: `kplug mirror CACHE/kong/hello:1 --to oci:DIR` | · | {:.2} | · | · | · | {} | {} | {} | {} | {:.1} | {} | · | · | · |",
        wall.as_secs_f64(),
        u.requests,
        u.by_kplug,
        u.manifest_gets,
        u.blob_gets,
        u.bytes as f64 / 1024.0,
        if ok { "ok" } else { "FAILED" }
    );
    let c2 = conf(f.work.path(), &f.upstream_addr, &other.host());
    let mark = upstream_mark(f, up);
    let b = f.batch(n, Some(&c2), &[], usize::MAX, none);
    row(
        "cache warmed by mirror",
        &b,
        Some(upstream_since(f, up, mark)),
    );
    drop(other);

    let quarter = (n / 4).max(1);
    let mark = upstream_mark(f, up);
    let b = f.batch(n, Some(&c), &[], quarter, || cache.stop());
    row(
        "cache killed after N/4 done",
        &b,
        Some(upstream_since(f, up, mark)),
    );
    cache.restart();
    let mark = upstream_mark(f, up);
    let b = f.batch(n, Some(&c), &["--no-fallback"], quarter, || cache.stop());
    row("same, --no-fallback", &b, Some(upstream_since(f, up, mark)));
    let mark = upstream_mark(f, up);
    let b = f.batch(n, Some(&c), &["--no-fallback"], usize::MAX, none);
    row(
        "cache dead, --no-fallback",
        &b,
        Some(upstream_since(f, up, mark)),
    );
    keep_log(&cache, &format!("cache-warmed-{n}"));
    keep_log(up, &format!("upstream-{n}"));
    ab
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Like Docker Hub, GHCR or ECR, the upstream answers with a Bearer challenge and
    // hands anonymous pull tokens (the token server is not behind the latency proxy).
    // FLEET_UPSTREAM=anonymous: an open upstream, where distribution 2.8's cache pings
    // `/v2/` under a lock before every lookup it forwards (no challenge to remember).
    let token = std::env::var("FLEET_UPSTREAM").map_or(true, |v| v != "anonymous");
    let mut up = Registry::start(match token {
        true => Variant::token("fleet", "fleet-password"),
        false => Variant::Anonymous,
    });
    let home = Home::new();
    if token {
        up.token_server().set_policy(|user, s| match user {
            Some(_) => s.actions.clone(),
            None => s.actions.iter().filter(|a| *a == "pull").cloned().collect(),
        });
        home.docker_login(&up); // for the push and the signature; the installs are anonymous
    }
    let proxy = Proxy::with_rtt(&up.host(), RTT);
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
        link: proxy,
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
        "# Fleet bootstrap: N concurrent `kplug install REF@digest`, {} upstream behind {} ms RTT\n",
        if token { "token-auth" } else { "anonymous" },
        RTT.as_millis()
    );
    println!("| run | N | wall s | p50 ms | p99 ms | CPU ms p50 | upstream requests | of which by kplug | upstream manifest GETs | upstream blob GETs | upstream KiB | completed | installed | served by cache | failed, nothing installed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rounds: usize = std::env::var("FLEET_ROUNDS").map_or(3, |r| r.parse().unwrap());
    let ab: Vec<String> = sizes
        .iter()
        .filter_map(|&n| fleet(&f, &mut up, n, rounds))
        .collect();
    println!(
        "\nupstream: every request the upstream registry served (kplug straight, or the cache \
         on kplug's behalf); KiB: what it sent over the latency link, headers included. p50/p99 over the installs that completed (all, if none did); CPU: user + system time of one install process. \
         served by cache: the installs whose artifact `--json` reports from the mirror."
    );
    if !ab.is_empty() {
        println!("\n## Side by side: straight from upstream vs warmed cache, batches alternated\n");
        println!("| N | rounds | straight wall s | warmed wall s | wall straight/warmed | straight p50 ms | warmed p50 ms | p50 straight/warmed |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for l in ab {
            println!("{l}");
        }
        println!("\nmedians over the rounds; ratio > 1: the warmed cache is faster.");
    }
}
