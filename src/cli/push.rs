use std::path::PathBuf;

use clap::Args;
use tokio::io::AsyncReadExt;

use super::Global;
use crate::error::Kind;
use crate::oci::store;
use crate::oci::{self, Descriptor};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Plugin archive (.tar.gz) or plugin directory (packed first, as `kplug pack` does).
    pub path: PathBuf,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:NAME:TAG] (tag defaults to `latest`).
    pub reference: String,
    /// Manifest annotation KEY=VALUE (repeatable), as `cosign upload blob -a`.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Layer media type (cosign's --ct); default sniffed: application/x-gzip or application/octet-stream.
    #[arg(long = "media-type")]
    pub media_type: Option<String>,
    /// Plugin name when packing a directory whose layout does not say it.
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version when packing a directory (else rockspec, else handler.lua VERSION).
    #[arg(long = "version", value_name = "VERSION")]
    pub plugin_version: Option<String>,
    /// Sign the pushed digest right away (needs --key).
    #[arg(long, requires = "key")]
    pub sign: bool,
    /// cosign private key for --sign (password from COSIGN_PASSWORD or the terminal).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
}

/// What a push produced.
#[derive(serde::Serialize)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    pub size: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

pub async fn run(g: &Global, a: PushArgs) -> anyhow::Result<()> {
    // Decrypt the key first: a wrong password should fail before anything is uploaded.
    let key = match (&a.key, a.sign) {
        (Some(k), true) => Some(super::keys::load_signing_key(k)?),
        (Some(_), false) => crate::bail_kind!(Kind::Usage, "--key given without --sign"),
        _ => None,
    };
    let pushed = push(g, &a).await?;
    if let Some(key) = key {
        let loc = crate::oci::reference::parse(&a.reference)?;
        let st = store::open(&loc, &g.store_options(), true).await?;
        super::sign::sign_digest(
            g,
            &loc,
            st.as_ref(),
            &pushed.digest,
            &key,
            &Default::default(),
            &None,
            &None,
        )
        .await?;
    }
    if g.json {
        return super::print_json(&pushed);
    }
    println!("{}", pushed.reference);
    Ok(())
}

pub async fn push(g: &Global, a: &PushArgs) -> anyhow::Result<Pushed> {
    let annotations = super::parse_annotations(&a.annotations)?;
    let (loc, dst) = super::open(g, &a.reference, true).await?;
    if loc.digest().is_some() {
        crate::bail_kind!(Kind::Usage, "push to a tag, not a digest: {}", a.reference);
    }
    let packed_dir;
    let file = if a.path.is_dir() {
        packed_dir = tempfile::tempdir()?;
        let src =
            crate::node::plugin::locate(&a.path, a.name.as_deref(), a.plugin_version.as_deref())?;
        let out = packed_dir
            .path()
            .join(crate::node::plugin::default_archive_name(
                &src.name,
                &src.version,
            ));
        let p = crate::node::plugin::pack(&src, &out)?;
        crate::progress::note(format!(
            "packed {} {} ({} files, {})",
            p.name,
            p.version,
            p.files.len(),
            p.digest
        ));
        out
    } else if a.path.is_file() {
        a.path.clone()
    } else {
        crate::bail_kind!(
            Kind::NotFound,
            "{} does not exist: give a plugin .tar.gz or directory",
            a.path.display()
        );
    };
    let (digest, size) = crate::digest::sha256_file(&file)?;
    let media_type = match &a.media_type {
        Some(m) => m.clone(),
        None => {
            let mut head = [0u8; 2];
            let mut f = tokio::fs::File::open(&file).await?;
            let n = f.read(&mut head).await?;
            crate::oci::artifact::sniff_media_type(&head[..n]).to_string()
        }
    };
    let layer = Descriptor::new(&media_type, &digest, size);
    let (manifest, config) = crate::oci::artifact::cosign_blob_manifest(&layer, &annotations);
    let config_desc = store::push_bytes(dst.as_ref(), oci::CONFIG_V1, &config).await?;
    if dst.blob_exists(&digest).await? {
        crate::progress::note(format!("layer {digest} already present"));
    } else {
        let f = tokio::fs::File::open(&file).await?;
        let bar = crate::progress::bar(size, "pushing");
        dst.push_blob(
            &layer,
            Box::new(crate::progress::Tracked {
                inner: f,
                bar: bar.clone(),
            }),
        )
        .await?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
    let tag = loc.tag().unwrap_or("latest").to_string();
    let mdigest = dst
        .push_manifest(&manifest, oci::MANIFEST_V1, Some(&tag))
        .await?;
    Ok(Pushed {
        reference: loc.pinned(&mdigest),
        digest: mdigest,
        size: manifest.len() as u64,
        media_type: oci::MANIFEST_V1.to_string(),
        config: config_desc,
        layers: vec![layer],
    })
}
