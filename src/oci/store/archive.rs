//! Read-only tarball stores: `oci-archive:` (a tar of an OCI layout) and `docker-archive:`
//! (what `crane pull` and `skopeo copy … docker-archive:` write).
//!
//! The tar is indexed once (entry name → offset, size) and blobs are then read in place by
//! seeking, so nothing is extracted and memory does not grow with blob size. Entry names are
//! only ever used as lookup keys, never as paths.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ReadStore, Result, Writer};
use crate::error::{fail, Kind, StoreError};
use crate::oci::{self, Descriptor, Index, Manifest};

/// Metadata files (index.json, manifest.json, configs) larger than this are refused.
const META_CAP: u64 = 4 << 20;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

enum Flavor {
    Oci {
        index: Arc<Index>,
        name: Option<String>,
    },
    /// The one image of a docker-archive, presented as the manifest cosign would have pushed,
    /// and the tags its `RepoTags` record.
    Docker {
        manifest: Vec<u8>,
        tags: Vec<String>,
    },
}

pub struct ArchiveStore {
    path: PathBuf,
    entries: Arc<HashMap<String, (u64, u64)>>,
    /// Blob digest → entry name (docker-archive names files by other rules).
    by_digest: Arc<HashMap<String, String>>,
    flavor: Flavor,
}

fn index_tar(path: &Path) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let f = std::fs::File::open(path).map_err(|e| {
        fail(
            if e.kind() == std::io::ErrorKind::NotFound {
                Kind::NotFound
            } else {
                Kind::Other
            },
            format!("cannot open {}: {e}", path.display()),
        )
    })?;
    let mut magic = [0u8; 2];
    if (&f).read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
        crate::bail_kind!(
            Kind::Usage,
            "{} is gzip-compressed; archives are plain tar (gunzip it first). A plugin .tar.gz is pushed with `kplug push FILE REF`",
            path.display()
        );
    }
    let f = std::fs::File::open(path)?;
    let mut ar = tar::Archive::new(f);
    let mut map = HashMap::new();
    for e in ar
        .entries()
        .with_context(|| format!("reading tar {}", path.display()))?
    {
        let e = e.with_context(|| format!("reading tar {}", path.display()))?;
        if e.header().entry_type().is_file() {
            let name = e
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            map.insert(name, (e.raw_file_position(), e.size()));
        }
    }
    Ok(map)
}

impl ArchiveStore {
    fn read_entry(&self, name: &str, cap: u64) -> anyhow::Result<Vec<u8>> {
        let (off, size) = *self.entries.get(name).ok_or_else(|| {
            fail(
                Kind::NotFound,
                format!("{} has no entry {name:?}", self.path.display()),
            )
        })?;
        if size > cap {
            crate::bail_kind!(
                Kind::Unsafe,
                "{name} in {} is too large ({size} bytes)",
                self.path.display()
            );
        }
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(off))?;
        let mut buf = Vec::with_capacity(size as usize);
        f.take(size).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn hash_entry(&self, name: &str) -> anyhow::Result<(String, u64)> {
        let (off, size) = self.entries[name];
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(off))?;
        let mut r = crate::digest::HashingReader::new(f.take(size));
        std::io::copy(&mut r, &mut std::io::sink())?;
        Ok(r.hasher.finish())
    }

    pub fn open_oci(path: &Path, name: Option<String>) -> anyhow::Result<Self> {
        let entries = index_tar(path)?;
        let mut s = ArchiveStore {
            path: path.to_path_buf(),
            entries: Arc::new(entries),
            by_digest: Arc::default(),
            flavor: Flavor::Oci {
                index: Arc::new(Index::empty()),
                name,
            },
        };
        if !s.entries.contains_key("oci-layout") || !s.entries.contains_key("index.json") {
            crate::bail_kind!(
                Kind::Usage,
                "{} is not an oci-archive (no oci-layout/index.json)",
                path.display()
            );
        }
        let idx: Index =
            serde_json::from_slice(&s.read_entry("index.json", META_CAP)?).map_err(|e| {
                fail(
                    Kind::Integrity,
                    format!("{}: bad index.json: {e}", path.display()),
                )
            })?;
        s.by_digest = Arc::new(
            s.entries
                .keys()
                .filter_map(|k| {
                    k.strip_prefix("blobs/sha256/")
                        .map(|h| (format!("sha256:{h}"), k.clone()))
                })
                .collect(),
        );
        if let Flavor::Oci { index, .. } = &mut s.flavor {
            *index = Arc::new(idx);
        }
        Ok(s)
    }

    /// The entries of an oci-archive's `index.json` (empty for a docker-archive).
    pub fn index_entries(&self) -> Vec<Descriptor> {
        match &self.flavor {
            Flavor::Oci { index, .. } => index.manifests.clone(),
            Flavor::Docker { .. } => Vec::new(),
        }
    }

    /// The same oci-archive with tags scoped to another name: no re-indexing, the tables
    /// are shared.
    pub fn with_name(&self, name: Option<String>) -> ArchiveStore {
        let flavor = match &self.flavor {
            Flavor::Oci { index, .. } => Flavor::Oci {
                index: index.clone(),
                name,
            },
            Flavor::Docker { manifest, tags } => Flavor::Docker {
                manifest: manifest.clone(),
                tags: tags.clone(),
            },
        };
        ArchiveStore {
            path: self.path.clone(),
            entries: self.entries.clone(),
            by_digest: self.by_digest.clone(),
            flavor,
        }
    }

    pub fn open_docker(path: &Path) -> anyhow::Result<Self> {
        let mut s = ArchiveStore {
            path: path.to_path_buf(),
            entries: Arc::new(index_tar(path)?),
            by_digest: Arc::default(),
            flavor: Flavor::Docker {
                manifest: Vec::new(),
                tags: Vec::new(),
            },
        };
        let img = s.docker_image()?;
        let config = s.read_entry(&img.config, META_CAP)?;
        let config_digest = crate::digest::sha256(&config);
        // Still the only owner here: make_mut does not copy.
        Arc::make_mut(&mut s.by_digest).insert(config_digest.clone(), img.config.clone());
        let mut layers = Vec::new();
        for l in &img.layers {
            let (digest, size) = s.hash_entry(l)?;
            Arc::make_mut(&mut s.by_digest).insert(digest.clone(), l.clone());
            layers.push((digest, size, s.entries[l].0));
        }
        let manifest = s.docker_manifest(&config, config_digest, &layers)?;
        // A tag is only what RepoTags records (crane writes `i-was-a-digest` for a digest).
        let tags = img
            .repo_tags
            .iter()
            .filter_map(|t| t.rsplit_once(':').map(|(_, t)| t.to_string()))
            .filter(|t| !t.contains('/'))
            .collect();
        s.flavor = Flavor::Docker { manifest, tags };
        Ok(s)
    }

    /// The first image of `manifest.json` (crane and skopeo write one).
    fn docker_image(&self) -> anyhow::Result<DockerImage> {
        let path = &self.path;
        if !self.entries.contains_key("manifest.json") {
            crate::bail_kind!(
                Kind::Usage,
                "{} is not a docker-archive/crane tarball (no manifest.json)",
                path.display()
            );
        }
        let list: Vec<DockerImage> =
            serde_json::from_slice(&self.read_entry("manifest.json", META_CAP)?).map_err(|e| {
                fail(
                    Kind::Integrity,
                    format!("{}: bad manifest.json: {e}", path.display()),
                )
            })?;
        let img = list
            .into_iter()
            .next()
            .ok_or_else(|| fail(Kind::NotFound, format!("{} holds no image", path.display())))?;
        if let Some(l) = img.layers.iter().find(|l| !self.entries.contains_key(*l)) {
            crate::bail_kind!(
                Kind::Integrity,
                "{}: manifest.json names layer {l} that is not in the tarball",
                path.display()
            );
        }
        Ok(img)
    }

    /// The manifest the image was pushed with: crane keeps the layer bytes and the config
    /// as they were, so an artifact pushed by `cosign upload blob` is rebuilt exactly
    /// (same manifest, same digest); anything else becomes a docker v2 manifest.
    fn docker_manifest(
        &self,
        config: &[u8],
        config_digest: String,
        layers: &[(String, u64, u64)],
    ) -> anyhow::Result<Vec<u8>> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.0.clone()).collect();
        let cosign_shape = config == oci::cosign_config(&diff_ids).as_slice();
        let mut descs = Vec::new();
        for (digest, size, off) in layers {
            let mt = match cosign_shape {
                true if self.gzip_at(*off)? => oci::X_GZIP,
                true => oci::OCTET_STREAM,
                false => oci::DOCKER_LAYER_GZIP,
            };
            descs.push(Descriptor::new(mt, digest, *size));
        }
        let (mt, cmt) = match cosign_shape {
            true => (oci::MANIFEST_V1, oci::CONFIG_V1),
            false => (oci::DOCKER_MANIFEST_V2, oci::DOCKER_CONFIG_V1),
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(mt.to_string()),
            config: Descriptor::new(cmt, &config_digest, config.len() as u64),
            layers: descs,
            annotations: Default::default(),
            subject: None,
            artifact_type: None,
        };
        Ok(oci::to_json(&manifest))
    }

    /// Does the entry at offset `off` start with the gzip magic?
    fn gzip_at(&self, off: u64) -> anyhow::Result<bool> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(off))?;
        let mut magic = [0u8; 2];
        Ok(f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b])
    }

    fn entry_for(&self, digest: &str) -> anyhow::Result<&String> {
        crate::digest::hex_of(digest)?;
        self.by_digest.get(digest).ok_or_else(|| {
            fail(
                Kind::NotFound,
                format!("blob {digest} not found in {}", self.describe()),
            )
        })
    }
}

#[async_trait]
impl ReadStore for ArchiveStore {
    fn describe(&self) -> String {
        match &self.flavor {
            Flavor::Oci { name: Some(n), .. } => format!("oci-archive:{}:{n}", self.path.display()),
            Flavor::Oci { .. } => format!("oci-archive:{}", self.path.display()),
            Flavor::Docker { .. } => format!("docker-archive:{}", self.path.display()),
        }
    }

    async fn resolve(&self, tag: &str) -> Result<Descriptor> {
        match &self.flavor {
            Flavor::Oci { index, name } => super::find_in_index(index, name.as_deref(), tag)
                .ok_or_else(|| {
                    let base = format!("oci-archive:{}", self.path.display());
                    StoreError::NotFound(format!(
                        "{tag:?} not found in {}; `kplug list-tags {base}` shows what is there",
                        self.describe()
                    ))
                }),
            // One image, answering the tags it records; `latest`, what a reference without
            // a tag asks for, names the only image (as skopeo's `docker-archive:FILE`).
            Flavor::Docker { manifest, tags } => {
                if tag == "latest" || tags.iter().any(|t| t == tag) {
                    return Ok(super::manifest_descriptor(manifest, None));
                }
                Err(StoreError::NotFound(format!(
                    "tag {tag:?} not found in {} (it records: {})",
                    self.describe(),
                    if tags.is_empty() {
                        "no tags".to_string()
                    } else {
                        tags.join(", ")
                    }
                )))
            }
        }
    }

    async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Descriptor)> {
        if let Flavor::Docker { manifest, .. } = &self.flavor {
            let d = match reference.starts_with("sha256:") {
                true => super::manifest_descriptor(manifest, None),
                false => self.resolve(reference).await?,
            };
            if reference.starts_with("sha256:") && reference != d.digest {
                crate::bail_kind!(
                    Kind::NotFound,
                    "manifest {reference} not found in {}",
                    self.describe()
                );
            }
            return Ok((manifest.clone(), d));
        }
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            self.resolve(reference).await?.digest
        };
        let bytes = self.read_entry(self.entry_for(&digest)?, META_CAP)?;
        let d = super::manifest_descriptor(&bytes, None);
        if d.digest != digest {
            crate::bail_kind!(
                Kind::Integrity,
                "manifest {digest} in {} is corrupt",
                self.describe()
            );
        }
        Ok((bytes, d))
    }

    async fn manifest_exists(&self, digest: &str) -> Result<bool> {
        Ok(match &self.flavor {
            Flavor::Docker { manifest, .. } => crate::digest::sha256(manifest) == digest,
            Flavor::Oci { .. } => self.by_digest.contains_key(digest),
        })
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        Ok(self.by_digest.contains_key(digest))
    }

    async fn fetch_blob(&self, desc: &Descriptor, sink: Writer<'_>) -> Result<()> {
        let name = self.entry_for(&desc.digest)?;
        let (off, size) = self.entries[name];
        let io = |e| StoreError::Transport(format!("reading {}: {e}", self.path.display()));
        let mut f = tokio::fs::File::open(&self.path).await.map_err(io)?;
        f.seek(std::io::SeekFrom::Start(off)).await.map_err(io)?;
        let what = format!("{name} in {}", self.path.display());
        super::copy_hashed(super::read_chunks(f.take(size), &what), sink, desc, &what).await
    }

    async fn referrers(&self, digest: &str, artifact_type: Option<&str>) -> Result<Index> {
        super::local_referrers(self, &self.index_entries(), digest, artifact_type).await
    }

    fn referrers_beyond_tags(&self) -> bool {
        true
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        match &self.flavor {
            Flavor::Docker { tags, .. } => Ok(tags.clone()),
            Flavor::Oci { index, name } => super::layout::list_refs(
                index,
                name.as_deref(),
                &format!("oci-archive:{}", self.path.display()),
            ),
        }
    }

    async fn choose_default(&self) -> Result<super::Chosen> {
        match &self.flavor {
            Flavor::Docker { manifest, tags } => Ok(super::Chosen {
                reference: crate::digest::sha256(manifest),
                ref_name: tags.first().cloned(),
            }),
            Flavor::Oci { index, name } => {
                super::choose_in_index(index, name.as_deref(), &self.describe())
            }
        }
    }
}
