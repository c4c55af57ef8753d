//! `kplug --version`: the commit and the build date, read from git when the source is a
//! git checkout, "unknown" otherwise (a source tarball, a vendored copy). SOURCE_DATE_EPOCH
//! (reproducible builds) sets the date.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let date = match std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(t) => chrono::DateTime::from_timestamp(t, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    };
    println!("cargo:rustc-env=KPLUG_COMMIT={commit}");
    println!(
        "cargo:rustc-env=KPLUG_BUILD_DATE={}",
        date.format("%Y-%m-%d")
    );
    // Re-run when HEAD moves (not on every edit: the date is the day of that build).
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let mut watched = vec!["HEAD".to_string(), "logs/HEAD".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for rel in &watched {
        if let Some(p) = git(&["rev-parse", "--git-path", rel]) {
            if PathBuf::from(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
