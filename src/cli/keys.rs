use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::Global;
use crate::error::{fail, Kind};
use crate::trust;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Write PREFIX.key and PREFIX.pub.
    #[arg(long, default_value = "cosign")]
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
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long, default_value = "import-cosign")]
    pub output_key_prefix: String,
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub legacy_header: bool,
}

fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        crate::bail_kind!(
            Kind::Usage,
            "{} exists; refusing to overwrite it without --force",
            path.display()
        );
    }
    let dir = crate::tree::parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_pair(
    prefix: &str,
    private_pem: &str,
    public_pem: &str,
    force: bool,
) -> anyhow::Result<()> {
    let key = PathBuf::from(format!("{prefix}.key"));
    let pubk = PathBuf::from(format!("{prefix}.pub"));
    if !force {
        for p in [&key, &pubk] {
            if p.exists() {
                crate::bail_kind!(
                    Kind::Usage,
                    "{} exists; refusing to overwrite it without --force",
                    p.display()
                );
            }
        }
    }
    write_new(&key, private_pem.as_bytes(), 0o600, force)?;
    write_new(&pubk, public_pem.as_bytes(), 0o644, force)?;
    crate::progress::note(format!(
        "Private key written to {}\nPublic key written to {}",
        key.display(),
        pubk.display()
    ));
    Ok(())
}

pub async fn generate(_g: &Global, a: GenerateArgs) -> anyhow::Result<()> {
    let pw = trust::read_password(true)?;
    let (private_pem, public_pem) = trust::generate_key_pair(&pw, a.legacy_header)?;
    write_pair(&a.output_key_prefix, &private_pem, &public_pem, a.force)
}

pub async fn import(_g: &Global, a: ImportArgs) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(&a.key).map_err(|e| {
        fail(
            Kind::Usage,
            format!("cannot read --key {}: {e}", a.key.display()),
        )
    })?;
    let key = trust::import_private_key(&pem)
        .with_context(|| format!("importing {}", a.key.display()))?;
    let pw = trust::read_password(true)?;
    let private_pem = trust::encrypt_private_key(&key, &pw, a.legacy_header)?;
    write_pair(
        &a.output_key_prefix,
        &private_pem,
        &key.public_key().to_pem(),
        a.force,
    )
}

/// Read and decrypt a cosign private key (password from COSIGN_PASSWORD or the TTY).
pub fn load_signing_key(path: &Path) -> anyhow::Result<trust::SigningKey> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        fail(
            Kind::Usage,
            format!("cannot read --key {}: {e}", path.display()),
        )
    })?;
    let pw = trust::read_password(false)?;
    trust::decrypt_private_key(&pem, &pw).with_context(|| format!("loading key {}", path.display()))
}

/// Read cosign public keys.
pub fn load_public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<trust::PublicKey>> {
    paths
        .iter()
        .map(|p| {
            let pem = std::fs::read_to_string(p)
                .map_err(|e| fail(Kind::Usage, format!("cannot read key {}: {e}", p.display())))?;
            trust::PublicKey::from_pem(&pem)
                .with_context(|| format!("loading public key {}", p.display()))
        })
        .collect()
}
