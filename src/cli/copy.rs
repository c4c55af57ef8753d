use std::sync::Arc;

use clap::Args;

use super::verify::TrustArgs;
use super::Global;
use crate::oci::copy::{self, Job};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME:TAG], oci-archive:FILE[:TAG], docker-archive:FILE.
    pub src: String,
    /// Destination: REGISTRY/REPO[:TAG] or oci:DIR[:NAME[:TAG]]. Without a tag, the source's tag is used.
    pub dst: String,
    #[command(flatten)]
    pub sel: SignatureArgs,
}

/// How signatures travel; shared by copy and mirror.
#[derive(Args, Debug, Clone)]
pub struct SignatureArgs {
    /// Copy the artifact only, not its cosign signatures and Sigstore bundles.
    #[arg(long)]
    pub no_signatures: bool,
    /// Copy only what verifies with --key; anything else is refused and nothing of it copied.
    #[arg(long, requires = "keys")]
    pub signed_only: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl SignatureArgs {
    pub fn options(&self, dry_run: bool) -> anyhow::Result<copy::Options> {
        let policy = if self.signed_only {
            Some(Arc::new(self.trust.policy()?))
        } else {
            if !self.trust.keys.is_empty() {
                crate::bail_kind!(
                    crate::error::Kind::Usage,
                    "--key only applies with --signed-only (copy verifies nothing otherwise)"
                );
            }
            None
        };
        Ok(copy::Options {
            signatures: !self.no_signatures,
            policy,
            dry_run,
        })
    }
}

pub async fn run(g: &Global, a: CopyArgs) -> anyhow::Result<()> {
    let opts = a.sel.options(false)?;
    let (sloc, src) = super::open(g, &a.src, false).await?;
    let (dloc, dst) = super::open(g, &a.dst, true).await?;
    // Resolve once; everything after works on the digest.
    let tag = dloc.tag().or(sloc.tag()).map(str::to_string);
    let job = Job {
        src: Arc::from(src),
        reference: sloc.reference().to_string(),
        dst: Arc::from(dst),
        tag,
        src_tags: None,
        dst_tags: None,
    };
    let mut cx = copy::Cx::default();
    let (digest, res) = copy::copy_artifact(&job, &opts, &mut cx).await;
    res?;
    let digest = digest.unwrap_or_default();
    let stats = cx.stats;
    if g.json {
        return super::print_json(&serde_json::json!({
            "source": sloc.to_string(), "destination": dloc.at_digest(&digest).to_string(),
            "digest": digest, "stats": stats,
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
    println!("{}", dloc.pinned(&digest));
    Ok(())
}
