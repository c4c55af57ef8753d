//! Copy as one graph walk, behind `copy`, `mirror`, `save` and `load`.
//!
//! [`copy_manifest`] copies a manifest and everything it references (recursively for
//! indexes) from one store to another by digest, children before parents, so the
//! destination serves the very same bytes and digest. Blobs the destination already has
//! are skipped (HEAD before PUT); same-registry blobs are mounted when allowed; otherwise
//! they stream straight from source to destination. [`run`] drives many artifact copies
//! with bounded concurrency, calling [`Hooks`] around each (in the manner of oras-go's
//! `CopyGraphOptions`): `--signed-only` is a pre-copy hook, carrying signatures a
//! post-copy one. This module knows nothing of signatures.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};

use crate::error::{kind_of, Kind};
use crate::oci::store::{self, Found, ReadStore, WriteStore};
use crate::oci::{self, Descriptor, Index, Manifest};

#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub manifests_copied: u64,
    pub manifests_skipped: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub bytes_copied: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.manifests_copied += o.manifests_copied;
        self.manifests_skipped += o.manifests_skipped;
        self.blobs_copied += o.blobs_copied;
        self.blobs_mounted += o.blobs_mounted;
        self.blobs_skipped += o.blobs_skipped;
        self.bytes_copied += o.bytes_copied;
    }

    /// Did anything move (or, in a dry run, would it)?
    pub fn moved(&self) -> bool {
        self.manifests_copied + self.blobs_copied + self.blobs_mounted > 0
    }
}

/// State of one copy: what it did so far, and whether it only looks (`--dry-run`: every
/// existence check runs, nothing is written, and the counts say what would move).
#[derive(Debug, Default)]
pub struct Cx {
    pub stats: Stats,
    pub dry_run: bool,
    /// Shared by the copies of one run.
    pub flights: Arc<Flights>,
    /// Complete tag lists, when the caller has them (mirror lists each repository once):
    /// a tag not listed need not be asked for. `None`: ask.
    pub src_tags: Option<Arc<HashSet<String>>>,
    pub dst_tags: Option<Arc<HashSet<String>>>,
}

/// Could `tags` hold `tag`? (Always, when the list is unknown.)
pub fn may_have(tags: &Option<Arc<HashSet<String>>>, tag: &str) -> bool {
    tags.as_ref().is_none_or(|s| s.contains(tag))
}

/// Blobs being copied in this run, per destination: two artifacts sharing a blob (two tags
/// of one digest, one config) must not both upload it because both HEADs said "absent".
/// The second waits for the first and then finds it done.
#[derive(Debug, Default)]
pub struct Flights(Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>);

impl Flights {
    fn slot(&self, dst: &dyn WriteStore, digest: &str) -> Arc<tokio::sync::Mutex<bool>> {
        let mut m = self.0.lock().expect("flights lock");
        m.entry(format!("{} {digest}", dst.describe()))
            .or_default()
            .clone()
    }
}

/// Copy one blob unless the destination has it.
pub async fn copy_blob(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    d: &Descriptor,
    cx: &mut Cx,
) -> anyhow::Result<()> {
    let slot = cx.flights.slot(dst, &d.digest);
    let mut done = slot.lock().await;
    if *done || dst.blob_exists(&d.digest).await? {
        *done = true;
        cx.stats.blobs_skipped += 1;
        return Ok(());
    }
    if !cx.dry_run {
        if dst.mount_blob(&d.digest, src).await? {
            cx.stats.blobs_mounted += 1;
            *done = true;
            return Ok(());
        }
        store::transfer_blob(src, dst, d).await?;
        *done = true;
    }
    cx.stats.blobs_copied += 1;
    cx.stats.bytes_copied += d.size;
    Ok(())
}

/// The tag a copied manifest gets at the destination.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// None: the manifest is stored by digest only (a child of an index, a referrer).
    Untagged,
    /// `tag`, which the destination may already have (one HEAD settles a re-run).
    Tag(&'a str),
    /// `tag`, which the caller knows the destination lacks: nothing is asked first.
    NewTag(&'a str),
}

impl<'a> Target<'a> {
    fn tag(self) -> Option<&'a str> {
        match self {
            Target::Untagged => None,
            Target::Tag(t) | Target::NewTag(t) => Some(t),
        }
    }
}

/// Copy the manifest `bytes` (already fetched from `src`, digest `desc.digest`) and all it
/// references to `dst`, then point the target tag at it. Children are copied before
/// parents, so a destination never holds a manifest whose content is missing; a run cut
/// short leaves only complete blobs behind, and the next run skips them.
pub fn copy_manifest<'a>(
    src: &'a dyn ReadStore,
    dst: &'a dyn WriteStore,
    desc: &'a Descriptor,
    bytes: &'a [u8],
    target: Target<'a>,
    cx: &'a mut Cx,
) -> BoxFuture<'a, anyhow::Result<()>> {
    async move {
        let tag = target.tag();
        // With a tag, one HEAD by tag settles a re-run; a tag known to be missing is not
        // asked for, nor is the digest (content left by a cut-short run is then found blob
        // by blob below).
        let known_absent =
            matches!(target, Target::NewTag(_)) || tag.is_some_and(|t| !may_have(&cx.dst_tags, t));
        if let (Some(t), false) = (tag, known_absent) {
            if let Some(d) = dst.resolve(t).await.found()? {
                if d.digest == desc.digest {
                    cx.stats.manifests_skipped += 1;
                    return Ok(());
                }
            }
        }
        let present = !known_absent && dst.manifest_exists(&desc.digest).await?;
        if present {
            cx.stats.manifests_skipped += 1;
        } else {
            copy_children(src, dst, desc, bytes, cx).await?;
            cx.stats.manifests_copied += 1;
        }
        // One PUT: by tag when there is one (the registry stores it by digest as well).
        if !cx.dry_run && (!present || tag.is_some()) {
            dst.push_manifest(bytes, &desc.media_type, tag).await?;
        }
        Ok(())
    }
    .boxed()
}

/// What a manifest references: an index's manifests, or an image's config and layers.
async fn copy_children(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    desc: &Descriptor,
    bytes: &[u8],
    cx: &mut Cx,
) -> anyhow::Result<()> {
    if oci::is_index(&desc.media_type) {
        let idx: Index = serde_json::from_slice(bytes)?;
        let mut seen = HashSet::new();
        for child in &idx.manifests {
            if !seen.insert(child.digest.clone()) {
                continue;
            }
            let (cb, cd) = src.fetch_manifest(&child.digest).await?;
            let cd = Descriptor {
                media_type: child.media_type.clone(),
                ..cd
            };
            copy_manifest(src, dst, &cd, &cb, Target::Untagged, cx).await?;
        }
    } else {
        let m: Manifest = serde_json::from_slice(bytes)?;
        copy_blob(src, dst, &m.config, cx).await?;
        for l in &m.layers {
            copy_blob(src, dst, l, cx).await?;
        }
    }
    Ok(())
}

/// Called around each artifact a [`run`] copies.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync {
    /// Before anything of the artifact is copied: an error refuses it, and nothing of it
    /// reaches the destination.
    async fn pre_copy(&self, _src: &dyn ReadStore, _desc: &Descriptor) -> anyhow::Result<()> {
        Ok(())
    }

    /// After the artifact and its tag are at the destination (or found there already).
    async fn post_copy(
        &self,
        _src: &dyn ReadStore,
        _dst: &dyn WriteStore,
        _desc: &Descriptor,
        _cx: &mut Cx,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Copy with no hooks.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// One artifact to copy: `reference` (tag or digest) in `src`, to `dst` under `tag`.
pub struct Job {
    pub src: Arc<dyn ReadStore>,
    pub reference: String,
    pub dst: Arc<dyn WriteStore>,
    pub tag: Option<String>,
    /// Complete tag lists of both repositories, when known (see [`Cx`]).
    pub src_tags: Option<Arc<HashSet<String>>>,
    pub dst_tags: Option<Arc<HashSet<String>>>,
}

impl Job {
    pub fn source(&self) -> String {
        join_ref(&self.src.describe(), &self.reference)
    }

    pub fn destination(&self) -> String {
        match &self.tag {
            Some(t) => join_ref(&self.dst.describe(), t),
            None => self.dst.describe(),
        }
    }
}

fn join_ref(store: &str, reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("{store}@{reference}")
    } else {
        format!("{store}:{reference}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Something moved.
    Copied,
    /// The destination had everything already.
    Skipped,
    /// Dry run: this much would move.
    WouldCopy,
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub source: String,
    pub destination: String,
    pub digest: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub kind: Kind,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Copy one artifact, resolving its reference once: the pre-copy hook, the artifact by
/// digest, the post-copy hook. The digest is returned even when a later step fails, so a
/// failure can say which artifact it was.
pub async fn copy_artifact(
    job: &Job,
    hooks: &dyn Hooks,
    cx: &mut Cx,
) -> (Option<String>, anyhow::Result<()>) {
    let (bytes, desc) = match job.src.fetch_manifest(&job.reference).await {
        Ok(v) => v,
        Err(e) => return (None, Err(e.into())),
    };
    let digest = Some(desc.digest.clone());
    let res = async {
        let (src, dst) = (job.src.as_ref(), job.dst.as_ref());
        hooks.pre_copy(src, &desc).await?;
        let target = match &job.tag {
            Some(t) => Target::Tag(t),
            None => Target::Untagged,
        };
        copy_manifest(src, dst, &desc, &bytes, target, cx).await?;
        hooks.post_copy(src, dst, &desc, cx).await
    }
    .await;
    (digest, res)
}

/// Run `jobs`, at most `concurrency` at a time, reporting each as it ends. Outcomes come
/// back in job order; one failure does not stop the others. `dry_run`: every existence
/// check runs, nothing is written, and the counts say what would move.
pub async fn run(
    jobs: &[Job],
    hooks: &dyn Hooks,
    dry_run: bool,
    concurrency: usize,
) -> Vec<Outcome> {
    let flights = &Arc::new(Flights::default());
    futures_util::stream::iter(jobs.iter().map(|job| async move {
        let mut cx = Cx {
            dry_run,
            flights: flights.clone(),
            src_tags: job.src_tags.clone(),
            dst_tags: job.dst_tags.clone(),
            ..Cx::default()
        };
        let (digest, res) = copy_artifact(job, hooks, &mut cx).await;
        let o = outcome(job, digest, res, dry_run, cx.stats);
        crate::progress::tick(match &o.error {
            Some(e) => format!("failed   {} -> {}: {e}", o.source, o.destination),
            None => format!(
                "{:<8} {} -> {} ({} blob(s), {} bytes)",
                status_word(o.status),
                o.source,
                o.destination,
                o.stats.blobs_copied + o.stats.blobs_mounted,
                o.stats.bytes_copied
            ),
        });
        o
    }))
    .buffered(concurrency.max(1))
    .collect()
    .await
}

fn outcome(
    job: &Job,
    digest: Option<String>,
    res: anyhow::Result<()>,
    dry_run: bool,
    stats: Stats,
) -> Outcome {
    let (status, error, kind) = match res {
        Err(e) => (Status::Failed, Some(format!("{e:#}")), kind_of(&e)),
        Ok(()) if dry_run && stats.moved() => (Status::WouldCopy, None, Kind::Other),
        Ok(()) if stats.moved() => (Status::Copied, None, Kind::Other),
        Ok(()) => (Status::Skipped, None, Kind::Other),
    };
    Outcome {
        source: job.source(),
        destination: job.destination(),
        digest,
        status,
        error,
        kind,
        stats,
    }
}

/// Totals over outcomes, for summaries.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub artifacts: usize,
    pub copied: usize,
    pub skipped: usize,
    pub would_copy: usize,
    pub failed: usize,
    #[serde(flatten)]
    pub stats: Stats,
}

pub fn totals(outcomes: &[Outcome]) -> Totals {
    let mut t = Totals {
        artifacts: outcomes.len(),
        ..Totals::default()
    };
    for o in outcomes {
        match o.status {
            Status::Copied => t.copied += 1,
            Status::Skipped => t.skipped += 1,
            Status::WouldCopy => t.would_copy += 1,
            Status::Failed => t.failed += 1,
        }
        t.stats.add(&o.stats);
    }
    t
}

/// The error a run ends with when any job failed: the first failure's kind (so
/// `--signed-only` refusals keep cosign's exit codes), and what to do.
pub fn failure(outcomes: &[Outcome]) -> Option<anyhow::Error> {
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == Status::Failed)
        .collect();
    let first = failed.first()?;
    Some(crate::error::fail(
        first.kind,
        format!(
            "{} of {} artifact(s) failed (first: {} -> {}: {}); fix the cause and run again: \
             what already arrived is not sent twice",
            failed.len(),
            outcomes.len(),
            first.source,
            first.destination,
            first.error.as_deref().unwrap_or("")
        ),
    ))
}

/// A summary table of a run: one line per artifact, totals, then the failures.
pub fn summary(outcomes: &[Outcome]) -> String {
    let t = totals(outcomes);
    let mut s = format!(
        "{:<10} {:>6} {:>6} {:>12}  {}\n",
        "STATUS", "BLOBS", "SKIP", "BYTES", "ARTIFACT"
    );
    for o in outcomes {
        s.push_str(&format!(
            "{:<10} {:>6} {:>6} {:>12}  {} -> {}\n",
            status_word(o.status),
            o.stats.blobs_copied + o.stats.blobs_mounted,
            o.stats.blobs_skipped,
            o.stats.bytes_copied,
            o.source,
            o.destination
        ));
    }
    s.push_str(&format!(
        "{} artifact(s): {} copied, {} skipped, {} failed{}; {} blob(s) sent ({} mounted), {} bytes",
        t.artifacts,
        t.copied,
        t.skipped,
        t.failed,
        if t.would_copy > 0 {
            format!(", {} would copy", t.would_copy)
        } else {
            String::new()
        },
        t.stats.blobs_copied + t.stats.blobs_mounted,
        t.stats.blobs_mounted,
        t.stats.bytes_copied
    ));
    for o in outcomes.iter().filter(|o| o.status == Status::Failed) {
        s.push_str(&format!(
            "\nfailed: {}: {}",
            o.source,
            o.error.as_deref().unwrap_or("")
        ));
    }
    s
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Copied => "copied",
        Status::Skipped => "skipped",
        Status::WouldCopy => "would-copy",
        Status::Failed => "failed",
    }
}
