use std::path::PathBuf;

use clap::Args;

use super::{Global, Printer};
use crate::ops::transfer::{self, SaveOptions};

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Artifacts to save, each with a tag: REGISTRY/REPO:TAG[@DIGEST] (or oci:DIR:NAME:TAG).
    /// Each is stored as REPO:TAG (its repository path, without the registry host).
    #[arg(required = true)]
    pub refs: Vec<String>,
    /// A directory (OCI image layout; added to if it exists) or FILE.tar (oci-archive).
    #[arg(short, long, value_name = "DIR|FILE.tar")]
    pub output: PathBuf,
    /// Leave signatures, attestations and referrers behind.
    #[arg(long)]
    pub no_signatures: bool,
    /// Artifacts fetched at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Carry this Sigstore trusted_root.json in the bundle (checked first), as
    /// trusted_root.json beside index.json: on the air-gapped side, `verify`/`install
    /// --trusted-root BUNDLE` read it from there. See docs/air-gap.md.
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
}

pub async fn run(g: &Global, out: &Printer, a: SaveArgs) -> anyhow::Result<()> {
    let o = SaveOptions {
        refs: a.refs,
        output: a.output,
        signatures: !a.no_signatures,
        concurrency: a.concurrency,
        trusted_root: a.trusted_root,
        store: g.store_options(),
    };
    let outcomes = transfer::save(&o).await?;
    super::report_outcomes(out, &outcomes)?;
    if !out.is_json() {
        println!("{}", o.output.display());
    }
    Ok(())
}
