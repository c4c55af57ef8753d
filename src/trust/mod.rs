//! cosign-compatible signatures, pure functions: keys (FORMATS.md §5), the simple signing
//! payload and the `.sig` manifest (§3), and verification of both the `.sig` scheme and
//! cosign v3 Sigstore bundles (§4), with offline Rekor SET checks. No network, no store.

mod bundle;
mod keys;
mod payload;
mod rekor;
mod sigmanifest;
mod verify;

pub use bundle::{verify_sigstore_bundle, COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE};
pub use keys::{
    decrypt_private_key, encrypt_private_key, generate_key_pair, import_private_key, read_password,
    PublicKey, SigningKey,
};
pub use payload::{simple_signing_payload, SIMPLE_SIGNING_TYPE};
pub use rekor::verify_rekor_set;
pub use sigmanifest::{append_signature, Append, NewSignature};
pub use verify::{verify_signature_manifest, Policy, Verified};
