//! Pulls through registry mirrors configured in registries.conf: order, each fallback
//! trigger, pull-from-mirror, --no-fallback, signatures found where the artifact was.

mod common;

use std::path::Path;

use common::fixtures::*;
use common::*;

/// kplug's own requests (not a cache's) that reached `reg`.
fn kplug_requests(reg: &mut Registry) -> Vec<String> {
    reg.access_log()
        .into_iter()
        .filter(|e| e.user_agent.starts_with("kplug/"))
        .map(|e| format!("{} {} {}", e.method, e.path, e.status))
        .collect()
}

fn conf(dir: &Path, upstream: &str, mirrors: &[(&str, &str)], extra: &str) -> String {
    let mut s = format!(
        "[[registry]]\nprefix = \"{upstream}/kong\"\nlocation = \"{upstream}/kong\"\n{extra}\n"
    );
    for (loc, mode) in mirrors {
        s += &format!(
            "[[registry.mirror]]\nlocation = \"{loc}/kong\"\npull-from-mirror = \"{mode}\"\n"
        );
    }
    let p = dir.join(format!("registries-{}.conf", s.len()));
    std::fs::write(&p, s).unwrap();
    p.display().to_string()
}

#[test]
fn mirrors_in_order_with_every_fallback_trigger() {
    let mut up = Registry::start(Variant::Anonymous);
    let mirror = Registry::start(Variant::Anonymous);
    let fp = FaultProxy::start(&mirror.host());
    let env = Env::new();
    let home = &env.home;
    let tree = write_plugin(env.dir(), "hello", "1.0.0", "m");
    let pinned = push(home, &tree, &format!("{}/kong/hello:1", up.host()));
    sign(home, &env.key, &pinned);
    // The mirror holds the artifact, not its signature.
    run_ok(home.kplug().args([
        "copy",
        "--no-signatures",
        &pinned,
        &format!("{}/kong/hello:1", mirror.host()),
    ]));
    let r = format!("{}/kong/hello:1", up.host());
    let refused = refused_addr();
    let all = conf(
        env.dir(),
        &up.host(),
        &[(&refused, "all"), (fp.addr(), "all")],
        "",
    );
    let pull = |conf: &str, extra: &[&str]| {
        let mut c = home.kplug();
        c.current_dir(env.dir())
            .args([
                "--registries-conf",
                conf,
                "--json",
                "-v",
                "pull",
                &r,
                "-o",
                "got.tgz",
            ])
            .args(extra);
        c
    };

    // In order: the refused mirror, then the working one; upstream never asked.
    let before = kplug_requests(&mut up).len();
    let out = run_ok(&mut pull(&all, &[]));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        j["source"],
        format!("mirror {}/kong/hello", fp.addr()),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(&refused), "{}", stderr(&out));
    assert_eq!(kplug_requests(&mut up).len(), before);

    // Signature: not on the mirror, found upstream; the artifact still from the mirror.
    let key = env.key.public.display().to_string();
    let out = run_ok(home.kplug().args([
        "--registries-conf",
        &all,
        "-v",
        "--json",
        "verify",
        "--key",
        &key,
        &r,
    ]));
    let got = kplug_requests(&mut up)[before..].to_vec();
    assert!(
        got.iter()
            .all(|q| q.contains(".sig") || q.contains("/blobs/")),
        "{got:?}\n{}",
        stderr(&out)
    );
    assert!(!got.is_empty());
    // Issue 11.13: cosign's array, kplug's summary says which source served what and
    // which signature format verified.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v[0]["kplug"];
    assert_eq!(
        s["source"],
        format!("mirror {}/kong/hello", fp.addr()),
        "{v}"
    );
    assert_eq!(
        s["signatureSource"],
        format!("primary {}/kong/hello", up.host()),
        "{v}"
    );
    assert_eq!(s["kind"], "cosign-sig", "{v}");

    // Each trigger on the mirror hands over to the primary.
    for (fault, extra) in [
        (Fault::Status(500), vec![]),
        (Fault::Status(404), vec![]),
        (Fault::Status(401), vec![]),
        (Fault::Status(403), vec![]),
        (
            Fault::stall(std::time::Duration::from_secs(3)),
            vec!["--timeout", "300ms"],
        ),
    ] {
        let name = format!("{fault:?}");
        fp.add(Rule::new(fault).method("GET").path("/manifests/1$"));
        let out = run_ok(&mut pull(&all, &extra));
        let err = stderr(&out);
        let from_primary = format!(": from primary {}/kong/hello", up.host());
        assert!(
            err.lines()
                .any(|l| l.contains("manifest sha256:") && l.ends_with(&from_primary)),
            "{name}: {err}"
        );
        fp.clear_rules();
    }

    // --no-fallback: the mirror fails, upstream is not asked, nothing is written.
    fp.add(Rule::new(Fault::Status(500)).method("GET"));
    let before = kplug_requests(&mut up).len();
    std::fs::remove_file(env.dir().join("got.tgz")).unwrap();
    let out = run_fail(&mut pull(&all, &["--no-fallback"]), 1);
    assert!(stderr(&out).contains("tried"), "{}", stderr(&out));
    assert!(!env.dir().join("got.tgz").exists());
    assert_eq!(kplug_requests(&mut up).len(), before);
    fp.clear_rules();

    // digest-only: the tag is resolved upstream, the content comes from the mirror…
    let digest_only = conf(env.dir(), &up.host(), &[(fp.addr(), "digest-only")], "");
    let tags_before = fp.request_count("GET", "/manifests/1");
    let out = run_ok(&mut pull(&digest_only, &[]));
    assert_eq!(
        fp.request_count("GET", "/manifests/1"),
        tags_before,
        "the mirror was asked for a tag"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["source"], format!("mirror {}/kong/hello", fp.addr()));
    // …and without fallback a tag cannot be pulled at all.
    let out = run_fail(&mut pull(&digest_only, &["--no-fallback"]), 2);
    assert!(stderr(&out).contains("digest"), "{}", stderr(&out));
}
