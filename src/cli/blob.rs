use std::path::PathBuf;

use clap::Args;

use super::Printer;
use crate::ops::blob::{self, SignBlobOptions, VerifyBlobOptions};

#[derive(Args, Debug)]
#[command(after_help = "\
The signature is cosign's: ECDSA P-256 over the file's SHA-256, base64. `cosign verify-blob
--key cosign.pub --signature FILE.sig --insecure-ignore-tlog FILE` accepts it, and
`kplug install FILE --signature FILE.sig --key cosign.pub` installs a plugin .tar.gz with it.
Nothing is uploaded to a transparency log.")]
pub struct SignBlobArgs {
    /// File to sign (e.g. a plugin .tar.gz from `kplug pack`).
    pub file: PathBuf,
    /// cosign private key (password from COSIGN_PASSWORD or the terminal).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Write the base64 signature to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output_signature: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = super::output::EXIT_CODES)]
pub struct VerifyBlobArgs {
    /// File the signature is for.
    pub file: PathBuf,
    /// Trusted cosign public key (repeatable: any of them may have signed).
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The signature: a file (base64 as `sign-blob` writes it, or raw DER) or the base64
    /// text itself.
    #[arg(long, value_name = "FILE|BASE64")]
    pub signature: String,
    /// Accepted as cosign spells it, and changes nothing: no transparency log is consulted.
    #[arg(long)]
    pub insecure_ignore_tlog: bool,
}

pub async fn sign(out: &Printer, a: SignBlobArgs) -> anyhow::Result<()> {
    let r = blob::sign_blob(&SignBlobOptions {
        file: a.file,
        key: a.key,
        output_signature: a.output_signature,
    })?;
    if let Some(p) = &r.output_signature {
        crate::progress::note(format!("Signature written to {}", p.display()));
    }
    out.result(&r, |t| {
        if r.output_signature.is_none() {
            t.line(&r.signature)
        }
    })
}

pub async fn verify(out: &Printer, a: VerifyBlobArgs) -> anyhow::Result<()> {
    let r = blob::verify_blob(&VerifyBlobOptions {
        file: a.file,
        keys: a.keys,
        signature: a.signature,
    })?;
    crate::progress::note(format!("Verified OK (key {})", r.key.display()));
    out.result(&r, |_| {})
}
