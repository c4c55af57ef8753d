//! The simple signing payload cosign signs (docs/formats.md §3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

#[derive(Serialize)]
struct Payload<'a> {
    critical: Critical<'a>,
    optional: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: Image<'a>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct Image<'a> {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: &'a str,
}

/// The payload bytes `cosign sign` writes: compact JSON, `"optional":null` when there are
/// no annotations, else an object with sorted keys; no trailing newline.
pub fn simple_signing_payload(
    docker_reference: &str,
    manifest_digest: &str,
    optional: &BTreeMap<String, String>,
) -> Vec<u8> {
    let payload = Payload {
        critical: Critical {
            identity: Identity { docker_reference },
            image: Image {
                docker_manifest_digest: manifest_digest,
            },
            kind: SIMPLE_SIGNING_TYPE,
        },
        optional: (!optional.is_empty()).then_some(optional),
    };
    let json = serde_json::to_string(&payload).expect("payload always serialises");
    go_json_escape(&json).into_bytes()
}

/// Go's encoding/json also escapes `<`, `>`, `&`, U+2028 and U+2029. These can only occur
/// inside strings, so replacing them everywhere keeps the JSON identical to cosign's.
fn go_json_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The claims of a payload, as the verifier reads them.
#[derive(Deserialize)]
pub(crate) struct Claims {
    pub critical: ClaimsCritical,
    #[serde(default)]
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
pub(crate) struct ClaimsCritical {
    pub image: ClaimsImage,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Deserialize)]
pub(crate) struct ClaimsImage {
    #[serde(rename = "docker-manifest-digest", default)]
    pub docker_manifest_digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuilds(path: &str) {
        let raw = std::fs::read(format!(
            "{}/tests/fixtures/cosign/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let reference = v["critical"]["identity"]["docker-reference"]
            .as_str()
            .unwrap();
        let digest = v["critical"]["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap();
        assert_eq!(
            simple_signing_payload(reference, digest, &BTreeMap::new()),
            raw,
            "{path}"
        );
    }

    #[test]
    fn rebuilds_fixture_payloads() {
        rebuilds("v3-classic-sig/payload.json");
        rebuilds("cimage/dir-img-cosign-valid/payload.json");
    }

    #[test]
    fn optional_is_sorted_and_go_escaped() {
        let optional = BTreeMap::from([
            ("b".to_string(), "x<y & z>".to_string()),
            ("a".to_string(), "1".to_string()),
        ]);
        let got = simple_signing_payload("r.example/p", "sha256:00", &optional);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"r.example/p"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":{"a":"1","b":"x\u003cy \u0026 z\u003e"}}"#
        );
    }

    #[test]
    fn sig_tag() {}
}
