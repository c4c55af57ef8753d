use clap::Args;

use super::args::{registry_host, SideArgs, SignatureArgs};
use super::{Global, Printer};
use crate::ops::transfer::{self, CopyOptions};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME:TAG], oci-archive:FILE[:TAG], docker-archive:FILE.
    pub src: String,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:NAME[:TAG]]. Without a tag, the source's tag is used.
    pub dst: String,
    #[command(flatten)]
    pub sel: SignatureArgs,
    #[command(flatten)]
    pub side: SideArgs,
}

pub async fn run(g: &Global, out: &Printer, a: CopyArgs) -> anyhow::Result<()> {
    let mut store = g.store_options();
    let src_hosts: Vec<String> = registry_host(&a.src).into_iter().collect();
    a.side
        .apply(&mut store, &src_hosts, registry_host(&a.dst).as_deref())?;
    let o = CopyOptions {
        src: a.src,
        dst: a.dst,
        carry: a.sel.carry()?,
        store,
    };
    let r = transfer::copy_one(&o).await?;
    if !out.is_json() {
        let s = &r.stats;
        crate::progress::note(format!(
            "copied {} manifest(s), {} blob(s) ({} bytes); skipped {} existing blob(s), mounted {}",
            s.manifests_copied, s.blobs_copied, s.bytes_copied, s.blobs_skipped, s.blobs_mounted
        ));
    }
    out.result(&r, |t| t.line(&r.destination))
}
