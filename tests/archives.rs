//! Local archives and layouts as sources: which tags they answer.

mod common;

use std::path::Path;

use common::fixtures::*;
use common::*;

/// A crane tarball (`crane pull REF out.tar`) of the cosign-style artifact pushed at
/// `repo:tag`: config as `sha256:<hex>`, layer as `<hex>.tar.gz`, `manifest.json` with the
/// given RepoTags.
fn crane_tarball(reg: &Registry, repo: &str, tag: &str, repo_tags: &[&str], out: &Path) {
    let (_, body, _) = get_manifest(reg, repo, tag);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let ld = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let cfg = get_blob(reg, repo, &cd);
    let layer = get_blob(reg, repo, &ld);
    let lname = format!("{}.tar.gz", ld.trim_start_matches("sha256:"));
    let mj =
        serde_json::json!([{"Config": cd, "RepoTags": repo_tags, "Layers": [lname]}]).to_string();
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (n, data) in [
        (cd.as_str(), &cfg[..]),
        (lname.as_str(), &layer[..]),
        ("manifest.json", mj.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, n, data).unwrap();
    }
    b.finish().unwrap();
}

/// Issue 11.1: a docker-archive answered every tag with its one image, so the `.sig`,
/// `.att` and referrers lookups "found" the plugin itself: copy wrote the plugin under
/// `sha256-<hex>.sig`/`.att`, and verify said "no signature annotation" (12) instead of
/// "no signatures" (11).
#[test]
fn docker_archive_answers_only_its_own_tags() {
    let env = Env::new();
    let pinned = push(
        &env.home,
        &hello_example(),
        &format!("{}/plugins/hello:0.1.0", env.reg.host()),
    );
    let digest = digest_of(&pinned);
    for (name, tags) in [
        ("tagged", &["reg.example/plugins/hello:0.1.0"][..]),
        ("untagged", &[][..]),
    ] {
        let crane = env.dir().join(format!("{name}.tar"));
        crane_tarball(&env.reg, "plugins/hello", "0.1.0", tags, &crane);
        let src = format!("docker-archive:{}", crane.display());
        let dst = format!("{}/fromcrane/{name}:1.2.3", env.reg.host());
        run_ok(env.home.kplug().arg("copy").arg(&src).arg(&dst));
        let (code, _, _) = get_manifest(&env.reg, &format!("fromcrane/{name}"), "1.2.3");
        assert_eq!(code, 200, "the artifact itself arrives");
        for t in [
            sig_tag(&digest),
            sig_tag(&digest).replace(".sig", ".att"),
            digest.replace(':', "-"),
        ] {
            let (code, _, _) = get_manifest(&env.reg, &format!("fromcrane/{name}"), &t);
            assert_eq!(code, 404, "{name}: nothing written under {t}");
        }
        let out = run_fail(
            env.home
                .kplug()
                .arg("verify")
                .arg("--key")
                .arg(&env.key.public)
                .arg(&src),
            11,
        );
        assert!(
            stderr(&out).contains("no signatures found"),
            "{}",
            stderr(&out)
        );
    }
}
