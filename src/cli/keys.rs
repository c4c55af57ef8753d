use std::path::PathBuf;

use clap::Args;

use super::Printer;
use crate::ops::keys::{self, KeyPairOptions, KeyPairReport};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Write PREFIX.key (encrypted, mode 0600) and PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub output_key_prefix: String,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Write the `ENCRYPTED COSIGN PRIVATE KEY` / scrypt N=32768 form that cosign <= 2.1
    /// and containers/image <= 5.24 need.
    #[arg(long)]
    pub legacy_header: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Unencrypted EC P-256 private key (PEM: PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Write PREFIX.key (encrypted, mode 0600) and PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "import-cosign")]
    pub output_key_prefix: String,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Write the `ENCRYPTED COSIGN PRIVATE KEY` / scrypt N=32768 form that cosign <= 2.1
    /// and containers/image <= 5.24 need.
    #[arg(long)]
    pub legacy_header: bool,
}

pub async fn generate(out: &Printer, a: GenerateArgs) -> anyhow::Result<()> {
    let r = keys::generate(&KeyPairOptions {
        output_prefix: a.output_key_prefix,
        force: a.force,
        legacy_header: a.legacy_header,
    })?;
    render(out, &r)
}

pub async fn import(out: &Printer, a: ImportArgs) -> anyhow::Result<()> {
    let o = KeyPairOptions {
        output_prefix: a.output_key_prefix,
        force: a.force,
        legacy_header: a.legacy_header,
    };
    let r = keys::import(&a.key, &o)?;
    render(out, &r)
}

fn render(out: &Printer, r: &KeyPairReport) -> anyhow::Result<()> {
    crate::progress::note(format!(
        "Private key written to {}\nPublic key written to {}",
        r.private_key.display(),
        r.public_key.display()
    ));
    if out.is_json() {
        return out.json_value(r);
    }
    Ok(())
}
