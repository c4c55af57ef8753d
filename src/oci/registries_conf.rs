//! Mirrors and registry settings from containers-registries.conf(5), version 2, read
//! the way podman, skopeo and CRI-O read it (containers/image `sysregistriesv2`).
//!
//! Files: `--registries-conf FILE`, else `$CONTAINERS_REGISTRIES_CONF`, else
//! `~/.config/containers/registries.conf` when it exists, else
//! `/etc/containers/registries.conf` (a missing default file is an empty one; a
//! missing named file is an error). Then the `*.conf` drop-ins of
//! `/etc/containers/registries.conf.d` and `~/.config/containers/registries.conf.d`
//! (only the latter when the user file was chosen), each directory in lexical order;
//! a later `[[registry]]` replaces an earlier one with the same prefix.
//!
//! Matching: the `[[registry]]` whose `prefix` (default: its `location`) is the longest
//! match of the reference's `host/repository`, at a `/` boundary; `*.example.com`
//! matches any subdomain host. The rest of the reference after the prefix is appended
//! to the `location` of the registry or of each `[[registry.mirror]]`.
//! `*.example.com` also matches `a.example.com:5000` (the port is kept when rewriting),
//! as in containers/image. One deliberate difference: a prefix `example.com` does not
//! match `example.com:5000` (containers/image does, and says not to rely on it).
//! Prefixes that name a tag or digest never match (containers/image matches the
//! repository name only).
//!
//! kplug's own key: `kplug-no-fallback = true` in a `[[registry]]` (or `--no-fallback`
//! for every registry) never falls back to the primary location once mirrors are
//! configured: sites that must not reach upstream. containers/image ignores unknown
//! keys, so the same file still works for podman and skopeo; the `kplug-` prefix keeps
//! it clear of future containers keys.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{fail, Kind};
use crate::oci::reference::{parse_registry, RegistryRef};

pub const SYSTEM_CONF: &str = "/etc/containers/registries.conf";
pub const SYSTEM_CONF_DIR: &str = "/etc/containers/registries.conf.d";
pub const USER_CONF: &str = ".config/containers/registries.conf";
pub const USER_CONF_DIR: &str = ".config/containers/registries.conf.d";
/// Environment variable naming the main file (podman, buildah).
pub const ENV_CONF: &str = "CONTAINERS_REGISTRIES_CONF";
/// kplug's per-registry key: never fall back to the primary location.
pub const NO_FALLBACK_KEY: &str = "kplug-no-fallback";

/// `pull-from-mirror` of a `[[registry.mirror]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    /// Tags and digests (the default).
    #[default]
    All,
    /// Only content addressed by digest: a mirror can never substitute a tag.
    DigestOnly,
    /// Only references by tag (a mirror that does not keep digests).
    TagOnly,
}

/// A `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// A `[[registry]]` table after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub prefix: String,
    /// Empty only for a `*.example.com` prefix without location (the reference's host).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    /// Deprecated registry-level form of `pull-from-mirror = "digest-only"`.
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
    pub no_fallback: bool,
    /// The file that defined it.
    pub origin: PathBuf,
}

/// Which files to read, decided as containers/image decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfSources {
    pub file: PathBuf,
    /// Named by flag or environment: it must exist.
    pub explicit: bool,
    /// Drop-in directories, in reading order.
    pub dirs: Vec<PathBuf>,
}

impl ConfSources {
    /// `flag` is `--registries-conf`, `env` the value of [`ENV_CONF`], `home` `$HOME`.
    pub fn resolve(flag: Option<&Path>, env: Option<OsString>, home: Option<&Path>) -> Self {
        let user_file = home.map(|h| h.join(USER_CONF));
        let user_dir = home.map(|h| h.join(USER_CONF_DIR));
        let explicit = flag
            .map(Path::to_path_buf)
            .or_else(|| env.filter(|e| !e.is_empty()).map(PathBuf::from));
        let system_and_user = |file, explicit| ConfSources {
            file,
            explicit,
            dirs: std::iter::once(PathBuf::from(SYSTEM_CONF_DIR))
                .chain(user_dir.clone())
                .collect(),
        };
        match (explicit, user_file) {
            (Some(f), _) => system_and_user(f, true),
            (None, Some(u)) if u.exists() => ConfSources {
                file: u,
                explicit: false,
                dirs: user_dir.clone().into_iter().collect(),
            },
            (None, _) => system_and_user(PathBuf::from(SYSTEM_CONF), false),
        }
    }

    /// [`resolve`](Self::resolve) with this process's environment.
    pub fn from_env(flag: Option<&Path>) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::resolve(flag, std::env::var_os(ENV_CONF), home.as_deref())
    }
}

/// Where a pull source sits in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Index into the matched registry's mirrors.
    Mirror(usize),
    Primary,
}

/// One place to pull from, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    pub role: Role,
    /// The reference rewritten for this source (host, repository; tag and digest kept).
    pub reference: RegistryRef,
    /// `insecure = true`: plain HTTP or unverified TLS allowed.
    pub insecure: bool,
    /// A tag may be resolved here.
    pub resolve_tags: bool,
    /// Content may be fetched here by a digest resolved elsewhere.
    pub by_digest: bool,
}

/// The sources for one reference, and the entry that produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPlan {
    pub sources: Vec<PullSource>,
    /// Prefix of the matched `[[registry]]`, if any.
    pub prefix: Option<String>,
}

impl PullPlan {
    /// Indexes of the sources that may resolve the reference's tag, in order.
    pub fn tag_sources(&self) -> Vec<usize> {
        (0..self.sources.len())
            .filter(|&i| self.sources[i].resolve_tags)
            .collect()
    }

    /// Indexes to fetch by digest from, in order, once source `resolved_at` gave the
    /// digest (`None`: the reference was pinned). A source that may not serve digests
    /// (a tag-only mirror) still serves the digest it resolved itself, first.
    pub fn digest_sources(&self, resolved_at: Option<usize>) -> Vec<usize> {
        let own = resolved_at.filter(|&i| !self.sources[i].by_digest);
        own.into_iter()
            .chain((0..self.sources.len()).filter(|&i| self.sources[i].by_digest))
            .collect()
    }
}

/// Everything read from registries.conf and its drop-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// Sorted by prefix, one entry per prefix.
    registries: Vec<RegistryEntry>,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
struct FileToml {
    #[serde(default)]
    registry: Vec<RegistryToml>,
    #[serde(default)]
    registries: Option<V1Toml>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RegistryToml {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    pull_from_mirror: String,
    #[serde(default)]
    mirror: Vec<MirrorToml>,
    #[serde(default)]
    kplug_no_fallback: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct MirrorToml {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

/// The v1 format: `[registries.search|insecure|block] registries = […]`.
#[derive(Deserialize, Default)]
struct V1Toml {
    #[serde(default)]
    search: V1List,
    #[serde(default)]
    insecure: V1List,
    #[serde(default)]
    block: V1List,
}

#[derive(Deserialize, Default)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

fn invalid(origin: &Path, msg: impl std::fmt::Display) -> anyhow::Error {
    fail(
        Kind::Usage,
        format!(
            "{}: {msg} (see containers-registries.conf(5))",
            origin.display()
        ),
    )
}

/// Trailing `/` removed; URI schemes refused.
fn clean_location(origin: &Path, s: &str) -> anyhow::Result<String> {
    let t = s.trim_end_matches('/');
    if t.starts_with("http://") || t.starts_with("https://") {
        return Err(invalid(
            origin,
            format!("invalid location {s:?}: URI schemes are not supported"),
        ));
    }
    Ok(t.to_string())
}

fn pull_from_mirror(origin: &Path, value: &str, location: &str) -> anyhow::Result<PullFromMirror> {
    match value {
        "" | "all" => Ok(PullFromMirror::All),
        "digest-only" => Ok(PullFromMirror::DigestOnly),
        "tag-only" => Ok(PullFromMirror::TagOnly),
        v => Err(invalid(
            origin,
            format!("unsupported pull-from-mirror value {v:?} for mirror {location:?}"),
        )),
    }
}

fn entry_from_toml(origin: &Path, r: RegistryToml) -> anyhow::Result<RegistryEntry> {
    let location = clean_location(origin, &r.location)?;
    let prefix = match clean_location(origin, &r.prefix)? {
        p if p.is_empty() && location.is_empty() => {
            return Err(invalid(
                origin,
                "a [[registry]] has neither prefix nor location",
            ))
        }
        p if p.is_empty() => location.clone(),
        p if !p.starts_with("*.") && location.is_empty() => {
            return Err(invalid(
                origin,
                format!(
                    "[[registry]] {p:?}: location is unset and the prefix is not *.example.com"
                ),
            ))
        }
        p if p.starts_with("*.") && p.contains(['/', '@', ':']) => {
            return Err(invalid(
                origin,
                format!("wildcard prefix {p:?} must be of the form *.example.com"),
            ))
        }
        p => p,
    };
    if !r.pull_from_mirror.is_empty() {
        return Err(invalid(
            origin,
            format!("pull-from-mirror must not be set for the non-mirror registry {prefix:?}"),
        ));
    }
    let mut mirrors = Vec::new();
    for m in r.mirror {
        let loc = clean_location(origin, &m.location)?;
        if loc.is_empty() {
            return Err(invalid(
                origin,
                format!("[[registry]] {prefix:?}: a mirror has no location"),
            ));
        }
        if r.mirror_by_digest_only && !m.pull_from_mirror.is_empty() {
            return Err(invalid(
                origin,
                format!("[[registry]] {prefix:?}: mirror-by-digest-only and pull-from-mirror of mirror {loc:?} cannot be set together"),
            ));
        }
        mirrors.push(Mirror {
            pull_from_mirror: pull_from_mirror(origin, &m.pull_from_mirror, &loc)?,
            location: loc,
            insecure: m.insecure,
        });
    }
    Ok(RegistryEntry {
        prefix,
        location,
        insecure: r.insecure,
        blocked: r.blocked,
        mirror_by_digest_only: r.mirror_by_digest_only,
        mirrors,
        no_fallback: r.kplug_no_fallback,
        origin: origin.to_path_buf(),
    })
}

/// v1 `block`/`insecure` lists as v2 entries (`search` has no meaning for kplug).
fn v1_entries(origin: &Path, v1: V1Toml) -> anyhow::Result<Vec<RegistryToml>> {
    let mut order: Vec<String> = Vec::new();
    let mut map: HashMap<String, RegistryToml> = HashMap::new();
    let lists = [(v1.block.registries, true), (v1.insecure.registries, false)];
    for (list, is_block) in lists {
        for loc in list {
            let loc = clean_location(origin, &loc)?;
            let e = map.entry(loc.clone()).or_insert_with(|| {
                order.push(loc.clone());
                RegistryToml {
                    location: loc.clone(),
                    ..Default::default()
                }
            });
            if is_block {
                e.blocked = true;
            } else {
                e.insecure = true;
            }
        }
    }
    let _ = v1.search;
    Ok(order.into_iter().filter_map(|l| map.remove(&l)).collect())
}

/// Entries sharing a location must agree on `insecure` and `blocked`.
fn check_conflicts(origin: &Path, entries: &[RegistryEntry]) -> anyhow::Result<()> {
    let key = |e: &RegistryEntry| {
        if e.location.is_empty() {
            e.prefix.clone()
        } else {
            e.location.clone()
        }
    };
    let mut seen: HashMap<String, (bool, bool)> = HashMap::new();
    for e in entries {
        let (insecure, blocked) = *seen.entry(key(e)).or_insert((e.insecure, e.blocked));
        for (what, a, b) in [
            ("insecure", insecure, e.insecure),
            ("blocked", blocked, e.blocked),
        ] {
            if a != b {
                return Err(invalid(
                    origin,
                    format!(
                        "registry {:?} is defined several times with conflicting {what:?}",
                        key(e)
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl RegistriesConf {
    /// Parses one file's text. `v2_only` for drop-ins (v1 is refused there).
    pub fn parse(text: &str, origin: &Path, v2_only: bool) -> anyhow::Result<RegistriesConf> {
        let t: FileToml = toml::from_str(text).map_err(|e| invalid(origin, e.message()))?;
        let v1 = t.registries.filter(|v| {
            !(v.search.registries.is_empty()
                && v.insecure.registries.is_empty()
                && v.block.registries.is_empty())
        });
        let tables =
            match v1 {
                Some(_) if v2_only => {
                    return Err(invalid(
                        origin,
                        "drop-ins must use the v2 format ([[registry]])",
                    ))
                }
                Some(_) if !t.registry.is_empty() => return Err(invalid(
                    origin,
                    "mixing the v1 ([registries.*]) and v2 ([[registry]]) formats is not supported",
                )),
                Some(v1) => v1_entries(origin, v1)?,
                None => t.registry,
            };
        let entries = tables
            .into_iter()
            .map(|r| entry_from_toml(origin, r))
            .collect::<anyhow::Result<Vec<_>>>()?;
        check_conflicts(origin, &entries)?;
        // Within one file the first of several entries with one prefix wins.
        let mut conf = RegistriesConf {
            registries: vec![],
            files: vec![origin.to_path_buf()],
        };
        for e in entries {
            if !conf.registries.iter().any(|x| x.prefix == e.prefix) {
                conf.registries.push(e);
            }
        }
        conf.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok(conf)
    }

    /// A drop-in read after `self`: its entries replace those with the same prefix.
    pub fn merge(&mut self, later: RegistriesConf) {
        for e in later.registries {
            self.registries.retain(|x| x.prefix != e.prefix);
            self.registries.push(e);
        }
        self.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        self.files.extend(later.files);
    }

    /// Reads the main file and the drop-ins of `src`.
    pub fn load(src: &ConfSources) -> anyhow::Result<RegistriesConf> {
        let mut conf = match std::fs::read_to_string(&src.file) {
            Ok(text) => Self::parse(&text, &src.file, false)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !src.explicit => {
                RegistriesConf::default()
            }
            Err(e) => {
                return Err(fail(
                    Kind::Usage,
                    format!(
                        "cannot read registries configuration {}: {e}",
                        src.file.display()
                    ),
                ))
            }
        };
        for dir in &src.dirs {
            for file in drop_ins(dir)? {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    fail(
                        Kind::Usage,
                        format!("cannot read drop-in {}: {e}", file.display()),
                    )
                })?;
                conf.merge(Self::parse(&text, &file, true)?);
            }
        }
        Ok(conf)
    }

    pub fn registries(&self) -> &[RegistryEntry] {
        &self.registries
    }

    /// The `[[registry]]` with the longest prefix matching `r`'s `host/repository`.
    pub fn find(&self, r: &RegistryRef) -> Option<&RegistryEntry> {
        let name = r.repo_name();
        let mut best: Option<&RegistryEntry> = None;
        for e in &self.registries {
            if match_len(&name, &e.prefix).is_some()
                && best.is_none_or(|b| e.prefix.len() > b.prefix.len())
            {
                best = Some(e);
            }
        }
        best
    }

    /// Where to pull `r` from, in order (see [`PullPlan`]). `no_fallback` (the
    /// `--no-fallback` flag) drops the primary like [`NO_FALLBACK_KEY`] does.
    pub fn pull_sources(&self, r: &RegistryRef, no_fallback: bool) -> anyhow::Result<PullPlan> {
        let Some(e) = self.find(r) else {
            let src = PullSource {
                role: Role::Primary,
                reference: r.clone(),
                insecure: false,
                resolve_tags: true,
                by_digest: true,
            };
            return Ok(PullPlan {
                sources: vec![src],
                prefix: None,
            });
        };
        if e.blocked {
            return Err(fail(
                Kind::Usage,
                format!(
                    "{r}: pulling from {} is blocked by {}",
                    e.prefix,
                    e.origin.display()
                ),
            ));
        }
        let pinned = r.digest.is_some();
        let mut sources = Vec::new();
        for (i, m) in e.mirrors.iter().enumerate() {
            let mode = match m.pull_from_mirror {
                _ if e.mirror_by_digest_only => PullFromMirror::DigestOnly,
                p => p,
            };
            if pinned && mode == PullFromMirror::TagOnly {
                continue;
            }
            sources.push(PullSource {
                role: Role::Mirror(i),
                reference: rewrite(r, e, &m.location)?,
                insecure: m.insecure,
                resolve_tags: !pinned && mode != PullFromMirror::DigestOnly,
                by_digest: mode != PullFromMirror::TagOnly,
            });
        }
        if e.mirrors.is_empty() || !(no_fallback || e.no_fallback) {
            sources.push(PullSource {
                role: Role::Primary,
                reference: rewrite(r, e, &e.location)?,
                insecure: e.insecure,
                resolve_tags: !pinned,
                by_digest: true,
            });
        } else if sources
            .iter()
            .all(|s| !s.resolve_tags && (!pinned || !s.by_digest))
        {
            return Err(no_source(r, e, no_fallback));
        }
        Ok(PullPlan {
            sources,
            prefix: Some(e.prefix.clone()),
        })
    }

    /// Whether pushes to `r` may use plain HTTP or unverified TLS (`insecure` of the
    /// matching entry); refused when the entry is blocked. Pushes never use mirrors
    /// nor `location` rewriting, as in containers/image.
    pub fn push_insecure(&self, r: &RegistryRef) -> anyhow::Result<bool> {
        match self.find(r) {
            Some(e) if e.blocked => Err(fail(
                Kind::Usage,
                format!("{r}: {} is blocked by {}", e.prefix, e.origin.display()),
            )),
            Some(e) => Ok(e.insecure),
            None => Ok(false),
        }
    }
}

fn no_source(r: &RegistryRef, e: &RegistryEntry, flag: bool) -> anyhow::Error {
    let why = if flag {
        "--no-fallback".to_string()
    } else {
        format!("{NO_FALLBACK_KEY} in {}", e.origin.display())
    };
    let what = if r.digest.is_some() {
        "this digest"
    } else {
        "a tag"
    };
    fail(
        Kind::Usage,
        format!(
            "{r}: no mirror of {} may serve {what} and fallback to {} is disabled ({why}); \
             pin a digest (@sha256:…) or set pull-from-mirror = \"all\"",
            e.prefix,
            if e.location.is_empty() {
                &e.prefix
            } else {
                &e.location
            }
        ),
    )
}

/// Length of `name` matched by `prefix`, at a `/` boundary (for `*.example.com`: the
/// host without its port).
fn match_len(name: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        let host = name.split('/').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        return (host.len() > domain.len() && host.ends_with(domain)).then_some(host.len());
    }
    match name.strip_prefix(prefix) {
        Some("") => Some(prefix.len()),
        Some(rest) if rest.starts_with('/') => Some(prefix.len()),
        _ => None,
    }
}

/// `r` with its matched prefix replaced by `location` (empty: unchanged).
fn rewrite(r: &RegistryRef, e: &RegistryEntry, location: &str) -> anyhow::Result<RegistryRef> {
    if location.is_empty() {
        return Ok(r.clone());
    }
    let name = r.repo_name();
    let n = match_len(&name, &e.prefix).expect("entry was matched");
    let new_name = format!("{location}{}", &name[n..]);
    let mut s = new_name.clone();
    if let Some(t) = &r.tag {
        s += &format!(":{t}");
    }
    if let Some(d) = &r.digest {
        s += &format!("@{d}");
    }
    let bad = |why: String| {
        fail(
            Kind::Usage,
            format!(
                "{}: rewriting {r} with location {location:?} gives {s}: {why}",
                e.origin.display()
            ),
        )
    };
    let parsed = parse_registry(&s).map_err(|err| bad(format!("{err:#}")))?;
    if parsed.repo_name() != new_name {
        return Err(bad(format!(
            "not a canonical reference (it reads as {})",
            parsed.repo_name()
        )));
    }
    Ok(parsed)
}

/// `*.conf` files directly in `dir`, in lexical order; none when `dir` is missing.
fn drop_ins(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(fail(
                Kind::Usage,
                format!("cannot read {}: {e}", dir.display()),
            ))
        }
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn conf(text: &str) -> RegistriesConf {
        RegistriesConf::parse(text, Path::new("/etc/containers/registries.conf"), false).unwrap()
    }

    fn refs(plan: &PullPlan) -> Vec<String> {
        plan.sources
            .iter()
            .map(|s| s.reference.to_string())
            .collect()
    }

    fn r(s: &str) -> RegistryRef {
        parse_registry(s).unwrap()
    }

    fn err(text: &str) -> String {
        let e = RegistriesConf::parse(text, Path::new("/x/bad.conf"), false).unwrap_err();
        assert_eq!(kind_of(&e), Kind::Usage);
        format!("{e:#}")
    }

    /// containers-registries.conf(5), EXAMPLE.
    const MAN_EXAMPLE: &str = r#"
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
"#;

    #[test]
    fn man_page_example() {
        let c = conf(MAN_EXAMPLE);
        let plan = c
            .pull_sources(&r("example.com/foo/image:latest"), false)
            .unwrap();
        assert_eq!(
            refs(&plan),
            [
                "example-mirror-0.local/mirror-for-foo/image:latest",
                "example-mirror-1.local/mirrors/foo/image:latest",
                "internal-registry-for-example.com/bar/image:latest",
            ]
        );
        let roles: Vec<Role> = plan.sources.iter().map(|s| s.role).collect();
        assert_eq!(roles, [Role::Mirror(0), Role::Mirror(1), Role::Primary]);
        let insecure: Vec<bool> = plan.sources.iter().map(|s| s.insecure).collect();
        assert_eq!(insecure, [false, true, false]);
        assert!(plan.sources.iter().all(|s| s.resolve_tags && s.by_digest));
        assert_eq!(plan.prefix.as_deref(), Some("example.com/foo"));
        // a mirror belongs to its own [[registry]] only
        let plan = c
            .pull_sources(&r("registry.com/image:latest"), false)
            .unwrap();
        assert_eq!(
            refs(&plan),
            [
                "mirror.registry.com/image:latest",
                "registry.com/image:latest"
            ]
        );
        // no match: the reference itself, nothing else
        let plan = c
            .pull_sources(&r("example.com/foobar/image:1"), false)
            .unwrap();
        assert_eq!(
            (refs(&plan), plan.prefix),
            (vec!["example.com/foobar/image:1".to_string()], None)
        );
        assert_eq!(c.registries().len(), 2);
    }

    /// After containers/image's find-registry.conf test data.
    const FIND: &str = r#"
[[registry]]
location = "registry.com:5000"
prefix = "simple-prefix.com"

[[registry]]
location = "another-registry.com:5000"
prefix = "complex-prefix.com:4000/with/path"

[[registry]]
location = "no-prefix.com"

[[registry]]
location = "subdomain-prefix.com"
prefix = "*.so.simple-prefix.com"

[[registry]]
location = "subdomain-prefix-2.com"
prefix = "*.simple-prefix.com"

[[registry]]
location = "subdomain-prefix-3.com"
prefix = "*.bar.example.com"

[[registry]]
location = "subdomain-prefix-5.com"
prefix = "foo.bar.example.com:5000"

[[registry]]
prefix = "*.internal.registry.com"

[[registry]]
location = "mirror-for-docker-hub.local"
prefix = "docker.io"
"#;

    #[test]
    fn longest_prefix_and_wildcards() {
        let c = conf(FIND);
        let find = |s: &str| c.find(&r(s)).map(|e| e.location.clone());
        assert_eq!(
            find("simple-prefix.com/foo/bar:latest").as_deref(),
            Some("registry.com:5000")
        );
        assert_eq!(find("no-prefix.com/a").as_deref(), Some("no-prefix.com"));
        assert_eq!(
            find("complex-prefix.com:4000/with/path/x").as_deref(),
            Some("another-registry.com:5000")
        );
        assert_eq!(find("complex-prefix.com:4000/with/pathology"), None);
        // the longer wildcard wins; wildcards match any depth and hosts with ports
        assert_eq!(
            find("not.so.simple-prefix.com/x").as_deref(),
            Some("subdomain-prefix.com")
        );
        assert_eq!(
            find("not.quite.simple-prefix.com/x").as_deref(),
            Some("subdomain-prefix-2.com")
        );
        assert_eq!(
            find("not.quite.simple-prefix.com:5000/with/path:tag").as_deref(),
            Some("subdomain-prefix-2.com")
        );
        // an exact host:port is longer than *.bar.example.com
        assert_eq!(
            find("foo.bar.example.com:5000/omg/wtf").as_deref(),
            Some("subdomain-prefix-5.com")
        );
        assert_eq!(
            find("foo.bar.example.com:6000/omg/wtf").as_deref(),
            Some("subdomain-prefix-3.com")
        );
        // *.x does not match x itself, nor a host that only contains it
        assert_eq!(find("bar.example.com/a"), None);
        assert_eq!(find("a.bar.example.com.evil.io/a"), None);
        // deliberate difference: a bare host prefix does not match another port
        assert_eq!(find("simple-prefix.com:5000/a"), None);

        let plan = c
            .pull_sources(&r(&format!("simple-prefix.com/foo/bar:v1@{D}")), false)
            .unwrap();
        assert_eq!(refs(&plan), [format!("registry.com:5000/foo/bar:v1@{D}")]);
        // a wildcard keeps the port of the reference after its location
        let plan = c
            .pull_sources(&r("a.simple-prefix.com:5000/p:1"), false)
            .unwrap();
        assert_eq!(refs(&plan), ["subdomain-prefix-2.com:5000/p:1"]);
        // a wildcard without location leaves the reference as is
        let plan = c
            .pull_sources(&r("a.internal.registry.com/p:1"), false)
            .unwrap();
        assert_eq!(refs(&plan), ["a.internal.registry.com/p:1"]);
        // Docker Hub names are normalised before matching
        let plan = c.pull_sources(&r("busybox"), false).unwrap();
        assert_eq!(refs(&plan), ["mirror-for-docker-hub.local/library/busybox"]);
    }

    const MODES: &str = r#"
[[registry]]
prefix = "quay.io/kong"
location = "quay.io/kong"

[[registry.mirror]]
location = "all.local/kong"

[[registry.mirror]]
location = "digest.local/kong"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "tag.local/kong"
pull-from-mirror = "tag-only"
"#;

    #[test]
    fn pull_from_mirror_modes() {
        let c = conf(MODES);
        let plan = c.pull_sources(&r("quay.io/kong/hello:1.0"), false).unwrap();
        assert_eq!(
            refs(&plan),
            [
                "all.local/kong/hello:1.0",
                "digest.local/kong/hello:1.0",
                "tag.local/kong/hello:1.0",
                "quay.io/kong/hello:1.0"
            ]
        );
        let flags: Vec<(bool, bool)> = plan
            .sources
            .iter()
            .map(|s| (s.resolve_tags, s.by_digest))
            .collect();
        assert_eq!(
            flags,
            [(true, true), (false, true), (true, false), (true, true)]
        );
        assert_eq!(plan.tag_sources(), [0, 2, 3]);
        // after the tag is resolved, content comes by digest; a tag-only mirror serves
        // only what it resolved itself
        assert_eq!(plan.digest_sources(Some(0)), [0, 1, 3]);
        assert_eq!(plan.digest_sources(Some(2)), [2, 0, 1, 3]);
        assert_eq!(plan.digest_sources(Some(3)), [0, 1, 3]);

        // pinned: tag-only mirrors are skipped, as in containers/image
        let plan = c
            .pull_sources(&r(&format!("quay.io/kong/hello@{D}")), false)
            .unwrap();
        assert_eq!(plan.sources.len(), 3);
        assert_eq!(
            plan.sources[1].reference.to_string(),
            format!("digest.local/kong/hello@{D}")
        );
        assert!(plan.sources.iter().all(|s| s.by_digest && !s.resolve_tags));
        assert_eq!(plan.digest_sources(None), [0, 1, 2]);

        // the deprecated registry-level switch makes every mirror digest-only
        let c = conf("[[registry]]\nlocation = \"r.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\n");
        let plan = c.pull_sources(&r("r.io/a:1"), false).unwrap();
        assert_eq!(plan.tag_sources(), [1]);
        assert_eq!(plan.digest_sources(Some(1)), [0, 1]);
    }

    #[test]
    fn no_fallback_drops_the_primary() {
        let text = format!("{MODES}\n[[registry]]\nlocation = \"ghcr.io\"\n{NO_FALLBACK_KEY} = true\n[[registry.mirror]]\nlocation = \"cache.local\"\npull-from-mirror = \"digest-only\"\n[[registry]]\nlocation = \"plain.io\"\n");
        let c = conf(&text);
        // from the config: a tag cannot be resolved anywhere allowed
        let e = c.pull_sources(&r("ghcr.io/kong/p:1"), false).unwrap_err();
        let msg = format!("{e:#}");
        assert_eq!(kind_of(&e), Kind::Usage);
        assert!(
            msg.contains("kplug-no-fallback in /etc/containers/registries.conf")
                && msg.contains("pin a digest"),
            "{msg}"
        );
        let plan = c
            .pull_sources(&r(&format!("ghcr.io/kong/p@{D}")), false)
            .unwrap();
        assert_eq!(refs(&plan), [format!("cache.local/kong/p@{D}")]);
        // from the flag
        let plan = c.pull_sources(&r("quay.io/kong/hello:1.0"), true).unwrap();
        assert!(plan.sources.iter().all(|s| s.role != Role::Primary));
        assert_eq!(plan.tag_sources(), [0, 2]);
        let e = conf("[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"tag-only\"\n")
            .pull_sources(&r(&format!("r.io/a@{D}")), true)
            .unwrap_err();
        assert!(format!("{e:#}").contains("--no-fallback"), "{e:#}");
        // nothing to fall back from: references without mirrors go to their registry
        assert_eq!(
            refs(&c.pull_sources(&r("plain.io/a:1"), true).unwrap()),
            ["plain.io/a:1"]
        );
        assert_eq!(
            refs(&c.pull_sources(&r("other.io/a:1"), true).unwrap()),
            ["other.io/a:1"]
        );
    }

    #[test]
    fn blocked_and_insecure() {
        let c = conf("[[registry]]\nlocation = \"bad.io\"\nblocked = true\n[[registry]]\nlocation = \"lab.local:5000\"\ninsecure = true\n");
        for e in [
            c.pull_sources(&r("bad.io/a:1"), false).unwrap_err(),
            c.push_insecure(&r("bad.io/a")).unwrap_err(),
        ] {
            assert_eq!(kind_of(&e), Kind::Usage);
            assert!(
                format!("{e:#}").contains("blocked by /etc/containers/registries.conf"),
                "{e:#}"
            );
        }
        assert!(c.push_insecure(&r("lab.local:5000/a")).unwrap());
        assert!(!c.push_insecure(&r("elsewhere.io/a")).unwrap());
        assert!(
            c.pull_sources(&r("lab.local:5000/a:1"), false)
                .unwrap()
                .sources[0]
                .insecure
        );
    }

    #[test]
    fn invalid_files_say_why() {
        for (text, why) in [
            ("[[registry]]\nlocation = \"https://r.io\"\n", "URI schemes are not supported"),
            ("[[registry]]\ninsecure = true\n", "neither prefix nor location"),
            ("[[registry]]\nprefix = \"r.io/a\"\n", "location is unset"),
            ("[[registry]]\nprefix = \"*.r.io/a\"\nlocation = \"x.io\"\n", "*.example.com"),
            ("[[registry]]\nlocation = \"r.io\"\npull-from-mirror = \"all\"\n", "non-mirror registry"),
            ("[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\ninsecure = true\n", "mirror has no location"),
            ("[[registry]]\nlocation = \"r.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"all\"\n", "cannot be set together"),
            ("[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n", "unsupported pull-from-mirror value \"sometimes\""),
            ("[[registry]]\nlocation = \"r.io\"\ninsecure = true\n[[registry]]\nprefix = \"x.io\"\nlocation = \"r.io\"\n", "conflicting \"insecure\""),
            ("[registries.search]\nregistries = [\"a.io\"]\n[[registry]]\nlocation = \"r.io\"\n", "mixing the v1"),
            ("[[registry]\nlocation = 1\n", "/x/bad.conf"),
            ("[[registry]]\nlocation = 5\n", "invalid type"),
        ] {
            let msg = err(text);
            assert!(msg.contains(why) && msg.contains("/x/bad.conf"), "{text:?}: {msg}");
        }
        // rewriting into something that is not a canonical reference
        let e = conf("[[registry]]\nprefix = \"r.io\"\nlocation = \"index.docker.io\"\n")
            .pull_sources(&r("r.io/a:1"), false)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("not a canonical reference"),
            "{e:#}"
        );
    }

    #[test]
    fn other_keys_v1_and_duplicates() {
        // keys kplug does not use are accepted, as containers tools accept unknown keys
        let c = conf("unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"enforcing\"\ncredential-helpers = [\"pass\"]\n[aliases]\n\"hello\" = \"quay.io/kong/hello\"\n[[registry]]\nlocation = \"r.io\"\nfuture-key = 1\n");
        assert_eq!(c.registries().len(), 1);
        // v1: block and insecure lists become entries
        let c = conf("[registries.search]\nregistries = ['registry1.com']\n[registries.insecure]\nregistries = ['registry3.com']\n[registries.block]\nregistries = ['registry.untrusted.com', 'registry.unsafe.com']\n");
        let flags: Vec<(&str, bool, bool)> = c
            .registries()
            .iter()
            .map(|e| (e.prefix.as_str(), e.insecure, e.blocked))
            .collect();
        assert_eq!(
            flags,
            [
                ("registry.unsafe.com", false, true),
                ("registry.untrusted.com", false, true),
                ("registry3.com", true, false)
            ]
        );
        // within one file the first entry of a prefix wins; trailing slashes are dropped
        let c = conf("[[registry]]\nprefix = \"r.io\"\nlocation = \"first.io/\"\n[[registry]]\nprefix = \"r.io\"\nlocation = \"second.io\"\n");
        assert_eq!(c.registries().len(), 1);
        assert_eq!(c.registries()[0].location, "first.io");
        assert!(RegistriesConf::parse(
            "[registries.block]\nregistries = ['a.io']\n",
            Path::new("d.conf"),
            true
        )
        .is_err());
    }

    #[test]
    fn files_drop_ins_and_overrides() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        // nothing in HOME: the system file and both drop-in directories
        let src = ConfSources::resolve(None, None, Some(h));
        assert_eq!(src.file, Path::new(SYSTEM_CONF));
        assert_eq!(
            src.dirs,
            [PathBuf::from(SYSTEM_CONF_DIR), h.join(USER_CONF_DIR)]
        );
        assert!(!src.explicit);
        // a user file replaces the system file and directory
        std::fs::create_dir_all(h.join(USER_CONF_DIR)).unwrap();
        std::fs::write(
            h.join(USER_CONF),
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"main.local\"\n",
        )
        .unwrap();
        let src = ConfSources::resolve(None, Some("".into()), Some(h));
        assert_eq!(
            (src.file.clone(), src.dirs.clone()),
            (h.join(USER_CONF), vec![h.join(USER_CONF_DIR)])
        );
        // the environment, then the flag, name the file; drop-ins still apply
        let env_file = h.join("env.conf");
        let src = ConfSources::resolve(None, Some(env_file.clone().into()), Some(h));
        assert_eq!(
            (src.file.as_path(), src.explicit),
            (env_file.as_path(), true)
        );
        assert_eq!(src.dirs.len(), 2);
        let src = ConfSources::resolve(
            Some(Path::new("/flag.conf")),
            Some(env_file.clone().into()),
            Some(h),
        );
        assert_eq!(src.file, Path::new("/flag.conf"));
    }

    #[test]
    fn drop_ins_in_order_and_missing_files() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let d = h.join(USER_CONF_DIR);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            h.join(USER_CONF),
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"main.local\"\n",
        )
        .unwrap();
        // drop-ins in lexical order, the later one wins per prefix; other names ignored
        std::fs::write(
            d.join("20-b.conf"),
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"b.local\"\n",
        )
        .unwrap();
        std::fs::write(d.join("10-a.conf"), "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"a.local\"\n[[registry]]\nlocation = \"s.io\"\n").unwrap();
        std::fs::write(d.join("30-c.conf.bak"), "not toml [").unwrap();
        std::fs::create_dir(d.join("40-dir.conf")).unwrap();
        let user = ConfSources {
            file: h.join(USER_CONF),
            explicit: false,
            dirs: vec![d.clone()],
        };
        let c = RegistriesConf::load(&user).unwrap();
        assert_eq!(
            c.files,
            [h.join(USER_CONF), d.join("10-a.conf"), d.join("20-b.conf")]
        );
        assert_eq!(
            refs(&c.pull_sources(&r("r.io/x:1"), false).unwrap()),
            ["b.local/x:1", "r.io/x:1"]
        );
        assert_eq!(c.find(&r("s.io/x")).unwrap().origin, d.join("10-a.conf"));

        // a missing default file is empty; a missing named file is an error
        let none = ConfSources {
            file: h.join("nope.conf"),
            explicit: false,
            dirs: vec![h.join("nodir")],
        };
        assert_eq!(RegistriesConf::load(&none).unwrap().registries().len(), 0);
        let e = RegistriesConf::load(&ConfSources {
            explicit: true,
            ..none
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("nope.conf"), "{e:#}");
        // a bad drop-in names itself
        std::fs::write(
            d.join("50-bad.conf"),
            "[[registry]]\nlocation = \"http://x\"\n",
        )
        .unwrap();
        let e = RegistriesConf::load(&user).unwrap_err();
        assert!(format!("{e:#}").contains("50-bad.conf"), "{e:#}");
    }
}
