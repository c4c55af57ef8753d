use std::path::PathBuf;

use clap::Args;

use super::args::LimitArgs;
use super::{Global, Printer};
use crate::ops::pull::{self, PullOptions, PullTo};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Source: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:REF], oci-archive:FILE[:REF]
    /// (REF = TAG or NAME:TAG), docker-archive:FILE.
    pub reference: String,
    /// Write the plugin archive to this file (default: its title, or <repo>-<tag>.tar.gz;
    /// a plain .tar for plugins pushed one file per layer by ORAS).
    #[arg(short, long, value_name = "FILE", conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Unpack the plugin into DIR/kong/plugins/<name>/ (hostile-archive rules apply).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Plugin name for archives that hold bare files (default: the repository's last component).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub async fn run(g: &Global, out: &Printer, a: PullArgs) -> anyhow::Result<()> {
    let o = PullOptions {
        reference: a.reference,
        output: match a.output_dir {
            Some(d) => PullTo::Dir(d),
            None => PullTo::File(a.output),
        },
        name: a.name,
        limits: a.limits.limits(),
        store: g.store_options(),
    };
    let r = pull::pull(&o).await?;
    out.result(&r, |t| match r.files.is_empty() {
        true => t.line(r.path.display().to_string()),
        false => {
            // File names come from the archive: escaped, they cannot drive the terminal.
            for f in &r.files {
                t.line(crate::progress::escape(
                    &r.path.join(&f.path).display().to_string(),
                ));
            }
        }
    })
}
