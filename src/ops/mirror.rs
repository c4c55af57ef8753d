//! What to mirror: the `mirror.yaml` / list-file formats, tag selection (explicit tags,
//! `--all-tags`, a tag regex, a semver range) and the destination naming rule shared by
//! `mirror` and `load`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::error::{fail, Kind};
use crate::oci;
use crate::oci::reference::{self, Location};
use crate::oci::store::{self, layout::LayoutStore, Store};

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
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading mirror manifest {}", path.display()))?;
        serde_yml::from_str(&text).map_err(|e| {
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
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading list file {}", path.display()))?;
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
            .filter(|t| oci::tag_role(t) == oci::TagRole::Artifact)
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

/// Where artifacts go: `REGISTRY[/PREFIX]` (each repository under the prefix) or `oci:DIR`
/// (each repository a name in one layout). Stores are opened once per repository.
pub struct Destinations {
    base: Base,
    opts: store::Options,
    open: HashMap<String, Arc<dyn Store>>,
}

enum Base {
    Registry { registry: String, prefix: String },
    Layout(LayoutStore),
}

impl Destinations {
    pub fn new(base: &str, opts: &store::Options) -> anyhow::Result<Destinations> {
        let base = match reference::parse(base)? {
            Location::OciDir { path, .. } => Base::Layout(LayoutStore::open(&path, None, true)?),
            Location::Registry(_) => {
                let (registry, prefix) = base.split_once('/').unwrap_or((base, ""));
                if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
                    crate::bail_kind!(
                        Kind::Usage,
                        "destination {base:?} must start with a registry host (REGISTRY[/PREFIX], e.g. registry.internal:5000/kong) or be oci:DIR"
                    );
                }
                Base::Registry {
                    registry: registry.to_string(),
                    prefix: prefix.trim_end_matches('/').to_string(),
                }
            }
            _ => crate::bail_kind!(
                Kind::Usage,
                "destination {base:?} must be REGISTRY[/PREFIX] or oci:DIR"
            ),
        };
        Ok(Destinations {
            base,
            opts: opts.clone(),
            open: HashMap::new(),
        })
    }

    /// The repository `repo` lands in (`None`: the prefix itself).
    pub fn name_for(&self, repo: Option<&str>) -> anyhow::Result<String> {
        let prefix = match &self.base {
            Base::Registry { prefix, .. } => prefix.as_str(),
            Base::Layout(_) => "",
        };
        Ok(match (prefix, repo) {
            ("", Some(r)) => r.to_string(),
            (p, Some(r)) => format!("{p}/{r}"),
            ("", None) => crate::bail_kind!(
                Kind::Usage,
                "an artifact has no repository name of its own; give one in the destination (REGISTRY/REPO)"
            ),
            (p, None) => p.to_string(),
        })
    }

    /// Open (once) the store for destination repository `name`.
    pub async fn store(&mut self, name: &str) -> anyhow::Result<Arc<dyn Store>> {
        if let Some(s) = self.open.get(name) {
            return Ok(s.clone());
        }
        let s: Arc<dyn Store> = match &self.base {
            Base::Layout(l) => Arc::new(l.with_name(Some(name.to_string()))),
            Base::Registry { registry, .. } => {
                let r = reference::parse_registry(&format!("{registry}/{name}"))?;
                Arc::from(store::open(&Location::Registry(r), &self.opts, true).await?)
            }
        };
        self.open.insert(name.to_string(), s.clone());
        Ok(s)
    }
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
