//! `sign-blob` / `verify-blob`: cosign's detached signatures over a file — an ECDSA
//! signature over the file's SHA-256, base64 in a file (`cosign sign-blob --key
//! --output-signature`). The file is hashed while streaming, so its size does not matter.
//! No transparency log: like `cosign sign-blob --tlog-upload=false`.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{fail, Kind};

/// What `sign-blob` asks for.
pub struct SignBlobOptions {
    pub file: PathBuf,
    /// cosign private key (password from COSIGN_PASSWORD or the terminal).
    pub key: PathBuf,
    /// Also write the base64 signature here.
    pub output_signature: Option<PathBuf>,
}

/// What was signed.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignBlobReport {
    pub file: PathBuf,
    /// `sha256:<hex>` of the file.
    pub digest: String,
    /// The signature, base64 (ASN.1 DER ECDSA), as cosign prints it.
    pub signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_signature: Option<PathBuf>,
    /// sha256 of the signer's public key (DER), as `list` shows signers.
    pub signer: String,
}

/// The SHA-256 of a local input file, streamed.
fn file_digest(file: &Path) -> anyhow::Result<(String, [u8; 32])> {
    let (digest, _) = crate::digest::sha256_file(file)
        .map_err(|e| crate::error::input_error("file", file, &e))?;
    let mut raw = [0u8; 32];
    hex::decode_to_slice(crate::digest::hex_of(&digest)?, &mut raw)?;
    Ok((digest, raw))
}

pub fn sign_blob(o: &SignBlobOptions) -> anyhow::Result<SignBlobReport> {
    let (digest, raw) = file_digest(&o.file)?;
    let key = super::keys::load_signing_key(&o.key)?;
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign_sha256(&raw)?);
    if let Some(p) = &o.output_signature {
        crate::tree::write_atomic(p, sig.as_bytes())?;
    }
    Ok(SignBlobReport {
        file: o.file.clone(),
        digest,
        signature: sig,
        output_signature: o.output_signature.clone(),
        signer: key.public_key().fingerprint(),
    })
}

/// What `verify-blob` asks for.
pub struct VerifyBlobOptions {
    pub file: PathBuf,
    /// Trusted public keys: any of them may have signed.
    pub keys: Vec<PathBuf>,
    /// The signature: a file holding it (base64 or raw DER), or the base64 itself.
    pub signature: String,
}

/// What verified.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyBlobReport {
    pub file: PathBuf,
    pub digest: String,
    /// sha256 of the public key (DER) that verified.
    pub signer: String,
    /// The key file that verified.
    pub key: PathBuf,
}

/// A signature as `--signature` gives it: a file (base64, as cosign writes it, or raw
/// DER), else the base64 text itself.
pub fn decode_signature(arg: &str) -> anyhow::Result<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let p = Path::new(arg);
    if p.exists() {
        let bytes = crate::error::read_input("--signature", p)?;
        let text = String::from_utf8_lossy(&bytes);
        return Ok(b64.decode(text.trim()).unwrap_or(bytes));
    }
    b64.decode(arg.trim()).map_err(|_| {
        fail(
            Kind::Usage,
            format!(
                "--signature {:?}: no such file, nor base64",
                crate::progress::escape(arg)
            ),
        )
    })
}

pub fn verify_blob(o: &VerifyBlobOptions) -> anyhow::Result<VerifyBlobReport> {
    if o.keys.is_empty() {
        crate::bail_kind!(
            Kind::Usage,
            "give the signer's public key with --key cosign.pub"
        );
    }
    let sig = decode_signature(&o.signature)?;
    let keys = super::keys::load_public_keys(&o.keys)?;
    let (digest, raw) = file_digest(&o.file)?;
    let hit = keys
        .iter()
        .zip(&o.keys)
        .find(|(k, _)| k.verify_sha256(&raw, &sig));
    match hit {
        Some((k, path)) => Ok(VerifyBlobReport {
            file: o.file.clone(),
            digest,
            signer: k.fingerprint(),
            key: path.clone(),
        }),
        None => Err(fail(
            Kind::NoMatchingSignature,
            format!(
                "the signature does not verify {} ({digest}) with {}",
                o.file.display(),
                o.keys
                    .iter()
                    .map(|k| k.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cosign signature made by `cosign sign --key` over a simple-signing payload is, byte
    /// for byte, what `cosign sign-blob` makes over that payload as a file: verify-blob must
    /// accept it (tests/fixtures/cosign/cimage, see its SOURCES.md).
    #[test]
    fn verifies_a_real_cosign_signature() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cosign"
        ));
        let sig = dir.join("cimage/dir-img-cosign-valid/payload.json.sig");
        let o = VerifyBlobOptions {
            file: dir.join("cimage/dir-img-cosign-valid/payload.json"),
            keys: vec![dir.join("cimage/cosign.pub")],
            signature: sig.display().to_string(),
        };
        let r = verify_blob(&o).unwrap();
        assert_eq!(r.key, dir.join("cimage/cosign.pub"));
        // The same signature given inline, as cosign also accepts.
        let inline = std::fs::read_to_string(&sig).unwrap();
        verify_blob(&VerifyBlobOptions {
            signature: inline,
            ..o
        })
        .unwrap();
        // One byte more in the file: refused, with cosign's "no matching signature" code.
        let t = tempfile::tempdir().unwrap();
        let other = t.path().join("payload.json");
        let mut bytes =
            std::fs::read(dir.join("cimage/dir-img-cosign-valid/payload.json")).unwrap();
        bytes.push(b'\n');
        std::fs::write(&other, bytes).unwrap();
        let e = verify_blob(&VerifyBlobOptions {
            file: other,
            keys: vec![dir.join("cimage/cosign.pub")],
            signature: sig.display().to_string(),
        })
        .unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::NoMatchingSignature);
    }
}
