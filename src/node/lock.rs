//! The prefix lock (who holds it, how long to wait) and staging directories that a
//! later run can tell apart from live ones.
//!
//! Both use `flock(2)`: the kernel drops the lock when its holder dies, so a lock that
//! can be taken belongs to nobody. A staging directory is created under a name recovery
//! ignores, locked, and only then renamed to `.staging-*`: recovery removes any
//! `.staging-*` it can lock, and never one a live run is using.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::error::Kind;

/// Staging directories: live ones are locked by their run.
pub const STAGING_PREFIX: &str = ".staging-";
/// A staging directory between its creation and its lock (microseconds).
const NEW_PREFIX: &str = ".kplug-new-";
/// Temp files of atomic writes (`tree::AtomicFile`); `.tmp` is tempfile's default, which
/// older kplug versions left behind.
const TMP_PREFIXES: [&str; 2] = [".kplug-tmp", ".tmp"];

/// Take the exclusive lock on `path` and write our pid into it. When another process
/// holds it, say who and wait, at most `timeout` (`None`: as long as it takes).
pub fn acquire(path: &Path, timeout: Option<Duration>) -> Result<File> {
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => wait(&file, path, timeout)?,
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    file.set_len(0)?;
    use std::os::unix::fs::FileExt;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
    file.flush()?;
    Ok(file)
}

fn wait(file: &File, path: &Path, timeout: Option<Duration>) -> Result<()> {
    let holder = holder(path);
    crate::progress::note(format!(
        "waiting for the lock on {}, held by {holder}{}",
        path.display(),
        match timeout {
            Some(t) => format!(" (giving up after {}s: --lock-timeout)", t.as_secs_f64()),
            None => " (give --lock-timeout SECS to stop waiting)".to_string(),
        }
    ));
    let start = Instant::now();
    loop {
        crate::interrupt::check()?;
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            crate::bail_kind!(
                Kind::Other,
                "gave up after {:.1}s waiting for the lock on {}, held by {}; another kplug command is working on this prefix: wait for it, or stop it",
                start.elapsed().as_secs_f64(),
                path.display(),
                holder
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// "pid N" from the lock file, or a neutral phrase when it holds no pid.
fn holder(path: &Path) -> String {
    let mut s = String::new();
    let _ = File::open(path).and_then(|f| f.take(32).read_to_string(&mut s));
    match s.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "another process".to_string(),
    }
}

/// A directory to extract into, locked while this value lives and removed on drop.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    _lock: File,
}

impl Staging {
    /// Create `<dir>/.staging-XXXXXX`, locked before it gets a name recovery looks at.
    pub fn create(dir: &Path) -> Result<Staging> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let fresh = tempfile::Builder::new()
            .prefix(NEW_PREFIX)
            .tempdir_in(dir)
            .with_context(|| format!("creating a staging directory in {}", dir.display()))?;
        let lock = File::open(fresh.path())?;
        lock.lock()?;
        let fresh = fresh.keep();
        let suffix = fresh
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(NEW_PREFIX))
            .unwrap_or_default()
            .to_string();
        let path = dir.join(format!("{STAGING_PREFIX}{suffix}"));
        if let Err(e) = fs::rename(&fresh, &path) {
            let _ = fs::remove_dir_all(&fresh);
            return Err(e).with_context(|| format!("creating {}", path.display()));
        }
        Ok(Staging { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Remove what dead runs left in the state dir `dir`: unlocked staging directories and
/// temp files. Only with the prefix lock held (atomic writes in `dir` happen under it).
pub fn remove_leftovers(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for ent in entries {
        let ent = ent?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        let p = ent.path();
        let meta = fs::symlink_metadata(&p)?;
        let stale = if name.starts_with(STAGING_PREFIX) && meta.is_dir() {
            unlocked(&p)
        } else if name.starts_with(NEW_PREFIX) && meta.is_dir() {
            // Left only by a crash between mkdir and flock; give a live run time to rename.
            unlocked(&p)
                && meta
                    .modified()?
                    .elapsed()
                    .is_ok_and(|a| a > Duration::from_secs(3600))
        } else {
            meta.is_file() && TMP_PREFIXES.iter().any(|t| name.starts_with(t))
        };
        if stale {
            let r = match meta.is_dir() {
                true => fs::remove_dir_all(&p),
                false => fs::remove_file(&p),
            };
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", p.display()))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn unlocked(dir: &Path) -> bool {
    File::open(dir).is_ok_and(|f| f.try_lock().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_staging_survives_and_dead_leftovers_go() {
        let d = tempfile::tempdir().unwrap();
        let live = Staging::create(d.path()).unwrap();
        fs::write(live.path().join("blob"), b"x").unwrap();
        let dead = d.path().join(".staging-dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("blob"), b"x").unwrap();
        for f in [".kplug-tmpAbC", ".tmpXyZ"] {
            fs::write(d.path().join(f), b"half a journal").unwrap();
        }
        fs::write(d.path().join("hello.json"), b"{}").unwrap();
        remove_leftovers(d.path()).unwrap();
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let live_name = live
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(left, vec![live_name, "hello.json".to_string()]);
        let p = live.path().to_path_buf();
        drop(live);
        assert!(!p.exists());
    }

    #[test]
    fn lock_says_who_holds_it_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("lock");
        let held = acquire(&path, None).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        let t = Instant::now();
        let e = acquire(&path, Some(Duration::from_millis(200))).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(200));
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&format!("held by pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        acquire(&path, Some(Duration::ZERO)).unwrap();
    }
}
