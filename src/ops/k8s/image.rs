//! `kplug push --kpi`: a plugin as a KongPluginInstallation image, and the check that an
//! image in a store is one the Kong Operator accepts.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;

use super::source::{self, Loaded, SourceOptions};
use crate::error::{fail, Kind};
use crate::oci::kpi;
use crate::oci::{self, store};
use crate::ops::push::{PushOptions, PushReport};

/// Refuse, naming what cannot travel and the way that can, unless `p` fits a KPI image.
pub fn check_carriable(p: &Loaded) -> anyhow::Result<()> {
    let reasons = kpi::refusals(&p.sizes());
    if reasons.is_empty() {
        return Ok(());
    }
    Err(fail(
        Kind::Usage,
        format!(
            "plugin {} cannot be a KongPluginInstallation image: it has {}. The Kong Operator's \
             KongPluginInstallation carries only handler.lua and schema.lua, at most 1 MiB. Use \
             the init-container way instead: `kplug push` the plugin as usual, then \
             `kplug k8s init-container REF` (see docs/kubernetes.md)",
            p.name,
            reasons.join("; ")
        ),
    ))
}

/// Build the KPI image of a loaded plugin.
pub fn image_of(
    p: &Loaded,
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<kpi::KpiImage> {
    check_carriable(p)?;
    let read = |f: &str| -> anyhow::Result<Vec<u8>> {
        let path = p.dir.join(f);
        let mut buf = Vec::new();
        std::fs::File::open(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .take(kpi::MAX_TAR_BYTES + 1)
            .read_to_end(&mut buf)?;
        Ok(buf)
    };
    let mut ann = BTreeMap::from([(oci::ANN_TITLE.to_string(), p.name.clone())]);
    if let Some(v) = &p.version {
        ann.insert("org.opencontainers.image.version".to_string(), v.clone());
    }
    ann.extend(annotations.clone());
    kpi::build(&read(kpi::HANDLER)?, &read(kpi::SCHEMA)?, &ann)
}

/// `push --kpi`: the plugin at `o.path` as a KPI image to `o.reference` (config and
/// layer blobs skipped when present, then the manifest under the tag), signed in the same
/// run with `o.sign_key` as `push` signs. `o.media_type` does not apply.
pub async fn push_kpi(o: &PushOptions) -> anyhow::Result<PushReport> {
    let key = o
        .sign_key
        .as_deref()
        .map(crate::ops::keys::load_signing_key)
        .transpose()?;
    let loc = crate::oci::reference::parse(&o.reference)?;
    if loc.digest().is_some() {
        crate::bail_kind!(Kind::Usage, "push to a tag, not a digest: {}", o.reference);
    }
    if !o.path.exists() {
        crate::bail_kind!(
            Kind::Usage,
            "{} does not exist: give a plugin .tar.gz or directory",
            o.path.display()
        );
    }
    let p = source::load(&SourceOptions {
        src: o.path.display().to_string(),
        name: o.name.clone(),
        version: o.version.clone(),
        store: o.store.clone(),
        ..Default::default()
    })
    .await?;
    let img = image_of(&p, &o.annotations)?;
    let left_out = kpi::left_out(&p.sizes());
    if !left_out.is_empty() {
        crate::progress::note(format!(
            "left out of the KPI image (not Lua, never loaded by Kong): {}",
            left_out.join(", ")
        ));
    }
    let dst = store::open_writable(&loc, &o.store).await?;
    let config = store::push_bytes(dst.as_ref(), oci::CONFIG_V1, &img.config).await?;
    let layer = store::push_bytes(dst.as_ref(), oci::LAYER_TAR_GZIP, &img.layer).await?;
    let tag = loc.tag().unwrap_or("latest").to_string();
    let digest = dst
        .push_manifest(&img.manifest, oci::MANIFEST_V1, Some(&tag))
        .await?;
    crate::progress::note(format!(
        "pushed the KongPluginInstallation image of {} ({} bytes of tar)",
        p.name, img.tar_size
    ));
    let mut report = PushReport {
        reference: loc.pinned(&digest),
        digest,
        size: img.manifest.len() as u64,
        media_type: oci::MANIFEST_V1.to_string(),
        name: Some(p.name.clone()),
        version: p.version.clone(),
        annotations: serde_json::from_slice::<oci::Manifest>(&img.manifest)?.annotations,
        config,
        layers: vec![layer],
        signature: None,
    };
    if let Some(key) = key {
        crate::ops::push::sign_pushed(o, &key, &loc, dst.as_ref(), &mut report).await?;
    }
    Ok(report)
}

/// For a plugin read from a store: check its image is one the Operator accepts (exactly
/// one tar+gzip layer holding handler.lua and schema.lua only, ≤ 1 MiB).
pub fn check_kpi_image(p: &Loaded) -> anyhow::Result<()> {
    let (Some(m), Some(file), Some(read), Some(pinned)) =
        (&p.manifest, &p.layer_file, &p.layer, &p.pinned)
    else {
        return check_carriable(p);
    };
    let want = kpi::kpi_layer(m, pinned)?;
    if want.digest != read.digest {
        crate::bail_kind!(
            Kind::Usage,
            "{pinned}: the Kong Operator would read layer {}, not the plugin layer {}",
            want.digest,
            read.digest
        );
    }
    let f = std::fs::File::open(file)?;
    kpi::read_layer(std::io::BufReader::new(f), pinned).map_err(|e| {
        fail(
            Kind::Usage,
            format!("{e:#}; push a KongPluginInstallation image with `kplug push --kpi DIR REF`"),
        )
    })?;
    Ok(())
}
