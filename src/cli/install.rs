use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use clap::Args;

use super::node::{env, NodeArgs};
use super::pull::LimitArgs;
use super::verify::TrustArgs;
use super::Global;
use crate::error::{fail, Kind};
use crate::node::state::{self, Outcome, Prefix, Receipt};
use crate::oci::store::{self, Store};
use crate::trust::Verified;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Artifact: REGISTRY/REPO@DIGEST (or :TAG, resolved once), oci:DIR:NAME:TAG,
    /// oci-archive:FILE, docker-archive:FILE (crane pull), or a plugin .tar.gz file.
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Detached signature (base64, as `cosign sign-blob` writes) for a plain .tar.gz file.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// Install without verifying any signature. Dangerous: anyone who can write to the
    /// registry or the file can then run code in your gateway.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Add the plugin to `plugins =` in kong.conf (or print the KONG_PLUGINS line).
    #[arg(long)]
    pub enable: bool,
    /// Plugin name for archives of bare files (default: the repository's last component).
    #[arg(long)]
    pub name: Option<String>,
    /// Owner of the installed files as UID:GID (default: the installing user).
    #[arg(long, value_name = "UID:GID")]
    pub owner: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn parse_owner(s: &str) -> anyhow::Result<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(fail(
            Kind::Usage,
            format!("--owner {s:?}: expected numeric UID:GID"),
        )),
    }
}

#[derive(serde::Serialize)]
struct Installed {
    outcome: &'static str,
    path: PathBuf,
    #[serde(flatten)]
    receipt: Receipt,
}

pub async fn run(g: &Global, a: InstallArgs) -> anyhow::Result<()> {
    let owner = a.owner.as_deref().map(parse_owner).transpose()?;
    let policy = if a.insecure_skip_verify {
        eprintln!("WARNING: --insecure-skip-verify: installing {} WITHOUT verifying its signature. Anyone able to alter it can run code in your gateway.", a.reference);
        None
    } else {
        Some(a.trust.policy().map_err(|e| {
            fail(
                crate::error::kind_of(&e),
                format!("{e:#}; install verifies signatures before anything is written (or, at your own risk, --insecure-skip-verify)"),
            )
        })?)
    };
    let conf = a.node.conf()?;
    let prefix = a.node.prefix(&conf)?;
    std::fs::create_dir_all(prefix.state_dir())
        .with_context(|| format!("creating {}", prefix.state_dir().display()))?;
    let staging = state::staging_dir(&prefix)?;
    let blob = staging.path().join("blob");

    let plain_file = Path::new(&a.reference);
    let local_archive = !a.reference.contains(':') && plain_file.is_file();
    let (reference, digest, verified) = if local_archive {
        let v = verify_plain_file(plain_file, &a, policy.as_ref(), &blob)?;
        let (d, _) = crate::digest::sha256_file(plain_file)?;
        (
            std::fs::canonicalize(plain_file)?.display().to_string(),
            d,
            v,
        )
    } else {
        fetch_verified(g, &a, policy.as_ref(), &prefix, &blob).await?
    };
    let verified = match verified {
        Fetched::Ready(v) => v,
        Fetched::AlreadyInstalled(name) => {
            crate::progress::note(format!(
                "{reference} is already installed (same digest); nothing to do"
            ));
            let receipt = state::read_receipt(&prefix, &name)?.expect("checked by fetch_verified");
            return report(g, &a, &conf, &prefix, Outcome::Unchanged, receipt);
        }
    };

    let hint = a
        .name
        .clone()
        .or_else(|| crate::oci::artifact::name_hint(&reference));
    let ex = super::pull::extract_blob(&blob, staging.path(), a.limits.limits(), hint).await?;
    if let Some(n) = &a.name {
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
        version: ex.version.clone(),
        reference: reference.clone(),
        digest: digest.clone(),
        signer: verified.as_ref().map(|v| v.signer.clone()),
        verified_at: verified.as_ref().map(|_| state::now_rfc3339()),
        installed_at: state::now_rfc3339(),
        files: ex.files.clone(),
    };
    let outcome = {
        let _lock = state::lock(&prefix)?;
        state::install_dir(&prefix, &ex.dir, receipt, owner)?
    };
    let receipt = state::read_receipt(&prefix, &ex.name)?.expect("receipt written by install_dir");
    if let Outcome::Installed { previous } = &outcome {
        crate::progress::note(format!(
            "installed {} {} ({digest}) into {}{}",
            ex.name,
            ex.version.as_deref().unwrap_or(""),
            prefix.plugin_dir(&ex.name).display(),
            previous
                .as_ref()
                .map(|p| format!("; previous {p} kept for `kplug rollback {}`", ex.name))
                .unwrap_or_default()
        ));
    } else {
        crate::progress::note(format!(
            "{} {digest} already installed; nothing to do",
            ex.name
        ));
    }
    report(g, &a, &conf, &prefix, outcome, receipt)
}

/// What fetching produced: the digest is already installed intact under this name, or the
/// artifact is staged, with what verified it (`None` under --insecure-skip-verify).
enum Fetched {
    AlreadyInstalled(String),
    Ready(Option<Verified>),
}

/// Print the result (path, or the receipt with --json) and apply --enable.
fn report(
    g: &Global,
    a: &InstallArgs,
    conf: &crate::node::kongconf::KongConf,
    prefix: &Prefix,
    outcome: Outcome,
    receipt: Receipt,
) -> anyhow::Result<()> {
    let path = prefix.plugin_dir(&receipt.name);
    let name = receipt.name.clone();
    if g.json {
        super::print_json(&Installed {
            outcome: if outcome == Outcome::Unchanged {
                "unchanged"
            } else {
                "installed"
            },
            path,
            receipt,
        })?;
    } else {
        println!("{}", path.display());
    }
    if a.enable {
        enable(conf, &name)?;
    }
    Ok(())
}

/// Add `name` to kong.conf's `plugins`, or say which KONG_PLUGINS line to export.
pub fn enable(conf: &crate::node::kongconf::KongConf, name: &str) -> anyhow::Result<()> {
    if conf.exists() {
        let mut c = conf.clone();
        if c.enable(name) {
            c.save()?;
            crate::progress::note(format!(
                "enabled {name} in {}; run `kong prepare && kong reload` (or restart Kong) to load it",
                c.path().map(|p| p.display().to_string()).unwrap_or_default()
            ));
        } else {
            crate::progress::note(format!("{name} is already enabled"));
        }
        if let Some(v) = env("KONG_PLUGINS") {
            crate::progress::note(format!(
                "note: KONG_PLUGINS={v} is set and overrides kong.conf"
            ));
        }
    } else {
        eprintln!(
            "no kong.conf at {}; export this in Kong's environment, then restart Kong:\n{}",
            conf.path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            crate::node::kongconf::kong_plugins_env_line(env("KONG_PLUGINS").as_deref(), name)
        );
    }
    Ok(())
}

/// A plain plugin .tar.gz: verify its detached signature (cosign sign-blob form), copy it in.
fn verify_plain_file(
    file: &Path,
    a: &InstallArgs,
    policy: Option<&crate::trust::Policy>,
    blob: &Path,
) -> anyhow::Result<Fetched> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verified = match policy {
        None => None,
        Some(p) => {
            let sig_path = a.signature.as_ref().ok_or_else(|| {
                fail(
                    Kind::SigTagNotFound,
                    format!(
                        "{} is a plain file: give its detached signature with --signature FILE (from `cosign sign-blob --key cosign.key {}`)",
                        file.display(),
                        file.display()
                    ),
                )
            })?;
            let sig_b64 = std::fs::read_to_string(sig_path)
                .with_context(|| format!("reading {}", sig_path.display()))?;
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
                .find(|k| k.verify(&bytes, &der))
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
            Some(Verified {
                payload: Vec::new(),
                signer: key.fingerprint(),
                integrated_time: None,
                kind: "detached",
            })
        }
    };
    std::fs::write(blob, &bytes)?;
    Ok(Fetched::Ready(verified))
}

/// Resolve once, then fetch the artifact and verify its signature concurrently, by digest.
/// Returns `verified = None` when this digest is already installed intact.
async fn fetch_verified(
    g: &Global,
    a: &InstallArgs,
    policy: Option<&crate::trust::Policy>,
    prefix: &Prefix,
    blob: &Path,
) -> anyhow::Result<(String, String, Fetched)> {
    let (loc, st) = super::open(g, &a.reference, false).await?;
    let over = crate::oci::attach::signature_store_override(&g.store_options(), false).await?;
    let sigs: &dyn Store = over.as_deref().unwrap_or(st.as_ref());
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
    if let Some(name) = a
        .name
        .as_deref()
        .or(crate::oci::artifact::name_hint(&loc.repo_name()).as_deref())
    {
        if already_installed(prefix, name, &digest, policy)? {
            return Ok((pinned, digest, Fetched::AlreadyInstalled(name.to_string())));
        }
    }
    let artifact = async {
        let (bytes, desc) = match &resolved {
            Some((b, d)) => (b.clone(), d.clone()),
            None => st.fetch_manifest(&digest).await?,
        };
        let r = crate::oci::artifact::resolve_plugin(st.as_ref(), &bytes, &desc, &pinned).await?;
        store::fetch_blob_to_file(st.as_ref(), &r.layer, blob).await
    };
    let verification = async {
        match policy {
            None => Ok(None),
            Some(p) => crate::oci::attach::verify(sigs, &digest, p).await.map(Some),
        }
    };
    let (fetched, verified) = tokio::join!(artifact, verification);
    // Verification decides first: an unsigned artifact is refused as such even if its
    // download also failed.
    let verified =
        verified.with_context(|| format!("verifying {pinned}; nothing was installed"))?;
    fetched.with_context(|| format!("fetching {pinned}; nothing was installed"))?;
    if let Some(v) = &verified {
        super::verify::report(&pinned, v);
    }
    Ok((
        pinned,
        digest,
        Fetched::Ready(verified.and_then(|v| v.into_iter().next())),
    ))
}

/// The shortcut for re-runs: same digest, files intact, and signed by one of the keys
/// trusted now (a receipt from another key, or from --insecure-skip-verify, gets the full
/// verification again).
fn already_installed(
    prefix: &Prefix,
    name: &str,
    digest: &str,
    policy: Option<&crate::trust::Policy>,
) -> anyhow::Result<bool> {
    if !crate::node::plugin::valid_plugin_name(name) {
        return Ok(false);
    }
    Ok(match state::read_receipt(prefix, name)? {
        Some(r) if r.digest == digest => {
            if let Some(p) = policy {
                let trusted = r
                    .signer
                    .as_ref()
                    .is_some_and(|s| p.keys.iter().any(|k| &k.fingerprint() == s));
                if !trusted || !p.annotations.is_empty() {
                    return Ok(false);
                }
            }
            let (modified, missing) = state::verify_files(&prefix.plugin_dir(name), &r.files);
            modified.is_empty() && missing.is_empty()
        }
        _ => false,
    })
}
