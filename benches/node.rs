//! Node benchmarks against a real local registry (`cargo bench --bench node`).
//!
//! 1. Requests per verb: the registry access-log lines each kplug verb causes,
//!    by method and kind, and their order.
//! 2. Bootstrap latency: `install` / `verify` wall time direct and through a
//!    TCP proxy adding a round-trip time, and the number of sequential round
//!    trips this implies; key generation and `sign` (scrypt) wall time.
//!
//! Figures only: nothing here asserts a timing. See docs/performance.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let t = Instant::now();
    let out = run_ok(cmd);
    (t.elapsed(), out)
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
    /// A fresh, empty install prefix and a kong.conf path inside it.
    fn prefix(&self) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::Builder::new()
            .prefix("prefix-")
            .tempdir_in(self.work.path())
            .unwrap();
        let conf = d.path().join("kong.conf");
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
    reqs: Vec<LoggedRequest>,
}

/// Runs `cmd` and returns the registry requests it caused.
fn measure(reg: &mut Registry, verb: &str, cmd: &mut Command) -> (Row, std::process::Output) {
    let before = reg.requests().len();
    let (wall, out) = timed(cmd);
    let reqs = reg.requests().split_off(before);
    (
        Row {
            verb: verb.to_string(),
            wall,
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
    let mut header = format!("| {:<22} |", "verb");
    let mut rule = format!("|{}|", "-".repeat(24));
    for k in &used {
        header += &format!(" {k:>9} |");
        rule += &format!("{}:|", "-".repeat(10));
    }
    header += " total |   wall ms |";
    rule += "------:|----------:|";
    println!("{header}\n{rule}");
    for r in rows {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &r.reqs {
            *counts.entry(kind(q)).or_default() += 1;
        }
        let mut line = format!("| {:<22} |", r.verb);
        for k in &used {
            let n = counts.get(k).copied().unwrap_or(0);
            line += &format!(" {:>9} |", if n == 0 { "·".into() } else { n.to_string() });
        }
        line += &format!(" {:>5} | {:>9.1} |", r.reqs.len(), ms(r.wall));
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

/// Median wall time over [`RUNS`], the requests and proxy connections of one run.
struct Lat {
    median: f64,
    min: f64,
    max: f64,
    requests: usize,
    connections: Option<u64>,
}

fn latency(b: &mut Bench, proxy: Option<&Proxy>, mut make: impl FnMut(&Bench) -> Command) -> Lat {
    let mut walls = Vec::new();
    let mut requests = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..RUNS {
        let before = b.reg.requests().len();
        let c0 = proxy.map(|p| p.connections());
        let mut cmd = make(b);
        let (wall, _) = timed(&mut cmd);
        walls.push(ms(wall));
        // let the proxy's accept thread count a late connection, if any
        sleep(Duration::from_millis(20));
        if let (Some(p), Some(c0)) = (proxy, c0) {
            conns.push(p.connections() - c0);
        }
        requests.push(b.reg.requests().len() - before);
    }
    let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
    let max = walls.iter().copied().fold(0.0, f64::max);
    requests.sort();
    conns.sort();
    Lat {
        median: median(walls),
        min,
        max,
        requests: requests[requests.len() / 2],
        connections: conns.get(conns.len() / 2).copied(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special.
    // Either way there is nothing to filter: always run everything.
    let quick = std::env::args().any(|a| a == "--test");
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
    println!("# kplug node benchmarks ({machine}; registry: docker-registry on {host}, anonymous, plain HTTP)\n");

    // ---- keys and packing (not registry traffic) -------------------------------------
    let mut keygen = Vec::new();
    for i in 0..if quick { 1 } else { RUNS } {
        let dir = b.path(&format!("keys{i}"));
        std::fs::create_dir(&dir).unwrap();
        let (wall, _) = timed(
            b.kplug()
                .current_dir(&dir)
                .env("COSIGN_PASSWORD", "x")
                .arg("generate-key-pair"),
        );
        keygen.push(ms(wall));
    }
    for f in ["cosign.key", "cosign.pub"] {
        std::fs::copy(b.path("keys0").join(f), b.path(f)).unwrap();
    }
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-plugin");
    run_ok(b.kplug().arg("pack").arg(&hello).arg("-o").arg("p.tgz"));
    let start = {
        let mut v = Vec::new();
        for _ in 0..RUNS {
            v.push(ms(timed(b.kplug().arg("--version")).0));
        }
        median(v)
    };

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
    let (sign_wall, sign_reqs) = (row.wall, row.reqs.len());
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
    let mut signs = vec![ms(sign_wall)];
    for i in 1..if quick { 1 } else { RUNS } {
        let out = run_ok(
            b.kplug()
                .arg("push")
                .arg("p.tgz")
                .arg("-a")
                .arg(format!("run={i}"))
                .arg(format!("{host}/bench/sign{i}:1")),
        );
        let pinned = stdout(&out).trim().to_string();
        let mut cmd = b.kplug();
        cmd.env("COSIGN_PASSWORD", "x")
            .arg("sign")
            .arg("--key")
            .arg("cosign.key")
            .arg(&pinned);
        signs.push(ms(timed(&mut cmd).0));
    }
    let mut v = Vec::new();
    for _ in 0..RUNS {
        let mut cmd = b.verify_cmd(&host, true);
        v.push(ms(timed(&mut cmd).0));
    }
    let verify_direct = median(v);
    println!();
    println!(
        "## Key handling (wall ms, median of {} runs)\n",
        signs.len()
    );
    println!("| command | median ms | min ms | max ms |");
    println!("|---|---:|---:|---:|");
    let stats = |v: &[f64]| {
        (
            median(v.to_vec()),
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    let (m, lo, hi) = stats(&keygen);
    println!("| `generate-key-pair` (scrypt N=65536 encrypt + P-256 keygen) | {m:.1} | {lo:.1} | {hi:.1} |");
    let (m, lo, hi) = stats(&signs);
    println!(
        "| `sign @digest` (scrypt decrypt + {sign_reqs} requests) | {m:.1} | {lo:.1} | {hi:.1} |"
    );
    println!("| `verify @digest` (no scrypt; for comparison) | {verify_direct:.1} | | |");
    println!("| `kplug --version` (process start) | {start:.1} | | |");
    println!();
    println!(
        "sign − verify ≈ {:.1} ms: key decryption (scrypt) plus signing and the upload requests.",
        median(signs.clone()) - verify_direct
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
        "Wall time, median of {RUNS} runs (fresh prefix for each install). \"+{rtt_ms:.0} ms RTT\" goes through a \
         loopback TCP proxy delaying each direction by {:.0} ms. Sequential round trips ≈ \
         (delayed − direct) / {rtt_ms:.0} ms, TCP connection setup included (each new \
         connection costs one RTT before its first request).\n",
        rtt_ms / 2.0
    );
    println!("| verb | requests | direct ms (min–max) | +{rtt_ms:.0} ms RTT ms (min–max) | Δ ms | sequential RTs | TCP connections |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, make) in &cases {
        let direct = latency(&mut b, None, |b| make(b, &host));
        let proxy = Proxy::with_rtt(&host, RTT);
        let paddr = proxy.addr().to_string();
        let delayed = latency(&mut b, Some(&proxy), |b| make(b, &paddr));
        let delta = delayed.median - direct.median;
        println!(
            "| {name} | {} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:.1} | {:.1} | {} |",
            direct.requests,
            direct.median,
            direct.min,
            direct.max,
            delayed.median,
            delayed.min,
            delayed.max,
            delta,
            delta / rtt_ms,
            delayed.connections.unwrap_or(0),
        );
    }
    println!();
    println!(
        "sequential RTs = round trips on the critical path, counting each TCP handshake as one; \
         RTs − connections = sequential HTTP request/response exchanges."
    );
    drop(p1);
    drop(p2);
}
