//! Sigstore's `trusted_root.json` (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`):
//! the Fulcio CAs, Rekor logs, CT logs and timestamp authorities an air-gapped node trusts.
//! Parsing and checking are `sigstore-trust-root`/`sigstore-verify`'s; this adds the media
//! type check, a bounded read, kplug's error kind and the Rekor keys kplug's own SET check uses.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::Result;

use super::keys::PublicKey;
use crate::error::{fail, Kind};
use crate::oci::TRUSTED_ROOT_FILE;

pub const TRUSTED_ROOT_MEDIA_TYPE: &str =
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1";
/// The production root is 7 KB; anything near this is not a trusted root.
const MAX_TRUSTED_ROOT: u64 = 4 << 20;

/// A parsed and checked trusted root, ready to verify with.
pub struct TrustedRoot {
    pub(crate) root: sigstore_verify::trust_root::TrustedRoot,
    pub(crate) verifier: sigstore_verify::Verifier,
    origin: String,
}

impl std::fmt::Debug for TrustedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedRoot({})", self.origin)
    }
}

impl TrustedRoot {
    /// Read `path` (see [`read`]). Errors are [`Kind::Usage`], naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let (bytes, origin) = read(path)?;
        Self::from_json(&bytes, &origin)
    }

    /// Parse a trusted root; `origin` names it in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |why: String| {
            fail(
                Kind::Usage,
                format!("invalid trusted root {origin}: {why} (expected Sigstore's trusted_root.json, {TRUSTED_ROOT_MEDIA_TYPE})"),
            )
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(text)
            .map_err(|e| bad(e.to_string()))?;
        if root.media_type != TRUSTED_ROOT_MEDIA_TYPE {
            return Err(bad(format!("mediaType is {:?}", root.media_type)));
        }
        let verifier = sigstore_verify::Verifier::new(&root).map_err(|e| bad(e.to_string()))?;
        Ok(TrustedRoot {
            root,
            verifier,
            origin: origin.to_string(),
        })
    }

    /// Where it was read from (a path, or what the caller named it).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What it holds, for reports: `2 certificate authorities, 2 transparency logs, 2 CT
    /// logs, 1 timestamp authority`.
    pub fn summary(&self) -> String {
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        [
            n(
                self.root.certificate_authorities.len(),
                "certificate authority",
                "certificate authorities",
            ),
            n(
                self.root.tlogs.len(),
                "transparency log",
                "transparency logs",
            ),
            n(self.root.ctlogs.len(), "CT log", "CT logs"),
            n(
                self.root.timestamp_authorities.len(),
                "timestamp authority",
                "timestamp authorities",
            ),
        ]
        .join(", ")
    }

    /// The ECDSA P-256 Rekor keys (Rekor v1), for checking SETs of key-signed signatures.
    pub fn rekor_keys(&self) -> Vec<PublicKey> {
        self.root
            .tlogs
            .iter()
            .filter_map(|t| PublicKey::from_der(t.public_key.raw_bytes.as_bytes()).ok())
            .collect()
    }

    /// Whether certificates must carry an SCT: only when the root lists CT logs (a private
    /// Fulcio without CT, like GitHub's, has none).
    pub(crate) fn has_ct_logs(&self) -> bool {
        !self.root.ctlogs.is_empty()
    }

    pub(crate) fn has_certificate_authorities(&self) -> bool {
        !self.root.certificate_authorities.is_empty()
    }
}

/// The bytes of the trusted root at `path` (at most 4 MiB) and a name for messages. `path`
/// is a `trusted_root.json`, or what `save`/`mirror --trusted-root` wrote: an OCI layout
/// directory or an oci-archive tar holding one beside its `index.json`.
pub fn read(path: &Path) -> Result<(Vec<u8>, String)> {
    let cannot = |origin: &str, e: std::io::Error| {
        fail(
            Kind::Usage,
            format!("cannot read trusted root {origin}: {e}"),
        )
    };
    let none_in = |what: &Path| {
        fail(
            Kind::Usage,
            format!(
                "{} holds no {TRUSTED_ROOT_FILE} (`kplug save` and `kplug mirror` carry one with --trusted-root FILE)",
                what.display()
            ),
        )
    };
    if path.is_dir() {
        let f = path.join(TRUSTED_ROOT_FILE);
        let origin = f.display().to_string();
        let file = File::open(&f).map_err(|_| none_in(path))?;
        return Ok((bounded(file, &origin)?, origin));
    }
    let origin = path.display().to_string();
    let mut file = File::open(path).map_err(|e| cannot(&origin, e))?;
    if !is_tar(&mut file).map_err(|e| cannot(&origin, e))? {
        return Ok((bounded(file, &origin)?, origin));
    }
    let origin = format!("{TRUSTED_ROOT_FILE} in {origin}");
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| cannot(&origin, e))? {
        let entry = entry.map_err(|e| cannot(&origin, e))?;
        let name = entry.path().map_err(|e| cannot(&origin, e))?;
        if entry.header().entry_type().is_file()
            && name.to_string_lossy().trim_start_matches("./") == TRUSTED_ROOT_FILE
        {
            return Ok((bounded(entry, &origin)?, origin));
        }
    }
    Err(none_in(path))
}

/// At most [`MAX_TRUSTED_ROOT`] bytes of `r`, or an error saying it is too large.
fn bounded(r: impl Read, origin: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    r.take(MAX_TRUSTED_ROOT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            fail(
                Kind::Usage,
                format!("cannot read trusted root {origin}: {e}"),
            )
        })?;
    if bytes.len() as u64 > MAX_TRUSTED_ROOT {
        return Err(fail(
            Kind::Usage,
            format!("trusted root {origin} is larger than 4 MiB: not a trusted_root.json"),
        ));
    }
    Ok(bytes)
}

/// Is `f` a tar (`ustar` magic in its first header)? Rewinds `f`.
fn is_tar(f: &mut File) -> std::io::Result<bool> {
    let mut block = Vec::with_capacity(512);
    f.by_ref().take(512).read_to_end(&mut block)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(block.len() == 512 && &block[257..262] == b"ustar")
}
