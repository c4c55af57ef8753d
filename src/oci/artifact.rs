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

/// Manifest and config bytes as `cosign upload blob -f FILE [-a k=v]` pushes them, plus the
/// layer's own annotations (its title, so ORAS clients name the file) and, when given, the
/// OCI 1.1 `artifactType` (`oras push --artifact-type`).
pub fn cosign_blob_manifest(
    layer: &Descriptor,
    annotations: &BTreeMap<String, String>,
    artifact_type: Option<&str>,
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
        layers: vec![Descriptor {
            annotations: layer.annotations.clone(),
            ..Descriptor::new(&layer.media_type, &layer.digest, layer.size)
        }],
        annotations: annotations.clone(),
        subject: None,
        artifact_type: artifact_type.map(str::to_string),
    };
    (oci::to_json(&manifest), config)
}

/// An `artifactType` as the image spec wants it: a media type, `type/subtype[+suffix]`
/// (RFC 6838 characters, no parameters).
pub fn check_artifact_type(t: &str) -> anyhow::Result<()> {
    let restricted = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match t.split_once('/') {
        Some((a, b)) if restricted(a) && restricted(b) => Ok(()),
        _ => crate::bail_kind!(
            Kind::Usage,
            "--artifact-type {:?} is not a media type (TYPE/SUBTYPE, e.g. application/vnd.acme.kong-plugin.v1+tar+gzip)",
            crate::progress::escape(t)
        ),
    }
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

/// ORAS marks a layer holding a directory it tarred (`oras push REF dir/`) with this.
const ANN_ORAS_UNPACK: &str = "io.deis.oras.content.unpack";

/// Where the plugin is in an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginContent {
    /// One layer holding a plugin tar(.gz).
    Archive(Descriptor),
    /// One file per layer, each titled with its path (`oras push REF handler.lua
    /// schema.lua`): together a bare plugin directory.
    Files(Vec<(String, Descriptor)>),
}

impl PluginContent {
    pub fn layers(&self) -> Vec<Descriptor> {
        match self {
            PluginContent::Archive(d) => vec![d.clone()],
            PluginContent::Files(f) => f.iter().map(|(_, d)| d.clone()).collect(),
        }
    }
}

/// A title naming a plain file rather than an archive.
fn file_title(d: &Descriptor) -> Option<&str> {
    let t = d.annotations.get(oci::ANN_TITLE)?;
    (!titled_archive(d)).then_some(t.as_str())
}

/// Find the plugin in an artifact.
///
/// - cosign `upload blob`: one `application/x-gzip` / `octet-stream` layer;
/// - ORAS: layers titled by `org.opencontainers.image.title`: the `.tar.gz` one wins; with
///   none, titled `.lua` files mean one file per layer (any media type: ORAS lets users
///   choose it);
/// - KongPluginInstallation images: exactly one tar(+gzip) layer of plugin files.
pub fn plugin_content(m: &Manifest, what: &str) -> anyhow::Result<PluginContent> {
    let titled: Vec<&Descriptor> = m.layers.iter().filter(|d| titled_archive(d)).collect();
    if titled.len() == 1 {
        return Ok(PluginContent::Archive(titled[0].clone()));
    }
    if titled.is_empty()
        && m.layers
            .iter()
            .any(|d| file_title(d).is_some_and(|t| t.ends_with(".lua")))
    {
        return files_content(m, what);
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
        return Ok(PluginContent::Archive(usable[0].clone()));
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
        crate::progress::escape(&format!(
            "{what} is not a plugin artifact kplug can read: {} layer(s) [{}] (config {}{}). \
             Expected one plugin .tar.gz layer as pushed by `kplug push`, `cosign upload blob` or `oras push`, \
             plugin files one per titled layer (`oras push REF handler.lua schema.lua`), \
             or a single-layer image of plugin files",
            m.layers.len(),
            found.join(", "),
            m.config.media_type,
            m.artifact_type.as_ref().map(|a| format!(", artifactType {a}")).unwrap_or_default()
        )),
    ))
}

/// Every titled layer is a file at the path its title gives.
fn files_content(m: &Manifest, what: &str) -> anyhow::Result<PluginContent> {
    let mut files = Vec::new();
    for d in &m.layers {
        let Some(t) = file_title(d) else { continue };
        if d.annotations
            .get(ANN_ORAS_UNPACK)
            .is_some_and(|v| v == "true")
        {
            crate::bail_kind!(
                Kind::Usage,
                "{what}: layer {} is a directory ORAS tarred ({}); kplug reads files one per layer, \
                 or the whole plugin as one archive: push it with `kplug push DIR REF`",
                d.digest,
                crate::progress::escape(t)
            );
        }
        let path = clean_title(t).map_err(|why| {
            fail(
                Kind::Unsafe,
                format!(
                    "{what}: layer title {:?} refused: {why}",
                    crate::progress::escape(t)
                ),
            )
        })?;
        if files.iter().any(|(p, _)| p == &path) {
            crate::bail_kind!(Kind::Unsafe, "{what}: two layers are titled {path:?}");
        }
        files.push((path, d.clone()));
    }
    Ok(PluginContent::Files(files))
}

/// A layer title as a relative path: `/`-separated, no empty, `.` or `..` components, no
/// backslashes or control characters, at most 255 bytes a component.
pub fn clean_title(t: &str) -> Result<String, &'static str> {
    if t.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if t.chars().any(|c| c.is_control() || c == '\\') {
        return Err("control characters and backslashes are not allowed");
    }
    let mut parts = Vec::new();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` components are not allowed"),
            c if c.len() > 255 => return Err("a path component is longer than 255 bytes"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("the title is empty");
    }
    Ok(parts.join("/"))
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
    // A whole reference may come in: its digest and tag are not part of the name.
    let repo_name = repo_name.split('@').next().unwrap_or(repo_name);
    let last = repo_name.rsplit('/').next()?;
    let last = last.split(':').next().unwrap_or(last);
    let n = last.strip_prefix("kong-plugin-").unwrap_or(last);
    (!n.is_empty()).then(|| n.to_string())
}

/// A resolved plugin artifact: the image manifest (after following an index) and where
/// the plugin is in it.
pub struct Resolved {
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub content: PluginContent,
}

impl Resolved {
    /// The version the publisher declared (`org.opencontainers.image.version`, which
    /// `kplug push` sets), unchecked. It is part of the manifest, so of what the signature
    /// covers.
    pub fn declared_version(&self) -> Option<&str> {
        self.manifest
            .annotations
            .get(oci::ANN_VERSION)
            .map(String::as_str)
    }
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
    let content = plugin_content(&manifest, what)?;
    Ok(Resolved {
        manifest_desc: desc,
        manifest,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_blob_shape() {
        let layer = Descriptor::new(oci::X_GZIP, &crate::digest::sha256(b"x"), 1);
        let (m, c) = cosign_blob_manifest(&layer, &BTreeMap::new(), None);
        assert_eq!(c.len(), 233);
        let s = String::from_utf8(m).unwrap();
        assert!(s.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":233,"#));
        assert!(!s.contains("annotations"));
    }

    #[test]
    fn name_hint_ignores_tag_and_digest() {
        for r in [
            "reg.example:5000/plugins/kong-plugin-orasy",
            "reg.example:5000/plugins/orasy:1.2.0",
            "reg.example:5000/plugins/orasy@sha256:d636d734a42f00021f3250320f2cd00fbb54401c86332a705cd2035208834681",
        ] {
            assert_eq!(name_hint(r).as_deref(), Some("orasy"), "{r}");
        }
    }

    #[test]
    fn files_one_per_layer() {
        let layer = |t: &str, n: u8| {
            let mut d = Descriptor::new(
                oci::LAYER_TAR,
                &format!("sha256:{}", hex::encode([n; 32])),
                1,
            );
            d.annotations.insert(oci::ANN_TITLE.into(), t.into());
            d
        };
        let mut m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#,
        )
        .unwrap();
        m.layers = vec![layer("handler.lua", 1), layer("./migrations/init.lua", 2)];
        let PluginContent::Files(f) = plugin_content(&m, "x").unwrap() else {
            panic!("files")
        };
        assert_eq!(f[1].0, "migrations/init.lua");
        m.layers.push(layer("x/../../etc/passwd", 3));
        let e = plugin_content(&m, "x").unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::Unsafe);
        // A titled archive beside them wins: the files are then extras (a README, say).
        m.layers.pop();
        m.layers.push(layer("hello-1.0.tar.gz", 4));
        assert!(matches!(
            plugin_content(&m, "x").unwrap(),
            PluginContent::Archive(_)
        ));
    }

    #[test]
    fn picks_layers_and_lists_unknown() {
        let mut m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
            "layers":[{"mediaType":"application/vnd.example.readme","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"},
                      {"mediaType":"application/vnd.example.plugin","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","annotations":{"org.opencontainers.image.title":"p-1.0.tar.gz"}}]}"#,
        )
        .unwrap();
        assert!(matches!(plugin_content(&m, "x").unwrap(),
            PluginContent::Archive(d) if d.digest.starts_with("sha256:2222")));
        m.layers[1].annotations.clear();
        let e = plugin_content(&m, "x").unwrap_err().to_string();
        assert!(
            e.contains("application/vnd.example.readme")
                && e.contains("application/vnd.example.plugin"),
            "{e}"
        );
    }
}
