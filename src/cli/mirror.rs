use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::copy::SignatureArgs;
use super::Global;
use crate::error::Kind;
use crate::oci::copy::{self, Job};
use crate::ops::mirror::{Destinations, Entry, Select, Spec, TagFilter};

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// Sources besides those of --manifest/--list: REGISTRY/REPO (tags chosen by the flags
    /// below) or REGISTRY/REPO:TAG.
    pub sources: Vec<String>,
    /// A mirror manifest (YAML; format in docs/air-gap.md).
    #[arg(long, value_name = "mirror.yaml", conflicts_with = "list")]
    pub manifest: Option<PathBuf>,
    /// A list file: one `SOURCE [DESTINATION-REPOSITORY]` per line.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Destination: REGISTRY[/PREFIX] or oci:DIR; each source lands at PREFIX/<its repository>.
    #[arg(long, value_name = "REGISTRY[/PREFIX]|oci:DIR")]
    pub to: Option<String>,
    /// Every tag of repositories given without tags.
    #[arg(long)]
    pub all_tags: bool,
    /// Tags matching this regex.
    #[arg(long, value_name = "REGEX")]
    pub tag_regex: Option<String>,
    /// Tags that are versions in this range, e.g. ">=1.2 <2".
    #[arg(long, value_name = "RANGE")]
    pub semver: Option<String>,
    /// Artifacts copied at once (default 4, or the manifest's `concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// List what would be copied (every check runs; nothing is written).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub sel: SignatureArgs,
}

pub async fn run(g: &Global, a: MirrorArgs) -> anyhow::Result<()> {
    let opts = a.sel.options(a.dry_run)?;
    let mut spec = match (&a.manifest, &a.list) {
        (Some(m), _) => Spec::from_yaml(m)?,
        (None, Some(l)) => Spec::from_list(l)?,
        (None, None) => Spec::default(),
    };
    for s in &a.sources {
        spec.repositories.push(Entry {
            source: s.clone(),
            destination: None,
            tags: Vec::new(),
            all_tags: false,
            tag_regex: None,
            semver: None,
        });
    }
    if spec.repositories.is_empty() {
        crate::bail_kind!(
            Kind::Usage,
            "nothing to mirror: give --manifest mirror.yaml, --list FILE or sources"
        );
    }
    let cli_select = Select {
        tags: Vec::new(),
        all_tags: a.all_tags,
        tag_regex: a.tag_regex.clone(),
        semver: a.semver.clone(),
    };
    let default_select = if cli_select.is_empty() {
        spec.select()
    } else {
        cli_select
    };
    let Some(base) = a.to.clone().or(spec.destination.clone()) else {
        crate::bail_kind!(
            Kind::Usage,
            "no destination: give --to REGISTRY[/PREFIX] (or oci:DIR), or `destination:` in the manifest"
        );
    };
    let mut dst = Destinations::new(&base, &g.store_options())?;

    let mut jobs = Vec::new();
    let mut dst_tag_lists: HashMap<String, Option<Arc<HashSet<String>>>> = HashMap::new();
    for e in &spec.repositories {
        let (loc, src) = super::open(g, &e.source, false).await?;
        let src: Arc<dyn crate::oci::store::Store> = Arc::from(src);
        let dst_store = match &e.destination {
            Some(d) if looks_like_registry(d) => {
                let (_, s) = super::open(g, d, true).await?;
                Arc::from(s)
            }
            Some(d) => dst.store(&dst.name_for(Some(d))?).await?,
            None => {
                let name = dst.name_for(Some(&crate::oci::bundle::repo_path(&loc)?))?;
                dst.store(&name).await?
            }
        };
        // One tag listing per repository, each side: it picks tags, and tells which signature
        // tags exist so that absent ones are never asked for.
        let src_listing = src.list_tags().await;
        let src_list = tag_hint(&src_listing, src.as_ref());
        let dst_list = match dst_tag_lists.get(&dst_store.describe()) {
            Some(l) => l.clone(),
            None => {
                let l = tag_hint(&dst_store.list_tags().await, dst_store.as_ref());
                dst_tag_lists.insert(dst_store.describe(), l.clone());
                l
            }
        };
        let picks: Vec<(String, Option<String>)> = if let Some(d) = loc.digest() {
            vec![(d.to_string(), loc.tag().map(str::to_string))]
        } else if let Some(t) = loc.tag() {
            vec![(t.to_string(), Some(t.to_string()))]
        } else {
            let sel = if e.select().is_empty() {
                default_select.clone()
            } else {
                e.select()
            };
            if sel.is_empty() {
                crate::bail_kind!(
                    Kind::Usage,
                    "{}: say which tags to mirror (tags:, all-tags:, tag-regex: or semver: in the manifest; or --all-tags, --tag-regex, --semver), or give REPO:TAG",
                    e.source
                );
            }
            let available: Vec<String> = match (src_listing, sel.tags.is_empty()) {
                (Ok(v), true) => v,
                (Err(e), true) if crate::error::kind_of(&e) != Kind::NotFound => return Err(e),
                _ => Vec::new(),
            };
            let chosen = TagFilter::new(&sel)?.select(&available);
            if chosen.is_empty() {
                crate::progress::note(format!(
                    "warning: no tag of {} matches; {} tag(s) there",
                    e.source,
                    available.len()
                ));
            }
            chosen.into_iter().map(|t| (t.clone(), Some(t))).collect()
        };
        for (reference, tag) in picks {
            jobs.push(Job {
                src: src.clone(),
                reference,
                dst: dst_store.clone(),
                tag,
                src_tags: src_list.clone(),
                dst_tags: dst_list.clone(),
            });
        }
    }
    let concurrency = a.concurrency.or(spec.concurrency).unwrap_or(4);
    let outcomes = copy::run(&jobs, &opts, concurrency).await;
    super::report_outcomes(g, &outcomes)?;
    match copy::failure(&outcomes) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A repository's tag listing as a hint for the copy: the complete list, empty when the
/// repository does not exist yet, `None` when the store would not say (then every tag is
/// asked for).
fn tag_hint(
    listing: &anyhow::Result<Vec<String>>,
    st: &dyn crate::oci::store::Store,
) -> Option<Arc<HashSet<String>>> {
    match listing {
        Ok(v) => Some(Arc::new(v.iter().cloned().collect())),
        Err(e) if crate::error::kind_of(e) == Kind::NotFound => Some(Arc::default()),
        Err(e) => {
            tracing::debug!(
                "listing tags of {}: {e:#}; asking tag by tag",
                st.describe()
            );
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
