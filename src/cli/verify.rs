use clap::Args;

use super::args::TrustArgs;
use super::{Global, Printer};
use crate::ops::verify::{self, VerifyOptions};
use crate::trust::Verified;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Artifact: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME:TAG], oci-archive:FILE[:TAG].
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub async fn run(g: &Global, _out: &Printer, a: VerifyArgs) -> anyhow::Result<()> {
    let o = VerifyOptions {
        reference: a.reference,
        trust: a.trust.options()?,
        store: g.store_options(),
    };
    let r = verify::verify(&o).await?;
    crate::progress::note(check_list(&r.pinned, &r.verified));
    // cosign's stdout: a JSON array of the verified payloads.
    let payloads: Vec<serde_json::Value> = r
        .verified
        .iter()
        .map(|v| serde_json::from_slice(&v.payload).unwrap_or(serde_json::Value::Null))
        .collect();
    println!("{}", serde_json::to_string(&payloads)?);
    Ok(())
}

/// cosign's check list, for stderr.
pub fn check_list(what: &str, verified: &[Verified]) -> String {
    let mut s = format!(
        "\nVerification for {what} --\nThe following checks were performed on each of these signatures:\n  - The cosign claims were validated\n"
    );
    if verified.iter().any(|v| v.integrated_time.is_some()) {
        s.push_str("  - Existence of the claims in the transparency log was verified offline\n");
    }
    s.push_str("  - The signatures were verified against the specified public key\n");
    for v in verified {
        s.push_str(&format!("  signer {} ({})", v.signer, v.kind));
        if let Some(t) = v.integrated_time {
            s.push_str(&format!(
                ", logged at {}",
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default()
            ));
        }
        s.push('\n');
    }
    s
}
