//! `mirror`: many artifacts with their signatures. What to mirror (the `mirror.yaml` /
//! list-file formats), tag selection (explicit tags, `--all-tags`, a tag regex, a semver
//! range), the plan (jobs) and the run.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::transfer::{Carry, Destinations};
use crate::error::{fail, Kind};
use crate::oci::copy::{self, Job, Outcome};
use crate::oci::reference::{self, Location};
use crate::oci::store::{self, ReadStore, WriteStore};
use crate::oci::tagscheme;

/// `mirror.yaml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// `REGISTRY[/PREFIX]` or `oci:DIR`; each source lands at `<destination>/<its repository>`.
    pub destination: Option<String>,
    pub concurrency: Option<usize>,
    /// Defaults for every repository below that does not choose its own tags.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub all_tags: bool,
    pub tag_regex: Option<String>,
    pub semver: Option<String>,
    #[serde(default)]
    pub repositories: Vec<Entry>,
}

/// Which tags of a repository to take. (serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so the YAML structs repeat these fields and convert.)
#[derive(Debug, Default, Clone)]
pub struct Select {
    pub tags: Vec<String>,
    pub all_tags: bool,
    pub tag_regex: Option<String>,
    /// A semver range such as `>=1.2 <2` or `^1.4`; tags may carry a leading `v`.
    pub semver: Option<String>,
}

impl Select {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && !self.all_tags && self.tag_regex.is_none() && self.semver.is_none()
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Entry {
    /// `REGISTRY/REPO`, or `REGISTRY/REPO:TAG` / `@DIGEST` for one artifact.
    pub source: String,
    /// Full destination repository, instead of `<destination>/<source repository>`.
    pub destination: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub all_tags: bool,
    pub tag_regex: Option<String>,
    pub semver: Option<String>,
}

impl Entry {
    /// A source given on the command line: nothing but its reference.
    pub fn source(source: &str) -> Entry {
        Entry {
            source: source.to_string(),
            destination: None,
            tags: Vec::new(),
            all_tags: false,
            tag_regex: None,
            semver: None,
        }
    }

    pub fn select(&self) -> Select {
        Select {
            tags: self.tags.clone(),
            all_tags: self.all_tags,
            tag_regex: self.tag_regex.clone(),
            semver: self.semver.clone(),
        }
    }
}

impl Spec {
    pub fn select(&self) -> Select {
        Select {
            tags: self.tags.clone(),
            all_tags: self.all_tags,
            tag_regex: self.tag_regex.clone(),
            semver: self.semver.clone(),
        }
    }

    pub fn from_yaml(path: &Path) -> anyhow::Result<Spec> {
        let text = String::from_utf8_lossy(&crate::error::read_input("mirror manifest", path)?)
            .into_owned();
        serde_yaml_ng::from_str(&text).map_err(|e| {
            fail(
                Kind::Usage,
                format!(
                    "{} is not a valid mirror manifest: {e}; see docs/air-gap.md for the format",
                    path.display()
                ),
            )
        })
    }

    /// A list file: one `SOURCE [DESTINATION-REPOSITORY]` per line, `#` comments.
    pub fn from_list(path: &Path) -> anyhow::Result<Spec> {
        let text =
            String::from_utf8_lossy(&crate::error::read_input("list file", path)?).into_owned();
        let mut spec = Spec::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let source = words.next().unwrap_or_default().to_string();
            let destination = words.next().map(str::to_string);
            if words.next().is_some() {
                crate::bail_kind!(
                    Kind::Usage,
                    "{}:{}: expected `SOURCE [DESTINATION]`, got {line:?}",
                    path.display(),
                    n + 1
                );
            }
            spec.repositories.push(Entry {
                source,
                destination,
                tags: Vec::new(),
                all_tags: false,
                tag_regex: None,
                semver: None,
            });
        }
        Ok(spec)
    }
}

/// Tag filter built from a [`Select`].
pub struct TagFilter {
    explicit: Vec<String>,
    all: bool,
    regex: Option<regex::Regex>,
    range: Option<semver::VersionReq>,
}

impl TagFilter {
    pub fn new(s: &Select) -> anyhow::Result<TagFilter> {
        let regex = s
            .tag_regex
            .as_deref()
            .map(|r| {
                regex::Regex::new(r)
                    .map_err(|e| fail(Kind::Usage, format!("invalid tag regex {r:?}: {e}")))
            })
            .transpose()?;
        let range = s.semver.as_deref().map(parse_range).transpose()?;
        Ok(TagFilter {
            explicit: s.tags.clone(),
            all: s.all_tags,
            regex,
            range,
        })
    }

    /// The tags of `available` to mirror, sorted. cosign's own tags (`.sig`, `.att`,
    /// referrer indexes) are never selected: they travel with their artifact.
    pub fn select(&self, available: &[String]) -> Vec<String> {
        if !self.explicit.is_empty() {
            return self.explicit.clone();
        }
        if !self.all && self.regex.is_none() && self.range.is_none() {
            return Vec::new();
        }
        let mut out: Vec<String> = available
            .iter()
            .filter(|t| tagscheme::tag_role(t) == tagscheme::TagRole::Artifact)
            .filter(|t| self.regex.as_ref().is_none_or(|r| r.is_match(t)))
            .filter(|t| {
                self.range
                    .as_ref()
                    .is_none_or(|r| parse_version(t).is_some_and(|v| r.matches(&v)))
            })
            .cloned()
            .collect();
        out.sort();
        out
    }
}

/// A tag as a version: `v` prefix allowed, `1` and `1.2` padded to `1.0.0` / `1.2.0`.
pub fn parse_version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    let (core, rest) = match t.find(['-', '+']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let parts = core.split('.').count();
    let padded = match parts {
        1 => format!("{core}.0.0{rest}"),
        2 => format!("{core}.0{rest}"),
        _ => t.to_string(),
    };
    semver::Version::parse(&padded).ok()
}

/// npm-style ranges (`>=1.2 <2`) as well as the semver crate's (`>=1.2, <2`).
pub fn parse_range(r: &str) -> anyhow::Result<semver::VersionReq> {
    let mut comparators: Vec<String> = Vec::new();
    let mut pending = String::new();
    for tok in r.split([' ', ',']).filter(|t| !t.is_empty()) {
        pending.push_str(tok);
        // An operator on its own (`>= 1.2`) binds to the next word.
        if tok.chars().all(|c| "<>=~^".contains(c)) {
            continue;
        }
        comparators.push(std::mem::take(&mut pending));
    }
    if !pending.is_empty() {
        comparators.push(pending);
    }
    semver::VersionReq::parse(&comparators.join(", ")).map_err(|e| {
        fail(
            Kind::Usage,
            format!("invalid semver range {r:?}: {e} (example: \">=1.2 <2\")"),
        )
    })
}

/// What `mirror` asks for, besides the spec.
pub struct MirrorOptions {
    /// Sources besides the spec's: REGISTRY/REPO (tags chosen by `select`) or REGISTRY/REPO:TAG.
    pub sources: Vec<String>,
    /// Destination, overriding the spec's.
    pub to: Option<String>,
    /// Tag selection for sources that choose none (overrides the spec's defaults).
    pub select: Select,
    pub concurrency: Option<usize>,
    pub dry_run: bool,
    pub carry: Carry,
    /// A Sigstore `trusted_root.json`, carried into an `oci:DIR` destination (beside its
    /// index.json). With a registry destination only `--signed-only` uses it.
    pub trusted_root: Option<std::path::PathBuf>,
    pub store: store::Options,
}

/// The registry hosts each side of a mirror talks to: `(sources, destinations)`, from the
/// spec's repositories and `sources`, and the destination (`to`, else the spec's) with any
/// entry's own registry destination. Local stores (`oci:`) have none. For the per-side
/// transport flags (`--from-*`, `--to-*`).
pub fn hosts(spec: &Spec, sources: &[String], to: Option<&str>) -> (Vec<String>, Vec<String>) {
    let host = |r: &str| match reference::parse(r) {
        Ok(Location::Registry(r)) => Some(r.host().to_string()),
        _ => None,
    };
    let mut src: Vec<String> = spec
        .repositories
        .iter()
        .map(|e| e.source.as_str())
        .chain(sources.iter().map(String::as_str))
        .filter_map(host)
        .collect();
    let base = to.or(spec.destination.as_deref());
    let mut dst: Vec<String> = base
        .filter(|b| !b.starts_with("oci:"))
        .map(|b| b.split('/').next().unwrap_or(b).to_string())
        .into_iter()
        .chain(
            spec.repositories
                .iter()
                .filter_map(|e| e.destination.as_deref())
                .filter(|d| looks_like_registry(d))
                .filter_map(host),
        )
        .collect();
    for v in [&mut src, &mut dst] {
        v.sort();
        v.dedup();
    }
    (src, dst)
}

/// Every artifact to copy, decided before anything is copied.
pub struct Plan {
    pub jobs: Vec<Job>,
    pub concurrency: usize,
}

/// Mirror: plan, then run every job (failures do not stop the others); a trusted root to
/// carry is checked before and written after.
pub async fn mirror(spec: Spec, o: &MirrorOptions) -> anyhow::Result<Vec<Outcome>> {
    let trusted = match &o.trusted_root {
        Some(p) => carried_root_destination(&spec, o)?
            .map(|dir| super::transfer::carried_trusted_root(p).map(|b| (dir, b)))
            .transpose()?,
        None => None,
    };
    let plan = plan(spec, o).await?;
    let outcomes = copy::run(&plan.jobs, &o.carry, o.dry_run, plan.concurrency).await;
    if let (Some((dir, bytes)), false) = (&trusted, o.dry_run) {
        super::transfer::write_trusted_root(dir, bytes)?;
    }
    Ok(outcomes)
}

/// Where `--trusted-root` is carried to: the `oci:DIR` destination. A registry
/// destination carries nothing (the root then only verifies, under `--signed-only`);
/// without `--signed-only` the flag would do nothing there, which is refused.
fn carried_root_destination(
    spec: &Spec,
    o: &MirrorOptions,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let base = o.to.as_deref().or(spec.destination.as_deref());
    match base.map(reference::parse).transpose()? {
        Some(Location::OciDir { path, .. }) => Ok(Some(path)),
        _ if o.carry.policy.is_some() => Ok(None),
        _ => crate::bail_kind!(
            Kind::Usage,
            "--trusted-root travels only into an oci:DIR destination (a bundle for an air-gapped site); with a registry destination it verifies, under --signed-only"
        ),
    }
}

/// Turn the spec and options into jobs: each repository's tags listed once per side (they
/// pick tags, and say which signature tags exist so absent ones are never asked for).
pub async fn plan(mut spec: Spec, o: &MirrorOptions) -> anyhow::Result<Plan> {
    spec.repositories
        .extend(o.sources.iter().map(|s| Entry::source(s)));
    if spec.repositories.is_empty() {
        crate::bail_kind!(
            Kind::Usage,
            "nothing to mirror: give --manifest mirror.yaml, --list FILE or sources"
        );
    }
    let default_select = match o.select.is_empty() {
        true => spec.select(),
        false => o.select.clone(),
    };
    let Some(base) = o.to.clone().or(spec.destination.clone()) else {
        crate::bail_kind!(
            Kind::Usage,
            "no destination: give --to REGISTRY[/PREFIX] (or oci:DIR), or `destination:` in the manifest"
        );
    };
    let mut dst = Destinations::new(&base, &o.store)?;
    let mut dst_lists: HashMap<String, Option<Arc<HashSet<String>>>> = HashMap::new();
    let mut jobs = Vec::new();
    for e in &spec.repositories {
        let loc = reference::parse(&e.source)?;
        let src: Arc<dyn ReadStore> = Arc::from(store::open(&loc, &o.store).await?);
        let dst_store = destination_for(e, &loc, &mut dst, &o.store).await?;
        let src_listing = src.list_tags().await;
        let src_list = tag_hint(&src_listing, src.as_ref());
        let key = dst_store.describe();
        if !dst_lists.contains_key(&key) {
            let l = tag_hint(&dst_store.list_tags().await, dst_store.as_ref());
            dst_lists.insert(key.clone(), l);
        }
        let sel = match e.select().is_empty() {
            true => default_select.clone(),
            false => e.select(),
        };
        for (reference, tag) in picks(e, &loc, &sel, src_listing)? {
            jobs.push(Job {
                src: src.clone(),
                reference,
                dst: dst_store.clone(),
                tag,
                src_tags: src_list.clone(),
                dst_tags: dst_lists[&key].clone(),
            });
        }
    }
    let concurrency = o.concurrency.or(spec.concurrency).unwrap_or(4);
    Ok(Plan { jobs, concurrency })
}

/// The store an entry lands in: its own full destination, a repository under the base,
/// or its source repository's path under the base.
async fn destination_for(
    e: &Entry,
    loc: &Location,
    dst: &mut Destinations,
    opts: &store::Options,
) -> anyhow::Result<Arc<dyn WriteStore>> {
    match &e.destination {
        Some(d) if looks_like_registry(d) => Ok(Arc::from(
            store::open_writable(&reference::parse(d)?, opts).await?,
        )),
        Some(d) => dst.store(&dst.name_for(Some(d))?).await,
        None => {
            let name = dst.name_for(Some(&crate::oci::bundle::repo_path(loc)?))?;
            dst.store(&name).await
        }
    }
}

/// `(reference, destination tag)` pairs for an entry: its pinned digest or tag, or the
/// tags of the source listing that the selection picks.
fn picks(
    e: &Entry,
    loc: &Location,
    sel: &Select,
    listing: store::Result<Vec<String>>,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    if let Some(d) = loc.digest() {
        return Ok(vec![(d.to_string(), loc.tag().map(str::to_string))]);
    }
    if let Some(t) = loc.tag() {
        return Ok(vec![(t.to_string(), Some(t.to_string()))]);
    }
    if sel.is_empty() {
        crate::bail_kind!(
            Kind::Usage,
            "{}: say which tags to mirror (tags:, all-tags:, tag-regex: or semver: in the manifest; or --all-tags, --tag-regex, --semver), or give REPO:TAG",
            e.source
        );
    }
    let available: Vec<String> = match (listing, sel.tags.is_empty()) {
        (Ok(v), true) => v,
        (Err(e), true) if !e.is_not_found() => return Err(e.into()),
        _ => Vec::new(),
    };
    let chosen = TagFilter::new(sel)?.select(&available);
    if chosen.is_empty() {
        crate::progress::note(format!(
            "warning: no tag of {} matches; {} tag(s) there",
            e.source,
            available.len()
        ));
    }
    Ok(chosen.into_iter().map(|t| (t.clone(), Some(t))).collect())
}

/// A repository's tag listing as a hint for the copy: the complete list, empty when the
/// repository does not exist yet, `None` when the store would not say (then every tag is
/// asked for).
fn tag_hint(
    listing: &store::Result<Vec<String>>,
    st: &dyn ReadStore,
) -> Option<Arc<HashSet<String>>> {
    match listing {
        Ok(v) => Some(Arc::new(v.iter().cloned().collect())),
        Err(e) if e.is_not_found() => Some(Arc::default()),
        Err(e) => {
            tracing::debug!("listing tags of {}: {e}; asking tag by tag", st.describe());
            None
        }
    }
}

/// `host[:port]/…` (a full reference) rather than a repository path under the prefix.
fn looks_like_registry(d: &str) -> bool {
    d.starts_with("oci:")
        || d.split_once('/')
            .is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn semver_ranges_select_releases() {
        let f = TagFilter::new(&Select {
            semver: Some(">=1.2 <2".into()),
            ..Select::default()
        })
        .unwrap();
        let avail = tags(&[
            "1.0.0",
            "1.2.0",
            "v1.3.1",
            "1.9",
            "2.0.0",
            "latest",
            "1.2.0-rc1",
            "sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a.sig",
        ]);
        assert_eq!(f.select(&avail), tags(&["1.2.0", "1.9", "v1.3.1"]));
        assert!(parse_range(">= 1.2, < 2").is_ok());
        assert!(parse_range("^1.4").is_ok());
        assert_eq!(
            crate::error::kind_of(&parse_range("bogus!").unwrap_err()),
            Kind::Usage
        );
    }

    #[test]
    fn regex_all_and_explicit() {
        let avail = tags(&[
            "0.1.0",
            "1.0.0",
            "1.1.0",
            "sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ]);
        let re = TagFilter::new(&Select {
            tag_regex: Some(r"^1\.".into()),
            ..Select::default()
        })
        .unwrap();
        assert_eq!(re.select(&avail), tags(&["1.0.0", "1.1.0"]));
        let all = TagFilter::new(&Select {
            all_tags: true,
            ..Select::default()
        })
        .unwrap();
        assert_eq!(all.select(&avail), tags(&["0.1.0", "1.0.0", "1.1.0"]));
        let none = TagFilter::new(&Select::default()).unwrap();
        assert!(none.select(&avail).is_empty());
    }

    #[test]
    fn spec_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.yaml");
        std::fs::write(
            &p,
            "destination: mirror.internal:5000/kong\nconcurrency: 2\nsemver: '>=1 <2'\nrepositories:\n  - source: ghcr.io/acme/hello\n    tags: [0.1.0]\n  - source: ghcr.io/acme/rate\n    destination: mirror.internal:5000/x/rate\n",
        )
        .unwrap();
        let s = Spec::from_yaml(&p).unwrap();
        assert_eq!(s.repositories.len(), 2);
        assert_eq!(s.select().semver.as_deref(), Some(">=1 <2"));
        assert_eq!(s.repositories[0].select().tags, tags(&["0.1.0"]));
        std::fs::write(&p, "repositories:\n  - sauce: x\n").unwrap();
        assert_eq!(
            crate::error::kind_of(&Spec::from_yaml(&p).unwrap_err()),
            Kind::Usage
        );
        std::fs::write(
            &p,
            "# list\nghcr.io/acme/hello:0.1.0\n\nghcr.io/acme/rate  x/rate # c\n",
        )
        .unwrap();
        let l = Spec::from_list(&p).unwrap();
        assert_eq!(l.repositories.len(), 2);
        assert_eq!(l.repositories[1].destination.as_deref(), Some("x/rate"));
    }
}
