use clap::Args;

use super::args::TrustArgs;
use super::{Global, Printer};
use crate::ops::verify::{self, VerifyOptions};

#[derive(Args, Debug)]
#[command(after_help = super::output::with_exit_codes("\
Output: stdout is cosign's: a JSON array of the verified payloads, with or without --json.
With --json each element also carries kplug's summary under the key \"kplug\":
{\"reference\", \"digest\", \"signer\" (sha256 of the public key, DER), \"kind\"
(cosign-sig or sigstore-bundle: the signature format that verified), \"integratedTime\"
(Rekor, Unix seconds), and under registries.conf mirrors \"source\" / \"signatureSource\"
(which mirror or the primary served the artifact and its signatures)}.
cosign's check list goes to stderr."))]
pub struct VerifyArgs {
    /// Artifact: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:REF], oci-archive:FILE[:REF]
    /// (REF = TAG or NAME:TAG), docker-archive:FILE.
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// kplug's summary of one verified signature, beside cosign's payload.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    reference: &'a str,
    digest: &'a str,
    signer: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrated_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_source: Option<&'a str>,
}

pub async fn run(g: &Global, out: &Printer, a: VerifyArgs) -> anyhow::Result<()> {
    let o = VerifyOptions {
        reference: a.reference,
        trust: a.trust.options()?,
        store: g.store_options(),
    };
    let r = verify::verify(&o).await?;
    crate::progress::note(super::output::check_list(&r.pinned, &r.verified));
    // cosign's stdout: a JSON array of the verified payloads.
    let payloads: Vec<serde_json::Value> = r
        .verified
        .iter()
        .map(|v| {
            let mut p = serde_json::from_slice(&v.payload).unwrap_or(serde_json::Value::Null);
            if let (true, serde_json::Value::Object(m)) = (out.is_json(), &mut p) {
                let s = Summary {
                    reference: &r.pinned,
                    digest: &r.digest,
                    signer: &v.signer,
                    kind: v.kind,
                    integrated_time: v.integrated_time,
                    source: r.source.as_deref(),
                    signature_source: r.signature_source.as_deref(),
                };
                m.insert("kplug".to_string(), serde_json::json!(s));
            }
            p
        })
        .collect();
    println!("{}", serde_json::to_string(&payloads)?);
    Ok(())
}
