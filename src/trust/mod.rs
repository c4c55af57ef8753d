//! cosign-compatible signatures, pure functions: keys (docs/formats.md §5), the simple signing
//! payload and the `.sig` manifest (§3), Sigstore bundles (cosign v3), and verification of
//! both with keys or keyless against a `trusted_root.json` (§4, docs/signatures.md), with
//! offline Rekor checks. No network, no store.

mod bundle;
mod identity;
mod keyless;
mod keys;
mod payload;
mod rekor;
mod sigmanifest;
mod trusted_root;
mod verify;
mod write_bundle;

pub use bundle::{
    verify_bundle, verify_signature_bundle, COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE,
};
pub use identity::{CertificateIdentity, Matcher};
pub use keyless::Keyless;
pub use keys::{
    decrypt_private_key, encrypt_private_key, generate_key_pair, import_private_key, read_password,
    PublicKey, SigningKey,
};
pub use payload::{simple_signing_payload, SIMPLE_SIGNING_TYPE};
pub use rekor::verify_rekor_set;
pub use sigmanifest::{append_signature, Append, NewSignature};
pub use trusted_root::{read as read_trusted_root, TrustedRoot, TRUSTED_ROOT_MEDIA_TYPE};
pub use verify::{verify_signature_layers, Policy, Verified};
pub use write_bundle::{
    bundle_referrer_manifest, cosign_sign_statement, sign_bundle, BundleReferrer,
    ANN_BUNDLE_CONTENT, ANN_BUNDLE_PREDICATE_TYPE,
};
