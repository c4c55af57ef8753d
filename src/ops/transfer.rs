//! `copy`, `save` and `load`: artifacts with their signatures between stores, all through
//! [`copy::run`]. This module supplies the hooks: `--signed-only` verifies before anything
//! is copied, and signatures are carried (merged) after each artifact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Kind;
use crate::oci::bundle::{self, Bundle};
use crate::oci::copy::{self, Cx, Hooks, Job, Outcome};
use crate::oci::reference::{self, Location};
use crate::oci::store::{self, layout::LayoutStore, ReadStore, WriteStore};
use crate::oci::{signatures, Descriptor};
use crate::trust::Policy;

/// How signatures travel with artifacts.
#[derive(Clone, Default)]
pub struct Carry {
    /// Carry `.sig`/`.att` manifests and referrers along (merging at the destination).
    pub signatures: bool,
    /// `--signed-only`: copy nothing of an artifact that does not verify under this policy.
    pub policy: Option<Arc<Policy>>,
}

#[async_trait::async_trait]
impl Hooks for Carry {
    async fn pre_copy(&self, src: &dyn ReadStore, desc: &Descriptor) -> anyhow::Result<()> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        super::verify::verify_digest(src, &desc.digest, policy)
            .await
            .map_err(|e| {
                crate::error::fail(
                    crate::error::kind_of(&e),
                    format!(
                        "--signed-only: not copying {}@{}: {e:#}",
                        src.describe(),
                        desc.digest
                    ),
                )
            })?;
        Ok(())
    }

    async fn post_copy(
        &self,
        src: &dyn ReadStore,
        dst: &dyn WriteStore,
        desc: &Descriptor,
        cx: &mut Cx,
    ) -> anyhow::Result<()> {
        if self.signatures {
            signatures::copy_signatures(src, dst, &desc.digest, cx).await?;
        }
        Ok(())
    }
}

/// What `copy` asks for.
pub struct CopyOptions {
    pub src: String,
    /// Without a tag, the source's tag is used.
    pub dst: String,
    pub carry: Carry,
    pub store: store::Options,
}

/// What `copy` did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    pub source: String,
    /// `REPO@DIGEST` at the destination.
    pub destination: String,
    pub digest: String,
    pub stats: copy::Stats,
}

pub async fn copy_one(o: &CopyOptions) -> anyhow::Result<CopyReport> {
    let sloc = reference::parse(&o.src)?;
    let src = store::open(&sloc, &o.store).await?;
    // Resolve once; everything after works on the digest.
    let chosen = store::chosen(src.as_ref(), &sloc).await?;
    let dloc = destination(&sloc, &chosen, reference::parse(&o.dst)?);
    let dst = store::open_writable(&dloc, &o.store).await?;
    let tag = dloc.tag().map(str::to_string);
    let job = Job {
        src: Arc::from(src),
        reference: chosen.reference,
        dst: Arc::from(dst),
        tag,
        src_tags: None,
        dst_tags: None,
    };
    let mut cx = Cx::default();
    let (digest, res) = copy::copy_artifact(&job, &o.carry, &mut cx).await;
    res?;
    let digest = digest.unwrap_or_default();
    Ok(CopyReport {
        source: sloc.to_string(),
        destination: dloc.at_digest(&digest).to_string(),
        digest,
        stats: cx.stats,
    })
}

/// The destination with what it leaves out taken from the source: a registry repository
/// keeps the source's tag; a layout given without a REF stores the artifact as
/// `REPOSITORY:TAG` (the source's repository path and tag, as `save` and `mirror` do), and
/// one given a NAME alone as `NAME:TAG`. A REF given in full is kept as written (skopeo's
/// grammar: `oci:DIR:hello` is the tag `hello`).
fn destination(sloc: &Location, chosen: &store::Chosen, mut dloc: Location) -> Location {
    // The source's name and tag: from the reference, else from the entry chosen for it.
    let (src_name, src_tag) = match (sloc, chosen.ref_name.as_deref()) {
        (Location::Registry(r), _) => (Some(r.repository.clone()), r.tag.clone()),
        (_, Some(rn)) => match rn.rsplit_once(':') {
            Some((n, t)) => (Some(n.to_string()), Some(t.to_string())),
            None => (None, Some(rn.to_string())),
        },
        (_, None) => (None, None),
    };
    match &mut dloc {
        Location::Registry(r) if r.tag.is_none() && r.digest.is_none() => r.tag = src_tag,
        Location::OciDir {
            name, tag, digest, ..
        } if tag.is_none() && digest.is_none() => {
            if name.is_none() {
                *name = src_name.filter(|_| src_tag.is_some());
            }
            *tag = src_tag;
        }
        Location::OciDir {
            name: None,
            tag: Some(t),
            ..
        } => {
            if let (Some(n), Some(st)) = (&src_name, &src_tag) {
                if n.rsplit('/').next() == Some(t.as_str()) && st != t {
                    crate::progress::note(format!(
                        "note: in oci:DIR:{t}, {t:?} is the tag (skopeo's grammar); to keep the name and the version, write oci:DIR:{t}:{st}"
                    ));
                }
            }
        }
        _ => {}
    }
    dloc
}

/// What `save` asks for.
pub struct SaveOptions {
    /// Artifacts, each with a tag.
    pub refs: Vec<String>,
    /// A directory (OCI image layout) or FILE.tar (oci-archive).
    pub output: PathBuf,
    pub signatures: bool,
    pub concurrency: usize,
    /// A Sigstore `trusted_root.json` to carry in the bundle, for keyless verification on
    /// the other side of the gap.
    pub trusted_root: Option<PathBuf>,
    pub store: store::Options,
}

/// The trusted root a bundle is to carry, read and checked as `verify --trusted-root`
/// would load it, before anything is copied.
pub fn carried_trusted_root(path: &Path) -> anyhow::Result<Vec<u8>> {
    let (bytes, origin) = crate::trust::read_trusted_root(path)?;
    crate::trust::TrustedRoot::from_json(&bytes, &origin)?;
    Ok(bytes)
}

/// Put a carried trusted root beside a layout's `index.json` (see [`carried_trusted_root`]).
pub fn write_trusted_root(layout: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::tree::write_atomic(&layout.join(crate::oci::TRUSTED_ROOT_FILE), bytes)
}

pub async fn save(o: &SaveOptions) -> anyhow::Result<Vec<Outcome>> {
    let archive = bundle::is_archive_path(&o.output);
    crate::tree::check_parent_dir(&o.output)?;
    let trusted = o
        .trusted_root
        .as_deref()
        .map(carried_trusted_root)
        .transpose()?;
    // An oci-archive is written as a layout first and tarred at the end.
    let staging = match archive {
        true => Some(
            tempfile::Builder::new()
                .prefix(".kplug-save-")
                .tempdir_in(crate::tree::parent_dir(&o.output))?,
        ),
        false => None,
    };
    let dir = staging
        .as_ref()
        .map(|t| t.path().to_path_buf())
        .unwrap_or_else(|| o.output.clone());
    let mut root = LayoutStore::open(&dir, None, true)?;
    if archive {
        root = root.shown_as(format!("oci-archive:{}", o.output.display()));
    }
    let mut jobs = Vec::new();
    for r in &o.refs {
        let loc = reference::parse(r)?;
        let Some(tag) = loc.tag().map(str::to_string) else {
            crate::bail_kind!(
                Kind::Usage,
                "{r}: give a tag (REPO:TAG, or REPO:TAG@DIGEST to pin) so that `kplug load` can put the artifact back under it"
            );
        };
        jobs.push(Job {
            src: Arc::from(store::open(&loc, &o.store).await?),
            reference: loc.reference().to_string(),
            dst: Arc::new(root.with_name(Some(bundle::repo_path(&loc)?))),
            tag: Some(tag),
            src_tags: None,
            dst_tags: None,
        });
    }
    let carry = Carry {
        signatures: o.signatures,
        policy: None,
    };
    let outcomes = copy::run(&jobs, &carry, false, o.concurrency).await;
    if let Some(e) = copy::failure(&outcomes) {
        return Err(e);
    }
    root.sort_index()?;
    if let Some(bytes) = &trusted {
        write_trusted_root(&dir, bytes)?;
    }
    if archive {
        let (d, out) = (dir.clone(), o.output.clone());
        tokio::task::spawn_blocking(move || bundle::write_oci_archive(&d, &out)).await??;
    }
    Ok(outcomes)
}

/// What `load` asks for.
pub struct LoadOptions {
    /// What `kplug save` (or `cosign save`) wrote: a layout DIR or an oci-archive FILE.tar.
    pub bundle: String,
    /// REGISTRY[/PREFIX] or oci:DIR.
    pub destination: String,
    pub carry: Carry,
    pub concurrency: usize,
    pub dry_run: bool,
    pub store: store::Options,
}

pub async fn load(o: &LoadOptions) -> anyhow::Result<Vec<Outcome>> {
    let bundle = Bundle::open(&o.bundle)?;
    let mut dst = Destinations::new(&o.destination, &o.store)?;
    let (arts, orphans) = bundle.artifacts()?;
    if orphans > 0 {
        crate::progress::note(format!(
            "warning: {orphans} signature entr(y/ies) in the bundle have no artifact beside them and are not loaded"
        ));
    }
    let mut jobs = Vec::new();
    for a in arts {
        let name = dst.name_for(a.repo.as_deref())?;
        jobs.push(Job {
            src: bundle.named(a.repo.as_deref()),
            reference: a.digest,
            dst: dst.store(&name).await?,
            tag: a.tag,
            src_tags: None,
            dst_tags: None,
        });
    }
    if jobs.is_empty() {
        crate::bail_kind!(
            Kind::NotFound,
            "{} holds no tagged artifacts to load",
            o.bundle
        );
    }
    Ok(copy::run(&jobs, &o.carry, o.dry_run, o.concurrency).await)
}

/// Where artifacts go: `REGISTRY[/PREFIX]` (each repository under the prefix) or `oci:DIR`
/// (each repository a name in one layout). Stores are opened once per repository.
pub struct Destinations {
    base: Base,
    opts: store::Options,
    open: HashMap<String, Arc<dyn WriteStore>>,
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
    pub async fn store(&mut self, name: &str) -> anyhow::Result<Arc<dyn WriteStore>> {
        if let Some(s) = self.open.get(name) {
            return Ok(s.clone());
        }
        let s: Arc<dyn WriteStore> = match &self.base {
            Base::Layout(l) => Arc::new(l.with_name(Some(name.to_string()))),
            Base::Registry { registry, .. } => {
                let r = reference::parse_registry(&format!("{registry}/{name}"))?;
                Arc::from(store::open_writable(&Location::Registry(r), &self.opts).await?)
            }
        };
        self.open.insert(name.to_string(), s.clone());
        Ok(s)
    }
}
