//! Bundles for the air gap: `save` writes artifacts with their signatures into an OCI image
//! layout (or an oci-archive tarball of one), `load` pushes a bundle back into a registry.
//!
//! Entries in `index.json` carry `org.opencontainers.image.ref.name` = `REPO:TAG` (the
//! artifact's repository path without the registry host) and cosign's `kind` annotation.
//! `load` also reads `cosign save` directories, which have kinds but no ref.names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::error::{fail, Kind};
use crate::oci::reference::Location;
use crate::oci::store::{archive::ArchiveStore, layout::LayoutStore, ReadStore};
use crate::oci::tagscheme::{self, TagRole};
use crate::oci::{self, Descriptor};

/// The repository path an artifact is saved under.
pub fn repo_path(loc: &Location) -> anyhow::Result<String> {
    match loc {
        Location::Registry(r) => Ok(r.repository.clone()),
        Location::OciDir { name: Some(n), .. } | Location::OciArchive { name: Some(n), .. } => {
            Ok(n.clone())
        }
        _ => crate::bail_kind!(
            Kind::Usage,
            "{loc} has no repository name to save it under; name it (oci:DIR:NAME:TAG) or save from a registry"
        ),
    }
}

/// Is `out` meant as an oci-archive file rather than a layout directory?
pub fn is_archive_path(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "tar") || out.is_file()
}

/// Tar an OCI layout directory into `out` (an oci-archive): entries in a fixed order with
/// zeroed owners and times, so the same layout gives the same bytes; written beside `out`
/// and renamed into place.
pub fn write_oci_archive(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let tmp = crate::tree::AtomicFile::create(out, crate::tree::USER_MODE)?;
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, tmp.reopen()?));
    let header = |size: u64, dir: bool| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h
    };
    for name in ["oci-layout", "index.json", oci::TRUSTED_ROOT_FILE] {
        let p = dir.join(name);
        if name == oci::TRUSTED_ROOT_FILE && !p.is_file() {
            continue;
        }
        let f = std::fs::File::open(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut h = header(f.metadata()?.len(), false);
        b.append_data(&mut h, name, f)?;
    }
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, true);
        b.append_data(&mut h, d, std::io::empty())?;
    }
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(dir.join("blobs/sha256"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    blobs.sort();
    for p in blobs {
        let name = format!(
            "blobs/sha256/{}",
            p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        );
        // Streamed from the file: the archive never holds a blob in memory.
        let f = std::fs::File::open(&p)?;
        let mut h = header(f.metadata()?.len(), false);
        b.append_data(&mut h, &name, f)?;
    }
    let w = b.into_inner()?;
    w.into_inner().map_err(|e| e.into_error())?;
    tmp.commit()
}

/// A bundle to load: an OCI layout directory or an oci-archive file.
pub enum Bundle {
    Dir(LayoutStore),
    Archive(ArchiveStore),
}

impl Bundle {
    pub fn open(input: &str) -> anyhow::Result<Bundle> {
        let path = input
            .strip_prefix("oci:")
            .or_else(|| input.strip_prefix("oci-archive:"))
            .unwrap_or(input);
        let p = Path::new(path);
        if p.is_dir() {
            Ok(Bundle::Dir(LayoutStore::open(p, None, false)?))
        } else if p.is_file() {
            Ok(Bundle::Archive(ArchiveStore::open_oci(p, None)?))
        } else {
            Err(fail(
                Kind::NotFound,
                format!("bundle {path} not found: give the directory or .tar `kplug save` wrote"),
            ))
        }
    }

    fn entries(&self) -> anyhow::Result<Vec<Descriptor>> {
        match self {
            Bundle::Dir(l) => Ok(l.read_index()?.manifests),
            Bundle::Archive(a) => Ok(a.index_entries()),
        }
    }

    /// The bundle as a store scoped to repository `name`.
    pub fn named(&self, name: Option<&str>) -> Arc<dyn ReadStore> {
        let name = name.map(str::to_string);
        match self {
            Bundle::Dir(l) => Arc::new(l.with_name(name)),
            Bundle::Archive(a) => Arc::new(a.with_name(name)),
        }
    }

    /// The artifacts in the bundle: `(repository, tag, digest)`, repository `None` when the
    /// bundle does not say (skopeo's bare tags, `cosign save`). Signature entries are not
    /// listed: they travel with their artifact. Also returns how many signature entries
    /// have no artifact beside them (and so are not loaded).
    pub fn artifacts(&self) -> anyhow::Result<(Vec<Artifact>, usize)> {
        let mut arts = Vec::new();
        let mut sig_subjects = BTreeSet::new();
        for e in self.entries()? {
            let kind = e.annotations.get(oci::ANN_KIND).map(String::as_str);
            let (repo, tag) = match e.annotations.get(oci::ANN_REF_NAME) {
                Some(rn) => match rn.rsplit_once(':') {
                    Some((r, t)) => (Some(r.to_string()), Some(t.to_string())),
                    None => (None, Some(rn.clone())),
                },
                // cosign save: the image is marked, its signatures follow it.
                None if matches!(kind, Some(oci::KIND_IMAGE | oci::KIND_IMAGE_INDEX)) => {
                    (None, None)
                }
                None => continue,
            };
            match tag.as_deref().map(tagscheme::tag_role) {
                Some(TagRole::Sig(h) | TagRole::Att(h) | TagRole::Referrers(h)) => {
                    sig_subjects.insert((repo.clone(), format!("sha256:{h}")));
                }
                _ => arts.push(Artifact {
                    repo,
                    tag,
                    digest: e.digest.clone(),
                }),
            }
        }
        let orphans = sig_subjects
            .iter()
            .filter(|(r, d)| !arts.iter().any(|a| &a.repo == r && &a.digest == d))
            .count();
        Ok((arts, orphans))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub repo: Option<String>,
    pub tag: Option<String>,
    pub digest: String,
}
