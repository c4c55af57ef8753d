//! OCI wire types, serialised in go-containerregistry's field order.
//!
//! `oci-spec` keeps annotations in a `HashMap`, which serialises in random order and
//! would give the same artifact a different manifest digest on every push. These types
//! use `BTreeMap` (Go's encoding/json also sorts map keys) and declare fields in the
//! order ggcr writes them, so manifests built here are byte-identical to cosign's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST_V2: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG_V1: &str = "application/vnd.docker.container.image.v1+json";
pub const EMPTY_V1: &str = "application/vnd.oci.empty.v1+json";
/// sha256 of `{}`, the OCI empty descriptor.
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const X_GZIP: &str = "application/x-gzip";
pub const OCTET_STREAM: &str = "application/octet-stream";
pub const SIMPLESIGNING_V1: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Sigstore's trusted root, carried in a bundle (`save`/`mirror --trusted-root`) as a file
/// beside the layout's `index.json`.
pub const TRUSTED_ROOT_FILE: &str = "trusted_root.json";

pub const ANN_TITLE: &str = "org.opencontainers.image.title";
pub const ANN_VERSION: &str = "org.opencontainers.image.version";
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANN_CREATED: &str = "org.opencontainers.image.created";
pub const ANN_COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANN_COSIGN_BUNDLE: &str = "dev.sigstore.cosign/bundle";
pub const ANN_COSIGN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
pub const ANN_COSIGN_CHAIN: &str = "dev.sigstore.cosign/chain";

/// `cosign save` marks each `index.json` entry with what it is; `cosign load` reads them.
pub const ANN_KIND: &str = "kind";
pub const KIND_IMAGE: &str = "dev.cosignproject.cosign/image";
pub const KIND_IMAGE_INDEX: &str = "dev.cosignproject.cosign/imageIndex";
pub const KIND_SIGS: &str = "dev.cosignproject.cosign/sigs";
pub const KIND_ATTS: &str = "dev.cosignproject.cosign/atts";

/// Manifest media types a registry may serve for the things kplug handles.
pub const MANIFEST_ACCEPT: &[&str] = &[
    MANIFEST_V1,
    INDEX_V1,
    DOCKER_MANIFEST_V2,
    DOCKER_MANIFEST_LIST_V2,
];

pub fn is_index(media_type: &str) -> bool {
    media_type == INDEX_V1 || media_type == DOCKER_MANIFEST_LIST_V2
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            size,
            digest: digest.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Index {
    pub fn empty() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(INDEX_V1.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            subject: None,
            artifact_type: None,
        }
    }
}

/// Compact JSON, as Go's encoding/json writes it (no HTML escaping differences arise for
/// the ASCII content kplug writes).
pub fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("OCI types always serialise")
}

/// The config blob `cosign upload blob` and `cosign sign` write: one `diff_id` and one
/// zero-time history entry per layer. Byte-exact with ggcr's `empty.Image` + `mutate`.
pub fn cosign_config(diff_ids: &[String]) -> Vec<u8> {
    let mut history = String::new();
    let mut ids = String::new();
    for (i, d) in diff_ids.iter().enumerate() {
        if i > 0 {
            history.push(',');
            ids.push(',');
        }
        history.push_str(r#"{"created":"0001-01-01T00:00:00Z"}"#);
        ids.push('"');
        ids.push_str(d);
        ids.push('"');
    }
    format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{history}],"os":"","rootfs":{{"type":"layers","diff_ids":[{ids}]}},"config":{{}}}}"#
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_config_matches_fixture() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cosign/v3-classic-sig/config.json"
        ))
        .unwrap();
        let got = cosign_config(&[
            "sha256:3a29d26a2fc848d25ccf9c2288194ca90599e70ef69087644f186e5e7331f28b".into(),
        ]);
        assert_eq!(got, fixture);
    }

    #[test]
    fn manifest_roundtrips_byte_exact() {
        for f in [
            "v3-classic-sig/sig-manifest.json",
            "v3-bundle/bundle-referring-manifest.json",
        ] {
            let raw = std::fs::read(format!(
                "{}/tests/fixtures/cosign/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let m: Manifest = serde_json::from_slice(&raw).unwrap();
            assert_eq!(to_json(&m), raw, "{f}");
        }
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cosign/v3-bundle/bundle-referrers-index.json"
        ))
        .unwrap();
        let i: Index = serde_json::from_slice(&raw).unwrap();
        assert_eq!(to_json(&i), raw);
    }
}
