//! `install`: resolve once, verify before anything is written, unpack under the
//! hostile-archive rules, swap atomically into `kong/plugins/<name>`, record a receipt,
//! and optionally enable the plugin in kong.conf.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;

use super::node::{Enabled, NodeOptions};
use crate::error::{fail, kind_of, Kind};
use crate::node::state::{self, Outcome, Prefix, Receipt};
use crate::node::unpack::Limits;
use crate::oci::artifact;
use crate::oci::store::{self, ReadStore};
use crate::trust::{Policy, Verified};

/// What `install` asks for.
pub struct InstallRequest {
    /// Artifact reference, or a plugin .tar.gz file.
    pub reference: String,
    /// `None`: install without verifying (`--insecure-skip-verify`).
    pub trust: Option<super::verify::TrustOptions>,
    /// Detached signature (base64, `cosign sign-blob`) for a plain .tar.gz file.
    pub signature: Option<PathBuf>,
    pub node: NodeOptions,
    pub enable: bool,
    /// Plugin name for archives of bare files.
    pub name: Option<String>,
    /// Owner of the installed files (uid, gid).
    pub owner: Option<(u32, u32)>,
    pub limits: Limits,
    pub store: store::Options,
}

/// What `install` did.
#[derive(Debug)]
pub struct InstallReport {
    /// The reference installed, pinned to its digest (or the file's canonical path).
    pub reference: String,
    pub outcome: Outcome,
    /// `<prefix>/kong/plugins/<name>`.
    pub path: PathBuf,
    pub receipt: Receipt,
    /// What verified it; empty for a shortcut re-run or --insecure-skip-verify.
    pub verified: Vec<Verified>,
    pub enabled: Option<Enabled>,
}

/// What fetching produced: the digest is already installed intact under this name, or the
/// artifact is staged, with what verified it.
enum Fetched {
    AlreadyInstalled(String),
    /// What verified it, and the version its manifest declares.
    Ready(Vec<Verified>, Option<String>),
}

pub async fn install(r: &InstallRequest) -> anyhow::Result<InstallReport> {
    let policy = match &r.trust {
        None => {
            eprintln!("WARNING: --insecure-skip-verify: installing {} WITHOUT verifying its signature. Anyone able to alter it can run code in your gateway.", r.reference);
            None
        }
        Some(t) => Some(t.policy().map_err(|e| {
            fail(
                kind_of(&e),
                format!("{e:#}; install verifies signatures before anything is written (or, at your own risk, --insecure-skip-verify)"),
            )
        })?),
    };
    let conf = r.node.conf()?;
    let prefix = r.node.prefix(&conf)?;
    std::fs::create_dir_all(prefix.state_dir())
        .with_context(|| format!("creating {}", prefix.state_dir().display()))?;
    let staging = state::staging_dir(&prefix)?;
    let blob = staging.path().join("blob");

    let plain_file = Path::new(&r.reference);
    let (reference, digest, fetched) = if !r.reference.contains(':') && plain_file.is_file() {
        let v = verify_plain_file(plain_file, r, policy.as_ref(), &blob)?;
        let (d, _) = crate::digest::sha256_file(plain_file)?;
        let canonical = std::fs::canonicalize(plain_file)?.display().to_string();
        (canonical, d, v)
    } else {
        fetch_verified(r, policy.as_ref(), &prefix, &blob).await?
    };
    let (outcome, receipt, verified) = match fetched {
        Fetched::AlreadyInstalled(name) => {
            let receipt = state::read_receipt(&prefix, &name)?.expect("checked by fetch_verified");
            (Outcome::Unchanged, receipt, Vec::new())
        }
        Fetched::Ready(verified, declared) => {
            let signed = verified.first();
            let art = Staged {
                blob: &blob,
                reference: &reference,
                digest: &digest,
                declared,
            };
            let (outcome, receipt) = unpack_and_swap(r, &prefix, &staging, &art, signed).await?;
            (outcome, receipt, verified)
        }
    };
    let enabled = match r.enable {
        true => Some(super::node::enable(&conf, &receipt.name)?),
        false => None,
    };
    Ok(InstallReport {
        reference,
        outcome,
        path: prefix.plugin_dir(&receipt.name),
        receipt,
        verified,
        enabled,
    })
}

/// A verified artifact in staging: the blob, where it came from, and the version its
/// manifest declares (which wins over the archive's own).
struct Staged<'a> {
    blob: &'a Path,
    reference: &'a str,
    digest: &'a str,
    declared: Option<String>,
}

/// Unpack the verified blob, check the name, and swap it in under the prefix lock.
async fn unpack_and_swap(
    r: &InstallRequest,
    prefix: &Prefix,
    staging: &tempfile::TempDir,
    art: &Staged<'_>,
    signed: Option<&Verified>,
) -> anyhow::Result<(Outcome, Receipt)> {
    let (blob, reference, digest) = (art.blob, art.reference, art.digest);
    let hint = r.name.clone().or_else(|| artifact::name_hint(reference));
    let ex = super::pull::extract_blob(blob, staging.path(), r.limits, hint).await?;
    if let Some(n) = &r.name {
        if n != &ex.name {
            crate::bail_kind!(
                Kind::Usage,
                "the archive holds plugin {:?}, not {n:?}",
                ex.name
            );
        }
    }
    let receipt = Receipt {
        name: ex.name.clone(),
        version: art.declared.clone().or_else(|| ex.version.clone()),
        reference: reference.to_string(),
        digest: digest.to_string(),
        signer: signed.map(|v| v.signer.clone()),
        verified_at: signed.map(|_| state::now_rfc3339()),
        installed_at: state::now_rfc3339(),
        files: ex.files.clone(),
    };
    let outcome = {
        let _lock = state::lock(prefix)?;
        state::install_dir(prefix, &ex.dir, receipt, r.owner)?
    };
    let receipt = state::read_receipt(prefix, &ex.name)?.expect("receipt written by install_dir");
    Ok((outcome, receipt))
}

/// A plain plugin .tar.gz: verify its detached signature (cosign sign-blob form), copy it in.
fn verify_plain_file(
    file: &Path,
    r: &InstallRequest,
    policy: Option<&Policy>,
    blob: &Path,
) -> anyhow::Result<Fetched> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verified = match policy {
        None => Vec::new(),
        Some(p) => vec![verify_detached(file, &bytes, r.signature.as_deref(), p)?],
    };
    std::fs::write(blob, &bytes)?;
    Ok(Fetched::Ready(verified, None))
}

fn verify_detached(
    file: &Path,
    bytes: &[u8],
    sig: Option<&Path>,
    p: &Policy,
) -> anyhow::Result<Verified> {
    let sig_path = sig.ok_or_else(|| {
        fail(
            Kind::SigTagNotFound,
            format!(
                "{} is a plain file: give its detached signature with --signature FILE (from `kplug sign-blob --key cosign.key {} --output-signature FILE`, or `cosign sign-blob`)",
                file.display(),
                file.display()
            ),
        )
    })?;
    let sig_b64 =
        String::from_utf8_lossy(&crate::error::read_input("--signature", sig_path)?).into_owned();
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .map_err(|e| {
            fail(
                Kind::NoMatchingSignature,
                format!("{}: not base64: {e}", sig_path.display()),
            )
        })?;
    let key = p
        .keys
        .iter()
        .find(|k| k.verify(bytes, &der))
        .ok_or_else(|| {
            fail(
                Kind::NoMatchingSignature,
                format!(
                    "{} does not verify {} with the given key(s)",
                    sig_path.display(),
                    file.display()
                ),
            )
        })?;
    Ok(Verified {
        payload: Vec::new(),
        signer: key.fingerprint(),
        integrated_time: None,
        kind: "detached",
    })
}

/// Resolve once, then fetch the artifact and verify its signature concurrently, by digest.
/// Returns `(pinned reference, digest, what was fetched)`.
async fn fetch_verified(
    r: &InstallRequest,
    policy: Option<&Policy>,
    prefix: &Prefix,
    blob: &Path,
) -> anyhow::Result<(String, String, Fetched)> {
    let loc = crate::oci::reference::parse(&r.reference)?;
    let st = store::open(&loc, &r.store).await?;
    let over = super::verify::signature_store(&r.store).await?;
    let sigs: &dyn ReadStore = over.as_deref().unwrap_or(st.as_ref());
    // By digest the manifest fetch runs beside verification; by tag one GET resolves it.
    let resolved = match loc.digest() {
        Some(_) => None,
        None => Some(store::fetch_resolved(st.as_ref(), &loc).await?),
    };
    let digest = match (&resolved, loc.digest()) {
        (Some((_, d)), _) => d.digest.clone(),
        (None, Some(d)) => d.to_string(),
        (None, None) => unreachable!("no digest means resolved by tag"),
    };
    let pinned = loc.pinned(&digest);
    let name = r
        .name
        .clone()
        .or_else(|| artifact::name_hint(&loc.repo_name()));
    if let Some(name) = name {
        if already_installed(prefix, &name, &digest, policy)? {
            return Ok((pinned, digest, Fetched::AlreadyInstalled(name)));
        }
    }
    let download = async {
        let (bytes, desc) = match &resolved {
            Some((b, d)) => (b.clone(), d.clone()),
            None => st.fetch_manifest(&digest).await?,
        };
        let p = artifact::resolve_plugin(st.as_ref(), &bytes, &desc, &pinned).await?;
        super::pull::fetch_plugin(st.as_ref(), &p.content, blob, &r.limits).await?;
        anyhow::Ok(super::pull::declared_version(&p))
    };
    let verification = async {
        match policy {
            None => Ok(Vec::new()),
            Some(p) => super::verify::verify_digest(sigs, &digest, p).await,
        }
    };
    let (fetched, verified) = tokio::join!(download, verification);
    // Verification decides first: an unsigned artifact is refused as such even if its
    // download also failed.
    let verified =
        verified.with_context(|| format!("verifying {pinned}; nothing was installed"))?;
    let declared = fetched.with_context(|| format!("fetching {pinned}; nothing was installed"))?;
    Ok((pinned, digest, Fetched::Ready(verified, declared)))
}

/// The shortcut for re-runs: same digest, files intact, and signed by one of the keys
/// trusted now (a receipt from another key, or from --insecure-skip-verify, gets the full
/// verification again).
fn already_installed(
    prefix: &Prefix,
    name: &str,
    digest: &str,
    policy: Option<&Policy>,
) -> anyhow::Result<bool> {
    if !crate::node::plugin::valid_plugin_name(name) {
        return Ok(false);
    }
    let Some(rec) = state::read_receipt(prefix, name)? else {
        return Ok(false);
    };
    if rec.digest != digest {
        return Ok(false);
    }
    if let Some(p) = policy {
        let trusted = rec
            .signer
            .as_ref()
            .is_some_and(|s| p.keys.iter().any(|k| &k.fingerprint() == s));
        if !trusted || !p.annotations.is_empty() {
            return Ok(false);
        }
    }
    let (modified, missing) = state::verify_files(&prefix.plugin_dir(name), &rec.files);
    Ok(modified.is_empty() && missing.is_empty())
}
