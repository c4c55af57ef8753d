use clap::Args;

use super::args::{registry_host, SideArgs, SignatureArgs};
use super::{Global, Printer};
use crate::ops::transfer::{self, CopyOptions};

#[derive(Args, Debug)]
#[command(after_help = "\
Local stores use skopeo's grammar: oci:DIR[:REF][@sha256:…], where REF is the entry's
org.opencontainers.image.ref.name, either TAG or NAME:TAG (NAME may hold `/`).
  oci:./store:kong/hello:0.2.0   the entry kong/hello:0.2.0
  oci:./store:0.2.0              the entry 0.2.0 (or, reading, the one NAME:0.2.0)
  oci:./store:kong/hello         NAME only: the tag comes from the source
  oci:./store                    reading: its only artifact (else the one tagged latest);
                                 writing: the source's REPOSITORY:TAG, as `save` stores it
A single word is a tag: `copy REG/kong/hello:0.2.0 oci:./store:hello` stores the tag
`hello`. stdout is the reference written, pinned to its digest.")]
pub struct CopyArgs {
    /// Source: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE.
    pub src: String,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:REF]. What it leaves out comes from
    /// the source (see below).
    pub dst: String,
    #[command(flatten)]
    pub sel: SignatureArgs,
    #[command(flatten)]
    pub side: SideArgs,
}

pub async fn run(g: &Global, out: &Printer, a: CopyArgs) -> anyhow::Result<()> {
    let mut store = g.store_options();
    let src_hosts: Vec<String> = registry_host(&a.src).into_iter().collect();
    let dst_hosts: Vec<String> = registry_host(&a.dst).into_iter().collect();
    a.side.apply(&mut store, &src_hosts, &dst_hosts)?;
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
