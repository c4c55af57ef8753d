//! The manifest at the `.sig` tag: one simple signing layer per signature (docs/formats.md §3).

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};

use super::keys::PublicKey;
use crate::digest::sha256;
use crate::oci::{self, Descriptor, Manifest};

/// A signature to attach.
#[derive(Debug, Clone)]
pub struct NewSignature {
    pub payload: Vec<u8>,
    pub signature_b64: String,
    /// Extra layer annotations, e.g. `dev.sigstore.cosign/bundle`.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // built once per signing
pub enum Append {
    /// An equivalent signature by the same key is already there: push nothing.
    Duplicate,
    /// Push `sig.payload` as the blob of `layer`, then `config`, then `manifest`.
    Updated {
        manifest: Vec<u8>,
        config: Vec<u8>,
        layer: Descriptor,
    },
}

/// Add `sig` to the signature manifest `existing` (or start one), as cosign does.
pub fn append_signature(
    existing: Option<&Manifest>,
    sig: &NewSignature,
    signer: &PublicKey,
) -> Append {
    let mut layer = Descriptor::new(
        oci::SIMPLESIGNING_V1,
        &sha256(&sig.payload),
        sig.payload.len() as u64,
    );
    layer.annotations = sig.annotations.clone();
    layer
        .annotations
        .insert(oci::ANN_COSIGN_SIGNATURE.into(), sig.signature_b64.clone());

    if existing.is_some_and(|m| {
        m.layers
            .iter()
            .any(|old| is_duplicate(old, &layer, sig, signer))
    }) {
        return Append::Duplicate;
    }

    // ggcr's mutate.Append keeps the base's media types; cosign's own are the OCI ones.
    let (media_type, config_type, annotations, mut layers) = match existing {
        Some(m) => (
            m.media_type.clone(),
            m.config.media_type.clone(),
            m.annotations.clone(),
            m.layers.clone(),
        ),
        None => (
            Some(oci::MANIFEST_V1.to_string()),
            oci::CONFIG_V1.to_string(),
            BTreeMap::new(),
            Vec::new(),
        ),
    };
    layers.push(layer.clone());
    // The layers are uncompressed, so each diff_id is the layer digest.
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    let config = oci::cosign_config(&diff_ids);
    let manifest = Manifest {
        schema_version: 2,
        media_type,
        config: Descriptor::new(&config_type, &sha256(&config), config.len() as u64),
        layers,
        annotations,
        subject: None,
        artifact_type: None,
    };
    Append::Updated {
        manifest: oci::to_json(&manifest),
        config,
        layer,
    }
}

/// cosign's rule: same payload digest, media type and other annotations, and the old
/// signature verifies with the same key.
fn is_duplicate(
    old: &Descriptor,
    new: &Descriptor,
    sig: &NewSignature,
    signer: &PublicKey,
) -> bool {
    let others = |d: &Descriptor| {
        let mut a = d.annotations.clone();
        a.remove(oci::ANN_COSIGN_SIGNATURE);
        a
    };
    old.digest == new.digest
        && old.media_type == new.media_type
        && others(old) == others(new)
        && old
            .annotations
            .get(oci::ANN_COSIGN_SIGNATURE)
            .and_then(|s| B64.decode(s).ok())
            .is_some_and(|s| signer.verify(&sig.payload, &s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keys::SigningKey;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/cosign/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn classic() -> (NewSignature, PublicKey, Vec<u8>) {
        let want = fixture("v3-classic-sig/sig-manifest.json");
        let m: Manifest = serde_json::from_slice(&want).unwrap();
        let sig = NewSignature {
            payload: fixture("v3-classic-sig/payload.json"),
            signature_b64: m.layers[0].annotations[oci::ANN_COSIGN_SIGNATURE].clone(),
            annotations: BTreeMap::new(),
        };
        let key =
            PublicKey::from_pem(&String::from_utf8(fixture("v3-classic-sig/cosign.pub")).unwrap())
                .unwrap();
        (sig, key, want)
    }

    #[test]
    fn fresh_manifest_is_byte_exact() {
        let (sig, key, want) = classic();
        let Append::Updated {
            manifest,
            config,
            layer,
        } = append_signature(None, &sig, &key)
        else {
            panic!("expected a new manifest")
        };
        assert_eq!(manifest, want);
        assert_eq!(config, fixture("v3-classic-sig/config.json"));
        assert_eq!(layer.digest, sha256(&sig.payload));
    }

    #[test]
    fn same_signature_again_is_duplicate() {
        let (sig, key, want) = classic();
        let existing: Manifest = serde_json::from_slice(&want).unwrap();
        assert!(matches!(
            append_signature(Some(&existing), &sig, &key),
            Append::Duplicate
        ));
        // A different key signing the same payload appends.
        let other = SigningKey::generate().unwrap();
        let sig2 = NewSignature {
            signature_b64: B64.encode(other.sign(&sig.payload).unwrap()),
            ..sig.clone()
        };
        let Append::Updated {
            manifest, config, ..
        } = append_signature(Some(&existing), &sig2, &other.public_key())
        else {
            panic!("expected an append")
        };
        let m: Manifest = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[0], existing.layers[0]);
        assert_eq!(m.config.digest, sha256(&config));
        let d = &existing.layers[0].digest;
        assert_eq!(config, oci::cosign_config(&[d.clone(), d.clone()]));
        // Same key but an extra annotation (e.g. a bundle) is not a duplicate either.
        let sig3 = NewSignature {
            annotations: BTreeMap::from([(oci::ANN_COSIGN_BUNDLE.into(), "{}".into())]),
            ..sig
        };
        assert!(matches!(
            append_signature(Some(&existing), &sig3, &key),
            Append::Updated { .. }
        ));
    }
}
