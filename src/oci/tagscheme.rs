//! cosign's tag scheme, in one place: where signatures, attestations and the referrers
//! fallback index of an artifact live, how such tags are recognised, the `kind` annotation
//! `cosign save` gives each, and `COSIGN_REPOSITORY`.

use crate::oci::reference::Location;
use crate::oci::{is_index, KIND_ATTS, KIND_IMAGE, KIND_IMAGE_INDEX, KIND_SIGS};

/// `sha256:<hex>` → `sha256-<hex>`: the referrers fallback tag (OCI 1.1), and the stem of
/// the `.sig`/`.att` tags.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The `.sig` tag of a manifest digest: `sha256-<hex>.sig`.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", referrers_tag(digest))
}

/// The `.att` tag of a manifest digest: `sha256-<hex>.att`.
pub fn att_tag(digest: &str) -> String {
    format!("{}.att", referrers_tag(digest))
}

/// What a tag holds under cosign's naming: `Sig`/`Att` for `sha256-<hex>.sig`/`.att`,
/// `Referrers` for the `sha256-<hex>` fallback index, `Artifact` for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagRole<'a> {
    Artifact,
    /// The subject's hex digest is carried along.
    Sig(&'a str),
    Att(&'a str),
    Referrers(&'a str),
}

pub fn tag_role(tag: &str) -> TagRole<'_> {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return TagRole::Artifact;
    };
    let (hex, suffix) = rest.split_at(rest.len().min(64));
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return TagRole::Artifact;
    }
    match suffix {
        ".sig" => TagRole::Sig(hex),
        ".att" => TagRole::Att(hex),
        "" => TagRole::Referrers(hex),
        _ => TagRole::Artifact,
    }
}

/// The `kind` annotation `cosign save` gives an entry tagged `tag`.
pub fn cosign_kind(tag: &str, media_type: &str) -> Option<&'static str> {
    match tag_role(tag) {
        TagRole::Sig(_) => Some(KIND_SIGS),
        TagRole::Att(_) => Some(KIND_ATTS),
        TagRole::Referrers(_) => None,
        TagRole::Artifact if is_index(media_type) => Some(KIND_IMAGE_INDEX),
        TagRole::Artifact => Some(KIND_IMAGE),
    }
}

/// Where signatures live when `COSIGN_REPOSITORY` is set (as cosign reads it); `None`:
/// beside the artifact.
pub fn cosign_repository() -> anyhow::Result<Option<Location>> {
    match std::env::var("COSIGN_REPOSITORY") {
        Ok(repo) if !repo.is_empty() => Ok(Some(crate::oci::reference::parse(&repo)?)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_roles() {
        let hex = "a".repeat(64);
        let d = format!("sha256:{hex}");
        assert_eq!(sig_tag(&d), format!("sha256-{hex}.sig"));
        assert_eq!(att_tag(&d), format!("sha256-{hex}.att"));
        assert_eq!(referrers_tag(&d), format!("sha256-{hex}"));
        assert_eq!(tag_role(&sig_tag(&d)), TagRole::Sig(&hex));
        assert_eq!(tag_role(&att_tag(&d)), TagRole::Att(&hex));
        assert_eq!(tag_role(&referrers_tag(&d)), TagRole::Referrers(&hex));
        assert_eq!(tag_role(&format!("sha256-{hex}.sbom")), TagRole::Artifact);
        assert_eq!(tag_role("sha256-abc.sig"), TagRole::Artifact);
        assert_eq!(tag_role("0.1.0"), TagRole::Artifact);
        assert_eq!(
            cosign_kind("0.1.0", crate::oci::INDEX_V1),
            Some(KIND_IMAGE_INDEX)
        );
        assert_eq!(
            cosign_kind("0.1.0", crate::oci::MANIFEST_V1),
            Some(KIND_IMAGE)
        );
        assert_eq!(
            cosign_kind(&sig_tag(&d), crate::oci::MANIFEST_V1),
            Some(KIND_SIGS)
        );
    }
}
