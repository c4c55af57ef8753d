//! The content-store abstraction every command is a pipeline over.
//!
//! A [`Store`] is one repository's worth of content-addressed blobs and manifests plus
//! tags, modelled on go-containerregistry's `remote`/`layout` and oras-go's `Target`.
//! Implementations: [`remote::RemoteStore`] (a registry), [`layout::LayoutStore`] (an OCI
//! image layout directory) and [`archive::ArchiveStore`] (read-only `oci-archive:` and
//! `docker-archive:` tarballs). Blobs are streamed and hashed on the way; a digest
//! mismatch is an error and leaves nothing behind.

pub mod archive;
pub mod http;
pub mod layout;
pub mod mirror;
pub mod remote;
pub mod sink;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::digest::Hasher;
use crate::error::{Kind, StoreError};
use crate::oci::reference::Location;
use crate::oci::{self, Descriptor, Index};

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer<'a> = &'a mut dyn BlobSink;
pub type Result<T> = std::result::Result<T, StoreError>;
/// A blob's bytes as they arrive; errors keep their store kind.
pub type Chunks<'a> = BoxStream<'a, Result<Bytes>>;

/// Where a fetched blob's bytes go, chunk by chunk. Every `AsyncWrite` is one (it copies
/// each chunk); a sink that keeps the chunks themselves ([`sink::FileSink`]) saves a
/// copy of every byte.
#[async_trait]
pub trait BlobSink: Send {
    async fn put(&mut self, chunk: Bytes) -> std::io::Result<()>;
    /// Everything put so far is written.
    async fn flush_all(&mut self) -> std::io::Result<()>;
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> BlobSink for W {
    async fn put(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.write_all(&chunk).await
    }
    async fn flush_all(&mut self) -> std::io::Result<()> {
        self.flush().await
    }
}

/// The digest of a blob being pushed, sent when known: `None` abandons the upload.
pub type DigestLater = tokio::sync::oneshot::Receiver<Option<String>>;

/// The caller of [`WriteStore::push_blob_hashing`] dropped the digest's sender (its
/// hashing failed, and it reports why).
fn no_digest(what: &str) -> StoreError {
    StoreError::Transport(format!(
        "{what}: stopped, the blob's digest could not be computed"
    ))
}

/// Wait for a [`DigestLater`]; `None` means "abandon the upload".
pub async fn wait_digest(digest: &mut DigestLater, what: &str) -> Result<Option<String>> {
    digest.await.map_err(|_| no_digest(what))
}

/// Where a pushed blob's bytes come from. A file or in-memory bytes can be read again
/// from the start, so a failed upload is restarted; a stream (another store's blob on
/// its way) can be read once, and its upload is restarted by whoever made the stream.
pub enum BlobSource {
    File(PathBuf, Option<indicatif::ProgressBar>),
    Bytes(Bytes),
    Stream(std::sync::Mutex<Option<Reader>>),
}

impl BlobSource {
    pub fn stream(r: Reader) -> BlobSource {
        BlobSource::Stream(std::sync::Mutex::new(Some(r)))
    }

    pub fn restartable(&self) -> bool {
        !matches!(self, BlobSource::Stream(_))
    }

    /// A reader from the first byte: again for a file or bytes, once for a stream.
    pub fn open(&self) -> Result<Reader> {
        match self {
            BlobSource::File(p, bar) => {
                let f = std::fs::File::open(p)
                    .map_err(|e| StoreError::Transport(format!("opening {}: {e}", p.display())))?;
                if let Some(b) = bar {
                    b.set_position(0);
                }
                Ok(Box::new(crate::progress::Tracked {
                    inner: tokio::fs::File::from_std(f),
                    bar: bar.clone(),
                }))
            }
            BlobSource::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            BlobSource::Stream(m) => m.lock().expect("source lock").take().ok_or_else(|| {
                StoreError::Transport(
                    "the upload failed and its stream cannot be read again".into(),
                )
            }),
        }
    }
}

/// The read side of a store: what `pull`, `verify`, `install` and copy sources use.
///
/// Contract: an absent tag, manifest, blob or repository is [`StoreError::NotFound`] and
/// nothing else (see [`Found`]); content that does not match its digest or declared size
/// is [`StoreError::Integrity`], detected while streaming and before a caller commits it.
#[async_trait]
pub trait ReadStore: Send + Sync {
    /// Human-readable name for messages (`127.0.0.1:5000/repo`, `oci:./store:hello`).
    fn describe(&self) -> String;

    /// Tag → descriptor of the manifest it points at.
    async fn resolve(&self, tag: &str) -> Result<Descriptor>;

    /// Manifest bytes by tag or digest. The returned descriptor's digest is the sha256 of
    /// the bytes, checked against the digest when one was asked for.
    async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Descriptor)>;

    /// Does a manifest exist under this digest? (HEAD; cheap.)
    async fn manifest_exists(&self, digest: &str) -> Result<bool>;

    async fn blob_exists(&self, digest: &str) -> Result<bool>;

    /// Stream a blob into `sink`, hashing on the way; `Integrity` when the content does not
    /// match `desc` (reading stops as soon as it is longer). Callers that write files write
    /// to a temp file and commit only on `Ok` (see [`fetch_blob_to_file`]).
    async fn fetch_blob(&self, desc: &Descriptor, sink: Writer<'_>) -> Result<()>;

    async fn list_tags(&self) -> Result<Vec<String>>;

    /// What a reference naming neither tag nor digest means here: `latest` in a registry
    /// (docker's rule); in a layout or archive, its only image (skopeo's rule), else the
    /// one tagged `latest`, else an error listing what is there.
    async fn choose_default(&self) -> Result<Chosen> {
        Ok(Chosen {
            reference: "latest".to_string(),
            ref_name: Some("latest".to_string()),
        })
    }

    /// For same-registry mounts: `Some((host, repository))` for remote stores.
    fn registry_repo(&self) -> Option<(String, String)> {
        None
    }

    /// OCI 1.1 referrers of `digest` (manifests whose `subject` it is), optionally only
    /// those of one `artifact_type`: an index of their descriptors, empty when there are
    /// none. Registries answer through `/v2/<name>/referrers/<digest>` or, without that
    /// API, the `sha256-<hex>` fallback index; layouts and archives keep referrers as
    /// index.json entries (OCI image layout) and may hold a fallback index too.
    async fn referrers(&self, digest: &str, artifact_type: Option<&str>) -> Result<Index> {
        let mut idx = fallback_referrers(self, digest)
            .await?
            .unwrap_or_else(Index::empty);
        filter_artifact_type(&mut idx, artifact_type);
        Ok(idx)
    }

    /// Can [`referrers`](Self::referrers) find referrers that no tag shows (a registry's
    /// referrers API, until it is known to be absent)? When not, a complete tag list
    /// without `sha256-<hex>` proves there are none, and callers skip asking.
    fn referrers_beyond_tags(&self) -> bool {
        false
    }

    /// Which source served this digest (or manifest tag), for stores that read from
    /// several (mirrors): `mirror HOST/REPO` or `primary HOST/REPO`.
    fn served_from(&self, _digest: &str) -> Option<String> {
        None
    }
}

/// The `sha256-<hex>` fallback index of `digest`, if there is one; a corrupt one is an
/// integrity error, not "none".
pub async fn fallback_referrers<S: ReadStore + ?Sized>(
    st: &S,
    digest: &str,
) -> Result<Option<Index>> {
    let tag = crate::oci::tagscheme::referrers_tag(digest);
    let Some((bytes, _)) = st.fetch_manifest(&tag).await.found()? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        StoreError::Integrity(format!(
            "the referrers index {tag} in {} is not a valid OCI index: {e}",
            st.describe()
        ))
    })
}

/// Keep only the referrers of one artifact type.
pub fn filter_artifact_type(idx: &mut Index, artifact_type: Option<&str>) {
    if let Some(at) = artifact_type {
        idx.manifests
            .retain(|d| d.artifact_type.as_deref() == Some(at));
    }
}

/// `(subject digest, descriptor for a referrers index)` of a manifest that has a subject:
/// the descriptor carries its artifactType (or config media type) and annotations, as the
/// distribution spec's referrers response does.
pub fn referrer_of(bytes: &[u8], media_type: &str) -> Option<(String, Descriptor)> {
    #[derive(serde::Deserialize)]
    struct Probe {
        subject: Option<Descriptor>,
        #[serde(rename = "artifactType")]
        artifact_type: Option<String>,
        config: Option<Descriptor>,
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    let subject = p.subject?;
    let mut d = manifest_descriptor(bytes, Some(media_type));
    d.artifact_type = p.artifact_type.or(p.config.map(|c| c.media_type));
    d.annotations = p.annotations;
    Some((subject.digest, d))
}

/// Add a referrer to `store`'s `sha256-<hex>` fallback index for `subject` (read, add
/// unless present, write back). Callers serialise updates of one index.
pub async fn add_fallback_referrer(
    store: &dyn WriteStore,
    subject: &str,
    referrer: Descriptor,
) -> Result<()> {
    let mut idx = fallback_referrers(store, subject)
        .await?
        .unwrap_or_else(Index::empty);
    if idx.manifests.iter().any(|m| m.digest == referrer.digest) {
        return Ok(());
    }
    idx.manifests.push(referrer);
    let tag = crate::oci::tagscheme::referrers_tag(subject);
    store
        .push_manifest(&oci::to_json(&idx), oci::INDEX_V1, Some(&tag))
        .await?;
    Ok(())
}

/// The referrers of `digest` in a layout or archive: its fallback index joined with
/// [`scan_referrers`] over the index.json `entries`, filtered by artifact type.
pub async fn local_referrers<S: ReadStore + ?Sized>(
    st: &S,
    entries: &[Descriptor],
    digest: &str,
    artifact_type: Option<&str>,
) -> Result<Index> {
    let mut idx = fallback_referrers(st, digest)
        .await?
        .unwrap_or_else(Index::empty);
    for d in scan_referrers(st, entries, digest).await? {
        if !idx.manifests.iter().any(|m| m.digest == d.digest) {
            idx.manifests.push(d);
        }
    }
    filter_artifact_type(&mut idx, artifact_type);
    Ok(idx)
}

/// Referrers among index.json-style entries (layouts, archives): every untagged image
/// manifest is read (bounded) and kept if its subject is `digest`.
pub async fn scan_referrers<S: ReadStore + ?Sized>(
    st: &S,
    entries: &[Descriptor],
    digest: &str,
) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    for e in entries {
        if e.annotations.contains_key(oci::ANN_REF_NAME)
            || oci::is_index(&e.media_type)
            || e.size > remote::MANIFEST_CAP as u64
        {
            continue;
        }
        let (bytes, _) = st.fetch_manifest(&e.digest).await?;
        if let Some((s, d)) = referrer_of(&bytes, &e.media_type) {
            if s == digest && !out.iter().any(|o: &Descriptor| o.digest == d.digest) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// The write side: registries and OCI layouts. Archives are read-only, so writing to one
/// does not compile.
#[async_trait]
pub trait WriteStore: ReadStore {
    /// Stream a blob in. `desc` carries the digest and size the content must have.
    async fn push_blob(&self, desc: &Descriptor, src: &BlobSource) -> Result<()>;

    /// Store a manifest and point `tag` at it (or leave it untagged). Returns its digest.
    async fn push_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<String>;

    /// Stream a blob in while the caller is still working out its digest, so hashing a
    /// large file overlaps sending it. `digest` gives the digest when known, or `None`
    /// when the caller found the store holds the blob already (the upload is dropped).
    /// Returns true if the blob was uploaded. By default: wait for it, then `push_blob`.
    async fn push_blob_hashing(
        &self,
        size: u64,
        src: &BlobSource,
        mut digest: DigestLater,
    ) -> Result<bool> {
        let what = format!("uploading {size} bytes to {}", self.describe());
        match wait_digest(&mut digest, &what).await? {
            Some(d) => {
                let desc = Descriptor::new("application/octet-stream", &d, size);
                self.push_blob(&desc, src).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ask the store to make a blob from another repository of the same registry
    /// available without an upload. `Ok(false)` means "upload instead".
    async fn mount_blob(&self, _digest: &str, _from: &dyn ReadStore) -> Result<bool> {
        Ok(false)
    }
}

/// The image a reference without tag or digest stands for (see
/// [`ReadStore::choose_default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// What to fetch: a tag or a digest.
    pub reference: String,
    /// Its `ref.name` in a layout (`NAME:TAG` or `TAG`), or its tag; `None` when untagged.
    pub ref_name: Option<String>,
}

/// "Absent" as a value: `store.fetch_manifest(tag).await.found()?` is `None` when the
/// store says [`StoreError::NotFound`], and any other error stays an error.
pub trait Found<T> {
    fn found(self) -> Result<Option<T>>;
}

impl<T> Found<T> for Result<T> {
    fn found(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Options that shape how stores talk to the outside.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plain HTTP to every registry (`--plain-http`); loopback hosts get it by default.
    pub plain_http: bool,
    /// Skip TLS verification for every registry (`--insecure`).
    pub insecure: bool,
    /// CA certificates trusted for every registry (`--ca-file`).
    pub ca_files: Vec<PathBuf>,
    /// Connecting and waiting for a response head, per request (`--timeout`; 30 s).
    pub timeout: Option<Duration>,
    /// Longest wait for the next bytes of a transfer (`--stall-timeout`; 60 s).
    pub stall_timeout: Option<Duration>,
    /// Retries of an idempotent request (4 when unset).
    pub retries: Option<u32>,
    /// Per-registry settings (`host[:port]` → how to reach it): copy's `--from-*` /
    /// `--to-*` flags, registries.conf `insecure`.
    pub hosts: BTreeMap<String, HostOptions>,
    /// Read registries.conf (mirrors, blocked registries) for registry sources.
    pub use_registries_conf: bool,
    /// `--registries-conf FILE` (else `CONTAINERS_REGISTRIES_CONF`, else the default files).
    pub registries_conf: Option<PathBuf>,
    /// `--no-fallback`: never read from the primary location of a registry with mirrors.
    pub no_fallback: bool,
}

/// How to reach one registry, over the global [`Options`].
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Plain HTTP for this host.
    pub plain_http: bool,
    /// HTTPS for this host even on loopback (a CA file or `--insecure` was given for it).
    pub tls: bool,
    /// Skip TLS verification for this host.
    pub insecure: bool,
    /// CA certificates given for this host (trusted for every host: one trust store).
    pub ca_files: Vec<PathBuf>,
}

/// Open the store a location lives in, for reading.
pub async fn open(loc: &Location, opts: &Options) -> anyhow::Result<Box<dyn ReadStore>> {
    Ok(match loc {
        Location::OciArchive { path, name, .. } => {
            Box::new(archive::ArchiveStore::open_oci(path, name.clone())?)
        }
        Location::DockerArchive { path } => Box::new(archive::ArchiveStore::open_docker(path)?),
        Location::Registry(r) if opts.use_registries_conf => {
            let plan = registries_conf(opts)?.pull_sources(r, opts.no_fallback)?;
            match plan.prefix {
                None => Box::new(remote::RemoteStore::new(r, opts).await?),
                Some(_) => Box::new(mirror::MirrorStore::new(plan, r.repo_name(), opts).await?),
            }
        }
        _ => open_writable_inner(loc, opts, false).await?,
    })
}

/// registries.conf and its drop-ins, read once per run.
fn registries_conf(
    opts: &Options,
) -> anyhow::Result<std::sync::Arc<crate::oci::registries_conf::RegistriesConf>> {
    use crate::oci::registries_conf::{ConfSources, RegistriesConf};
    type Cache = std::sync::Mutex<HashMap<Option<PathBuf>, std::sync::Arc<RegistriesConf>>>;
    static CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Default::default);
    let mut c = CACHE.lock().expect("registries.conf cache");
    if let Some(conf) = c.get(&opts.registries_conf) {
        return Ok(conf.clone());
    }
    let conf = std::sync::Arc::new(RegistriesConf::load(&ConfSources::from_env(
        opts.registries_conf.as_deref(),
    ))?);
    c.insert(opts.registries_conf.clone(), conf.clone());
    Ok(conf)
}

/// Open the store a location lives in, for writing (local layouts are created as needed).
/// Archives are read-only: asking to write one is a usage error naming what to do.
pub async fn open_writable(loc: &Location, opts: &Options) -> anyhow::Result<Box<dyn WriteStore>> {
    open_writable_inner(loc, opts, true).await
}

async fn open_writable_inner(
    loc: &Location,
    opts: &Options,
    create: bool,
) -> anyhow::Result<Box<dyn WriteStore>> {
    Ok(match loc {
        Location::Registry(r) => Box::new(remote::RemoteStore::new(r, opts).await?),
        Location::OciDir { path, name, .. } => {
            Box::new(layout::LayoutStore::open(path, name.clone(), create)?)
        }
        Location::OciArchive { path, .. } => crate::bail_kind!(
            Kind::Usage,
            "oci-archive:{} is read-only here; write to oci:DIR first, or use `kplug save`",
            path.display()
        ),
        Location::DockerArchive { path } => crate::bail_kind!(
            Kind::Usage,
            "docker-archive:{} is read-only: kplug reads crane/skopeo tarballs but writes oci: layouts",
            path.display()
        ),
    })
}

/// Resolve what a location points at: its digest when it names one, else its tag, else
/// the store's default ([`ReadStore::choose_default`]).
pub async fn resolve(store: &dyn ReadStore, loc: &Location) -> Result<Descriptor> {
    let c = chosen(store, loc).await?;
    if c.reference.starts_with("sha256:") {
        let (_, desc) = store.fetch_manifest(&c.reference).await?;
        return Ok(desc);
    }
    store.resolve(&c.reference).await
}

/// What to ask `store` for to get what `loc` names: its digest, its tag, or the store's
/// default, with the `ref.name` it goes by (`None` for a digest).
pub async fn chosen(store: &dyn ReadStore, loc: &Location) -> Result<Chosen> {
    match (loc.digest(), loc.tag()) {
        (Some(d), _) => Ok(Chosen {
            reference: d.to_string(),
            ref_name: None,
        }),
        (None, Some(t)) => Ok(Chosen {
            reference: t.to_string(),
            ref_name: Some(loc.ref_name().unwrap_or_else(|| t.to_string())),
        }),
        (None, None) => store.choose_default().await,
    }
}

/// Fetch what a location points at, resolving a tag once: one request by tag or digest
/// gives both the bytes and (by hashing them) the digest everything later uses.
pub async fn fetch_resolved(
    store: &dyn ReadStore,
    loc: &Location,
) -> Result<(Vec<u8>, Descriptor)> {
    let c = chosen(store, loc).await?;
    store.fetch_manifest(&c.reference).await
}

/// Is this `index.json` entry a signature, attestation or referrers index rather than an
/// artifact? (By its cosign `kind`, or its tag.)
fn is_signature_entry(d: &Descriptor) -> bool {
    use crate::oci::tagscheme::{tag_role, TagRole};
    if matches!(
        d.annotations.get(oci::ANN_KIND).map(String::as_str),
        Some(oci::KIND_SIGS | oci::KIND_ATTS)
    ) {
        return true;
    }
    d.annotations.get(oci::ANN_REF_NAME).is_some_and(|rn| {
        let tag = rn.rsplit_once(':').map(|(_, t)| t).unwrap_or(rn);
        !matches!(tag_role(tag), TagRole::Artifact)
    })
}

/// The `ref.name`s of an index's artifacts (signatures left out), sorted: under `NAME:`
/// when a name is given, else all of them (`NAME:TAG` and bare `TAG` alike).
pub fn ref_names(idx: &oci::Index, name: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = idx
        .manifests
        .iter()
        .filter(|m| !is_signature_entry(m))
        .filter_map(|m| m.annotations.get(oci::ANN_REF_NAME))
        .filter(|rn| name.is_none_or(|n| rn.strip_prefix(n).is_some_and(|r| r.starts_with(':'))))
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// [`ReadStore::choose_default`] for a layout's or archive's index: the only artifact
/// (under `NAME:` when a name is given; untagged entries count when nothing is tagged, as
/// skopeo writes them), else the one tagged `latest`, else an error listing the choices.
pub fn choose_in_index(idx: &oci::Index, name: Option<&str>, describe: &str) -> Result<Chosen> {
    let tagged = ref_names(idx, name);
    let digests: std::collections::BTreeSet<&str> = idx
        .manifests
        .iter()
        .filter(|m| {
            m.annotations
                .get(oci::ANN_REF_NAME)
                .is_some_and(|rn| tagged.contains(rn))
        })
        .map(|m| m.digest.as_str())
        .collect();
    if digests.len() == 1 {
        let d = digests.into_iter().next().unwrap_or_default();
        return Ok(Chosen {
            reference: d.to_string(),
            // Several tags of one image: the first, for copies that keep a tag.
            ref_name: tagged.first().cloned(),
        });
    }
    if tagged.is_empty() && name.is_none() {
        let untagged: Vec<&Descriptor> = idx
            .manifests
            .iter()
            .filter(|m| !m.annotations.contains_key(oci::ANN_REF_NAME) && !is_signature_entry(m))
            .collect();
        if let [one] = untagged[..] {
            return Ok(Chosen {
                reference: one.digest.clone(),
                ref_name: None,
            });
        }
    }
    let latest = match name {
        Some(n) => format!("{n}:latest"),
        None => "latest".to_string(),
    };
    if tagged.contains(&latest) {
        return Ok(Chosen {
            reference: "latest".to_string(),
            ref_name: Some(latest),
        });
    }
    if tagged.is_empty() {
        return Err(StoreError::NotFound(format!(
            "{describe} holds no tagged artifact{}",
            name.map(|n| format!(" named {n}")).unwrap_or_default()
        )));
    }
    const SHOWN: usize = 20;
    let mut list: Vec<String> = tagged.iter().take(SHOWN).cloned().collect();
    if tagged.len() > SHOWN {
        list.push(format!("and {} more", tagged.len() - SHOWN));
    }
    Err(StoreError::Unsupported(format!(
        "{describe} holds {} artifacts: say which, as {describe}:REF with REF one of {}",
        tagged.len(),
        crate::progress::escape(&list.join(", "))
    )))
}

/// Media type declared inside a manifest, or what its shape says it is.
pub fn sniff_manifest_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => oci::INDEX_V1.to_string(),
        _ => oci::MANIFEST_V1.to_string(),
    }
}

/// What `tag` names in an OCI layout's `index.json`: the last entry whose ref.name is
/// `NAME:TAG` (or `TAG` in a layout without names). Two fallbacks let a bundle be read
/// without knowing how it was written: a bare tag matches the one entry whose ref.name
/// ends in `:TAG` when exactly one does, and a `cosign save` layout (kind annotations, no
/// ref.names) answers `sha256-<hex>.sig`/`.att` for the image it holds.
pub fn find_in_index(idx: &oci::Index, name: Option<&str>, tag: &str) -> Option<Descriptor> {
    let strip = |d: &Descriptor| Descriptor::new(&d.media_type, &d.digest, d.size);
    fn ref_name(d: &Descriptor) -> Option<&str> {
        d.annotations.get(oci::ANN_REF_NAME).map(String::as_str)
    }
    let want = match name {
        Some(n) => format!("{n}:{tag}"),
        None => tag.to_string(),
    };
    if let Some(d) = idx
        .manifests
        .iter()
        .rev()
        .find(|m| ref_name(m) == Some(want.as_str()))
    {
        return Some(strip(d));
    }
    if name.is_none() {
        let suffix = format!(":{tag}");
        let mut hits = idx
            .manifests
            .iter()
            .filter(|m| ref_name(m).is_some_and(|r| r.ends_with(&suffix)));
        if let (Some(d), None) = (hits.next(), hits.next()) {
            return Some(strip(d));
        }
    }
    use crate::oci::tagscheme::{tag_role, TagRole};
    let kind = match tag_role(tag) {
        TagRole::Sig(hex) => (oci::KIND_SIGS, hex),
        TagRole::Att(hex) => (oci::KIND_ATTS, hex),
        _ => return None,
    };
    fn kind_of(m: &Descriptor) -> Option<&str> {
        m.annotations.get(oci::ANN_KIND).map(String::as_str)
    }
    let subject = format!("sha256:{}", kind.1);
    let has_subject = idx.manifests.iter().any(|m| {
        m.digest == subject && matches!(kind_of(m), Some(oci::KIND_IMAGE | oci::KIND_IMAGE_INDEX))
    });
    if !has_subject {
        return None;
    }
    idx.manifests
        .iter()
        .find(|m| kind_of(m) == Some(kind.0) && ref_name(m).is_none())
        .map(strip)
}

/// Descriptor for manifest bytes.
pub fn manifest_descriptor(bytes: &[u8], media_type: Option<&str>) -> Descriptor {
    let mt = media_type
        .map(str::to_string)
        .unwrap_or_else(|| sniff_manifest_media_type(bytes));
    Descriptor::new(&mt, &crate::digest::sha256(bytes), bytes.len() as u64)
}

/// A reader as [`Chunks`] of up to 1 MiB, read errors named after `what`.
pub fn read_chunks<'a>(src: impl AsyncRead + Send + Unpin + 'a, what: &str) -> Chunks<'a> {
    let what = what.to_string();
    tokio_util::io::ReaderStream::with_capacity(src, 1 << 20)
        .map(move |c| c.map_err(|e| StoreError::Transport(format!("reading {what}: {e}"))))
        .boxed()
}

/// The one hashing copy loop: every byte of `src` goes once through SHA-256 and into
/// `sink`; stop as soon as more than `desc.size` bytes arrive, then check digest and size.
pub async fn copy_hashed(
    mut src: Chunks<'_>,
    sink: Writer<'_>,
    desc: &Descriptor,
    what: &str,
) -> Result<()> {
    let mut h = Hasher::new();
    while let Some(chunk) = src.next().await {
        let chunk = chunk?;
        h.update(&chunk);
        if h.len() > desc.size {
            return Err(StoreError::Integrity(format!(
                "{what}: more than the {} bytes its descriptor declares",
                desc.size
            )));
        }
        sink.put(chunk)
            .await
            .map_err(|e| StoreError::Transport(format!("writing {what}: {e}")))?;
    }
    sink.flush_all()
        .await
        .map_err(|e| StoreError::Transport(format!("writing {what}: {e}")))?;
    Ok(h.check(&desc.digest, Some(desc.size), what)?)
}

/// Fetch a blob to `path` through a temp file beside it, pre-sized to the blob: on any
/// error nothing is left.
pub async fn fetch_blob_to_file(
    store: &dyn ReadStore,
    desc: &Descriptor,
    path: &Path,
) -> anyhow::Result<()> {
    let tmp = crate::tree::AtomicFile::create(path, crate::tree::USER_MODE)?;
    let file = tmp.reopen()?;
    preallocate(&file, desc.size);
    let bar = crate::progress::bar(desc.size, "pulling");
    let mut f = sink::FileSink::new(file, bar.clone());
    let res = store.fetch_blob(desc, &mut f).await;
    let written = f.finish().await;
    res?;
    written.with_context(|| format!("writing {}", path.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    tmp.commit()
}

/// Reserve the blocks of a file about to be written (less fragmentation, an early
/// "disk full"); a filesystem that cannot is simply written to. Not on tmpfs: it has no
/// blocks to reserve, and there fallocate allocates every page of the file up front, a
/// pass over the whole size (0.2 s a GiB) before the first byte can land.
fn preallocate(f: &std::fs::File, size: u64) {
    use std::os::fd::AsRawFd;
    if size == 0 || on_tmpfs(f) {
        return;
    }
    // SAFETY: a valid open descriptor and non-negative offsets.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, size as libc::off_t) };
    if rc != 0 {
        tracing::debug!("posix_fallocate({size}) failed ({rc}); writing without");
    }
}

#[cfg(target_os = "linux")]
fn on_tmpfs(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid open descriptor and a buffer of the right type for fstatfs to fill.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), st.as_mut_ptr()) };
    // SAFETY: fstatfs filled it when it returned 0.
    rc == 0 && unsafe { st.assume_init() }.f_type == libc::TMPFS_MAGIC
}

#[cfg(not(target_os = "linux"))]
fn on_tmpfs(_: &std::fs::File) -> bool {
    false
}

/// Fetch a small blob (config, signature payload) into memory, refused before download
/// when its descriptor says it is over `cap`.
pub async fn fetch_blob_bytes(
    store: &dyn ReadStore,
    desc: &Descriptor,
    cap: u64,
) -> Result<Vec<u8>> {
    if desc.size > cap {
        return Err(StoreError::TooLarge(format!(
            "blob {} is {} bytes, more than the {cap} allowed for metadata",
            desc.digest, desc.size
        )));
    }
    let mut buf = Vec::with_capacity(desc.size as usize);
    store.fetch_blob(desc, &mut buf).await?;
    Ok(buf)
}

/// Push a file as a blob, unless the store has it already. Returns true if uploaded.
pub async fn push_file(
    store: &dyn WriteStore,
    desc: &Descriptor,
    path: &Path,
    bar: Option<indicatif::ProgressBar>,
) -> anyhow::Result<bool> {
    if store.blob_exists(&desc.digest).await? {
        return Ok(false);
    }
    std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
    store
        .push_blob(desc, &BlobSource::File(path.to_path_buf(), bar))
        .await?;
    Ok(true)
}

/// Push in-memory bytes as a blob unless present.
pub async fn push_bytes(
    store: &dyn WriteStore,
    media_type: &str,
    bytes: &[u8],
) -> Result<Descriptor> {
    let desc = Descriptor::new(
        media_type,
        &crate::digest::sha256(bytes),
        bytes.len() as u64,
    );
    if !store.blob_exists(&desc.digest).await? {
        store
            .push_blob(&desc, &BlobSource::Bytes(Bytes::copy_from_slice(bytes)))
            .await?;
    }
    Ok(desc)
}

/// Stream one blob from `src` to `dst` without touching disk: the fetch writes into one
/// end of an in-memory pipe while the push reads the other, so memory stays at the pipe's
/// size whatever the blob's. A failed transfer is started again from both ends (the
/// pipe cannot be rewound) while the error is a transient one.
pub async fn transfer_blob(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    desc: &Descriptor,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let fetch = async {
            let res = src.fetch_blob(desc, &mut w).await;
            drop(w);
            res
        };
        let source = BlobSource::stream(Box::new(r));
        let push = dst.push_blob(desc, &source);
        let (a, b) = tokio::join!(fetch, push);
        let src_ok = match &a {
            Ok(()) => true,
            // The pipe closed under the fetch because the push gave up.
            Err(e) => matches!(e, StoreError::Transport(_)),
        };
        let retry = matches!(&b, Err(StoreError::Transport(_))) && src_ok && attempt < 2;
        if retry {
            attempt += 1;
            tracing::info!(
                "writing blob {} to {} failed ({}); starting it again",
                desc.digest,
                dst.describe(),
                b.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
            );
            continue;
        }
        a.with_context(|| format!("reading blob {} from {}", desc.digest, src.describe()))?;
        b.with_context(|| format!("writing blob {} to {}", desc.digest, dst.describe()))?;
        return Ok(());
    }
}
