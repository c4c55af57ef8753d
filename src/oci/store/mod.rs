//! The content-store abstraction every command is a pipeline over.
//!
//! A [`Store`] is one repository's worth of content-addressed blobs and manifests plus
//! tags, modelled on go-containerregistry's `remote`/`layout` and oras-go's `Target`.
//! Implementations: [`remote::RemoteStore`] (a registry), [`layout::LayoutStore`] (an OCI
//! image layout directory) and [`archive::ArchiveStore`] (read-only `oci-archive:` and
//! `docker-archive:` tarballs). Blobs are streamed and hashed on the way; a digest
//! mismatch is an error and leaves nothing behind.

pub mod archive;
pub mod layout;
pub mod remote;

use std::path::Path;

use anyhow::Context;
use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::digest::Hasher;
use crate::error::{Kind, StoreError};
use crate::oci::reference::Location;
use crate::oci::{self, Descriptor};

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer<'a> = &'a mut (dyn AsyncWrite + Send + Unpin);
pub type Result<T> = std::result::Result<T, StoreError>;

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
}

/// The write side: registries and OCI layouts. Archives are read-only, so writing to one
/// does not compile.
#[async_trait]
pub trait WriteStore: ReadStore {
    /// Stream a blob in. `desc` carries the digest and size the content must have.
    async fn push_blob(&self, desc: &Descriptor, src: Reader) -> Result<()>;

    /// Store a manifest and point `tag` at it (or leave it untagged). Returns its digest.
    async fn push_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<String>;

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
    pub plain_http: bool,
    pub insecure: bool,
    pub ca_files: Vec<std::path::PathBuf>,
}

/// Open the store a location lives in, for reading.
pub async fn open(loc: &Location, opts: &Options) -> anyhow::Result<Box<dyn ReadStore>> {
    Ok(match loc {
        Location::OciArchive { path, name, .. } => {
            Box::new(archive::ArchiveStore::open_oci(path, name.clone())?)
        }
        Location::DockerArchive { path } => Box::new(archive::ArchiveStore::open_docker(path)?),
        _ => open_writable_inner(loc, opts, false).await?,
    })
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

/// The one hashing copy loop: copy `src` to `sink`, hashing, stop as soon as more than
/// `desc.size` bytes arrive, then check digest and size.
pub async fn copy_hashed(
    mut src: impl AsyncRead + Unpin,
    sink: Writer<'_>,
    desc: &Descriptor,
    what: &str,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src
            .read(&mut buf)
            .await
            .map_err(|e| StoreError::Transport(format!("reading {what}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if h.len() > desc.size {
            return Err(StoreError::Integrity(format!(
                "{what}: more than the {} bytes its descriptor declares",
                desc.size
            )));
        }
        sink.write_all(&buf[..n])
            .await
            .map_err(|e| StoreError::Transport(format!("writing {what}: {e}")))?;
    }
    sink.flush()
        .await
        .map_err(|e| StoreError::Transport(format!("writing {what}: {e}")))?;
    Ok(h.check(&desc.digest, Some(desc.size), what)?)
}

/// Fetch a blob to `path` through a temp file beside it: on any error nothing is left.
pub async fn fetch_blob_to_file(
    store: &dyn ReadStore,
    desc: &Descriptor,
    path: &Path,
) -> anyhow::Result<()> {
    let tmp = crate::tree::AtomicFile::create(path, crate::tree::USER_MODE)?;
    // Buffered: each unbuffered tokio::fs write is a hop to the blocking pool.
    let mut f =
        tokio::io::BufWriter::with_capacity(4 << 20, tokio::fs::File::from_std(tmp.reopen()?));
    let bar = crate::progress::bar(desc.size, "pulling");
    let mut sink = crate::progress::Tracked {
        inner: &mut f,
        bar: bar.clone(),
    };
    store.fetch_blob(desc, &mut sink).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    f.flush().await?;
    drop(f);
    tmp.commit()
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
) -> anyhow::Result<bool> {
    if store.blob_exists(&desc.digest).await? {
        return Ok(false);
    }
    let f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    store.push_blob(desc, Box::new(f)).await?;
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
            .push_blob(&desc, Box::new(std::io::Cursor::new(bytes.to_vec())))
            .await?;
    }
    Ok(desc)
}

/// Stream one blob from `src` to `dst` without touching disk: the fetch writes into one
/// end of an in-memory pipe while the push reads the other, so memory stays at the pipe's
/// size whatever the blob's.
pub async fn transfer_blob(
    src: &dyn ReadStore,
    dst: &dyn WriteStore,
    desc: &Descriptor,
) -> anyhow::Result<()> {
    let (mut w, r) = tokio::io::duplex(1 << 20);
    let fetch = async {
        let res = src.fetch_blob(desc, &mut w).await;
        drop(w);
        res
    };
    let push = dst.push_blob(desc, Box::new(r));
    let (a, b) = tokio::join!(fetch, push);
    a.with_context(|| format!("reading blob {} from {}", desc.digest, src.describe()))?;
    b.with_context(|| format!("writing blob {} to {}", desc.digest, dst.describe()))?;
    Ok(())
}
