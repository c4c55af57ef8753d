use clap::Args;

use super::args::TrustArgs;
use super::{Global, Printer};
use crate::ops::verify::{self, VerifyOptions};

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
    crate::progress::note(super::output::check_list(&r.pinned, &r.verified));
    // cosign's stdout: a JSON array of the verified payloads.
    let payloads: Vec<serde_json::Value> = r
        .verified
        .iter()
        .map(|v| serde_json::from_slice(&v.payload).unwrap_or(serde_json::Value::Null))
        .collect();
    println!("{}", serde_json::to_string(&payloads)?);
    Ok(())
}
