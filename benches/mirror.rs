//! Bulk mirror benchmark (`cargo bench --bench mirror`): 100 small signed artifacts
//! (10 repositories × 10 tags) registry → registry with `kplug mirror`, next to
//! `skopeo sync --src yaml --dest docker` of the same 100 tags. skopeo carries no cosign
//! signatures, so it does strictly less work; `kplug mirror --no-signatures` is the
//! like-for-like row. Each tool writes into a fresh registry, then runs a second time.
//!
//! Figures only: nothing here asserts a timing. See docs/performance.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

const REPOS: usize = 10;
const TAGS: usize = 10;

/// Completed blob uploads in a registry's access log.
fn uploads(reg: &mut Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.status == 201)
        .count()
}

struct Row {
    what: String,
    wall: Duration,
    cpu: Duration,
    requests: usize,
    uploads: usize,
}

/// User + system CPU time of all waited-for children so far.
fn children_cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Wall and CPU time of one run of `cmd`.
fn timed(cmd: &mut Command) -> (Duration, Duration) {
    let c0 = children_cpu();
    let t = Instant::now();
    run_ok(cmd);
    (t.elapsed(), children_cpu() - c0)
}

/// Runs `cmd` twice against `dst`, recording wall time, destination requests and uploads.
fn twice(rows: &mut Vec<Row>, name: &str, dst: &mut Registry, mut cmd: impl FnMut() -> Command) {
    for run in ["1st", "2nd"] {
        let (r0, u0) = (dst.requests().len(), uploads(dst));
        let (wall, cpu) = timed(&mut cmd());
        rows.push(Row {
            what: format!("{name} ({run} run)"),
            wall,
            cpu,
            requests: dst.requests().len() - r0,
            uploads: uploads(dst) - u0,
        });
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let src = Registry::start(Variant::Anonymous);
    let home = Home::new();
    let work = tempfile::Builder::new()
        .prefix("kplug-bench-mirror-")
        .tempdir()
        .unwrap();
    let key = KeyPair::generate(&home, work.path(), "cosign");
    eprintln!("pushing and signing {} artifacts…", REPOS * TAGS);
    for r in 0..REPOS {
        for t in 0..TAGS {
            let dir = write_plugin(
                &work.path().join(format!("src-{r}-{t}")),
                &format!("p{r}"),
                &format!("1.{t}.0"),
                &format!("p{r} {t}"),
            );
            run_ok(
                home.kplug()
                    .env("COSIGN_PASSWORD", PASSWORD)
                    .args(["push", "--sign", "--key"])
                    .arg(&key.key)
                    .arg(&dir)
                    .arg(format!("{}/plugins/p{r}:1.{t}.0", src.host())),
            );
        }
    }
    let skopeo = require_bin("skopeo", "skopeo");
    let mut tables = Vec::new();
    for rtt in [None, Some(Duration::from_millis(10))] {
        // The source is reached through a delaying proxy too when there is an RTT.
        let src_proxy = rtt.map(|d| Proxy::with_rtt(&src.host(), d));
        let src_host = src_proxy
            .as_ref()
            .map(|p| p.addr().to_string())
            .unwrap_or_else(|| src.host());
        let manifest = work.path().join("mirror.yaml");
        let mut yaml = String::from("all-tags: true\nrepositories:\n");
        let mut sync = format!("{src_host}:\n  tls-verify: false\n  images:\n");
        for r in 0..REPOS {
            yaml.push_str(&format!("  - source: {src_host}/plugins/p{r}\n"));
            let tags: Vec<String> = (0..TAGS).map(|t| format!("\"1.{t}.0\"")).collect();
            sync.push_str(&format!("    plugins/p{r}: [{}]\n", tags.join(", ")));
        }
        std::fs::write(&manifest, yaml).unwrap();
        let sync_file = work.path().join("sync.yaml");
        std::fs::write(&sync_file, sync).unwrap();

        let mut rows = Vec::new();
        let kplug_variants: &[(&str, &[&str])] = match rtt {
            None => &[
                ("kplug mirror (signatures, concurrency 4)", &[]),
                ("kplug mirror --no-signatures", &["--no-signatures"]),
                ("kplug mirror --concurrency 1", &["--concurrency", "1"]),
                ("kplug mirror --concurrency 8", &["--concurrency", "8"]),
            ],
            Some(_) => &[
                ("kplug mirror (signatures, concurrency 4)", &[]),
                ("kplug mirror --no-signatures", &["--no-signatures"]),
                ("kplug mirror --concurrency 8", &["--concurrency", "8"]),
            ],
        };
        // A fresh destination registry, behind the delaying proxy when there is an RTT.
        let fresh = || {
            let d = Registry::start(Variant::Anonymous);
            let p = rtt.map(|r| Proxy::with_rtt(&d.host(), r));
            let host = p.as_ref().map(|p| p.addr().to_string());
            let to = format!("{}/mirror", host.unwrap_or_else(|| d.host()));
            (d, p, to)
        };
        for (name, extra) in kplug_variants {
            let (mut d, _p, to) = fresh();
            twice(&mut rows, name, &mut d, || {
                let mut c = home.kplug();
                c.args(["mirror", "-q"])
                    .args(*extra)
                    .arg("--manifest")
                    .arg(&manifest)
                    .args(["--to", &to]);
                c
            });
        }
        let (mut d, _p, to) = fresh();
        twice(&mut rows, "skopeo sync (no signatures)", &mut d, || {
            let mut c = Command::new(&skopeo);
            c.args([
                "sync",
                "--src",
                "yaml",
                "--dest",
                "docker",
                "--dest-tls-verify=false",
            ])
            .arg(&sync_file)
            .arg(&to);
            c
        });
        tables.push((rtt, rows));
    }

    println!(
        "\n{} artifacts ({REPOS} repositories × {TAGS} tags), each signed once; {} cores",
        REPOS * TAGS,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for (rtt, rows) in &tables {
        match rtt {
            None => println!("\ndirect (loopback):"),
            Some(d) => println!("\n{} ms RTT to both registries:", d.as_millis()),
        }
        println!(
            "{:<48} {:>9} {:>9} {:>13} {:>13}",
            "run", "wall", "CPU", "dst requests", "blob uploads"
        );
        for r in rows {
            println!(
                "{:<48} {:>7.2} s {:>7.2} s {:>13} {:>13}",
                r.what,
                r.wall.as_secs_f64(),
                r.cpu.as_secs_f64(),
                r.requests,
                r.uploads
            );
        }
        let k = rows[0].wall.as_secs_f64();
        let kn = rows[2].wall.as_secs_f64();
        let s = rows[rows.len() - 2].wall.as_secs_f64();
        println!(
            "skopeo / kplug wall, first run: {:.1}× (kplug with signatures), {:.1}× (both without)",
            s / k,
            s / kn
        );
    }
}
