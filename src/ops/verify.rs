//! `verify`: which signatures of an artifact verify under a trust policy, and the trust
//! policy itself (built once from keys and flags, applied the same way on every path).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{kind_of, Kind};
use crate::oci::store::{self, ReadStore};
use crate::oci::{signatures, tagscheme, Descriptor};
use crate::trust::{self, Policy, Verified};

/// Reasons shown when nothing verifies; the rest are counted, so that a signature tag
/// stuffed with junk layers cannot flood the terminal.
const MAX_REASONS: usize = 5;
/// Lines kept of one reason (a `.sig` manifest's own report lists each layer).
const MAX_REASON_LINES: usize = 6;
/// Signature layers examined per `.sig` manifest: bounded work (fetches, ECDSA checks)
/// whatever an attacker with push access appends. cosign appends new signatures, so the
/// first ones are the oldest; a manifest over the cap is reported.
pub const MAX_SIG_LAYERS: usize = 100;

/// What a signature must satisfy, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// Trusted cosign public keys (any of them may have signed).
    pub keys: Vec<PathBuf>,
    /// Claims that must be in the payload's `optional`.
    pub annotations: BTreeMap<String, String>,
    /// Rekor public key for transparency-log bundles.
    pub rekor_key: Option<PathBuf>,
    /// Refuse signatures without a valid tlog entry.
    pub require_tlog: bool,
    /// Keyless: a Sigstore `trusted_root.json` and the signer identity it must certify.
    pub keyless: Option<KeylessOptions>,
}

/// Keyless trust, as cosign's flags say it.
#[derive(Debug, Clone, Default)]
pub struct KeylessOptions {
    pub trusted_root: PathBuf,
    pub identity: Option<String>,
    pub identity_regexp: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_issuer_regexp: Option<String>,
}

impl KeylessOptions {
    fn load(&self) -> anyhow::Result<trust::Keyless> {
        let root = trust::TrustedRoot::load(&self.trusted_root)?;
        let id = trust::CertificateIdentity::from_flags(
            self.identity.as_deref(),
            self.identity_regexp.as_deref(),
            self.oidc_issuer.as_deref(),
            self.oidc_issuer_regexp.as_deref(),
        )?;
        trust::Keyless::new(std::sync::Arc::new(root), vec![id])
    }
}

impl TrustOptions {
    /// Load the keys and build the policy; errors name the file and the flag.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        if self.keys.is_empty() && self.keyless.is_none() {
            crate::bail_kind!(
                Kind::Usage,
                "give --key cosign.pub to verify with (or, for keyless signatures, --trusted-root trusted_root.json with --certificate-identity and --certificate-oidc-issuer)"
            );
        }
        let rekor_keys = match &self.rekor_key {
            Some(p) => super::keys::load_public_keys(std::slice::from_ref(p))?,
            None => Vec::new(),
        };
        if self.require_tlog && rekor_keys.is_empty() && self.keyless.is_none() {
            crate::bail_kind!(
                Kind::Usage,
                "--require-tlog needs --rekor-key (or SIGSTORE_REKOR_PUBLIC_KEY), or a --trusted-root"
            );
        }
        Ok(Policy {
            keys: super::keys::load_public_keys(&self.keys)?,
            annotations: self.annotations.clone(),
            rekor_keys,
            require_tlog: self.require_tlog,
            keyless: self
                .keyless
                .as_ref()
                .map(|k| k.load().map(std::sync::Arc::new))
                .transpose()?,
        })
    }
}

/// Where the signatures of an artifact in `st` live: `COSIGN_REPOSITORY` when set, else
/// `st` itself (`None`).
pub async fn signature_store(opts: &store::Options) -> anyhow::Result<Option<Box<dyn ReadStore>>> {
    match tagscheme::cosign_repository()? {
        Some(loc) => Ok(Some(store::open(&loc, opts).await?)),
        None => Ok(None),
    }
}

/// Everything that verifies for `digest` under `policy`: classic `.sig` layers and
/// Sigstore bundles attached as referrers. Errors carry cosign's exit codes: 11 nothing
/// attached, 10 an empty signature manifest, 12 signatures present but none verifies.
/// A layer or referrer that cannot be fetched or read is skipped and reported; it never
/// hides a good signature.
pub async fn verify_digest(
    sigs: &dyn ReadStore,
    digest: &str,
    policy: &Policy,
) -> anyhow::Result<Vec<Verified>> {
    let classic = signatures::fetch_sig_manifest(sigs, digest).await?;
    let mut reasons = Vec::new();
    let mut any = false;
    if let Some((_, m)) = &classic {
        match verify_classic(sigs, digest, m, policy, &mut reasons).await {
            Ok(v) => return Ok(v),
            Err(e) if !matches!(kind_of(&e), Kind::NoSignatures | Kind::NoMatchingSignature) => {
                return Err(e)
            }
            Err(_) => any = !m.layers.is_empty(),
        }
    }
    let mut verified = Vec::new();
    if let Some(idx) = signatures::fetch_referrers(sigs, digest).await? {
        any |= !idx.manifests.is_empty();
        for r in &idx.manifests {
            let res = async {
                let blob = signatures::fetch_bundle(sigs, digest, r).await?;
                trust::verify_signature_bundle(digest, &blob, policy)
            }
            .await;
            match res {
                Ok(v) => verified.push(v),
                Err(e) => reasons.push(format!("{}: {e:#}", r.digest)),
            }
        }
    }
    if !verified.is_empty() {
        return Ok(verified);
    }
    if classic.is_none() && !any {
        crate::bail_kind!(
            Kind::SigTagNotFound,
            "no signatures found for {digest} in {}: no {} tag and no Sigstore bundle referrers; sign it with `kplug sign --key cosign.key REF`",
            sigs.describe(),
            tagscheme::sig_tag(digest)
        );
    }
    if !any {
        crate::bail_kind!(
            Kind::NoSignatures,
            "the signature manifest for {digest} in {} holds no signatures",
            sigs.describe()
        );
    }
    crate::bail_kind!(
        Kind::NoMatchingSignature,
        "no signature for {digest} verifies with the given key(s): {}",
        summarize(&reasons)
    )
}

/// The layers of a `.sig` manifest that verify: at most [`MAX_SIG_LAYERS`] examined,
/// each blob fetched once however many layers name it; what went wrong goes to `reasons`.
async fn verify_classic(
    sigs: &dyn ReadStore,
    digest: &str,
    m: &crate::oci::Manifest,
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> anyhow::Result<Vec<Verified>> {
    let mut m = m.clone();
    if m.layers.len() > MAX_SIG_LAYERS {
        reasons.push(format!(
            "the signature manifest has {} layers; the {} after the first {MAX_SIG_LAYERS} were not examined",
            m.layers.len(),
            m.layers.len() - MAX_SIG_LAYERS
        ));
        m.layers.truncate(MAX_SIG_LAYERS);
    }
    let mut unique = m.clone();
    let mut seen = std::collections::HashSet::new();
    unique.layers.retain(|l| seen.insert(l.digest.clone()));
    let (blobs, problems) = signatures::fetch_layers(sigs, &unique).await;
    let lookup = |d: &Descriptor| blobs.get(&d.digest).cloned();
    trust::verify_signature_layers(digest, &m, &lookup, policy).inspect_err(|e| {
        reasons.extend(problems);
        reasons.push(format!("{e:#}"));
    })
}

/// At most [`MAX_REASONS`] reasons of at most [`MAX_REASON_LINES`] lines (escaped), then
/// how many more there were.
fn summarize(reasons: &[String]) -> String {
    let mut s: Vec<String> = reasons
        .iter()
        .take(MAX_REASONS)
        .map(|r| {
            let lines: Vec<&str> = r.lines().collect();
            let mut kept: Vec<String> = lines
                .iter()
                .take(MAX_REASON_LINES)
                .map(|l| crate::progress::escape(l))
                .collect();
            if lines.len() > MAX_REASON_LINES {
                kept.push(format!("  … {} more", lines.len() - MAX_REASON_LINES));
            }
            kept.join("\n")
        })
        .collect();
    if reasons.len() > MAX_REASONS {
        s.push(format!("and {} more", reasons.len() - MAX_REASONS));
    }
    s.join("; ")
}

/// What `verify` asks for.
pub struct VerifyOptions {
    pub reference: String,
    pub trust: TrustOptions,
    pub store: store::Options,
}

/// What verified.
pub struct VerifyReport {
    /// `REPO@DIGEST` of what was verified.
    pub pinned: String,
    pub digest: String,
    pub verified: Vec<Verified>,
    /// Under registries.conf mirrors: the source that served the artifact's manifest
    /// (`mirror HOST/REPO` or `primary HOST/REPO`; none when verified by digest alone).
    pub source: Option<String>,
    /// Likewise for the `.sig` manifest or the referrers fallback index.
    pub signature_source: Option<String>,
}

pub async fn verify(o: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let policy = o.trust.policy()?;
    let loc = crate::oci::reference::parse(&o.reference)?;
    let st = store::open(&loc, &o.store).await?;
    // A digest needs no lookup: the signatures bind it, so verification is the signature
    // manifest and its payloads, two round trips. A tag is resolved once.
    let digest = match loc.digest() {
        Some(d) => d.to_string(),
        None => store::resolve(st.as_ref(), &loc).await?.digest,
    };
    let over = signature_store(&o.store).await?;
    let sigs: &dyn ReadStore = over.as_deref().unwrap_or(st.as_ref());
    let verified = verify_digest(sigs, &digest, &policy).await?;
    let signature_source = [
        tagscheme::sig_tag(&digest),
        tagscheme::referrers_tag(&digest),
    ]
    .iter()
    .find_map(|t| sigs.served_from(t));
    Ok(VerifyReport {
        pinned: loc.pinned(&digest),
        source: st.served_from(&digest),
        signature_source,
        digest,
        verified,
    })
}
