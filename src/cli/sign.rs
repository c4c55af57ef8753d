use std::path::PathBuf;

use clap::Args;

use super::args::parse_annotations;
use super::{Global, Printer};
use crate::ops::sign::{self, SignOptions};

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Artifact to sign: REGISTRY/REPO@DIGEST (a tag is resolved once, with a warning) or
    /// oci:DIR[:REF].
    pub reference: String,
    /// cosign private key (password from COSIGN_PASSWORD or the terminal).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Extra signed claim KEY=VALUE in the payload's `optional` (repeatable).
    #[arg(short = 'a', long = "annotations", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Also write the base64 signature here.
    #[arg(long, value_name = "FILE")]
    pub output_signature: Option<PathBuf>,
    /// Also write the signed payload here.
    #[arg(long, value_name = "FILE")]
    pub output_payload: Option<PathBuf>,
    /// Write a Sigstore bundle v0.3 attached as an OCI 1.1 referrer (cosign v3's default)
    /// instead of a `.sig` layer; `.sig` stays kplug's default for now (docs/signatures.md).
    /// Set KPLUG_NEW_BUNDLE_FORMAT=true to switch a release job once.
    #[arg(long, env = "KPLUG_NEW_BUNDLE_FORMAT", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", action = clap::ArgAction::Set, default_value_t = false)]
    pub new_bundle_format: bool,
}

pub async fn run(g: &Global, out: &Printer, a: SignArgs) -> anyhow::Result<()> {
    let o = SignOptions {
        reference: a.reference,
        key: a.key,
        annotations: parse_annotations(&a.annotations)?,
        output_signature: a.output_signature,
        output_payload: a.output_payload,
        new_bundle_format: a.new_bundle_format,
        store: g.store_options(),
    };
    let r = sign::sign(&o).await?;
    out.result(&r, |t| t.line(&r.signed))
}
