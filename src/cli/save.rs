use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Global;
use crate::error::Kind;
use crate::oci::bundle;
use crate::oci::copy::{self, Job};
use crate::oci::store::layout::LayoutStore;

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Artifacts to save, each with a tag: REGISTRY/REPO:TAG[@DIGEST] (or oci:DIR:NAME:TAG).
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
}

pub async fn run(g: &Global, a: SaveArgs) -> anyhow::Result<()> {
    let archive = bundle::is_archive_path(&a.output);
    // An oci-archive is written as a layout first and tarred at the end.
    let staging = if archive {
        let parent = crate::tree::parent_dir(&a.output);
        Some(
            tempfile::Builder::new()
                .prefix(".kplug-save-")
                .tempdir_in(parent)?,
        )
    } else {
        None
    };
    let dir = staging
        .as_ref()
        .map(|t| t.path().to_path_buf())
        .unwrap_or_else(|| a.output.clone());
    let root = LayoutStore::open(&dir, None, true)?;
    let mut jobs = Vec::new();
    for r in &a.refs {
        let (loc, src) = super::open(g, r, false).await?;
        let Some(tag) = loc.tag().map(str::to_string) else {
            crate::bail_kind!(
                Kind::Usage,
                "{r}: give a tag (REPO:TAG, or REPO:TAG@DIGEST to pin) so that `kplug load` can put the artifact back under it"
            );
        };
        let name = bundle::repo_path(&loc)?;
        jobs.push(Job {
            src: Arc::from(src),
            reference: loc.reference().to_string(),
            dst: Arc::new(root.with_name(Some(name))),
            tag: Some(tag),
            src_tags: None,
            dst_tags: None,
        });
    }
    let opts = copy::Options {
        signatures: !a.no_signatures,
        ..Default::default()
    };
    let outcomes = copy::run(&jobs, &opts, a.concurrency).await;
    if let Some(e) = copy::failure(&outcomes) {
        return Err(e);
    }
    root.sort_index()?;
    if archive {
        let (d, o) = (dir.clone(), a.output.clone());
        tokio::task::spawn_blocking(move || bundle::write_oci_archive(&d, &o)).await??;
    }
    super::report_outcomes(g, &outcomes)?;
    println!("{}", a.output.display());
    Ok(())
}
