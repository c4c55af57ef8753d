//! Node benchmarks against a real local registry (`cargo bench --bench node`).
//!
//! 1. Requests per verb: the registry access-log lines each kplug verb causes,
//!    by method and kind, and their order.
//! 2. Bootstrap latency: `install` / `verify` wall time direct and through
//!    `Proxy::with_rtt` (20 ms), the sequential round trips this implies, and a
//!    request timeline through a recording proxy (rounds of concurrent requests,
//!    TCP connections); wall and CPU time of `generate-key-pair` and `sign` (scrypt).
//!
//! Figures only: nothing here asserts a timing. See docs/performance.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

/// Runs per latency figure (the median is reported).
const RUNS: usize = 5;
/// Round-trip time added by the proxy.
const RTT: Duration = Duration::from_millis(20);
const REPO: &str = "bench/hello";

/// Request classes, in table column order.
const KINDS: [&str; 12] = [
    "ping",
    "man GET",
    "man HEAD",
    "man PUT",
    "blob GET",
    "blob HEAD",
    "upl POST",
    "upl PATCH",
    "upl PUT",
    "tags",
    "referrers",
    "other",
];

fn kind(r: &LoggedRequest) -> &'static str {
    let p = r.path.split('?').next().unwrap_or("");
    let m = r.method.as_str();
    if p == "/v2/" || p == "/v2" {
        "ping"
    } else if p.contains("/manifests/") {
        match m {
            "GET" => "man GET",
            "HEAD" => "man HEAD",
            "PUT" => "man PUT",
            _ => "other",
        }
    } else if p.contains("/blobs/uploads") {
        match m {
            "POST" => "upl POST",
            "PATCH" => "upl PATCH",
            "PUT" => "upl PUT",
            _ => "other",
        }
    } else if p.contains("/blobs/") {
        match m {
            "GET" => "blob GET",
            "HEAD" => "blob HEAD",
            _ => "other",
        }
    } else if p.contains("/tags/list") {
        "tags"
    } else if p.contains("/referrers/") {
        "referrers"
    } else {
        "other"
    }
}

/// `METHOD /v2/…  STATUS` with digests shortened, for the request sequences.
fn short(r: &LoggedRequest) -> String {
    let mut p = r.path.clone();
    // sha256:<64 hex> and sha256-<64 hex> → first 12 hex digits
    for sep in [':', '-'] {
        let pat = format!("sha256{sep}");
        let mut out = String::new();
        let mut rest = p.as_str();
        while let Some(i) = rest.find(&pat) {
            let start = i + pat.len();
            out.push_str(&rest[..start]);
            let hex = &rest[start..];
            let n = hex.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
            out.push_str(&hex[..n.min(12)]);
            if n > 12 {
                out.push('…');
            }
            rest = &hex[n..];
        }
        out.push_str(rest);
        p = out;
    }
    if let Some(i) = p.find("/blobs/uploads/") {
        let tail = &p[i + "/blobs/uploads/".len()..];
        if !tail.is_empty() && !tail.starts_with('?') {
            let q = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
            let q = if q.is_empty() { "" } else { "?…" };
            p = format!("{}/blobs/uploads/<uuid>{q}", &p[..i]);
        } else if tail.starts_with('?') {
            p = format!("{}/blobs/uploads/?…", &p[..i]);
        }
    }
    format!("{:<4} {} {}", r.method, p, r.status)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `cmd` (must succeed) and returns its wall time.
fn timed(cmd: &mut Command) -> (Duration, std::process::Output) {
    let (wall, _, out) = timed_cpu(cmd);
    (wall, out)
}

/// User + system CPU time of all waited-for children so far.
fn children_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `cmd` (must succeed); returns its wall time and CPU time (user + system).
fn timed_cpu(cmd: &mut Command) -> (Duration, Duration, std::process::Output) {
    let cpu = children_cpu();
    let t = Instant::now();
    let out = run_ok(cmd);
    (t.elapsed(), children_cpu() - cpu, out)
}

struct Bench {
    reg: Registry,
    home: Home,
    work: tempfile::TempDir,
    digest: String,
}

impl Bench {
    fn kplug(&self) -> Command {
        let mut c = self.home.kplug();
        c.current_dir(self.work.path());
        c
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }
    /// A fresh, empty install prefix and an empty kong.conf inside it.
    fn prefix(&self) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::Builder::new()
            .prefix("prefix-")
            .tempdir_in(self.work.path())
            .unwrap();
        let conf = d.path().join("kong.conf");
        // `--kong-conf` names a file that must exist (kplug edits Kong's, never invents one).
        std::fs::write(&conf, "").unwrap();
        (d, conf)
    }
    fn install_cmd(&self, host: &str, by_digest: bool, prefix: &Path, conf: &Path) -> Command {
        let mut c = self.kplug();
        c.arg("install")
            .arg(self.reference(host, by_digest))
            .arg("--key")
            .arg(self.path("cosign.pub"))
            .arg("--prefix")
            .arg(prefix)
            .arg("--kong-conf")
            .arg(conf);
        c
    }
    fn verify_cmd(&self, host: &str, by_digest: bool) -> Command {
        let mut c = self.kplug();
        c.arg("verify")
            .arg("--key")
            .arg(self.path("cosign.pub"))
            .arg(self.reference(host, by_digest));
        c
    }
    fn reference(&self, host: &str, by_digest: bool) -> String {
        if by_digest {
            format!("{host}/{REPO}@{}", self.digest)
        } else {
            format!("{host}/{REPO}:1")
        }
    }
}

/// One row of the requests-per-verb table.
struct Row {
    verb: String,
    wall: Duration,
    cpu: Duration,
    reqs: Vec<LoggedRequest>,
}

/// Runs `cmd` and returns the registry requests it caused.
fn measure(reg: &mut Registry, verb: &str, cmd: &mut Command) -> (Row, std::process::Output) {
    let before = reg.requests().len();
    let (wall, cpu, out) = timed_cpu(cmd);
    let reqs = reg.requests().split_off(before);
    (
        Row {
            verb: verb.to_string(),
            wall,
            cpu,
            reqs,
        },
        out,
    )
}

fn print_request_table(rows: &[Row]) {
    let used: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| rows.iter().any(|r| r.reqs.iter().any(|q| kind(q) == *k)))
        .collect();
    let mut header = format!("| {:<23} |", "verb");
    let mut rule = format!("|{}|", "-".repeat(25));
    for k in &used {
        header += &format!(" {k:>9} |");
        rule += &format!("{}:|", "-".repeat(10));
    }
    header += " total | wall ms | CPU ms |";
    rule += "------:|--------:|-------:|";
    println!("{header}\n{rule}");
    for r in rows {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &r.reqs {
            *counts.entry(kind(q)).or_default() += 1;
        }
        let mut line = format!("| {:<23} |", r.verb);
        for k in &used {
            let n = counts.get(k).copied().unwrap_or(0);
            line += &format!(" {:>9} |", if n == 0 { "·".into() } else { n.to_string() });
        }
        line += &format!(
            " {:>5} | {:>7.1} | {:>6.1} |",
            r.reqs.len(),
            ms(r.wall),
            ms(r.cpu)
        );
        println!("{line}");
    }
    println!();
    println!("Legend: man = /manifests/, blob = /blobs/<digest>, upl = /blobs/uploads/, ping = GET /v2/.");
    println!();
    println!("Request order per verb (access log):");
    println!();
    println!("```");
    for r in rows {
        println!("{}:", r.verb);
        for q in &r.reqs {
            println!("  {}", short(q));
        }
    }
    println!("```");
}

/// A delaying TCP forwarder like [`Proxy::with_rtt`] that also records when each
/// connection was opened and when each HTTP request line was sent by the client.
struct TimelineProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<(Instant, usize, String)>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl TimelineProxy {
    fn start(target: &str, rtt: Duration) -> TimelineProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (target, stop2, ev) = (target.to_string(), stop.clone(), events.clone());
        let accept = std::thread::spawn(move || {
            for (id, client) in listener.incoming().enumerate() {
                if stop2.load(SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                ev.lock()
                    .unwrap()
                    .push((Instant::now(), id + 1, "CONNECT".into()));
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let ev = ev.clone();
                std::thread::spawn(move || {
                    delayed_pump(client, server, rtt / 2, Some((ev, id + 1)))
                });
                std::thread::spawn(move || delayed_pump(s2, c2, rtt / 2, None));
            }
        });
        TimelineProxy {
            addr,
            stop,
            events,
            accept: Some(accept),
        }
    }
    fn take_events(&self) -> Vec<(Instant, usize, String)> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl Drop for TimelineProxy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

type Events = Arc<Mutex<Vec<(Instant, usize, String)>>>;

/// Copies `from` → `to`, each chunk `delay` after it was read; records request lines.
fn delayed_pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    rec: Option<(Events, usize)>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let now = Instant::now();
            if let Some((ev, id)) = &rec {
                let line = buf[..n].split(|b| *b == b'\r').next().unwrap_or(&[]);
                let line = String::from_utf8_lossy(line);
                let mut words = line.split(' ');
                if let (Some(m), Some(path)) = (words.next(), words.next()) {
                    if m.len() >= 3
                        && m.bytes().all(|b| b.is_ascii_uppercase())
                        && path.starts_with('/')
                    {
                        ev.lock().unwrap().push((now, *id, format!("{m} {path}")));
                    }
                }
            }
            if tx.send((now + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    for (due, chunk) in rx {
        sleep(due.saturating_duration_since(Instant::now()));
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = reader.join();
}

/// Runs `cmd` through a [`TimelineProxy`] and prints when each connection and request
/// started; returns (request rounds, connections). A new round starts with a request
/// sent more than half an RTT after the first request of the current round.
fn capture_timeline(
    out: &mut Vec<u8>,
    name: &str,
    cmd: &mut Command,
    proxy: &TimelineProxy,
) -> (usize, usize) {
    let rtt = RTT;
    proxy.take_events();
    let t0 = Instant::now();
    run_ok(cmd);
    sleep(Duration::from_millis(20));
    let mut ev = proxy.take_events();
    ev.sort_by_key(|e| e.0);
    let mut rounds = 0;
    let mut round_start: Option<Instant> = None;
    let conns = ev.iter().filter(|e| e.2 == "CONNECT").count();
    writeln!(out, "{name}:").unwrap();
    writeln!(out, "   t ms  conn  round  request").unwrap();
    for (t, id, what) in &ev {
        let mut round = String::new();
        if what != "CONNECT" {
            if round_start.is_none_or(|s| *t > s + rtt / 2) {
                rounds += 1;
                round_start = Some(*t);
            }
            round = rounds.to_string();
        }
        let what = if what == "CONNECT" {
            what.clone()
        } else {
            short(&LoggedRequest {
                method: what.split(' ').next().unwrap().to_string(),
                path: what.split(' ').nth(1).unwrap_or("").to_string(),
                status: 0,
            })
            .trim_end_matches(" 0")
            .to_string()
        };
        writeln!(out, "{:>7.1}  c{id:<3}  {round:>5}  {what}", ms(*t - t0)).unwrap();
    }
    writeln!(
        out,
        "  → {rounds} sequential request rounds, {conns} TCP connections\n"
    )
    .unwrap();
    (rounds, conns)
}

/// Median, minimum and maximum of some wall times (ms).
struct Lat {
    median: f64,
    min: f64,
    max: f64,
}

fn lat(walls: Vec<f64>) -> Lat {
    let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
    let max = walls.iter().copied().fold(0.0, f64::max);
    Lat {
        median: median(walls),
        min,
        max,
    }
}

/// `HEAD` and the files of src/ that differ from it, as `git` reports them.
fn source_state() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (no git)".into();
    };
    let dirty: Vec<String> = git(&["status", "--porcelain", "--", "src", "Cargo.toml"])
        .unwrap_or_default()
        .lines()
        .map(|l| l.get(3..).unwrap_or(l).to_string())
        .collect();
    if dirty.is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes in {}", dirty.join(", "))
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // Test runners (`cargo test --all-targets`, nextest) list targets first: this is a
    // benchmark, it holds no tests.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    let reg = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let work = tempfile::Builder::new()
        .prefix("kplug-bench-node-")
        .tempdir()
        .unwrap();
    let mut b = Bench {
        reg,
        home,
        work,
        digest: String::new(),
    };
    let host = b.reg.host();
    println!("# kplug node benchmarks\n");
    println!("- machine: {machine}; load average at start {}", loadavg());
    println!("- kplug source: {}", source_state());
    println!("- registry: docker-registry on {host}, anonymous, plain HTTP\n");

    // ---- keys and packing (not registry traffic) -------------------------------------
    let (mut keygen, mut keygen_cpu) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let dir = b.path(&format!("keys{i}"));
        std::fs::create_dir(&dir).unwrap();
        let (wall, cpu, _) = timed_cpu(
            b.kplug()
                .current_dir(&dir)
                .env("COSIGN_PASSWORD", "x")
                .arg("generate-key-pair"),
        );
        keygen.push(ms(wall));
        keygen_cpu.push(ms(cpu));
    }
    for f in ["cosign.key", "cosign.pub"] {
        std::fs::copy(b.path("keys0").join(f), b.path(f)).unwrap();
    }
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-plugin");
    run_ok(b.kplug().arg("pack").arg(&hello).arg("-o").arg("p.tgz"));
    // ---- 1. requests per verb ------------------------------------------------------
    let mut rows = Vec::new();
    let (row, out) = measure(
        &mut b.reg,
        "push :1",
        b.home
            .kplug()
            .current_dir(b.work.path())
            .arg("push")
            .arg("p.tgz")
            .arg(format!("{host}/{REPO}:1")),
    );
    rows.push(row);
    let pinned = stdout(&out).trim().to_string();
    b.digest = pinned
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("push printed {pinned:?}"))
        .1
        .to_string();

    let mut sign = b.kplug();
    sign.env("COSIGN_PASSWORD", "x")
        .arg("sign")
        .arg("--key")
        .arg("cosign.key")
        .arg(b.reference(&host, true));
    let (row, _) = measure(&mut b.reg, "sign @digest", &mut sign);
    let (sign_wall, sign_cpu, sign_reqs) = (row.wall, row.cpu, row.reqs.len());
    rows.push(row);

    let mut cmd = b.verify_cmd(&host, true);
    rows.push(measure(&mut b.reg, "verify @digest", &mut cmd).0);
    let mut cmd = b.verify_cmd(&host, false);
    rows.push(measure(&mut b.reg, "verify :1", &mut cmd).0);

    let (p1, conf1) = b.prefix();
    let mut cmd = b.install_cmd(&host, true, p1.path(), &conf1);
    rows.push(measure(&mut b.reg, "install @digest", &mut cmd).0);
    // same prefix again: the receipt short-circuits
    let mut cmd = b.install_cmd(&host, true, p1.path(), &conf1);
    rows.push(measure(&mut b.reg, "install @digest (again)", &mut cmd).0);
    let (p2, conf2) = b.prefix();
    let mut cmd = b.install_cmd(&host, false, p2.path(), &conf2);
    rows.push(measure(&mut b.reg, "install :1", &mut cmd).0);

    let mut cmd = b.kplug();
    cmd.arg("pull")
        .arg(b.reference(&host, true))
        .arg("-o")
        .arg("f.tgz");
    rows.push(measure(&mut b.reg, "pull @digest", &mut cmd).0);
    let mut cmd = b.kplug();
    cmd.arg("pull")
        .arg(b.reference(&host, false))
        .arg("-o")
        .arg("g.tgz");
    rows.push(measure(&mut b.reg, "pull :1", &mut cmd).0);

    println!("## Requests per verb\n");
    println!(
        "Registry requests caused by one run of each verb, in order (small signed plugin, {}).\n",
        pinned
            .split_once('/')
            .map(|(_, r)| r)
            .unwrap_or(&pinned)
            .replace(&b.digest[19..], "…")
    );
    print_request_table(&rows);

    // ---- key decryption ----------------------------------------------------------------
    // sign decrypts the key (scrypt) each time; sign fresh pushes so that no run sees an
    // already signed digest.
    let (mut signs, mut signs_cpu) = (vec![ms(sign_wall)], vec![ms(sign_cpu)]);
    for i in 1..RUNS {
        let out = run_ok(
            b.kplug()
                .arg("push")
                .arg("p.tgz")
                .arg(format!("{host}/bench/sign{i}:1")),
        );
        let pinned = stdout(&out).trim().to_string();
        let mut cmd = b.kplug();
        cmd.env("COSIGN_PASSWORD", "x")
            .arg("sign")
            .arg("--key")
            .arg("cosign.key")
            .arg(&pinned);
        let (wall, cpu, _) = timed_cpu(&mut cmd);
        signs.push(ms(wall));
        signs_cpu.push(ms(cpu));
    }
    let (mut verifies, mut verifies_cpu) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (wall, cpu, _) = timed_cpu(&mut b.verify_cmd(&host, true));
        verifies.push(ms(wall));
        verifies_cpu.push(ms(cpu));
    }
    let (mut starts, mut starts_cpu) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (wall, cpu, _) = timed_cpu(b.kplug().arg("--version"));
        starts.push(ms(wall));
        starts_cpu.push(ms(cpu));
    }
    println!();
    println!("## Key handling\n");
    println!(
        "Median of {} runs; CPU = user + system time of the kplug process (unaffected by \
         other load, unlike wall time).\n",
        signs.len()
    );
    println!("| command | wall ms median (min–max) | CPU ms median |");
    println!("|---|---:|---:|");
    let row = |what: &str, wall: &[f64], cpu: &[f64]| {
        let l = lat(wall.to_vec());
        println!(
            "| {what} | {:.1} ({:.1}–{:.1}) | {:.1} |",
            l.median,
            l.min,
            l.max,
            median(cpu.to_vec())
        );
    };
    row(
        "`generate-key-pair` (P-256 key, scrypt N=65536 encryption)",
        &keygen,
        &keygen_cpu,
    );
    row(
        &format!("`sign @digest` (scrypt N=65536 decryption, {sign_reqs} requests)"),
        &signs,
        &signs_cpu,
    );
    row(
        "`verify @digest` (no scrypt, for comparison)",
        &verifies,
        &verifies_cpu,
    );
    row("`kplug --version` (process start)", &starts, &starts_cpu);
    println!();
    println!(
        "sign − verify: {:.1} ms wall, {:.1} ms CPU (key decryption, signing, the upload requests).",
        median(signs.clone()) - median(verifies.clone()),
        median(signs_cpu.clone()) - median(verifies_cpu.clone())
    );

    // ---- 2. bootstrap latency -----------------------------------------------------------
    type Make = Box<dyn Fn(&Bench, &str) -> Command>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "install @digest",
            Box::new(|b: &Bench, h: &str| {
                let (d, conf) = b.prefix();
                // kept until the bench ends: the work dir removes it
                let p = d.keep();
                b.install_cmd(h, true, &p, &conf)
            }),
        ),
        (
            "install :1",
            Box::new(|b: &Bench, h: &str| {
                let (d, conf) = b.prefix();
                let p = d.keep();
                b.install_cmd(h, false, &p, &conf)
            }),
        ),
        (
            "verify @digest",
            Box::new(|b: &Bench, h: &str| b.verify_cmd(h, true)),
        ),
        (
            "verify :1",
            Box::new(|b: &Bench, h: &str| b.verify_cmd(h, false)),
        ),
    ];
    let rtt_ms = ms(RTT);
    println!();
    println!("## Bootstrap latency\n");
    println!(
        "Wall time, median of {RUNS} runs (fresh prefix for each install), direct and through \
         `Proxy::with_rtt(registry, {rtt_ms:.0} ms)` (each direction delayed {:.0} ms), runs \
         alternating so that machine load hits both alike. Δ/RTT = (delayed − direct) / \
         {rtt_ms:.0} ms estimates the round trips on the critical path. The proxy accepts \
         connections locally, so TCP handshakes are NOT delayed: the estimate counts HTTP \
         exchanges only. On a real network add one RTT per connection opened on the \
         critical path (two with TLS 1.3).\n",
        rtt_ms / 2.0
    );
    println!("| verb | requests | TCP connections | direct ms (min–max) | +{rtt_ms:.0} ms RTT ms (min–max) | Δ / RTT | request rounds (timeline) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let tl = TimelineProxy::start(&host, RTT);
    let tl_addr = tl.addr.clone();
    let mut timelines = Vec::new();
    for (name, make) in &cases {
        let proxy = Proxy::with_rtt(&host, RTT);
        let paddr = proxy.addr().to_string();
        let (mut direct, mut delayed, mut conns, mut reqs) = (vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            let before = b.reg.requests().len();
            direct.push(ms(timed(&mut make(&b, &host)).0));
            reqs.push(b.reg.requests().len() - before);
            let c0 = proxy.connections();
            delayed.push(ms(timed(&mut make(&b, &paddr)).0));
            sleep(Duration::from_millis(20));
            conns.push(proxy.connections() - c0);
        }
        reqs.sort();
        conns.sort();
        let (d, x) = (lat(direct), lat(delayed));
        let (rounds, _) = {
            // printed after the table
            let mut out = Vec::new();
            let r = capture_timeline(&mut out, name, &mut make(&b, &tl_addr), &tl);
            timelines.push(out);
            r
        };
        println!(
            "| {name} | {} | {} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:.1} | {rounds} |",
            reqs[RUNS / 2],
            conns[RUNS / 2],
            d.median,
            d.min,
            d.max,
            x.median,
            x.min,
            x.max,
            (x.median - d.median) / rtt_ms,
        );
    }
    println!();
    println!(
        "Request rounds: from one run through a recording proxy with the same {rtt_ms:.0} ms RTT; \
         a round is a set of requests sent within half an RTT of each other (concurrent), \
         each round waits for the previous one. Timelines (t = ms since kplug was started):\n"
    );
    println!("```");
    for t in timelines {
        print!("{}", String::from_utf8(t).unwrap());
    }
    println!("```");
    println!("\nload average at the end: {}", loadavg());
    drop(p1);
    drop(p2);
}
