//! cosign-compatible keys: ECDSA P-256, PKIX `PUBLIC KEY` PEM, and the scrypt +
//! nacl/secretbox encrypted private key PEM of `cosign generate-key-pair` (docs/formats.md §5).

use std::fmt;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};
use sigstore::crypto::signing_key::ecdsa::ec::{EcdsaKeys, EcdsaSigner};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::{KeyPair, SigStoreKeyPair, Signer};
use sigstore::crypto::{CosignVerificationKey, Signature};

use crate::bail_kind;
use crate::error::{fail, Kind};

const SIGSTORE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const COSIGN_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// scrypt N values cosign ≥ 2.2 reads; it writes 65536, cosign ≤ 2.1 wrote 32768.
const SCRYPT_N: [u64; 3] = [32768, 65536, 131072];

/// An ECDSA P-256 private key.
pub struct SigningKey {
    signer: EcdsaSigner,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public.fingerprint())
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        Self::from_keys(&EcdsaKeys::new(EllipticCurve::P256)?)
    }

    fn from_keys(keys: &EcdsaKeys) -> Result<Self> {
        Ok(SigningKey {
            signer: EcdsaSigner::from_ecdsa_keys(keys)?,
            public: PublicKey::from_der(&keys.public_key_to_der()?)?,
        })
    }

    /// ASN.1 DER ECDSA signature over SHA-256 of `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        Ok(self.signer.sign(payload)?)
    }

    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// ASN.1 DER ECDSA signature over a SHA-256 digest the caller computed while streaming
    /// (`sign-blob` of a file of any size): the same signature [`sign`](Self::sign) gives
    /// for the bytes hashed.
    pub fn sign_sha256(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        let der = self.signer.ecdsa_keys().private_key_to_der()?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
            .map_err(|e| anyhow::anyhow!("loading the signing key: {e}"))?;
        let d = aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256)
            .map_err(|_| anyhow::anyhow!("bad SHA-256 digest"))?;
        let sig = pair
            .sign_digest(&d)
            .map_err(|_| anyhow::anyhow!("ECDSA signing failed"))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// An ECDSA P-256 public key, kept as its PKIX (SubjectPublicKeyInfo) DER.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    der: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// A PEM `PUBLIC KEY` block (what `cosign.pub` holds).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            "PUBLIC KEY" => Self::from_der(&der),
            "CERTIFICATE" => bail_kind!(
                Kind::Usage,
                "expected a public key, found a certificate; extract its key with `openssl x509 -pubkey -noout -in CERT`"
            ),
            other => bail_kind!(
                Kind::Usage,
                "expected a PEM PUBLIC KEY block (like cosign.pub), found {other:?}"
            ),
        }
    }

    pub fn from_der(der: &[u8]) -> Result<Self> {
        let kind = match CosignVerificationKey::try_from_der(der) {
            Ok(CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_)) => {
                return Ok(PublicKey { der: der.to_vec() })
            }
            Ok(CosignVerificationKey::ECDSA_P384_SHA384_ASN1(_)) => "ECDSA P-384",
            Ok(CosignVerificationKey::ECDSA_P521_SHA512_ASN1(_)) => "ECDSA P-521",
            Ok(CosignVerificationKey::ED25519(_)) => "Ed25519",
            Ok(_) => "RSA",
            Err(e) => bail_kind!(Kind::Usage, "not a PKIX public key: {e}"),
        };
        bail_kind!(
            Kind::Usage,
            "unsupported public key type {kind}: kplug verifies ECDSA P-256 keys only (cosign's default)"
        )
    }

    /// PKIX DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.der)
    }

    /// `sha256:<hex of sha256(PKIX DER)>`; its hex part is a Rekor log ID for Rekor keys.
    pub fn fingerprint(&self) -> String {
        crate::digest::sha256(&self.der)
    }

    /// Whether `der_sig` is an ECDSA signature by this key over a SHA-256 `digest` (of a
    /// blob hashed while streaming; see [`SigningKey::sign_sha256`]).
    pub fn verify_sha256(&self, digest: &[u8; 32], der_sig: &[u8]) -> bool {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        let Ok(d) = aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256)
        else {
            return false;
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.der)
            .verify_digest(&d, der_sig)
            .is_ok()
    }

    /// Whether `der_sig` is an ECDSA signature by this key over SHA-256 of `payload`.
    pub fn verify(&self, payload: &[u8], der_sig: &[u8]) -> bool {
        CosignVerificationKey::ECDSA_P256_SHA256_ASN1(self.der.clone())
            .verify_signature(Signature::Raw(der_sig), payload)
            .is_ok()
    }
}

/// A new key pair as (`cosign.key` PEM, `cosign.pub` PEM).
///
/// `legacy_header` writes what cosign ≤ 2.1 and containers/image ≤ 5.24 can read:
/// `ENCRYPTED COSIGN PRIVATE KEY` with scrypt N=32768.
pub fn generate_key_pair(password: &[u8], legacy_header: bool) -> Result<(String, String)> {
    let key = SigningKey::generate()?;
    let private = encrypt_private_key(&key, password, legacy_header)?;
    Ok((private, key.public.to_pem()))
}

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn secretbox(password: &[u8], salt: &[u8], n: u64) -> Result<XSalsa20Poly1305> {
    let params = scrypt::Params::new(n.trailing_zeros() as u8, 8, 1)
        .map_err(|e| anyhow::anyhow!("scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| anyhow::anyhow!("scrypt: {e}"))?;
    Ok(XSalsa20Poly1305::new(&key.into()))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(buf)
}

/// The cosign encrypted PEM of `key` (the body cosign writes; see [`generate_key_pair`]).
pub fn encrypt_private_key(
    key: &SigningKey,
    password: &[u8],
    legacy_header: bool,
) -> Result<String> {
    let (label, n) = if legacy_header {
        (COSIGN_LABEL, 32768)
    } else {
        (SIGSTORE_LABEL, 65536)
    };
    let salt = random::<32>()?;
    let nonce = random::<24>()?;
    let pkcs8 = key.signer.ecdsa_keys().private_key_to_der()?;
    let ciphertext = secretbox(password, &salt, n)?
        .encrypt(&nonce.into(), pkcs8.as_slice())
        .map_err(|_| anyhow::anyhow!("encrypting the private key failed"))?;
    let body = EncryptedKey {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams { n, r: 8, p: 1 },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(ciphertext),
    };
    Ok(pem_encode(label, &serde_json::to_vec(&body)?))
}

/// Read a cosign encrypted private key (either PEM header, scrypt N 32768/65536/131072).
pub fn decrypt_private_key(pem: &str, password: &[u8]) -> Result<SigningKey> {
    let (label, body) = pem_decode(pem)?;
    match label.as_str() {
        SIGSTORE_LABEL | COSIGN_LABEL => {}
        "PRIVATE KEY" | "EC PRIVATE KEY" => bail_kind!(
            Kind::Usage,
            "this private key is not encrypted; turn it into a cosign key with `kplug import-key-pair`"
        ),
        other => bail_kind!(
            Kind::Usage,
            "expected a cosign private key (PEM {SIGSTORE_LABEL} or {COSIGN_LABEL}), found {other:?}"
        ),
    }
    let bad = |what: &str| fail(Kind::Usage, format!("malformed cosign private key: {what}"));
    let env: EncryptedKey =
        serde_json::from_slice(&body).map_err(|e| bad(&format!("invalid JSON body ({e})")))?;
    let ScryptParams { n, r, p } = env.kdf.params;
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        return Err(bad(&format!(
            "unsupported kdf {:?} / cipher {:?} (want scrypt / nacl/secretbox)",
            env.kdf.name, env.cipher.name
        )));
    }
    if !SCRYPT_N.contains(&n) || r != 8 || p != 1 {
        return Err(bad(&format!(
            "unsupported scrypt parameters N={n} r={r} p={p} (cosign reads N=32768, 65536 or 131072 with r=8, p=1)"
        )));
    }
    let salt = B64
        .decode(&env.kdf.salt)
        .map_err(|_| bad("salt is not base64"))?;
    let nonce: [u8; 24] = B64
        .decode(&env.cipher.nonce)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| bad("nonce is not 24 base64-encoded bytes"))?;
    let ciphertext = B64
        .decode(&env.ciphertext)
        .map_err(|_| bad("ciphertext is not base64"))?;
    let plain = secretbox(password, &salt, n)?
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map_err(|_| {
            fail(
                Kind::Usage,
                "cannot decrypt the private key: wrong password (check COSIGN_PASSWORD)",
            )
        })?;
    key_from_pkcs8(&plain)
}

/// An unencrypted EC P-256 private key PEM: `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY`
/// (SEC1), as `cosign import-key-pair` accepts.
pub fn import_private_key(pem: &str) -> Result<SigningKey> {
    let (label, der) = pem_decode(pem)?;
    match label.as_str() {
        "PRIVATE KEY" => key_from_pkcs8(&der),
        "EC PRIVATE KEY" => {
            let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
                .map_err(|_| {
                    fail(
                        Kind::Usage,
                        "the EC PRIVATE KEY is not an ECDSA P-256 key: kplug signs with P-256 only (cosign's default)",
                    )
                })?;
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| anyhow::anyhow!("re-encoding the key as PKCS#8 failed"))?;
            key_from_pkcs8(pkcs8.as_ref())
        }
        SIGSTORE_LABEL | COSIGN_LABEL => bail_kind!(
            Kind::Usage,
            "this is already a cosign encrypted key: use it as it is"
        ),
        "ENCRYPTED PRIVATE KEY" => bail_kind!(
            Kind::Usage,
            "password-protected PKCS#8 keys are not supported: decrypt it first with `openssl pkcs8 -in KEY -out plain.pem`"
        ),
        other => bail_kind!(
            Kind::Usage,
            "unsupported private key PEM {other:?}: kplug imports ECDSA P-256 keys (PEM PRIVATE KEY or EC PRIVATE KEY)"
        ),
    }
}

fn key_from_pkcs8(der: &[u8]) -> Result<SigningKey> {
    match SigStoreKeyPair::from_der(der) {
        Ok(SigStoreKeyPair::ECDSA(ECDSAKeys::P256(keys))) => SigningKey::from_keys(&keys),
        Ok(SigStoreKeyPair::ECDSA(other)) => unsupported(&other.to_string()),
        Ok(other) => unsupported(&other.to_string()),
        Err(_)
            if EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, der).is_ok() =>
        {
            // Inside a cosign key file cosign only accepts PKCS#8 and rejects SEC1 this way.
            bail_kind!(
                Kind::Usage,
                "unsupported private key: the plaintext is a SEC1 EC PRIVATE KEY, not PKCS#8; \
                 cosign rejects it too (x509: failed to parse private key (use ParseECPrivateKey instead for this key format))"
            )
        }
        Err(e) => bail_kind!(Kind::Usage, "the private key is not a PKCS#8 key: {e}"),
    }
}

fn unsupported(what: &str) -> Result<SigningKey> {
    bail_kind!(
        Kind::Usage,
        "unsupported private key ({what}): kplug signs with ECDSA P-256 keys only (cosign's default)"
    )
}

/// The private key password: `COSIGN_PASSWORD` if set (even empty), else a prompt on the
/// terminal (twice when `confirm`).
pub fn read_password(confirm: bool) -> Result<Vec<u8>> {
    if let Some(p) = std::env::var_os("COSIGN_PASSWORD") {
        return Ok(p.into_encoded_bytes());
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail_kind!(
            Kind::Usage,
            "no password for the private key: set COSIGN_PASSWORD (an empty value means no password)"
        );
    }
    let first = rpassword::prompt_password("Enter password for private key: ")
        .context("reading the password from the terminal")?;
    if confirm {
        let again = rpassword::prompt_password("Enter password for private key again: ")
            .context("reading the password from the terminal")?;
        if again != first {
            bail_kind!(Kind::Usage, "passwords do not match");
        }
    }
    Ok(first.into_bytes())
}

/// Label and bytes of the first PEM block in `text`.
pub(crate) fn pem_decode(text: &str) -> Result<(String, Vec<u8>)> {
    let bad = || fail(Kind::Usage, "not a PEM file (no -----BEGIN …----- block)");
    let start = text.find("-----BEGIN ").ok_or_else(bad)?;
    let (label, rest) = text[start + 11..].split_once("-----").ok_or_else(bad)?;
    let end = rest
        .find(&format!("-----END {label}-----"))
        .ok_or_else(|| fail(Kind::Usage, format!("PEM block {label:?} has no END line")))?;
    let body: String = rest[..end].split_ascii_whitespace().collect();
    if body.contains(':') {
        bail_kind!(
            Kind::Usage,
            "PEM block {label:?} has headers (legacy OpenSSL encryption), which are not supported"
        );
    }
    let der = B64.decode(body).map_err(|_| {
        fail(
            Kind::Usage,
            format!("PEM block {label:?} is not valid base64"),
        )
    })?;
    Ok((label.to_string(), der))
}

/// PEM with 64-column lines, as Go's encoding/pem writes it.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/cosign/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn scrypt_n(pem: &str) -> (String, u64) {
        let (label, body) = pem_decode(pem).unwrap();
        let env: EncryptedKey = serde_json::from_slice(&body).unwrap();
        (label, env.kdf.params.n)
    }

    #[test]
    fn decrypts_every_fixture_key() {
        for (name, password) in [
            ("rs-cosign_generated_encrypted_empty_private", ""),
            ("rs-ecdsa_encrypted_private", "123"),
            ("rs-ECDSA_P256_ASN1_ENCRYPTED_PRIVATE_PEM", "password"),
            ("cosign-keys_test-pemsigstorekey", "hello"),
            ("cosign-keys_test-pemcosignkey", "hello"),
        ] {
            let key =
                decrypt_private_key(&fixture(&format!("keys/{name}.key")), password.as_bytes())
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let want = fixture(&format!("keys/{name}.derived.pub"));
            assert_eq!(key.public_key().to_pem(), want, "{name}");
            assert_eq!(PublicKey::from_pem(&want).unwrap(), key.public_key());
        }
    }

    #[test]
    fn wrong_password_is_named() {
        let err = decrypt_private_key(&fixture("keys/rs-ecdsa_encrypted_private.key"), b"nope")
            .unwrap_err();
        assert!(err.to_string().contains("wrong password"), "{err}");
        assert!(err.to_string().contains("COSIGN_PASSWORD"), "{err}");
        assert_eq!(kind_of(&err), Kind::Usage);
    }

    #[test]
    fn sec1_plaintext_is_refused() {
        let err = decrypt_private_key(
            &fixture("keys/cosign-keys_test-pemcosigneckey.key"),
            b"hello",
        )
        .unwrap_err();
        assert!(err.to_string().contains("SEC1"), "{err}");
        assert!(err.to_string().contains("ParseECPrivateKey"), "{err}");
    }

    #[test]
    fn rsa_key_is_refused() {
        let err =
            decrypt_private_key(&fixture("keys/rs-rsa_encrypted_private.key"), b"123").unwrap_err();
        assert!(err.to_string().contains("RSA"), "{err}");
        assert!(err.to_string().contains("P-256"), "{err}");
        let err =
            PublicKey::from_pem(&fixture("keys/rs-rsa_encrypted_private.derived.pub")).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn scrypt_n_131072_is_read() {
        let key = SigningKey::generate().unwrap();
        let salt = random::<32>().unwrap();
        let nonce = random::<24>().unwrap();
        let pkcs8 = key.signer.ecdsa_keys().private_key_to_der().unwrap();
        let ct = secretbox(b"pw", &salt, 131072)
            .unwrap()
            .encrypt(&nonce.into(), pkcs8.as_slice())
            .unwrap();
        let body = format!(
            r#"{{"kdf":{{"name":"scrypt","params":{{"N":131072,"r":8,"p":1}},"salt":"{}"}},"cipher":{{"name":"nacl/secretbox","nonce":"{}"}},"ciphertext":"{}"}}"#,
            B64.encode(salt),
            B64.encode(nonce),
            B64.encode(ct)
        );
        let pem = pem_encode(SIGSTORE_LABEL, body.as_bytes());
        let back = decrypt_private_key(&pem, b"pw").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        // Unknown cost parameters are refused before any work is done.
        let slow = pem_encode(SIGSTORE_LABEL, body.replace("131072", "1048576").as_bytes());
        assert!(decrypt_private_key(&slow, b"pw")
            .unwrap_err()
            .to_string()
            .contains("N=1048576"));
    }

    #[test]
    fn generate_round_trips_both_headers() {
        for (legacy, label, n) in [(false, SIGSTORE_LABEL, 65536), (true, COSIGN_LABEL, 32768)] {
            let (private, public) = generate_key_pair(b"s3cret", legacy).unwrap();
            assert_eq!(scrypt_n(&private), (label.to_string(), n));
            let (_, body) = pem_decode(&private).unwrap();
            let text = String::from_utf8(body).unwrap();
            assert!(
                text.starts_with(r#"{"kdf":{"name":"scrypt","params":{"N":"#),
                "{text}"
            );
            let key = decrypt_private_key(&private, b"s3cret").unwrap();
            assert_eq!(key.public_key().to_pem(), public);
            assert!(decrypt_private_key(&private, b"").is_err());
        }
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(b"payload").unwrap();
        assert!(key.public_key().verify(b"payload", &sig));
        assert!(!key.public_key().verify(b"payload!", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.public_key().verify(b"payload", &sig));
        assert!(key.public_key().fingerprint().starts_with("sha256:"));
    }

    #[test]
    fn openssl_accepts_our_signature() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let payload = b"{\"critical\":{}}";
        std::fs::write(dir.path().join("pub.pem"), key.public_key().to_pem()).unwrap();
        std::fs::write(dir.path().join("sig.der"), key.sign(payload).unwrap()).unwrap();
        std::fs::write(dir.path().join("payload"), payload).unwrap();
        let out = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args([
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig.der",
                "payload",
            ])
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");
    }

    #[test]
    fn import_pkcs8_and_sec1() {
        let dir = tempfile::tempdir().unwrap();
        let sec1 = dir.path().join("ec.pem");
        let ok = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&sec1)
            .status()
            .expect("openssl is installed");
        assert!(ok.success());
        let sec1_pem = std::fs::read_to_string(&sec1).unwrap();
        assert!(sec1_pem.contains("EC PRIVATE KEY"));
        let a = import_private_key(&sec1_pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&sec1)
            .output()
            .unwrap();
        let b = import_private_key(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        // The import re-encrypts to something decrypt_private_key reads back.
        let pem = encrypt_private_key(&a, b"", false).unwrap();
        assert_eq!(
            decrypt_private_key(&pem, b"").unwrap().public_key(),
            a.public_key()
        );

        let p384 = std::process::Command::new("openssl")
            .args(["ecparam", "-name", "secp384r1", "-genkey", "-noout"])
            .output()
            .unwrap();
        let err = import_private_key(&String::from_utf8(p384.stdout).unwrap()).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
        let err = import_private_key(&fixture("keys/rs-ecdsa_encrypted_private.key")).unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
    }
}
