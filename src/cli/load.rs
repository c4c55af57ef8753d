use clap::Args;

use super::copy::SignatureArgs;
use super::Global;
use crate::oci::bundle::Bundle;
use crate::oci::copy;
use crate::ops::mirror::Destinations;

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

pub async fn run(g: &Global, a: LoadArgs) -> anyhow::Result<()> {
    let opts = a.sel.options(a.dry_run)?;
    let bundle = Bundle::open(&a.bundle)?;
    let mut dst = Destinations::new(&a.destination, &g.store_options())?;
    let jobs = bundle.load_jobs(&mut dst).await?;
    if jobs.is_empty() {
        crate::bail_kind!(
            crate::error::Kind::NotFound,
            "{} holds no tagged artifacts to load",
            a.bundle
        );
    }
    let outcomes = copy::run(&jobs, &opts, a.concurrency).await;
    super::report_outcomes(g, &outcomes)?;
    match copy::failure(&outcomes) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
