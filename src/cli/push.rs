use std::path::PathBuf;

use clap::Args;

use super::args::parse_annotations;
use super::{Global, Printer};
use crate::error::Kind;
use crate::ops::push::{self, PushOptions};

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
    #[arg(long = "media-type", conflicts_with = "kpi")]
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
    /// With --sign: write a Sigstore bundle attached as an OCI 1.1 referrer (cosign v3's
    /// format) instead of a `.sig` layer. See `kplug sign --help`.
    #[arg(long, env = "KPLUG_NEW_BUNDLE_FORMAT", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", action = clap::ArgAction::Set, default_value_t = false)]
    pub new_bundle_format: bool,
    /// Push a KongPluginInstallation image instead (one tar+gzip layer of handler.lua and
    /// schema.lua, as the Kong Operator reads it); refused for plugins KPI cannot carry.
    #[arg(long)]
    pub kpi: bool,
}

pub async fn run(g: &Global, out: &Printer, a: PushArgs) -> anyhow::Result<()> {
    if a.key.is_some() && !a.sign {
        crate::bail_kind!(Kind::Usage, "--key given without --sign");
    }
    let o = PushOptions {
        path: a.path,
        reference: a.reference,
        annotations: parse_annotations(&a.annotations)?,
        media_type: a.media_type,
        name: a.name,
        version: a.plugin_version,
        sign_key: a.key,
        new_bundle_format: a.new_bundle_format,
        store: g.store_options(),
    };
    let r = if a.kpi {
        crate::ops::k8s::push_kpi(&o).await?
    } else {
        push::push(&o).await?
    };
    out.result(&r, |t| t.line(&r.reference))
}
