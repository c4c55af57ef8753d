//! Key files: `generate-key-pair`, `import-key-pair`, and reading the keys other
//! operations sign and verify with.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{fail, Kind};
use crate::tree::{AtomicFile, SECRET_MODE, USER_MODE};
use crate::trust;

/// Where a new key pair goes, and how.
pub struct KeyPairOptions {
    /// Writes `PREFIX.key` and `PREFIX.pub`.
    pub output_prefix: String,
    pub force: bool,
    /// `ENCRYPTED COSIGN PRIVATE KEY` / scrypt N=32768, for cosign <= 2.1.
    pub legacy_header: bool,
}

/// The files written.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairReport {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    /// sha256 of the public key's DER, as `list` shows signers.
    pub fingerprint: String,
}

/// Create a cosign key pair (password from COSIGN_PASSWORD or the terminal).
pub fn generate(o: &KeyPairOptions) -> anyhow::Result<KeyPairReport> {
    let pw = trust::read_password(true)?;
    let (private_pem, public_pem) = trust::generate_key_pair(&pw, o.legacy_header)?;
    write_pair(o, &private_pem, &public_pem)
}

/// Encrypt an existing EC P-256 private key (PEM) as a cosign key pair.
pub fn import(key: &Path, o: &KeyPairOptions) -> anyhow::Result<KeyPairReport> {
    let pem = std::fs::read_to_string(key).map_err(|e| {
        fail(
            Kind::Usage,
            format!("cannot read --key {}: {e}", key.display()),
        )
    })?;
    let k =
        trust::import_private_key(&pem).with_context(|| format!("importing {}", key.display()))?;
    let pw = trust::read_password(true)?;
    let private_pem = trust::encrypt_private_key(&k, &pw, o.legacy_header)?;
    write_pair(o, &private_pem, &k.public_key().to_pem())
}

fn write_pair(
    o: &KeyPairOptions,
    private_pem: &str,
    public_pem: &str,
) -> anyhow::Result<KeyPairReport> {
    let key = PathBuf::from(format!("{}.key", o.output_prefix));
    let pubk = PathBuf::from(format!("{}.pub", o.output_prefix));
    if !o.force {
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
    for (path, bytes, mode) in [
        (&key, private_pem, SECRET_MODE),
        (&pubk, public_pem, USER_MODE),
    ] {
        let mut f = AtomicFile::create(path, mode)?;
        std::io::Write::write_all(f.file(), bytes.as_bytes())?;
        f.commit()?;
    }
    Ok(KeyPairReport {
        fingerprint: trust::PublicKey::from_pem(public_pem)?.fingerprint(),
        private_key: key,
        public_key: pubk,
    })
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
