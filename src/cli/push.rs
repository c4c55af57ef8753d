use std::path::PathBuf;

use clap::Args;

use super::args::{parse_annotations, LimitArgs, ServerArgs};
use super::{Global, Printer};
use crate::error::Kind;
use crate::ops::push::{self, PushOptions};

#[derive(Args, Debug)]
#[command(after_help = "\
The artifact is what `cosign upload blob` writes (one layer, the plugin .tar.gz), with the
plugin's name and version as the manifest's org.opencontainers.image.title / .version and
the file name as the layer's title (so `oras pull` names the file).

Before anything is sent, the archive is unpacked as `kplug install` would, under the same
--max-* limits (install's defaults): what every node would refuse (not a plugin archive, no
handler.lua/schema.lua, a key file, over a limit) is not pushed. --force pushes any file as
an opaque blob.")]
pub struct PushArgs {
    /// Plugin archive (.tar.gz, .rock) or plugin directory (packed first, as `kplug pack`
    /// does); with --runtime, a plugin server's executable or directory.
    pub path: PathBuf,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:REF] (tag defaults to `latest`).
    pub reference: String,
    /// Manifest annotation KEY=VALUE (repeatable), as `cosign upload blob -a`; wins over
    /// the title and version kplug sets.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Layer media type (cosign's --ct); default sniffed: application/x-gzip or application/octet-stream.
    #[arg(long = "media-type", value_name = "TYPE", conflicts_with = "kpi")]
    pub media_type: Option<String>,
    /// The manifest's OCI 1.1 artifactType, as `oras push --artifact-type` (none by default,
    /// as cosign writes it); nodes read the artifact the same either way.
    #[arg(long, value_name = "TYPE", conflicts_with = "kpi")]
    pub artifact_type: Option<String>,
    /// Plugin name: for a directory whose layout does not say it; for an archive, checked
    /// against what it holds.
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version, declared in the manifest (and used to pack a directory); default
    /// the rockspec's, else handler.lua's VERSION.
    #[arg(long = "version", value_name = "VERSION")]
    pub plugin_version: Option<String>,
    /// Push even what no node would install, as an opaque file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Sign the pushed digest right away (needs --key).
    #[arg(long, requires = "key")]
    pub sign: bool,
    /// cosign private key for --sign (password from COSIGN_PASSWORD or the terminal).
    #[arg(long, value_name = "FILE")]
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
    #[command(flatten)]
    pub server: ServerArgs,
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
        artifact_type: a.artifact_type,
        name: a.name,
        version: a.plugin_version,
        check: (!a.force).then(|| a.limits.limits()),
        sign_key: a.key,
        new_bundle_format: a.new_bundle_format,
        server: a.server.spec(),
        store: g.store_options(),
    };
    let r = if a.kpi {
        crate::ops::k8s::push_kpi(&o).await?
    } else {
        push::push(&o).await?
    };
    out.result(&r, |t| t.line(&r.reference))
}
