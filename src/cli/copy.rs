use clap::Args;

use super::Global;
use crate::copy::{copy_manifest, Stats};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME:TAG], oci-archive:FILE[:TAG], docker-archive:FILE.
    pub src: String,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:NAME[:TAG]]. Without a tag, the source's tag is used.
    pub dst: String,
    /// Copy the artifact only, not its cosign signatures and Sigstore bundles.
    #[arg(long)]
    pub no_signatures: bool,
}

pub async fn run(g: &Global, a: CopyArgs) -> anyhow::Result<()> {
    let (sloc, src) = super::open(g, &a.src, false).await?;
    let (dloc, dst) = super::open(g, &a.dst, true).await?;
    // Resolve once; everything after works on the digest.
    let (bytes, desc) = crate::store::fetch_resolved(src.as_ref(), &sloc).await?;
    let tag = dloc.tag().or(sloc.tag()).map(str::to_string);
    let mut stats = Stats::default();
    copy_manifest(
        src.as_ref(),
        dst.as_ref(),
        &desc,
        &bytes,
        tag.as_deref(),
        &mut stats,
    )
    .await?;
    if !a.no_signatures {
        crate::attach::copy_signatures(src.as_ref(), dst.as_ref(), &desc.digest, &mut stats)
            .await?;
    }
    let out = dloc.pinned(&desc.digest);
    if g.json {
        return super::print_json(&serde_json::json!({
            "source": sloc.to_string(), "destination": dloc.at_digest(&desc.digest).to_string(),
            "digest": desc.digest, "stats": stats,
        }));
    }
    crate::progress::note(format!(
        "copied {} manifest(s), {} blob(s) ({} bytes); skipped {} existing blob(s), mounted {}",
        stats.manifests_copied,
        stats.blobs_copied,
        stats.bytes_copied,
        stats.blobs_skipped,
        stats.blobs_mounted
    ));
    println!("{out}");
    Ok(())
}
