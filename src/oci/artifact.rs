//! The plugin artifact on the wire: what `cosign upload blob` writes, and which layer of
//! the other layouts users push (ORAS, Kong Gateway Operator images, crane tarballs) holds
//! the plugin.

use std::collections::BTreeMap;

use crate::error::{fail, Kind};
use crate::oci::{self, Descriptor, Manifest};

/// The layer media type cosign gives a file: gzip content is `application/x-gzip`,
/// anything else `application/octet-stream` (cosign sniffs the first bytes the same way).
pub fn sniff_media_type(first_bytes: &[u8]) -> &'static str {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        oci::X_GZIP
    } else {
        oci::OCTET_STREAM
    }
}

/// Manifest and config bytes exactly as `cosign upload blob -f FILE [-a k=v]` pushes them.
pub fn cosign_blob_manifest(
    layer: &Descriptor,
    annotations: &BTreeMap<String, String>,
) -> (Vec<u8>, Vec<u8>) {
    let config = oci::cosign_config(std::slice::from_ref(&layer.digest));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.to_string()),
        config: Descriptor::new(
            oci::CONFIG_V1,
            &crate::digest::sha256(&config),
            config.len() as u64,
        ),
        layers: vec![Descriptor::new(
            &layer.media_type,
            &layer.digest,
            layer.size,
        )],
        annotations: annotations.clone(),
        subject: None,
        artifact_type: None,
    };
    (oci::to_json(&manifest), config)
}

/// Layer media types that can carry a plugin tar(+gzip).
const PLUGIN_LAYER_TYPES: &[&str] = &[
    oci::X_GZIP,
    oci::OCTET_STREAM,
    "application/gzip",
    "application/x-tar",
    "application/tar+gzip",
    oci::LAYER_TAR,
    oci::LAYER_TAR_GZIP,
    oci::DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar",
];

fn titled_archive(d: &Descriptor) -> bool {
    d.annotations
        .get(oci::ANN_TITLE)
        .is_some_and(|t| t.ends_with(".tar.gz") || t.ends_with(".tgz") || t.ends_with(".tar"))
}

/// Pick the layer that holds the plugin archive.
///
/// - cosign `upload blob`: one `application/x-gzip` / `octet-stream` layer;
/// - ORAS: layers titled by `org.opencontainers.image.title` (the `.tar.gz` one wins),
///   any media type (ORAS lets users choose it);
/// - KongPluginInstallation images: exactly one tar(+gzip) layer of plugin files.
pub fn plugin_layer(m: &Manifest, what: &str) -> anyhow::Result<Descriptor> {
    let titled: Vec<&Descriptor> = m.layers.iter().filter(|d| titled_archive(d)).collect();
    if titled.len() == 1 {
        return Ok(titled[0].clone());
    }
    let usable: Vec<&Descriptor> = m
        .layers
        .iter()
        .filter(|d| {
            PLUGIN_LAYER_TYPES.contains(&d.media_type.as_str())
                || d.annotations.contains_key(oci::ANN_TITLE)
        })
        .collect();
    if usable.len() == 1 {
        return Ok(usable[0].clone());
    }
    let found: Vec<String> = m
        .layers
        .iter()
        .map(|d| match d.annotations.get(oci::ANN_TITLE) {
            Some(t) => format!("{} ({t})", d.media_type),
            None => d.media_type.clone(),
        })
        .collect();
    Err(fail(
        Kind::Usage,
        format!(
            "{what} is not a plugin artifact kplug can read: {} layer(s) [{}] (config {}{}). \
             Expected one plugin .tar.gz layer as pushed by `kplug push`, `cosign upload blob` or `oras push`, \
             or a single-layer image of plugin files",
            m.layers.len(),
            found.join(", "),
            m.config.media_type,
            m.artifact_type.as_ref().map(|a| format!(", artifactType {a}")).unwrap_or_default()
        ),
    ))
}

/// A file name for the pulled archive: its ORAS title when safe, else derived from the repo.
pub fn default_file_name(layer: &Descriptor, repo_name: &str, tag: Option<&str>) -> String {
    if let Some(t) = layer.annotations.get(oci::ANN_TITLE) {
        let safe = !t.is_empty()
            && !t.starts_with('.')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if safe {
            return t.clone();
        }
    }
    let base = repo_name
        .rsplit('/')
        .next()
        .unwrap_or("plugin")
        .trim_end_matches(".tar")
        .to_string();
    let base: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    let suffix = match tag {
        Some(t) => t.to_string(),
        None => layer.digest.trim_start_matches("sha256:")[..12].to_string(),
    };
    format!(
        "{}-{suffix}.tar.gz",
        if base.is_empty() { "plugin" } else { &base }
    )
}

/// The plugin name a repository suggests (last path component), for flat images that
/// carry no `kong/plugins/<name>/` prefix.
pub fn name_hint(repo_name: &str) -> Option<String> {
    let last = repo_name.rsplit('/').next()?;
    let n = last.strip_prefix("kong-plugin-").unwrap_or(last);
    (!n.is_empty()).then(|| n.to_string())
}

/// A resolved plugin artifact: the image manifest (after following an index) and its
/// plugin layer.
pub struct Resolved {
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub layer: Descriptor,
}

/// From the manifest a reference resolved to, find the plugin layer. An index (several
/// `-f file:os/arch` of cosign, or a multi-platform image) is followed to the entry for
/// this platform, else its only entry.
pub async fn resolve_plugin(
    store: &dyn crate::oci::store::ReadStore,
    bytes: &[u8],
    desc: &Descriptor,
    what: &str,
) -> anyhow::Result<Resolved> {
    let (bytes, desc) = if oci::is_index(&desc.media_type) {
        let idx: oci::Index = serde_json::from_slice(bytes)
            .map_err(|e| fail(Kind::Integrity, format!("{what}: bad index: {e}")))?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        let pick = idx
            .manifests
            .iter()
            .find(|m| {
                m.platform.as_ref().is_some_and(|p| {
                    p.get("os").and_then(|v| v.as_str()) == Some("linux")
                        && p.get("architecture").and_then(|v| v.as_str()) == Some(arch)
                })
            })
            .or_else(|| (idx.manifests.len() == 1).then(|| &idx.manifests[0]))
            .ok_or_else(|| {
                fail(
                    Kind::NotFound,
                    format!("{what} is an index with no entry for linux/{arch}; pull one entry by digest"),
                )
            })?;
        store.fetch_manifest(&pick.digest).await?
    } else {
        (bytes.to_vec(), desc.clone())
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| fail(Kind::Usage, format!("{what}: not an image manifest ({e})")))?;
    let layer = plugin_layer(&manifest, what)?;
    Ok(Resolved {
        manifest_desc: desc,
        manifest,
        layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_blob_shape() {
        let layer = Descriptor::new(oci::X_GZIP, &crate::digest::sha256(b"x"), 1);
        let (m, c) = cosign_blob_manifest(&layer, &BTreeMap::new());
        assert_eq!(c.len(), 233);
        let s = String::from_utf8(m).unwrap();
        assert!(s.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":233,"#));
        assert!(!s.contains("annotations"));
    }

    #[test]
    fn picks_layers_and_lists_unknown() {
        let mut m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
            "layers":[{"mediaType":"application/vnd.example.readme","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"},
                      {"mediaType":"application/vnd.example.plugin","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","annotations":{"org.opencontainers.image.title":"p-1.0.tar.gz"}}]}"#,
        )
        .unwrap();
        assert!(plugin_layer(&m, "x")
            .unwrap()
            .digest
            .starts_with("sha256:2222"));
        m.layers[1].annotations.clear();
        let e = plugin_layer(&m, "x").unwrap_err().to_string();
        assert!(
            e.contains("application/vnd.example.readme")
                && e.contains("application/vnd.example.plugin"),
            "{e}"
        );
    }
}
