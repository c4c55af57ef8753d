//! Plugin state on a node: atomic install swap, receipts, lock, rollback, uninstall, list.
//!
//! Under a Lua prefix `<root>`, Kong loads `<root>/kong/plugins/<name>/`. kplug keeps its
//! state in `<root>/kong/plugins/.kplug/`: `<name>.json` receipts, `backup/<name>` and
//! `backup/<name>.json` (the previous version), `adopted/<name>` (the original files of
//! a directory kplug took over with `--adopt`, put back by uninstall), `.staging-*` dirs,
//! `lock` (holding the pid of its holder), and during a swap `.journal` + `.incoming`.
//! Plugin names never contain `.`, so none of these collide with a plugin or its receipt.
//!
//! kplug only replaces or deletes what it installed: a plugin directory without a receipt
//! is refused unless adopted, and every receipt path stays inside its plugin directory
//! (checked when a receipt is read and when it is written).
//!
//! Swap protocol (the lock is held): move the staged tree to `.incoming`, drop the old
//! backup, write `.journal`, move `<name>` to `backup/<name>`, move `.incoming` to
//! `<name>`, then swap the receipts and delete the journal. [`recover`] reads a leftover
//! journal: while `.incoming` exists the new tree is not in place, so the old one is put
//! back; once it is gone the new tree is in place and only the receipts are finished.
//! An adopted original whose plugin has neither receipt nor directory (a crash between
//! adopting and swapping, or during uninstall) is put back too.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{fail, Kind};
use crate::progress::escape;
use crate::tree::{hash_tree, write_atomic, FileEntry};

pub use super::lock::Staging;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub root: PathBuf,
}

impl Prefix {
    pub fn new(root: impl Into<PathBuf>) -> Prefix {
        Prefix { root: root.into() }
    }
    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("kong/plugins")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.plugins_dir().join(".kplug")
    }
    pub fn plugin_dir(&self, name: &str) -> PathBuf {
        self.plugins_dir().join(name)
    }
    /// Where the original files of an adopted plugin directory are kept.
    pub fn adopted_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("adopted").join(name)
    }
    /// The swap journal; present only while a swap is under way or was interrupted.
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir().join(".journal")
    }
    pub(crate) fn receipt_path(&self, name: &str) -> PathBuf {
        self.state_dir().join(format!("{name}.json"))
    }
    fn backup_dir(&self) -> PathBuf {
        self.state_dir().join("backup")
    }
    fn incoming(&self) -> PathBuf {
        self.state_dir().join(".incoming")
    }
}

/// What kplug installed, kept next to the plugin for `list`, `uninstall` and `rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub name: String,
    pub version: Option<String>,
    pub reference: String,
    /// Manifest digest of the artifact.
    pub digest: String,
    /// Key fingerprint; `None` when installed with `--insecure-skip-verify`.
    pub signer: Option<String>,
    /// RFC 3339.
    pub verified_at: Option<String>,
    /// RFC 3339.
    pub installed_at: String,
    pub files: Vec<FileEntry>,
    /// What the verification established beyond the signer; `None` for receipts written
    /// before kplug recorded it, and for unverified installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<Trusted>,
    /// kplug took over a directory it had not created (`install --adopt`); its original
    /// files are in `.kplug/adopted/<name>` until uninstall puts them back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub adopted: bool,
    /// The other plugins installed from the same artifact (a rock holding several): a
    /// re-run is "already installed" only while they are too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub siblings: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The policy facts a verification established, so that a re-run skips verifying only
/// when what it asks for is no stronger than what was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trusted {
    /// Claims the signature carried (`-a k=v` can only be satisfied by these).
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// A transparency-log entry (Rekor SET) was verified.
    #[serde(default)]
    pub tlog: bool,
    /// The signed `docker-reference` named the repository installed from.
    #[serde(default)]
    pub identity: bool,
}

impl Receipt {
    /// The first path that could leave the plugin directory, if any.
    fn unsafe_path(&self) -> Option<&str> {
        self.files
            .iter()
            .map(|f| f.path.as_str())
            .find(|p| !safe_rel_path(p))
    }
}

/// A path relative to a plugin directory that cannot leave it: `/`-separated plain names
/// (no empty, `.` or `..` part, no leading `/`), no backslash, no control character.
pub fn safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The current time in RFC 3339 (UTC, seconds), for receipt timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The crate's one plugin-name rule ([`crate::node::names`]); names also become
/// directory and receipt file names here.
pub fn check_name(name: &str) -> Result<()> {
    crate::node::names::check_plugin_name(name)
}

/// Exclusive lock on a prefix; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Take the prefix lock (waiting as long as it takes), then [`recover`].
pub fn lock(prefix: &Prefix) -> Result<LockGuard> {
    lock_wait(prefix, None)
}

/// Take the prefix lock, waiting at most `timeout` and saying which pid holds it, then
/// [`recover`] any interrupted swap and remove what dead runs left.
pub fn lock_wait(prefix: &Prefix, timeout: Option<Duration>) -> Result<LockGuard> {
    let dir = prefix.state_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = super::lock::acquire(&dir.join("lock"), timeout)?;
    recover(prefix)?;
    Ok(LockGuard { _file: file })
}

/// A fresh directory to extract into, on the same filesystem as the plugins; locked while
/// it lives, so that the next run's [`recover`] removes it only once its run is gone.
pub fn staging_dir(prefix: &Prefix) -> Result<Staging> {
    Staging::create(&prefix.state_dir())
}

pub fn read_receipt(prefix: &Prefix, name: &str) -> Result<Option<Receipt>> {
    check_name(name)?;
    let path = prefix.receipt_path(name);
    let r = read_receipt_at(&path)?;
    if let Some(r) = &r {
        if r.name != name {
            crate::bail_kind!(
                Kind::Integrity,
                "receipt {} is for plugin \"{}\", not {name}; it was altered: check {} by hand, then delete the receipt",
                path.display(),
                escape(&r.name),
                prefix.plugin_dir(name).display()
            );
        }
    }
    Ok(r)
}

fn read_receipt_at(path: &Path) -> Result<Option<Receipt>> {
    let bytes = match crate::tree::read_capped(path, crate::tree::MAX_RECORD_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let r: Receipt = serde_json::from_slice(&bytes).map_err(|e| {
        fail(
            Kind::Integrity,
            format!("receipt {} is corrupt: {e}", path.display()),
        )
    })?;
    if let Some(p) = r.unsafe_path() {
        crate::bail_kind!(
            Kind::Integrity,
            "receipt {} lists the path \"{}\", which leaves the plugin directory; kplug never writes \
             such a receipt, so it was altered: nothing was read or removed. Check the plugin \
             directory by hand, then delete the receipt",
            path.display(),
            escape(p)
        );
    }
    Ok(Some(r))
}

fn write_receipt(path: &Path, r: &Receipt) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = r.unsafe_path() {
        crate::bail_kind!(
            Kind::Unsafe,
            "refusing to record the path \"{}\" for plugin {}: it could leave the plugin directory",
            escape(p),
            r.name
        );
    }
    let mut json = serde_json::to_vec_pretty(r)?;
    json.push(b'\n');
    write_atomic(path, &json)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// `dir/rel`, if every directory on the way is a real directory (not a symlink), so that
/// nothing reached through it lies outside `dir`.
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    if !safe_rel_path(rel) || !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            _ => return None,
        }
    }
    p.push(parts[parts.len() - 1]);
    Some(p)
}

/// Compare the files under `dir` with `files`: (modified, missing) relative paths.
/// A changed mode counts as modified; so does a path that would be reached through a
/// symlink or leave `dir` (it is never opened).
pub fn verify_files(dir: &Path, files: &[FileEntry]) -> (Vec<String>, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let (mut modified, mut missing) = (Vec::new(), Vec::new());
    for f in files {
        let Some(p) = inside(dir, &f.path) else {
            match fs::symlink_metadata(dir) {
                Err(e) if e.kind() == ErrorKind::NotFound && safe_rel_path(&f.path) => {
                    missing.push(f.path.clone())
                }
                _ => modified.push(f.path.clone()),
            }
            continue;
        };
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == ErrorKind::NotFound => missing.push(f.path.clone()),
            Ok(m)
                if m.is_file()
                    && m.permissions().mode() & 0o7777 == f.mode
                    && crate::digest::sha256_file(&p).ok() == Some((f.sha256.clone(), f.size)) => {}
            _ => modified.push(f.path.clone()),
        }
    }
    (modified, missing)
}

/// How the tree in `dir` differs from `files`, one entry per path: "handler.lua
/// (modified)", "x.lua (missing)", "extra.lua (not in the receipt)". Empty when it matches.
pub fn differences(dir: &Path, files: &[FileEntry]) -> Vec<String> {
    let mut out = differences_of(dir, files);
    let listed: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for p in tree_paths(dir) {
        if !listed.contains(p.as_str()) {
            out.push(format!("{} (not in the receipt)", escape(&p)));
        }
    }
    out
}

/// The listed `files` under `dir` that were modified or are missing, named for a message
/// (what [`differences`] finds, without looking for files the list does not name).
pub fn differences_of(dir: &Path, files: &[FileEntry]) -> Vec<String> {
    let (modified, missing) = verify_files(dir, files);
    modified
        .iter()
        .map(|p| format!("{} (modified)", escape(p)))
        .chain(missing.iter().map(|p| format!("{} (missing)", escape(p))))
        .collect()
}

/// Every non-directory under `dir` (symlinks not followed), relative, `/`-separated.
fn tree_paths(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for ent in rd.flatten() {
            let r = rel.join(ent.file_name());
            match fs::symlink_metadata(ent.path()) {
                Ok(m) if m.is_dir() => stack.push(r),
                _ => out.push(r.to_string_lossy().into_owned()),
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Installed {
        /// The digest of the receipt replaced, if any.
        previous: Option<String>,
        /// How the replaced tree differed from its receipt (it is kept as the backup,
        /// but `rollback` refuses it without `--force`).
        previous_differs: Vec<String>,
        /// Where the original files of a directory kplug took over (`--adopt`) are kept.
        adopted: Option<PathBuf>,
    },
    /// Same digest already installed and intact: nothing done.
    Unchanged,
}

/// What an install may do beyond replacing its own earlier install.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Owner (uid, gid) of the installed files.
    pub owner: Option<(u32, u32)>,
    /// Take over `plugins/<name>` although kplug did not install it, keeping its files
    /// for uninstall to put back.
    pub adopt: bool,
    /// Install under the name of one of Kong's bundled plugins.
    pub allow_bundled_name: bool,
    /// Install an older semver than the receipt's.
    pub allow_downgrade: bool,
}

/// [`install_with`] with only an owner.
pub fn install_dir(
    prefix: &Prefix,
    staged: &Path,
    receipt: Receipt,
    owner: Option<(u32, u32)>,
) -> Result<Outcome> {
    let o = InstallOptions {
        owner,
        ..Default::default()
    };
    install_with(prefix, staged, receipt, &o)
}

/// Install the plugin tree `staged` (a directory inside a [`staging_dir`]) as
/// `receipt.name`. The caller holds the [`lock`].
///
/// Modes are normalised to 0644/0755 and the files chowned to `o.owner` when given;
/// `receipt.files` is replaced by the hashes of what is installed. A directory kplug did
/// not install, a bundled plugin name and a downgrade are refused unless `o` allows them.
pub fn install_with(
    prefix: &Prefix,
    staged: &Path,
    mut receipt: Receipt,
    o: &InstallOptions,
) -> Result<Outcome> {
    let name = receipt.name.clone();
    check_name(&name)?;
    let previous = read_receipt(prefix, &name)?;
    let target = prefix.plugin_dir(&name);
    check_takeover(prefix, &name, previous.is_some(), o)?;
    if let Some(old) = &previous {
        if old.digest == receipt.digest
            && fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir())
            && verify_files(&target, &old.files) == (vec![], vec![])
        {
            record_verification(prefix, old, &receipt)?;
            return Ok(Outcome::Unchanged);
        }
        check_downgrade(old, &receipt, o.allow_downgrade)?;
        receipt.adopted |= old.adopted;
    }
    prepare_tree(staged, o.owner)?;
    receipt.files = hash_tree(staged)?;
    if let Some(p) = receipt.unsafe_path() {
        crate::bail_kind!(
            Kind::Unsafe,
            "the plugin holds a file named \"{}\", which kplug cannot record safely; nothing was installed",
            escape(p)
        );
    }
    let previous_differs = match (&previous, exists(&target)) {
        (Some(old), true) => differences(&target, &old.files),
        _ => Vec::new(),
    };
    let adopted = match previous.is_none() && exists(&target) {
        true => Some(adopt(prefix, &name)?),
        false => None,
    };
    receipt.adopted |= adopted.is_some();
    swap(prefix, &name, staged, Some(receipt))?;
    Ok(Outcome::Installed {
        previous: previous.map(|r| r.digest),
        previous_differs,
        adopted,
    })
}

/// A re-run of an installed digest verified again (its policy asked for more than the
/// receipt recorded): keep what it established, so that the next such run can skip.
/// Also for plugin servers ([`crate::node::external::install`]).
pub(crate) fn record_verification(prefix: &Prefix, old: &Receipt, new: &Receipt) -> Result<()> {
    let Some(t) = &new.trusted else {
        return Ok(());
    };
    let trusted = match (&old.trusted, old.signer == new.signer) {
        (Some(o), true) => {
            let mut m = o.clone();
            m.claims.extend(t.claims.clone());
            m.tlog |= t.tlog;
            m.identity |= t.identity;
            m
        }
        _ => t.clone(),
    };
    if old.trusted.as_ref() == Some(&trusted) && old.signer == new.signer {
        return Ok(());
    }
    let updated = Receipt {
        signer: new.signer.clone(),
        verified_at: new.verified_at.clone(),
        trusted: Some(trusted),
        ..old.clone()
    };
    write_receipt(&prefix.receipt_path(&old.name), &updated)
}

/// What [`install_with`] would refuse before changing anything, checked without
/// changing anything: a rock's plugins are all checked before the first is swapped in,
/// so that one refused does not leave the others installed.
pub fn preflight(prefix: &Prefix, receipt: &Receipt, o: &InstallOptions) -> Result<()> {
    check_name(&receipt.name)?;
    let previous = read_receipt(prefix, &receipt.name)?;
    check_takeover(prefix, &receipt.name, previous.is_some(), o)?;
    if let Some(old) = previous.filter(|old| old.digest != receipt.digest) {
        check_downgrade(&old, receipt, o.allow_downgrade)?;
    }
    Ok(())
}

/// Refuse what kplug must not take over on its own: a bundled plugin's name, a
/// directory it did not create.
fn check_takeover(
    prefix: &Prefix,
    name: &str,
    has_receipt: bool,
    o: &InstallOptions,
) -> Result<()> {
    if has_receipt {
        return Ok(());
    }
    if super::bundled::is_bundled(name) && !(o.adopt || o.allow_bundled_name) {
        crate::bail_kind!(
            Kind::Usage,
            "refusing to install {name}: {}; or pass --allow-bundled-name to install it anyway",
            super::bundled::clash_message(name)
        );
    }
    let target = prefix.plugin_dir(name);
    if !exists(&target) {
        return Ok(());
    }
    let adopted = prefix.adopted_dir(name);
    if !o.adopt {
        crate::bail_kind!(
            Kind::Usage,
            "{} exists and kplug did not install it (no receipt in {}); kplug never replaces a \
             directory it did not create. Move it away, or pass --adopt: its files are then kept \
             in {} and `kplug uninstall {name}` puts them back",
            target.display(),
            prefix.state_dir().display(),
            adopted.display()
        );
    }
    if exists(&adopted) {
        crate::bail_kind!(
            Kind::Usage,
            "cannot adopt {}: the original files of an earlier adoption are still kept in {}; \
             move them back or away first",
            target.display(),
            adopted.display()
        );
    }
    Ok(())
}

/// Move `plugins/<name>` (not kplug's) to `adopted/<name>`. A crash before the swap
/// completes is undone by [`recover`] (no receipt, no directory: the original goes back).
fn adopt(prefix: &Prefix, name: &str) -> Result<PathBuf> {
    let (target, adopted) = (prefix.plugin_dir(name), prefix.adopted_dir(name));
    let parent = crate::tree::parent_dir(&adopted);
    fs::create_dir_all(parent)?;
    fs::rename(&target, &adopted).with_context(|| {
        format!(
            "moving {} to {} (--adopt)",
            target.display(),
            adopted.display()
        )
    })?;
    sync_dir(parent)?;
    sync_dir(&prefix.plugins_dir())?;
    Ok(adopted)
}

/// An older semver than the installed one needs `--allow-downgrade`; versions that are
/// not semver are not compared.
fn check_downgrade(old: &Receipt, new: &Receipt, allow: bool) -> Result<()> {
    let parse = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| semver::Version::parse(v.trim_start_matches('v')).ok())
    };
    let (Some(o), Some(n)) = (parse(&old.version), parse(&new.version)) else {
        return Ok(());
    };
    if n < o && !allow {
        crate::bail_kind!(
            Kind::Usage,
            "refusing to downgrade {} from {o} to {n}; pass --allow-downgrade to install the older \
             version, or run `kplug rollback {}` to return to the previous one",
            new.name,
            new.name
        );
    }
    Ok(())
}

/// Put the backup of `name` (tree and receipt) back in place; the current version
/// becomes the backup. A backup that differs from its receipt is refused, naming each
/// difference, unless `force`. The caller holds the [`lock`].
pub fn rollback(prefix: &Prefix, name: &str, force: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    check_name(name)?;
    let backup = prefix.backup_dir().join(name);
    let meta = match fs::symlink_metadata(&backup) {
        Ok(m) if m.is_dir() => m,
        _ => crate::bail_kind!(
            Kind::NotFound,
            "no previous version of plugin {name} to roll back to in {}",
            prefix.plugins_dir().display()
        ),
    };
    let receipt = read_receipt_at(&prefix.backup_dir().join(format!("{name}.json")))?;
    let differs = match &receipt {
        Some(r) => differences(&backup, &r.files),
        None => vec!["no receipt describes it".to_string()],
    };
    if !differs.is_empty() && !force {
        crate::bail_kind!(
            Kind::Integrity,
            "the previous version of {name} kept in {} no longer matches what kplug installed: {}. \
             `kplug rollback --force {name}` puts it back as it is; or install the version you want",
            backup.display(),
            differs.join(", ")
        );
    }
    // Copy rather than move, so the ordinary swap (and its crash recovery) applies.
    let staging = staging_dir(prefix)?;
    let staged = staging.path().join(name);
    copy_tree(&backup, &staged)?;
    prepare_tree(&staged, Some((meta.uid(), meta.gid())))?;
    swap(prefix, name, &staged, receipt)
}

/// What uninstall did with an adopted plugin's original files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Original {
    /// Back at `plugins/<name>`.
    Restored(PathBuf),
    /// Still here: files not installed by kplug were left at `plugins/<name>`.
    Kept(PathBuf),
}

/// What uninstall removed and left.
#[derive(Debug, Clone, Default)]
pub struct Uninstalled {
    /// Paths left behind because kplug did not install them.
    pub leftovers: Vec<String>,
    pub original: Option<Original>,
}

/// Remove the files the receipt lists, directories left empty, the receipt and the
/// backup; put an adopted directory's original files back. A receipt that lists a path
/// outside the plugin directory is refused before anything is removed.
/// The caller holds the [`lock`].
pub fn uninstall(prefix: &Prefix, name: &str) -> Result<Uninstalled> {
    let Some(receipt) = read_receipt(prefix, name)? else {
        crate::bail_kind!(
            Kind::NotFound,
            "plugin {name} was not installed by kplug in {} (no receipt); remove it by hand",
            prefix.plugins_dir().display()
        );
    };
    let dir = prefix.plugin_dir(name);
    if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
        crate::bail_kind!(
            Kind::Unsafe,
            "{} is not a directory (a symbolic link?); kplug did not make it so: nothing was removed, check it by hand",
            dir.display()
        );
    }
    // A directory removed by hand leaves nothing to remove but the records.
    let listed = if exists(&dir) {
        &receipt.files[..]
    } else {
        &[]
    };
    let paths: Vec<PathBuf> = listed
        .iter()
        .map(|f| {
            inside(&dir, &f.path).ok_or_else(|| {
                fail(
                    Kind::Unsafe,
                    format!(
                        "{}/{} is reached through a symbolic link; nothing was removed, check {} by hand",
                        dir.display(),
                        escape(&f.path),
                        dir.display()
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    for p in paths {
        remove_if_exists(&p)?;
    }
    let mut leftovers = Vec::new();
    if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        remove_empty_dirs(&dir, &mut leftovers)?;
    }
    let receipt_path = prefix.receipt_path(name);
    fs::remove_file(&receipt_path)
        .with_context(|| format!("removing {}", receipt_path.display()))?;
    discard(prefix, &prefix.backup_dir().join(name))?;
    remove_if_exists(&prefix.backup_dir().join(format!("{name}.json")))?;
    sync_dir(&prefix.state_dir())?;
    let original = restore_adopted(prefix, name)?;
    sync_dir(&prefix.plugins_dir())?;
    leftovers.sort();
    Ok(Uninstalled {
        leftovers,
        original,
    })
}

/// Put `adopted/<name>` back at `plugins/<name>` unless something is there.
fn restore_adopted(prefix: &Prefix, name: &str) -> Result<Option<Original>> {
    let (adopted, target) = (prefix.adopted_dir(name), prefix.plugin_dir(name));
    if !exists(&adopted) {
        return Ok(None);
    }
    if exists(&target) {
        return Ok(Some(Original::Kept(adopted)));
    }
    fs::rename(&adopted, &target).with_context(|| {
        format!(
            "putting the original files back from {} to {}",
            adopted.display(),
            target.display()
        )
    })?;
    sync_dir(&prefix.plugins_dir())?;
    Ok(Some(Original::Restored(target)))
}

/// Remove the files of `files` under `dir` (never through a symbolic link), then the
/// directories left empty; returns what is left (files kplug did not install).
pub fn remove_listed(dir: &Path, files: &[FileEntry]) -> Result<Vec<String>> {
    for f in files {
        if let Some(p) = inside(dir, &f.path) {
            remove_if_exists(&p)?;
        }
    }
    let mut leftovers = Vec::new();
    if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        remove_empty_dirs(dir, &mut leftovers)?;
    }
    leftovers.sort();
    Ok(leftovers)
}

/// Remove empty directories bottom-up under and including `dir`, collecting what is left.
fn remove_empty_dirs(dir: &Path, leftovers: &mut Vec<String>) -> Result<()> {
    for ent in fs::read_dir(dir)? {
        let p = ent?.path();
        if fs::symlink_metadata(&p)?.is_dir() {
            remove_empty_dirs(&p, leftovers)?;
        } else {
            leftovers.push(escape(&p.display().to_string()));
        }
    }
    if fs::read_dir(dir)?.next().is_none() {
        fs::remove_dir(dir)?;
    }
    Ok(())
}

/// An installed plugin, checked against its receipt.
#[derive(Debug, Clone)]
pub struct Listed {
    pub receipt: Receipt,
    pub modified: Vec<String>,
    pub missing: Vec<String>,
}

/// A receipt that cannot be trusted (corrupt, or listing a path outside its directory).
#[derive(Debug, Clone)]
pub struct Broken {
    pub name: String,
    pub error: String,
}

/// Every plugin with a receipt under `prefix`, sorted by name; an error for the first
/// receipt that cannot be read.
/// Every plugin with a receipt under `prefix`, sorted by name, and the receipts that
/// cannot be trusted (never followed outside their plugin directory).
pub fn list_checked(prefix: &Prefix) -> Result<(Vec<Listed>, Vec<Broken>)> {
    let dir = prefix.state_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let (mut out, mut broken) = (Vec::new(), Vec::new());
    for ent in entries {
        let file_name = ent?.file_name();
        let Some(name) = file_name.to_str().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if check_name(name).is_err() {
            continue;
        }
        match read_receipt(prefix, name) {
            Ok(Some(receipt)) => {
                let (modified, missing) = verify_files(&prefix.plugin_dir(name), &receipt.files);
                out.push(Listed {
                    receipt,
                    modified,
                    missing,
                });
            }
            Ok(None) => {}
            Err(e) => broken.push(Broken {
                name: name.to_string(),
                error: format!("{e:#}"),
            }),
        }
    }
    out.sort_by(|a, b| a.receipt.name.cmp(&b.receipt.name));
    broken.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, broken))
}

/// The plugin whose swap was interrupted (its journal is still there), if any. Until a
/// command takes the lock and finishes it, `plugins/<name>` may be absent.
pub fn pending_swap(prefix: &Prefix) -> Option<String> {
    let bytes =
        crate::tree::read_capped(&prefix.journal_path(), crate::tree::MAX_RECORD_BYTES).ok()?;
    let j: Journal = serde_json::from_slice(&bytes).ok()?;
    Some(j.name)
}

/// Written before the first rename of a swap; see the module docs.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    name: String,
    /// Whether `plugins/<name>` existed (and is moved to `backup/<name>`).
    had_old: bool,
    /// The receipt to install; `None` removes it (rollback to a tree kplug did not install).
    receipt: Option<Receipt>,
}

/// Finish or undo a swap interrupted by a crash, put back adopted originals left without
/// a plugin, and delete what dead runs left (staging dirs, temp files). Called by
/// [`lock`]; only safe with the lock held.
pub fn recover(prefix: &Prefix) -> Result<()> {
    replay_journal(prefix)?;
    settle_prev_backups(prefix)?;
    discard(prefix, &prefix.incoming())?;
    remove_all(&prefix.state_dir().join(".trash"))?;
    restore_orphaned_adoptions(prefix)?;
    super::lock::remove_leftovers(&prefix.state_dir())
}

fn replay_journal(prefix: &Prefix) -> Result<()> {
    let jpath = prefix.journal_path();
    let bytes = match crate::tree::read_capped(&jpath, crate::tree::MAX_RECORD_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", jpath.display())),
    };
    let j: Journal = serde_json::from_slice(&bytes).map_err(|e| {
        fail(
            Kind::Integrity,
            format!(
                "swap journal {} is corrupt ({e}); check {} by hand and delete the journal",
                jpath.display(),
                prefix.plugins_dir().display()
            ),
        )
    })?;
    check_name(&j.name)?;
    if exists(&prefix.incoming()) {
        // The new tree never reached its place: put the old one back.
        let target = prefix.plugin_dir(&j.name);
        if j.had_old && !exists(&target) {
            let backup = prefix.backup_dir().join(&j.name);
            fs::rename(&backup, &target).with_context(|| {
                format!("restoring {} from {}", target.display(), backup.display())
            })?;
            sync_dir(&prefix.plugins_dir())?;
        }
        settle_prev_backup(prefix, &j.name)?;
        remove_if_exists(&jpath)?;
    } else {
        finish_receipts(prefix, &j)?;
    }
    sync_dir(&prefix.state_dir())
}

/// An adopted original whose plugin has neither receipt nor directory goes back.
fn restore_orphaned_adoptions(prefix: &Prefix) -> Result<()> {
    let dir = crate::tree::parent_dir(&prefix.adopted_dir("x")).to_path_buf();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for ent in entries {
        let file_name = ent?.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if check_name(name).is_ok() && !exists(&prefix.receipt_path(name)) {
            restore_adopted(prefix, name)?;
        }
    }
    Ok(())
}

/// Marks where a test asked the swap to stop as if the process had crashed.
#[cfg(debug_assertions)]
#[derive(Debug)]
struct SimulatedCrash(&'static str);

#[cfg(debug_assertions)]
impl std::fmt::Display for SimulatedCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulated crash at {} (KPLUG_TEST_FAIL_AT)", self.0)
    }
}

#[cfg(debug_assertions)]
impl std::error::Error for SimulatedCrash {}

#[cfg(test)]
thread_local! {
    static FAIL_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Crash injection for tests, compiled only into debug builds (what `cargo test` and
/// `cargo nextest` run; release builds have neither the variable nor the code): with
/// `KPLUG_TEST_FAIL_AT=before-swap` (or `mid-swap`) the swap stops after writing its
/// journal, right before the installed tree is moved (or right after the old tree was
/// moved away), without any clean-up, as a crash would. Unit tests set a thread-local
/// instead, so parallel tests do not see each other's setting.
#[cfg(debug_assertions)]
fn failpoint(at: &'static str) -> Result<()> {
    let set = std::env::var("KPLUG_TEST_FAIL_AT").ok();
    #[cfg(test)]
    let set = set.or_else(|| FAIL_AT.with(|f| f.get()).map(String::from));
    if set.as_deref() == Some(at) {
        return Err(SimulatedCrash(at).into());
    }
    Ok(())
}

#[cfg(not(debug_assertions))]
fn failpoint(_: &'static str) -> Result<()> {
    Ok(())
}

fn simulated(e: &anyhow::Error) -> bool {
    #[cfg(debug_assertions)]
    return e.is::<SimulatedCrash>();
    #[cfg(not(debug_assertions))]
    {
        let _ = e;
        false
    }
}

/// Replace `plugins/<name>` with `staged`, keeping the old tree and receipt as backup.
/// On a real error the swap is undone or finished in process; on a simulated crash it
/// is left for [`recover`].
fn swap(prefix: &Prefix, name: &str, staged: &Path, receipt: Option<Receipt>) -> Result<()> {
    let r = swap_steps(prefix, name, staged, receipt);
    if let Err(e) = &r {
        if !simulated(e) {
            if let Err(re) = recover(prefix) {
                return Err(re.context(format!("recovering from: {e:#}")));
            }
        }
    }
    r
}
fn swap_steps(prefix: &Prefix, name: &str, staged: &Path, receipt: Option<Receipt>) -> Result<()> {
    let (state, plugins, backups) = (
        prefix.state_dir(),
        prefix.plugins_dir(),
        prefix.backup_dir(),
    );
    let (target, incoming) = (prefix.plugin_dir(name), prefix.incoming());
    fs::create_dir_all(&backups)?;
    discard(prefix, &incoming)?;
    fs::rename(staged, &incoming).with_context(|| {
        format!(
            "moving {} to {} (not on the same filesystem?)",
            staged.display(),
            incoming.display()
        )
    })?;
    let had_old = exists(&target);
    if had_old {
        // The kept version makes way for the one being replaced, but only aside until
        // the swap is final: an undone swap (a crash, a failed rollback) puts it back.
        let (prev, prev_json) = prev_backup(prefix, name);
        discard(prefix, &prev)?;
        remove_if_exists(&prev_json)?;
        rename_if_exists(&backups.join(format!("{name}.json")), &prev_json)?;
        rename_if_exists(&backups.join(name), &prev)?;
    }
    let journal = Journal {
        name: name.to_string(),
        had_old,
        receipt,
    };
    write_atomic(&prefix.journal_path(), &serde_json::to_vec(&journal)?)?;
    sync_dir(&state)?;

    failpoint("before-swap")?;
    if journal.had_old {
        fs::rename(&target, backups.join(name))
            .with_context(|| format!("moving {} to the backup", target.display()))?;
    }
    failpoint("mid-swap")?;
    fs::rename(&incoming, &target)
        .with_context(|| format!("moving the new tree to {}", target.display()))?;
    sync_dir(&plugins)?;
    sync_dir(&backups)?;
    sync_dir(&state)?;
    finish_receipts(prefix, &journal)
}

/// The new tree is in place: move the old receipt to the backup, write the new one,
/// delete the journal. Idempotent, so `recover` can re-run it.
fn finish_receipts(prefix: &Prefix, j: &Journal) -> Result<()> {
    let path = prefix.receipt_path(&j.name);
    let current = read_receipt_at(&path).ok().flatten();
    let backup = prefix.backup_dir().join(format!("{}.json", j.name));
    if exists(&path) && current.as_ref() != j.receipt.as_ref() {
        if j.had_old {
            fs::rename(&path, &backup)?;
        } else {
            fs::remove_file(&path)?;
        }
    } else if let (Some(c), true, false) = (&current, j.had_old, exists(&backup)) {
        // The same receipt again (a repair within the same second): the backup tree
        // still needs its receipt.
        write_receipt(&backup, c)?;
    }
    match &j.receipt {
        Some(r) => write_receipt(&path, r)?,
        None => remove_if_exists(&path)?,
    }
    sync_dir(&prefix.backup_dir())?;
    let (prev, prev_json) = prev_backup(prefix, &j.name);
    discard(prefix, &prev)?;
    remove_if_exists(&prev_json)?;
    remove_if_exists(&prefix.journal_path())?;
    sync_dir(&prefix.state_dir())
}

/// Where the kept version of `name` waits while a swap replaces it (tree, receipt).
fn prev_backup(prefix: &Prefix, name: &str) -> (PathBuf, PathBuf) {
    let b = prefix.backup_dir();
    (
        b.join(format!(".{name}.prev")),
        b.join(format!(".{name}.prev.json")),
    )
}

/// A kept version set aside by a swap that did not finish goes back to being the kept
/// version (where the swap put nothing in its place); one the swap replaced is dropped.
fn settle_prev_backup(prefix: &Prefix, name: &str) -> Result<()> {
    let (prev, prev_json) = prev_backup(prefix, name);
    let b = prefix.backup_dir();
    for (from, to) in [
        (&prev_json, b.join(format!("{name}.json"))),
        (&prev, b.join(name)),
    ] {
        if exists(from) && !exists(&to) {
            fs::rename(from, &to).with_context(|| format!("restoring {}", to.display()))?;
        }
    }
    discard(prefix, &prev)?;
    remove_if_exists(&prev_json)
}

/// Every kept version still set aside when no swap is under way (a crash before the
/// journal was written).
fn settle_prev_backups(prefix: &Prefix) -> Result<()> {
    let Ok(entries) = fs::read_dir(prefix.backup_dir()) else {
        return Ok(());
    };
    for ent in entries {
        let file_name = ent?.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix('.')) else {
            continue;
        };
        if let Some(name) = name
            .strip_suffix(".prev")
            .or(name.strip_suffix(".prev.json"))
        {
            if check_name(name).is_ok() {
                settle_prev_backup(prefix, name)?;
            }
        }
    }
    Ok(())
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("moving {} to {}", from.display(), to.display()))
        }
        _ => Ok(()),
    }
}

/// Normalise modes (0755 for directories and executables, 0644 for the rest), chown,
/// and fsync everything under `dir`.
fn prepare_tree(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(dir)?;
    let mode = if meta.is_dir() {
        for ent in fs::read_dir(dir)? {
            prepare_tree(&ent?.path(), owner)?;
        }
        0o755
    } else if meta.is_file() {
        if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        }
    } else {
        crate::bail_kind!(
            Kind::Unsafe,
            "{} is not a regular file or directory",
            dir.display()
        );
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("changing the owner of {}", dir.display()))?;
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Copy a kept tree of directories and regular files; a symbolic link or a special file
/// is refused (copying would read what it points to, or block on a FIFO).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to)?;
    for ent in fs::read_dir(from)? {
        let ent = ent?;
        let (src, dst) = (ent.path(), to.join(ent.file_name()));
        let meta = fs::symlink_metadata(&src)?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else if meta.is_file() {
            fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        } else {
            crate::bail_kind!(
                Kind::Unsafe,
                "{} is a symbolic link or a special file, not something kplug installed; \
                 nothing was changed, check it by hand",
                src.display()
            );
        }
    }
    Ok(())
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

fn remove_all(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Delete a directory such that a crash never leaves it half-deleted at its path.
fn discard(prefix: &Prefix, dir: &Path) -> Result<()> {
    let trash = prefix.state_dir().join(".trash");
    remove_all(&trash)?;
    match fs::rename(dir, &trash) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        Ok(()) => remove_all(&trash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(prefix: &Prefix) -> Result<Vec<Listed>> {
        let (listed, broken) = list_checked(prefix)?;
        assert!(broken.is_empty(), "{broken:?}");
        Ok(listed)
    }
    use std::os::unix::fs::PermissionsExt;

    const HANDLER: &str = "local H = { PRIORITY = 1000, VERSION = \"1.0.0\" }\n\
        function H:access(conf)\n  kong.response.set_header(\"X-Hello\", conf.message)\nend\n\
        return H\n";
    const SCHEMA: &str = "return {\n  name = \"hello\",\n  fields = {\n    { config = {\n        \
        type = \"record\",\n        fields = {\n          { message = { type = \"string\", \
        default = \"hi\" } },\n        },\n    } },\n  },\n}\n";

    fn receipt(name: &str, version: &str) -> Receipt {
        Receipt {
            name: name.to_string(),
            version: Some(version.to_string()),
            reference: format!("registry.example/plugins/{name}:{version}"),
            digest: crate::digest::sha256(version.as_bytes()),
            signer: Some("SHA256:abc".to_string()),
            verified_at: Some(now_rfc3339()),
            installed_at: now_rfc3339(),
            files: vec![],
            ..Default::default()
        }
    }

    /// A staging dir holding `<name>/` with `files` (path, content, mode).
    fn stage(prefix: &Prefix, name: &str, files: &[(&str, &str, u32)]) -> (Staging, PathBuf) {
        let t = staging_dir(prefix).unwrap();
        let dir = t.path().join(name);
        for (p, content, mode) in files {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        (t, dir)
    }

    fn installed(previous: Option<&str>, differs: &[&str]) -> Outcome {
        Outcome::Installed {
            previous: previous.map(String::from),
            previous_differs: differs.iter().map(|d| d.to_string()).collect(),
            adopted: None,
        }
    }

    fn install(prefix: &Prefix, version: &str, files: &[(&str, &str, u32)]) -> Result<Outcome> {
        let (_t, dir) = stage(prefix, "hello", files);
        install_dir(prefix, &dir, receipt("hello", version), None)
    }

    fn v1() -> Vec<(&'static str, &'static str, u32)> {
        vec![
            ("handler.lua", HANDLER, 0o600),
            ("schema.lua", SCHEMA, 0o640),
            ("bin/tool", "#!/bin/sh\n", 0o700),
        ]
    }

    fn v2() -> Vec<(&'static str, &'static str, u32)> {
        vec![
            (
                "handler.lua",
                "return { PRIORITY = 1, VERSION = \"2\" }\n",
                0o644,
            ),
            ("schema.lua", SCHEMA, 0o644),
        ]
    }

    fn read(prefix: &Prefix, rel: &str) -> String {
        fs::read_to_string(prefix.plugin_dir("hello").join(rel)).unwrap()
    }

    fn assert_intact(prefix: &Prefix, version: &str) {
        let r = read_receipt(prefix, "hello").unwrap().unwrap();
        assert_eq!(r.version.as_deref(), Some(version));
        assert_eq!(
            verify_files(&prefix.plugin_dir("hello"), &r.files),
            (vec![], vec![])
        );
        assert!(!exists(&prefix.journal_path()));
        assert!(!exists(&prefix.incoming()));
    }

    #[test]
    fn install_update_rollback() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        assert_eq!(install(&prefix, "1", &v1()).unwrap(), installed(None, &[]));
        let dir = prefix.plugin_dir("hello");
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (
                mode("handler.lua"),
                mode("schema.lua"),
                mode("bin/tool"),
                mode("bin")
            ),
            (0o644, 0o644, 0o755, 0o755)
        );
        let r = read_receipt(&prefix, "hello").unwrap().unwrap();
        assert_eq!(
            r.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["bin/tool", "handler.lua", "schema.lua"]
        );
        assert_eq!(r.files[1].sha256, crate::digest::sha256(HANDLER.as_bytes()));
        assert_eq!(r.files[1].mode, 0o644);
        assert_intact(&prefix, "1");
        let staged_left: Vec<_> = fs::read_dir(prefix.state_dir())
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.starts_with(".staging-").then_some(n)
            })
            .collect();
        assert!(staged_left.is_empty(), "{staged_left:?}");

        assert_eq!(install(&prefix, "1", &v1()).unwrap(), Outcome::Unchanged);
        // A modified install is repaired even at the same digest.
        fs::write(dir.join("handler.lua"), "-- tampered\n").unwrap();
        assert_eq!(list(&prefix).unwrap()[0].modified, ["handler.lua"]);
        let d1 = crate::digest::sha256(b"1");
        assert_eq!(
            install(&prefix, "1", &v1()).unwrap(),
            installed(Some(&d1), &["handler.lua (modified)"])
        );
        assert_eq!(read(&prefix, "handler.lua"), HANDLER);
        // Even when the new receipt equals the old one, the backup keeps a receipt.
        let e = rollback(&prefix, "hello", false).unwrap_err();
        assert!(format!("{e}").contains("handler.lua (modified)"), "{e}");

        assert_eq!(
            install(&prefix, "2", &v2()).unwrap(),
            installed(Some(&d1), &[])
        );
        assert_intact(&prefix, "2");
        assert!(
            !dir.join("bin").exists(),
            "the new tree replaces the old one"
        );
        assert!(prefix.backup_dir().join("hello/bin/tool").exists());

        rollback(&prefix, "hello", false).unwrap();
        assert_intact(&prefix, "1");
        assert_eq!(read(&prefix, "handler.lua"), HANDLER);
        // The version rolled back from is now the backup: rolling back again returns to it.
        rollback(&prefix, "hello", false).unwrap();
        assert_intact(&prefix, "2");

        let e = rollback(&prefix, "other", false).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::NotFound);
        assert!(e.to_string().contains("no previous version"), "{e}");
    }

    #[test]
    fn crash_before_and_mid_swap_keeps_old_version() {
        for at in ["before-swap", "mid-swap"] {
            let d = tempfile::tempdir().unwrap();
            let prefix = Prefix::new(d.path());
            {
                let _l = lock(&prefix).unwrap();
                install(&prefix, "1", &v1()).unwrap();
                FAIL_AT.with(|f| f.set(Some(at)));
                let e = install(&prefix, "2", &v2()).unwrap_err();
                FAIL_AT.with(|f| f.set(None));
                assert!(e.is::<SimulatedCrash>(), "{e}");
                assert!(exists(&prefix.journal_path()));
                assert_eq!(exists(&prefix.plugin_dir("hello")), at == "before-swap");
            }
            let _l = lock(&prefix).unwrap();
            assert_intact(&prefix, "1");
            assert_eq!(read(&prefix, "handler.lua"), HANDLER);
            // And the next install goes through.
            install(&prefix, "2", &v2()).unwrap();
            assert_intact(&prefix, "2");
        }
    }

    #[test]
    fn rollback_force_never_follows_a_link_in_the_kept_version() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        install(&prefix, "1", &v1()).unwrap();
        install(&prefix, "2", &v2()).unwrap();
        let secret = d.path().join("secret");
        fs::write(&secret, "TOKEN=abc\n").unwrap();
        std::os::unix::fs::symlink(&secret, prefix.backup_dir().join("hello/conf.lua")).unwrap();
        let e = rollback(&prefix, "hello", true).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::Unsafe, "{e:#}");
        assert_intact(&prefix, "2");
        assert!(!exists(&prefix.plugin_dir("hello").join("conf.lua")));
    }

    #[test]
    fn a_receipt_replaced_by_an_endless_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        install(&prefix, "1", &v1()).unwrap();
        fs::remove_file(prefix.receipt_path("hello")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", prefix.receipt_path("hello")).unwrap();
        let e = read_receipt(&prefix, "hello").unwrap_err();
        assert!(
            format!("{e:#}").contains("more than kplug ever writes"),
            "{e:#}"
        );
    }

    #[test]
    fn uninstall_after_the_plugin_dir_was_removed_by_hand() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        install(&prefix, "1", &v1()).unwrap();
        install(&prefix, "2", &v2()).unwrap();
        fs::remove_dir_all(prefix.plugin_dir("hello")).unwrap();
        uninstall(&prefix, "hello").unwrap();
        assert!(!exists(&prefix.receipt_path("hello")));
        assert!(!exists(&prefix.backup_dir().join("hello")));
    }

    #[test]
    fn a_crash_during_rollback_keeps_the_kept_version() {
        for at in ["before-swap", "mid-swap"] {
            let d = tempfile::tempdir().unwrap();
            let prefix = Prefix::new(d.path());
            {
                let _l = lock(&prefix).unwrap();
                install(&prefix, "1", &v1()).unwrap();
                install(&prefix, "2", &v2()).unwrap();
                FAIL_AT.with(|f| f.set(Some(at)));
                let e = rollback(&prefix, "hello", false).unwrap_err();
                FAIL_AT.with(|f| f.set(None));
                assert!(e.is::<SimulatedCrash>(), "{e}");
            }
            let _l = lock(&prefix).unwrap();
            assert_intact(&prefix, "2");
            // 1 is still the kept version: the rollback can be run again.
            rollback(&prefix, "hello", false).unwrap();
            assert_intact(&prefix, "1");
            rollback(&prefix, "hello", false).unwrap();
            assert_intact(&prefix, "2");
        }
    }

    #[test]
    fn a_crash_while_adopting_puts_the_original_back() {
        for at in ["before-swap", "mid-swap"] {
            let d = tempfile::tempdir().unwrap();
            let prefix = Prefix::new(d.path());
            let dir = prefix.plugin_dir("hello");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("handler.lua"), "-- mine\n").unwrap();
            {
                let _l = lock(&prefix).unwrap();
                let (_t, staged) = stage(&prefix, "hello", &v1());
                let o = InstallOptions {
                    adopt: true,
                    ..Default::default()
                };
                FAIL_AT.with(|f| f.set(Some(at)));
                let e = install_with(&prefix, &staged, receipt("hello", "1"), &o).unwrap_err();
                FAIL_AT.with(|f| f.set(None));
                assert!(e.is::<SimulatedCrash>(), "{e}");
                assert!(!dir.exists() && prefix.adopted_dir("hello").exists());
            }
            let _l = lock(&prefix).unwrap();
            assert_eq!(
                fs::read_to_string(dir.join("handler.lua")).unwrap(),
                "-- mine\n"
            );
            assert!(!prefix.adopted_dir("hello").exists());
            assert!(read_receipt(&prefix, "hello").unwrap().is_none());
        }
    }

    #[test]
    fn crash_of_a_first_install_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        {
            let _l = lock(&prefix).unwrap();
            FAIL_AT.with(|f| f.set(Some("mid-swap")));
            install(&prefix, "1", &v1()).unwrap_err();
            FAIL_AT.with(|f| f.set(None));
        }
        let _l = lock(&prefix).unwrap();
        assert!(!exists(&prefix.plugin_dir("hello")));
        assert!(read_receipt(&prefix, "hello").unwrap().is_none());
        assert!(!exists(&prefix.journal_path()));
    }

    #[test]
    fn recover_finishes_a_swap_whose_tree_is_in_place() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        install(&prefix, "1", &v1()).unwrap();
        install(&prefix, "2", &v2()).unwrap();
        // As if the process died after the tree rename, before the receipts: restore
        // the receipt of 1 and the journal.
        let r2 = read_receipt(&prefix, "hello").unwrap();
        let bj = prefix.backup_dir().join("hello.json");
        fs::rename(&bj, prefix.receipt_path("hello")).unwrap();
        let j = Journal {
            name: "hello".into(),
            had_old: true,
            receipt: r2,
        };
        write_atomic(&prefix.journal_path(), &serde_json::to_vec(&j).unwrap()).unwrap();
        recover(&prefix).unwrap();
        assert_intact(&prefix, "2");
        assert_eq!(
            read_receipt_at(&bj).unwrap().unwrap().version.as_deref(),
            Some("1")
        );
    }

    #[test]
    fn concurrent_installs_serialise() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let threads: Vec<_> = ["1", "2"]
            .into_iter()
            .map(|v| {
                let prefix = prefix.clone();
                std::thread::spawn(move || {
                    let files = if v == "1" { v1() } else { v2() };
                    for _ in 0..5 {
                        let _l = lock(&prefix).unwrap();
                        install(&prefix, v, &files).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let listed = list(&prefix).unwrap();
        assert_eq!(listed.len(), 1);
        let v = listed[0].receipt.version.clone().unwrap();
        assert_intact(&prefix, &v);
        let want: Vec<FileEntry> = hash_tree(&prefix.plugin_dir("hello")).unwrap();
        assert_eq!(listed[0].receipt.files, want);
    }

    #[test]
    fn uninstall_and_list() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        install(&prefix, "1", &v1()).unwrap();
        install(&prefix, "2", &v2()).unwrap();
        let (_t, other) = stage(&prefix, "other", &[("handler.lua", HANDLER, 0o644)]);
        install_dir(&prefix, &other, receipt("other", "9"), None).unwrap();
        let dir = prefix.plugin_dir("hello");
        fs::remove_file(dir.join("schema.lua")).unwrap();
        fs::create_dir(dir.join("extra")).unwrap();
        fs::write(dir.join("extra/local.lua"), "return 1").unwrap();
        let listed = list(&prefix).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|l| l.receipt.name.as_str())
                .collect::<Vec<_>>(),
            ["hello", "other"]
        );
        assert_eq!(listed[0].missing, ["schema.lua"]);
        assert!(listed[0].modified.is_empty() && listed[1].missing.is_empty());

        let left = uninstall(&prefix, "hello").unwrap().leftovers;
        assert_eq!(left, [dir.join("extra/local.lua").display().to_string()]);
        assert!(!dir.join("handler.lua").exists());
        assert!(read_receipt(&prefix, "hello").unwrap().is_none());
        assert!(!prefix.backup_dir().join("hello").exists());
        assert_eq!(list(&prefix).unwrap().len(), 1);
        let e = uninstall(&prefix, "hello").unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::NotFound);
        fs::remove_dir_all(&dir).unwrap();
        assert!(uninstall(&prefix, "other").unwrap().leftovers.is_empty());
        assert!(!prefix.plugin_dir("other").exists());
        assert!(
            check_name("../x").is_err()
                && check_name("a.b").is_err()
                && check_name("my_plugin-2").is_ok()
        );
    }

    #[test]
    fn luajit_finds_and_compiles_the_installed_plugin() {
        let d = tempfile::tempdir().unwrap();
        let prefix = Prefix::new(d.path());
        let _l = lock(&prefix).unwrap();
        install(&prefix, "1", &v1()).unwrap();
        let root = prefix.root.display().to_string();
        let luajit = |code: String| {
            std::process::Command::new("luajit")
                .arg("-e")
                .arg(code)
                .output()
        };
        let out = luajit(format!(
            "print(package.searchpath('kong.plugins.hello.handler', '{root}/?.lua;{root}/?/init.lua'))"
        ))
        .expect("luajit (Debian package luajit) must be installed: scripts/test.sh installs it");
        assert!(out.status.success(), "{out:?}");
        let found = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            found.trim(),
            format!("{root}/kong/plugins/hello/handler.lua")
        );
        for f in read_receipt(&prefix, "hello").unwrap().unwrap().files {
            if f.path.ends_with(".lua") {
                let p = prefix.plugin_dir("hello").join(&f.path);
                let out = luajit(format!("assert(loadfile('{}'))", p.display())).unwrap();
                assert!(out.status.success(), "{}: {out:?}", f.path);
            }
        }
    }
}
