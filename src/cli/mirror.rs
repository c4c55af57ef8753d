use std::path::PathBuf;

use clap::Args;

use super::args::{SideArgs, SignatureArgs};
use super::{Global, Printer};
use crate::oci::copy;
use crate::ops::mirror::{self, MirrorOptions, Select, Spec};

#[derive(Args, Debug)]
#[command(after_help = "\
--trusted-root FILE with an oci:DIR destination is carried there (checked first, written as
DIR/trusted_root.json), so the air-gapped side can verify keyless signatures with
`--trusted-root DIR`; with --signed-only it also verifies what is copied. See docs/air-gap.md.")]
pub struct MirrorArgs {
    /// Sources besides those of --manifest/--list: REGISTRY/REPO (tags chosen by the flags
    /// below) or REGISTRY/REPO:TAG.
    pub sources: Vec<String>,
    /// A mirror manifest (YAML; format in docs/air-gap.md).
    #[arg(long, value_name = "mirror.yaml", conflicts_with = "list")]
    pub manifest: Option<PathBuf>,
    /// A list file: one `SOURCE [DESTINATION-REPOSITORY]` per line.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Destination: REGISTRY[/PREFIX] or oci:DIR; each source lands at PREFIX/<its repository>.
    #[arg(long, value_name = "REGISTRY[/PREFIX]|oci:DIR")]
    pub to: Option<String>,
    /// Every tag of repositories given without tags.
    #[arg(long)]
    pub all_tags: bool,
    /// Tags matching this regex.
    #[arg(long, value_name = "REGEX")]
    pub tag_regex: Option<String>,
    /// Tags that are versions in this range, e.g. ">=1.2 <2".
    #[arg(long, value_name = "RANGE")]
    pub semver: Option<String>,
    /// Artifacts copied at once (default 4, or the manifest's `concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// List what would be copied (every check runs; nothing is written).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub sel: SignatureArgs,
    #[command(flatten)]
    pub side: SideArgs,
}

pub async fn run(g: &Global, out: &Printer, a: MirrorArgs) -> anyhow::Result<()> {
    let carry = a.sel.carry_with(true)?;
    let spec = match (&a.manifest, &a.list) {
        (Some(m), _) => Spec::from_yaml(m)?,
        (None, Some(l)) => Spec::from_list(l)?,
        (None, None) => Spec::default(),
    };
    let mut store = g.store_options();
    let (src_hosts, dst_hosts) = mirror::hosts(&spec, &a.sources, a.to.as_deref());
    a.side.apply(&mut store, &src_hosts, &dst_hosts)?;
    let o = MirrorOptions {
        sources: a.sources,
        to: a.to,
        select: Select {
            tags: Vec::new(),
            all_tags: a.all_tags,
            tag_regex: a.tag_regex,
            semver: a.semver,
        },
        concurrency: a.concurrency,
        dry_run: a.dry_run,
        carry,
        trusted_root: a.sel.trust.trusted_root.clone(),
        store,
    };
    let outcomes = mirror::mirror(spec, &o).await?;
    super::report_outcomes(out, &outcomes)?;
    match copy::failure(&outcomes) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
