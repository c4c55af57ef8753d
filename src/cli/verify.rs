use std::path::PathBuf;

use clap::Args;

use super::Global;
use crate::oci::store::{self, Store};
use crate::trust::{self, Policy};

#[derive(Args, Debug, Clone)]
pub struct TrustArgs {
    /// Trusted cosign public key (repeatable: any of them may have signed).
    #[arg(long = "key", value_name = "PEM")]
    pub keys: Vec<PathBuf>,
    /// Require the signed claim KEY=VALUE in the payload's `optional` (repeatable).
    #[arg(short = 'a', long = "annotations", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Rekor public key to check transparency-log bundles (SET) with.
    #[arg(long, env = "SIGSTORE_REKOR_PUBLIC_KEY", value_name = "PEM")]
    pub rekor_key: Option<PathBuf>,
    /// Fail unless each accepted signature carries a valid Rekor bundle.
    #[arg(long)]
    pub require_tlog: bool,
}

impl TrustArgs {
    pub fn policy(&self) -> anyhow::Result<Policy> {
        if self.keys.is_empty() {
            crate::bail_kind!(
                crate::error::Kind::Usage,
                "give at least one --key cosign.pub to verify with"
            );
        }
        let rekor_keys = match &self.rekor_key {
            Some(p) => super::keys::load_public_keys(std::slice::from_ref(p))?,
            None => Vec::new(),
        };
        if self.require_tlog && rekor_keys.is_empty() {
            crate::bail_kind!(
                crate::error::Kind::Usage,
                "--require-tlog needs --rekor-key (or SIGSTORE_REKOR_PUBLIC_KEY)"
            );
        }
        Ok(Policy {
            keys: super::keys::load_public_keys(&self.keys)?,
            annotations: super::parse_annotations(&self.annotations)?,
            rekor_keys,
            require_tlog: self.require_tlog,
        })
    }
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Artifact: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME:TAG], oci-archive:FILE[:TAG].
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub async fn run(g: &Global, a: VerifyArgs) -> anyhow::Result<()> {
    let policy = a.trust.policy()?;
    let (loc, st) = super::open(g, &a.reference, false).await?;
    // A digest needs no lookup: the signatures bind it, so verification is the signature
    // manifest and its payloads, two round trips. A tag is resolved once.
    let digest = match loc.digest() {
        Some(d) => d.to_string(),
        None => store::resolve(st.as_ref(), &loc).await?.digest,
    };
    let over = crate::oci::attach::signature_store_override(&g.store_options(), false).await?;
    let sigs: &dyn Store = over.as_deref().unwrap_or(st.as_ref());
    let verified = crate::oci::attach::verify(sigs, &digest, &policy).await?;
    report(&loc.pinned(&digest), &verified);
    let payloads: Vec<serde_json::Value> = verified
        .iter()
        .map(|v| serde_json::from_slice(&v.payload).unwrap_or(serde_json::Value::Null))
        .collect();
    println!("{}", serde_json::to_string(&payloads)?);
    Ok(())
}

/// cosign's check list, on stderr.
pub fn report(what: &str, verified: &[trust::Verified]) {
    let mut s = format!(
        "\nVerification for {what} --\nThe following checks were performed on each of these signatures:\n  - The cosign claims were validated\n"
    );
    if verified.iter().any(|v| v.integrated_time.is_some()) {
        s.push_str("  - Existence of the claims in the transparency log was verified offline\n");
    }
    s.push_str("  - The signatures were verified against the specified public key\n");
    for v in verified {
        s.push_str(&format!("  signer {} ({})", v.signer, v.kind));
        if let Some(t) = v.integrated_time {
            s.push_str(&format!(
                ", logged at {}",
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default()
            ));
        }
        s.push('\n');
    }
    crate::progress::note(s);
}
