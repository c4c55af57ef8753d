//! KongPluginInstallation (KPI) images: the layout the Kong Operator's KPI controller
//! reads (kong/kong-operator, `controller/kongplugininstallation/image/image.go`):
//!
//! - among the image's blobs exactly one has media type
//!   `application/vnd.oci.image.layer.v1.tar+gzip` or
//!   `application/vnd.docker.image.rootfs.diff.tar.gzip`;
//! - that layer is gzip, and the tar inside is read through a 1 MiB limit (headers
//!   included): a file cut by the limit fails with "plugin size limit of 1.00 MiB exceeded";
//! - every entry's base name is `handler.lua` or `schema.lua`, directory entries included;
//!   both must be there, and nothing else.
//!
//! The Operator then copies the two files into a ConfigMap mounted at
//! `/opt/kong/plugins/<KPI name>/`. It checks no signature: the image is pushed like any
//! kplug artifact and can be signed, so nodes verify it with `kplug verify`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::error::{fail, Kind};
use crate::oci::{self, Descriptor, Manifest};

pub const HANDLER: &str = "handler.lua";
pub const SCHEMA: &str = "schema.lua";
/// What the Operator reads of the decompressed layer: the tar stream, headers included.
pub const MAX_TAR_BYTES: u64 = 1 << 20;
/// The image config's platform. Plugins are Lua and run anywhere; the Operator never
/// runs the image, but registries and tools expect a platform on an image config.
pub const OS: &str = "linux";
pub const ARCHITECTURE: &str = "amd64";

const GZIP_OS_UNIX: u8 = 3;
const TAR_BLOCK: u64 = 512;

/// A KPI image, ready to push: the layer, its config and the manifest.
#[derive(Debug, Clone)]
pub struct KpiImage {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub config_desc: Descriptor,
    /// The gzip layer.
    pub layer: Vec<u8>,
    pub layer_desc: Descriptor,
    /// `sha256:` of the uncompressed tar (the config's `rootfs.diff_ids[0]`).
    pub diff_id: String,
    /// Bytes of the uncompressed tar, the figure the Operator's limit applies to.
    pub tar_size: u64,
}

/// The tar stream size of a layer holding files of these sizes: one header block per
/// file, contents padded to blocks, two zero blocks at the end.
pub fn tar_size(file_sizes: &[u64]) -> u64 {
    let body: u64 = file_sizes
        .iter()
        .map(|s| TAR_BLOCK + s.div_ceil(TAR_BLOCK) * TAR_BLOCK)
        .sum();
    body + 2 * TAR_BLOCK
}

/// Why a plugin tree (paths relative to the plugin dir, with sizes) cannot be a KPI
/// image; empty when it can. Files that are not Lua (README, rockspec, LICENSE) are not
/// loaded by Kong and are left out, see [`left_out`].
pub fn refusals(files: &[(String, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    let has = |p: &str| files.iter().any(|(f, _)| f == p);
    if has("daos.lua") {
        out.push("daos.lua (custom DAO entities)".to_string());
    }
    let migrations: Vec<&str> = files
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| f.starts_with("migrations/"))
        .collect();
    if !migrations.is_empty() {
        out.push(format!(
            "migrations/ (database migrations: {})",
            migrations.join(", ")
        ));
    }
    if has("api.lua") {
        out.push("api.lua (Admin API endpoints)".to_string());
    }
    let others: Vec<&str> = files
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| {
            f.ends_with(".lua")
                && ![HANDLER, SCHEMA, "daos.lua", "api.lua"].contains(f)
                && !f.starts_with("migrations/")
        })
        .collect();
    if !others.is_empty() {
        out.push(format!("other Lua modules ({})", others.join(", ")));
    }
    let sizes: Vec<u64> = files
        .iter()
        .filter(|(f, _)| f == HANDLER || f == SCHEMA)
        .map(|(_, s)| *s)
        .collect();
    let total = tar_size(&sizes);
    if total > MAX_TAR_BYTES {
        out.push(format!(
            "handler.lua + schema.lua make a {total}-byte layer; the Operator reads at most \
             {MAX_TAR_BYTES} bytes (1 MiB) of it"
        ));
    }
    out
}

/// The files of a tree a KPI image leaves out (not Lua, so never loaded by Kong).
pub fn left_out(files: &[(String, u64)]) -> Vec<String> {
    files
        .iter()
        .filter(|(f, _)| !f.ends_with(".lua"))
        .map(|(f, _)| f.clone())
        .collect()
}

/// Build the image: one reproducible tar+gzip layer holding `handler.lua` and
/// `schema.lua` at its root (ustar headers, mode 0644, uid/gid 0, mtime 0, no names;
/// gzip without time or file name), an OCI config whose `diff_ids` is the tar's digest,
/// and the manifest with `annotations`.
pub fn build(
    handler: &[u8],
    schema: &[u8],
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<KpiImage> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body) in [(HANDLER, handler), (SCHEMA, schema)] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(body.len() as u64);
        tar.append_data(&mut h, name, body)?;
    }
    let tar = tar.into_inner()?;
    let tar_size = tar.len() as u64;
    if tar_size > MAX_TAR_BYTES {
        crate::bail_kind!(
            Kind::Usage,
            "handler.lua + schema.lua make a {tar_size}-byte layer; the Kong Operator reads at \
             most {MAX_TAR_BYTES} bytes (1 MiB) of a KongPluginInstallation image"
        );
    }
    let diff_id = crate::digest::sha256(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNIX)
        .write(Vec::new(), flate2::Compression::new(9));
    gz.write_all(&tar)?;
    let layer = gz.finish()?;
    let layer_desc = Descriptor::new(
        oci::LAYER_TAR_GZIP,
        &crate::digest::sha256(&layer),
        layer.len() as u64,
    );
    // serde_json's map keeps keys sorted: the same input gives the same bytes.
    let config = oci::to_json(&serde_json::json!({
        "architecture": ARCHITECTURE,
        "os": OS,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }));
    let config_desc = Descriptor::new(
        oci::CONFIG_V1,
        &crate::digest::sha256(&config),
        config.len() as u64,
    );
    let manifest = oci::to_json(&Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.to_string()),
        config: config_desc.clone(),
        layers: vec![layer_desc.clone()],
        annotations: annotations.clone(),
        subject: None,
        artifact_type: None,
    });
    Ok(KpiImage {
        manifest,
        config,
        config_desc,
        layer,
        layer_desc,
        diff_id,
        tar_size,
    })
}

/// The layer media types the Operator counts as "a layer that may contain the plugin".
pub const KPI_LAYER_TYPES: &[&str] = &[oci::LAYER_TAR_GZIP, oci::DOCKER_LAYER_GZIP];

/// The one layer of `m` the Operator would read, or why there is not exactly one.
pub fn kpi_layer(m: &Manifest, what: &str) -> anyhow::Result<Descriptor> {
    let found: Vec<&Descriptor> = std::iter::once(&m.config)
        .chain(m.layers.iter())
        .filter(|d| KPI_LAYER_TYPES.contains(&d.media_type.as_str()))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(fail(
            Kind::Usage,
            format!(
                "{what} is not a KongPluginInstallation image: the Kong Operator needs exactly one \
                 layer of type {} (or {}), found {}; push one with `kplug push --kpi`",
                oci::LAYER_TAR_GZIP,
                oci::DOCKER_LAYER_GZIP,
                found.len()
            ),
        )),
    }
}

/// Read a KPI layer as the Operator does (gzip, 1 MiB of tar, only the two base names,
/// both present) and return `(handler, schema)`.
pub fn read_layer(layer: impl Read, what: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let bad = |m: String| {
        fail(
            Kind::Usage,
            format!("{what} would be refused by the Kong Operator: {m}"),
        )
    };
    let gz = flate2::read::GzDecoder::new(layer);
    let mut archive = tar::Archive::new(gz.take(MAX_TAR_BYTES));
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar+gzip layer ({e})")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("bad tar entry ({e})")))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let base = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if base != HANDLER && base != SCHEMA {
            return Err(bad(format!(
                "entry {path:?} is neither handler.lua nor schema.lua"
            )));
        }
        let mut body = Vec::new();
        entry
            .read_to_end(&mut body)
            .map_err(|e| bad(format!("{base}: {e}")))?;
        if body.len() as u64 != entry.size() {
            return Err(bad(format!(
                "the plugin is over the 1 MiB limit ({base} is cut)"
            )));
        }
        files.insert(base, body);
    }
    match (files.remove(HANDLER), files.remove(SCHEMA)) {
        (Some(h), Some(s)) => Ok((h, s)),
        _ => Err(bad(
            "handler.lua and schema.lua must both be there".to_string()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_readable() {
        let a = build(
            b"return {}\n",
            b"return { fields = {} }\n",
            &BTreeMap::new(),
        )
        .unwrap();
        let b = build(
            b"return {}\n",
            b"return { fields = {} }\n",
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.layer, b.layer);
        assert_eq!(&a.layer[4..8], &[0, 0, 0, 0], "gzip mtime");
        assert_eq!(a.layer[3] & 0x08, 0, "no gzip file name");
        assert_eq!(a.tar_size, tar_size(&[10, 23]));
        let m: Manifest = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(kpi_layer(&m, "x").unwrap(), a.layer_desc);
        let (h, s) = read_layer(&a.layer[..], "x").unwrap();
        assert_eq!(
            (h.as_slice(), s.as_slice()),
            (&b"return {}\n"[..], &b"return { fields = {} }\n"[..])
        );
        let c: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], a.diff_id.as_str());
        assert_eq!(
            (c["os"].as_str(), c["architecture"].as_str()),
            (Some(OS), Some(ARCHITECTURE))
        );
    }

    #[test]
    fn refusals_name_what_kpi_cannot_carry() {
        let f = |p: &str, s: u64| (p.to_string(), s);
        assert!(
            refusals(&[f("handler.lua", 10), f("schema.lua", 10), f("README.md", 5)]).is_empty()
        );
        let r = refusals(&[
            f("handler.lua", 10),
            f("schema.lua", 10),
            f("daos.lua", 1),
            f("api.lua", 1),
            f("migrations/init.lua", 1),
            f("migrations/000_base_x.lua", 1),
            f("lib/util.lua", 1),
        ])
        .join("; ");
        for want in ["daos.lua", "migrations/init.lua", "api.lua", "lib/util.lua"] {
            assert!(r.contains(want), "{r}");
        }
        let r = refusals(&[f("handler.lua", MAX_TAR_BYTES), f("schema.lua", 1)]).join("");
        assert!(r.contains("1 MiB"), "{r}");
        assert!(build(&vec![b'-'; MAX_TAR_BYTES as usize], b"", &BTreeMap::new()).is_err());
    }
}
