use clap::Args;

use super::args::SignatureArgs;
use super::{Global, Printer};
use crate::oci::copy;
use crate::ops::transfer::{self, LoadOptions};

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// What `kplug save` (or `cosign save`) wrote: a layout DIR or an oci-archive FILE.tar.
    pub bundle: String,
    /// REGISTRY[/PREFIX]: each artifact goes to PREFIX/<its repository> under its tag
    /// (for a `cosign save` directory, give the full REGISTRY/REPO). Or oci:DIR.
    pub destination: String,
    /// Artifacts pushed at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Show what would be pushed; push nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub sel: SignatureArgs,
}

pub async fn run(g: &Global, out: &Printer, a: LoadArgs) -> anyhow::Result<()> {
    let o = LoadOptions {
        bundle: a.bundle,
        destination: a.destination,
        carry: a.sel.carry()?,
        concurrency: a.concurrency,
        dry_run: a.dry_run,
        store: g.store_options(),
    };
    let outcomes = transfer::load(&o).await?;
    super::report_outcomes(out, &outcomes)?;
    match copy::failure(&outcomes) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
