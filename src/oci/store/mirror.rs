//! Reading through registry mirrors (containers-registries.conf `[[registry.mirror]]`):
//! one [`ReadStore`] over the ordered pull sources of a reference.
//!
//! - A tag is resolved only where the configuration allows it (`pull-from-mirror`), in
//!   order; everything after is fetched by digest, so a mirror cannot swap content.
//! - Each step falls back to the next source on a connection failure, a timeout, a 5xx,
//!   a 401/403 or a 404; content that fails its digest is an error, not a fallback.
//! - Signatures and referrers (tags derived from a digest: `sha256-<hex>.sig`, …) are
//!   looked up first on the source that served the artifact, then on the others in order.
//! - Which source served what is logged (`-v`) and answered by [`ReadStore::served_from`].

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::remote::RemoteStore;
use super::{ReadStore, Result, Writer};
use crate::error::StoreError;
use crate::oci::registries_conf::{PullPlan, Role};
use crate::oci::tagscheme::{tag_role, TagRole};
use crate::oci::{Descriptor, Index};

struct Source {
    store: RemoteStore,
    /// `mirror 127.0.0.1:5001/kong/hello` or `primary registry.example.com/kong/hello`.
    label: String,
    resolve_tags: bool,
    by_digest: bool,
}

pub struct MirrorStore {
    sources: Vec<Source>,
    /// The reference as written (for messages).
    name: String,
    /// Which source resolved the tag, once one did.
    resolved_at: Mutex<Option<usize>>,
    /// Digest (or tag) → source index that served it.
    served: Mutex<HashMap<String, usize>>,
}

/// May the next source be tried after this error?
fn falls_back(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound(_) | StoreError::Auth(_) | StoreError::Transport(_)
    )
}

impl MirrorStore {
    pub async fn new(plan: PullPlan, name: String, opts: &super::Options) -> Result<MirrorStore> {
        let mut sources = Vec::new();
        for s in plan.sources {
            let mut o = opts.clone();
            if s.insecure {
                o.hosts
                    .entry(s.reference.host().to_string())
                    .or_default()
                    .insecure = true;
            }
            let kind = match s.role {
                Role::Mirror(_) => {
                    // One retry: a failing mirror should hand over to the next source
                    // quickly, not wait through the primary's patience.
                    o.retries = Some(o.retries.unwrap_or(1).min(1));
                    "mirror"
                }
                Role::Primary => "primary",
            };
            sources.push(Source {
                label: format!("{kind} {}", s.reference.repo_name()),
                store: RemoteStore::new(&s.reference, &o).await?,
                resolve_tags: s.resolve_tags,
                by_digest: s.by_digest,
            });
        }
        Ok(MirrorStore {
            sources,
            name,
            resolved_at: Mutex::new(None),
            served: Mutex::new(HashMap::new()),
        })
    }

    /// Source indexes to try for a request about `reference`.
    fn order(&self, reference: &str) -> Vec<usize> {
        let all = 0..self.sources.len();
        if reference.starts_with("sha256:") {
            let own = *self.resolved_at.lock().expect("mirror lock");
            let own = own.filter(|&i| !self.sources[i].by_digest);
            return own
                .into_iter()
                .chain(all.filter(|&i| self.sources[i].by_digest))
                .collect();
        }
        match tag_role(reference) {
            // Named after a digest and verified by signature: any source may answer,
            // the one that served the artifact first.
            TagRole::Sig(hex) | TagRole::Att(hex) | TagRole::Referrers(hex) => {
                self.digest_first(&format!("sha256:{hex}"))
            }
            _ => all.filter(|&i| self.sources[i].resolve_tags).collect(),
        }
    }

    /// Every source, the one that served `digest` first.
    fn digest_first(&self, digest: &str) -> Vec<usize> {
        let first = self
            .served
            .lock()
            .expect("mirror lock")
            .get(digest)
            .copied();
        first
            .into_iter()
            .chain((0..self.sources.len()).filter(|&i| Some(i) != first))
            .collect()
    }

    fn note(&self, i: usize, what: &str, digest: &str) {
        tracing::info!("{what} {digest}: from {}", self.sources[i].label);
        self.served
            .lock()
            .expect("mirror lock")
            .entry(digest.to_string())
            .or_insert(i);
    }

    /// The first answer of `op` over `order`, falling back on the errors that allow it.
    /// Whether any source in `digest`'s order has it (`probe` asks one source): "no"
    /// falls through to the next source like a 404 does.
    async fn exists<'a, F, Fut>(&'a self, digest: &str, what: &str, probe: F) -> Result<bool>
    where
        F: Fn(&'a RemoteStore) -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let found = |i: usize| {
            let asked = probe(&self.sources[i].store);
            async move {
                match asked.await? {
                    true => Ok(()),
                    false => Err(StoreError::NotFound(String::new())),
                }
            }
        };
        match self.first(self.order(digest), what, found).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn first<T, F, Fut>(&self, order: Vec<usize>, what: &str, op: F) -> Result<(usize, T)>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if order.is_empty() {
            return Err(StoreError::Config(format!(
                "{what}: the mirror configuration allows no source for this (pull-from-mirror, --no-fallback)"
            )));
        }
        let mut tried = Vec::new();
        let mut last = None;
        for i in order {
            match op(i).await {
                Ok(v) => return Ok((i, v)),
                Err(e) if falls_back(&e) => {
                    tracing::info!(
                        "{what}: {} failed ({e}); trying the next source",
                        self.sources[i].label
                    );
                    tried.push(self.sources[i].label.clone());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let e = last.expect("at least one source");
        let tried = tried.join(", ");
        Err(match e {
            StoreError::NotFound(m) => StoreError::NotFound(format!("{m} (tried {tried})")),
            StoreError::Auth(m) => StoreError::Auth(format!("{m} (tried {tried})")),
            other => StoreError::Transport(format!("{other} (tried {tried})")),
        })
    }
}

#[async_trait]
impl ReadStore for MirrorStore {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn resolve(&self, tag: &str) -> Result<Descriptor> {
        Ok(self.fetch_manifest(tag).await?.1)
    }

    async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Descriptor)> {
        let what = format!("manifest {reference} of {}", self.name);
        let is_plain_tag =
            !reference.starts_with("sha256:") && matches!(tag_role(reference), TagRole::Artifact);
        let (i, (bytes, desc)) = self
            .first(self.order(reference), &what, |i| {
                self.sources[i].store.fetch_manifest(reference)
            })
            .await?;
        if is_plain_tag {
            *self.resolved_at.lock().expect("mirror lock") = Some(i);
        }
        self.note(i, "manifest", &desc.digest);
        if !reference.starts_with("sha256:") {
            // By tag too: which source held a `.sig` (verify's report says so).
            self.served
                .lock()
                .expect("mirror lock")
                .entry(reference.to_string())
                .or_insert(i);
        }
        Ok((bytes, desc))
    }

    async fn manifest_exists(&self, digest: &str) -> Result<bool> {
        let what = format!("manifest {digest} of {}", self.name);
        self.exists(digest, &what, |st| st.manifest_exists(digest))
            .await
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let what = format!("blob {digest} of {}", self.name);
        self.exists(digest, &what, |st| st.blob_exists(digest))
            .await
    }

    /// A source that fails before the first byte reached `sink` is fallen back from;
    /// after that the sink cannot be rewound, and the error stands.
    async fn fetch_blob(&self, desc: &Descriptor, sink: Writer<'_>) -> Result<()> {
        let mut last = None;
        for i in self.order(&desc.digest) {
            let mut counted = Counted {
                inner: &mut *sink,
                n: 0,
            };
            match self.sources[i].store.fetch_blob(desc, &mut counted).await {
                Ok(()) => {
                    self.note(i, "blob", &desc.digest);
                    return Ok(());
                }
                Err(e) if counted.n == 0 && falls_back(&e) => {
                    tracing::info!(
                        "blob {}: {} failed ({e}); trying the next source",
                        desc.digest,
                        self.sources[i].label
                    );
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            StoreError::Config(format!("blob {}: no source may serve it", desc.digest))
        }))
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        let what = format!("tags of {}", self.name);
        let order = (0..self.sources.len())
            .filter(|&i| self.sources[i].resolve_tags)
            .collect();
        Ok(self
            .first(order, &what, |i| self.sources[i].store.list_tags())
            .await?
            .1)
    }

    async fn referrers(&self, digest: &str, artifact_type: Option<&str>) -> Result<Index> {
        let what = format!("referrers of {digest} in {}", self.name);
        let nonempty = |i: usize| async move {
            let idx = self.sources[i]
                .store
                .referrers(digest, artifact_type)
                .await?;
            match idx.manifests.is_empty() {
                true => Err(StoreError::NotFound(String::new())),
                false => Ok(idx),
            }
        };
        match self.first(self.digest_first(digest), &what, nonempty).await {
            Ok((_, idx)) => Ok(idx),
            Err(e) if e.is_not_found() => Ok(Index::empty()),
            Err(e) => Err(e),
        }
    }

    fn referrers_beyond_tags(&self) -> bool {
        self.sources.iter().any(|s| s.store.referrers_beyond_tags())
    }

    fn served_from(&self, digest: &str) -> Option<String> {
        let i = *self.served.lock().expect("mirror lock").get(digest)?;
        Some(self.sources[i].label.clone())
    }
}

/// Counts the bytes written through it.
struct Counted<'a> {
    inner: Writer<'a>,
    n: u64,
}

#[async_trait::async_trait]
impl super::BlobSink for Counted<'_> {
    async fn put(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        self.n += chunk.len() as u64;
        self.inner.put(chunk).await
    }
    async fn flush_all(&mut self) -> std::io::Result<()> {
        self.inner.flush_all().await
    }
}
