//! `install`: resolve once, verify before anything is written, unpack under the
//! hostile-archive rules, swap atomically into `kong/plugins/<name>`, record a receipt,
//! and optionally enable the plugin in kong.conf.
//!
//! Every trust flag applies on every path or the run refuses it: a detached signature
//! cannot satisfy `-a`, `--require-tlog` or `--strict-identity`, and the "already
//! installed" shortcut applies only when the receipt records that the policy asked for
//! now was satisfied.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;

use super::node::{Enabled, NodeOptions};
use crate::error::{fail, kind_of, Kind};
use crate::node::external::{self, PluginInfo, ServerLayout, ServerReceipt};
use crate::node::kinds::{self, Extracted};
use crate::node::state::{self, InstallOptions, Outcome, Prefix, Receipt, Staging, Trusted};
use crate::node::unpack::{Limits, NameHints};
use crate::oci::artifact;
use crate::oci::reference::Location;
use crate::oci::store::{self, ReadStore};
use crate::trust::{Policy, Verified};

/// What `install` asks for.
#[derive(Default)]
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
    /// Take over a plugin directory kplug did not install (its files are kept for
    /// uninstall to put back).
    pub adopt: bool,
    /// Install under the name of a plugin Kong ships.
    pub allow_bundled_name: bool,
    /// Install an older semver than the one installed.
    pub allow_downgrade: bool,
    /// Refuse a signature whose `docker-reference` names another repository (default:
    /// warn), as containers/image's `signedIdentity` does.
    pub strict_identity: bool,
    /// Where a plugin-server artifact goes.
    pub server: ServerOptions,
}

/// Where plugin servers are installed (`--bin-dir`, `--lib-dir`; defaults are Kong's
/// plugin-server path) and how long their query command may run.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub bin_dir: Option<PathBuf>,
    pub lib_dir: Option<PathBuf>,
    pub query_timeout: Option<std::time::Duration>,
}

impl ServerOptions {
    /// The `--bin-dir`/`--lib-dir` given are not where `s` is installed.
    fn moves(&self, s: &ServerReceipt) -> bool {
        let bin = self
            .bin_dir
            .as_ref()
            .is_some_and(|d| parent(&s.bin) != Some(absolute(d)));
        let lib = match (&self.lib_dir, &s.tree) {
            (Some(d), Some(t)) => parent(t) != Some(absolute(d)),
            _ => false,
        };
        bin || lib
    }

    /// The layout on this node: the directories given, else those of the installed
    /// version (an update without flags stays where kong.conf starts it), else the
    /// defaults; sockets go under Kong's `prefix` (kong.conf or KONG_PREFIX).
    fn layout(
        &self,
        conf: &crate::node::kongconf::KongConf,
        installed: Option<&ServerReceipt>,
    ) -> ServerLayout {
        let d = ServerLayout::default();
        let bin_now = installed.and_then(|s| parent(&s.bin));
        let lib_now = installed.and_then(|s| s.tree.as_deref().and_then(parent));
        ServerLayout {
            // Kong runs the commands from its own directory: absolute paths only.
            bin_dir: self
                .bin_dir
                .as_deref()
                .map(absolute)
                .or(bin_now)
                .unwrap_or(d.bin_dir),
            lib_dir: self
                .lib_dir
                .as_deref()
                .map(absolute)
                .or(lib_now)
                .unwrap_or(d.lib_dir),
            kong_prefix: conf
                .effective("prefix", &super::node::env)
                .map(PathBuf::from)
                .unwrap_or(d.kong_prefix),
        }
    }
}

fn parent(p: &std::path::Path) -> Option<PathBuf> {
    p.parent().map(std::path::Path::to_path_buf)
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// An installed plugin server: where it is, how Kong runs it, what its query printed.
#[derive(Debug)]
pub struct ServerInstalled {
    pub receipt: ServerReceipt,
    pub plugins: Vec<PluginInfo>,
}

/// Another plugin of the same rock, installed beside the first.
#[derive(Debug)]
pub struct AlsoInstalled {
    pub outcome: Outcome,
    pub path: PathBuf,
    pub receipt: Receipt,
    pub enabled: Option<Enabled>,
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
    /// Which mirror (or the primary) served the plugin layer, when mirrors are configured.
    pub source: Option<String>,
    /// Things the operator should know (a signature made for another repository).
    pub warnings: Vec<String>,
    /// The artifact was a plugin server.
    pub server: Option<ServerInstalled>,
    /// The other plugins of a rock that holds several.
    pub also: Vec<AlsoInstalled>,
    /// What a rock carries besides its plugins (modules Kong may need).
    pub notes: Vec<String>,
}

/// What fetching produced: the digest is already installed intact under this name, or the
/// artifact is staged, with what verified it.
enum Fetched {
    AlreadyInstalled(String),
    Ready(Checked),
}

/// What verification established, for the receipt.
#[derive(Default)]
struct Checked {
    verified: Vec<Verified>,
    trusted: Option<Trusted>,
    warnings: Vec<String>,
    /// The mirror (or primary) that served the plugin layer, when mirrors are configured.
    source: Option<String>,
    /// The version the artifact's manifest declares (`org.opencontainers.image.version`).
    declared: Option<String>,
}

pub async fn install(r: &InstallRequest) -> anyhow::Result<InstallReport> {
    let policy = match &r.trust {
        None => {
            eprintln!("WARNING: --insecure-skip-verify: installing {} WITHOUT verifying its signature. Anyone able to alter it can run code in your gateway.", crate::progress::escape(&r.reference));
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
    let staging = Arc::new(state::staging_dir(&prefix)?);
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
    let (swapped, checked) = match fetched {
        Fetched::AlreadyInstalled(name) => {
            (Swapped::unchanged(&prefix, &name)?, Checked::default())
        }
        Fetched::Ready(checked) => {
            let ctx = SwapContext {
                r,
                prefix: &prefix,
                conf: &conf,
                reference: &reference,
                digest: &digest,
                checked: &checked,
            };
            (unpack_and_swap(&ctx, &staging).await?, checked)
        }
    };
    finish(r, &conf, &prefix, reference, swapped, checked)
}

/// Enable what was installed (with `--enable`) and say what happened.
fn finish(
    r: &InstallRequest,
    conf: &crate::node::kongconf::KongConf,
    prefix: &Prefix,
    reference: String,
    swapped: Swapped,
    checked: Checked,
) -> anyhow::Result<InstallReport> {
    let (outcome, receipt) = swapped.first;
    let names: Vec<&str> = std::iter::once(&receipt)
        .chain(swapped.more.iter().map(|(_, r)| r))
        .map(|r| r.name.as_str())
        .collect();
    // A rock's plugins in turn, each seeing what the one before enabled.
    let mut enabled = match (&swapped.server, r.enable) {
        (_, false) => vec![],
        (Some(s), true) => vec![super::node::enable_server(conf, names[0], &s.receipt)?],
        (None, true) => super::node::enable_each(conf, &names)?,
    }
    .into_iter();
    let first_enabled = enabled.next();
    let also = swapped
        .more
        .into_iter()
        .map(|(outcome, receipt)| AlsoInstalled {
            outcome,
            path: prefix.plugin_dir(&receipt.name),
            enabled: enabled.next(),
            receipt,
        })
        .collect();
    let enabled = first_enabled;
    Ok(InstallReport {
        reference,
        outcome,
        path: match &swapped.server {
            Some(s) => s.receipt.bin.clone(),
            None => prefix.plugin_dir(&receipt.name),
        },
        receipt,
        verified: checked.verified,
        enabled,
        source: checked.source,
        warnings: checked.warnings,
        server: swapped.server,
        also,
        notes: swapped.notes,
    })
}

/// What one install run needs to turn a verified blob into installed plugins.
struct SwapContext<'a> {
    r: &'a InstallRequest,
    prefix: &'a Prefix,
    conf: &'a crate::node::kongconf::KongConf,
    reference: &'a str,
    digest: &'a str,
    checked: &'a Checked,
}

/// What the swap installed: the first (or only) plugin, the others of a rock, or a server.
struct Swapped {
    first: (Outcome, Receipt),
    more: Vec<(Outcome, Receipt)>,
    server: Option<ServerInstalled>,
    notes: Vec<String>,
}

impl Swapped {
    /// The same digest is installed intact: nothing to do.
    fn unchanged(prefix: &Prefix, name: &str) -> anyhow::Result<Swapped> {
        let receipt = state::read_receipt(prefix, name)?.expect("checked by fetch_verified");
        let server = external::read_server(prefix, name)?.map(|receipt| ServerInstalled {
            receipt,
            plugins: Vec::new(),
        });
        Ok(Swapped {
            first: (Outcome::Unchanged, receipt),
            more: Vec::new(),
            server,
            notes: Vec::new(),
        })
    }
}

/// Unpack the verified blob (a Lua tree, a rock with one or several plugins, or a plugin
/// server) and swap each plugin in under the prefix lock.
async fn unpack_and_swap(c: &SwapContext<'_>, staging: &Arc<Staging>) -> anyhow::Result<Swapped> {
    let r = c.r;
    let hints = NameHints {
        flag: r.name.clone(),
        repo: artifact::name_hint(c.reference),
    };
    let lua_dirs = c.conf.package_path_dirs(&super::node::env);
    let ex = extract(staging, r.limits, hints, lua_dirs).await?;
    let signed = c.checked.verified.first();
    let receipt_for = |name: &str, version: Option<String>, files| Receipt {
        name: name.to_string(),
        version: c.checked.declared.clone().or(version),
        reference: c.reference.to_string(),
        digest: c.digest.to_string(),
        signer: signed.map(|v| v.signer.clone()),
        verified_at: signed.map(|_| state::now_rfc3339()),
        installed_at: state::now_rfc3339(),
        files,
        trusted: c.checked.trusted.clone(),
        adopted: false,
        siblings: ex
            .plugins
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| n != name)
            .collect(),
    };
    let notes = ex.rock.as_ref().map(|k| k.notes()).unwrap_or_default();
    if let Some(staged) = ex.server {
        let m = &staged.manifest;
        let receipt = receipt_for(&m.name, m.version.clone(), Vec::new());
        return swap_server(c, &staged, receipt, notes);
    }
    let o = InstallOptions {
        owner: r.owner,
        adopt: r.adopt,
        allow_bundled_name: r.allow_bundled_name,
        allow_downgrade: r.allow_downgrade,
    };
    let mut done = Vec::new();
    let _lock = r.node.lock(c.prefix)?;
    let receipts: Vec<Receipt> = ex
        .plugins
        .iter()
        .map(|p| receipt_for(&p.name, p.version.clone(), p.files.clone()))
        .collect();
    for receipt in &receipts {
        state::preflight(c.prefix, receipt, &o)?;
    }
    for (p, receipt) in ex.plugins.into_iter().zip(receipts) {
        let outcome = state::install_with(c.prefix, &p.dir, receipt, &o)?;
        let receipt = state::read_receipt(c.prefix, &p.name)?.expect("receipt written by install");
        done.push((outcome, receipt));
    }
    let first = done.remove(0);
    Ok(Swapped {
        first,
        more: done,
        server: None,
        notes,
    })
}

/// Install a plugin server under the prefix lock, where it is installed unless
/// `--bin-dir`/`--lib-dir` say otherwise.
fn swap_server(
    c: &SwapContext<'_>,
    staged: &external::StagedServer,
    receipt: Receipt,
    notes: Vec<String>,
) -> anyhow::Result<Swapped> {
    let (r, name) = (c.r, &staged.manifest.name);
    let installed = external::read_server(c.prefix, name)?;
    let layout = r.server.layout(c.conf, installed.as_ref());
    let timeout = r
        .server
        .query_timeout
        .unwrap_or(external::DEFAULT_QUERY_TIMEOUT);
    let (outcome, plugins) = {
        let _lock = r.node.lock(c.prefix)?;
        external::install(c.prefix, staged, &layout, receipt, timeout)?
    };
    let server = external::read_server(c.prefix, name)?.expect("written by install");
    let receipt = state::read_receipt(c.prefix, name)?.expect("written by install");
    Ok(Swapped {
        first: (outcome, receipt),
        server: Some(ServerInstalled {
            receipt: server,
            plugins,
        }),
        more: Vec::new(),
        notes,
    })
}

/// Unpack `staging/blob` into `staging/x` off the runtime. The blocking task holds the
/// staging dir, so an install cancelled by Ctrl-C removes it only after the unpack
/// stopped writing into it.
async fn extract(
    staging: &Arc<Staging>,
    limits: Limits,
    hints: NameHints,
    lua_dirs: Vec<PathBuf>,
) -> anyhow::Result<Extracted> {
    let keep = Arc::clone(staging);
    tokio::task::spawn_blocking(move || {
        let stage = keep.path().join("x");
        std::fs::create_dir(&stage)?;
        kinds::extract_file(
            &keep.path().join("blob"),
            &stage,
            &limits,
            &hints,
            &lua_dirs,
        )
    })
    .await?
}

/// The most bytes a compressed plugin archive within `l` can take: its content, a header
/// and padding per entry (tar 512-byte blocks; zip local and central records with the
/// name twice), gzip's few bytes per block, and the trailer. A layer declaring more is
/// refused before its download starts, and the download stops at its declared size.
pub fn download_cap(l: &Limits) -> u64 {
    l.max_total_bytes
        .saturating_add(l.max_files.saturating_mul(1536))
        .saturating_add(l.max_total_bytes / 1000)
        .saturating_add(1 << 20)
}

/// A plain plugin .tar.gz: verify its detached signature (cosign sign-blob form), copy it in.
fn verify_plain_file(
    file: &Path,
    r: &InstallRequest,
    policy: Option<&Policy>,
    blob: &Path,
) -> anyhow::Result<Fetched> {
    if let Some(p) = policy {
        check_detached_policy(file, p, r.strict_identity)?;
    }
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let cap = download_cap(&r.limits);
    if size > cap {
        crate::bail_kind!(
            Kind::Unsafe,
            "{} is {size} bytes, more than the {cap} bytes a plugin archive within the install limits (--max-bytes {}) can take",
            file.display(),
            r.limits.max_total_bytes
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verified = match policy {
        None => Vec::new(),
        Some(p) => vec![verify_detached(file, &bytes, r.signature.as_deref(), p)?],
    };
    std::fs::write(blob, &bytes)?;
    Ok(Fetched::Ready(Checked {
        verified,
        ..Default::default()
    }))
}

/// A detached signature (`cosign sign-blob`) signs the file's bytes and nothing else: it
/// carries no claims, no transparency-log entry and no repository, so flags that ask for
/// those are refused rather than ignored.
fn check_detached_policy(file: &Path, p: &Policy, strict_identity: bool) -> anyhow::Result<()> {
    let why = if !p.annotations.is_empty() {
        "-a/--annotations: a detached signature (cosign sign-blob) signs the file alone and carries no claims to check"
    } else if p.require_tlog {
        "--require-tlog: a detached signature given with --signature has no transparency-log entry to check"
    } else if strict_identity {
        "--strict-identity: a detached signature names no repository"
    } else {
        return Ok(());
    };
    crate::bail_kind!(
        Kind::Usage,
        "{why}; nothing was installed. Push {} and sign it with `kplug sign` (whose signatures carry claims and \
         Rekor bundles), or leave the flag out",
        file.display()
    );
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
        if already_installed(prefix, &name, &digest, policy, r)? {
            return Ok((pinned, digest, Fetched::AlreadyInstalled(name)));
        }
    }
    let cap = download_cap(&r.limits);
    let download = async {
        let (bytes, desc) = match &resolved {
            Some((b, d)) => (b.clone(), d.clone()),
            None => st.fetch_manifest(&digest).await?,
        };
        let p = artifact::resolve_plugin(st.as_ref(), &bytes, &desc, &pinned).await?;
        let layers = p.content.layers();
        let size: u64 = layers.iter().map(|l| l.size).sum();
        if size > cap {
            crate::bail_kind!(
                Kind::Unsafe,
                "its plugin layer(s) ({}) declare {size} bytes, more than the {cap} bytes a plugin within the install \
                 limits (--max-bytes {}, --max-files {}) can take; nothing of it was downloaded. Raise --max-bytes if \
                 the plugin is legitimately that large",
                layers[0].digest,
                r.limits.max_total_bytes,
                r.limits.max_files
            );
        }
        // `copy_hashed` stops reading as soon as more than the declared size arrives.
        super::pull::fetch_plugin(st.as_ref(), &p.content, blob, &r.limits).await?;
        anyhow::Ok((
            st.served_from(&layers[0].digest),
            super::pull::declared_version(&p),
        ))
    };
    let verification = async {
        match policy {
            None => Ok(Vec::new()),
            Some(p) => super::verify::verify_digest(sigs, &digest, p).await,
        }
    };
    let ((source, declared), verified) = race(download, verification, &pinned).await?;
    let checked = check_identity(&loc, verified, policy, r.strict_identity)?;
    let checked = Checked {
        source,
        declared,
        ..checked
    };
    Ok((pinned, digest, Fetched::Ready(checked)))
}

/// Run the download beside the verification; the verification decides first (an
/// unsigned artifact is refused as such even if its download also failed), and its
/// failure drops the download at once, which removes the partial file.
/// Returns what the download returned (the source that served it) and what verified.
async fn race<T>(
    download: impl std::future::Future<Output = anyhow::Result<T>>,
    verification: impl std::future::Future<Output = anyhow::Result<Vec<Verified>>>,
    pinned: &str,
) -> anyhow::Result<(T, Vec<Verified>)> {
    let checked = |v: anyhow::Result<Vec<Verified>>| {
        v.with_context(|| format!("verifying {pinned}; nothing was installed"))
    };
    tokio::pin!(download, verification);
    let (fetched, verified) = tokio::select! {
        biased;
        v = &mut verification => {
            let v = checked(v)?;
            (download.await, v)
        }
        f = &mut download => (f, checked(verification.await)?),
    };
    let fetched = fetched.with_context(|| format!("fetching {pinned}; nothing was installed"))?;
    Ok((fetched, verified))
}

/// The shortcut for re-runs: same digest, files intact, signed by one of the keys trusted
/// now, and the receipt records that everything the policy asks for now was satisfied
/// (claims, a transparency-log entry, the signed identity). Anything less gets the full
/// verification again.
fn already_installed(
    prefix: &Prefix,
    name: &str,
    digest: &str,
    policy: Option<&Policy>,
    r: &InstallRequest,
) -> anyhow::Result<bool> {
    let strict_identity = r.strict_identity;
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
        if !receipt_satisfies(&rec, p, strict_identity) {
            return Ok(false);
        }
    }
    let (modified, missing) = match external::read_server(prefix, name)? {
        // Asked for another --bin-dir/--lib-dir than it is in: install it there.
        Some(server) if r.server.moves(&server) => return Ok(false),
        Some(server) => external::verify(&server),
        None => state::verify_files(&prefix.plugin_dir(name), &rec.files),
    };
    if !(modified.is_empty() && missing.is_empty()) {
        return Ok(false);
    }
    // A rock's other plugins: each still installed from this digest, intact.
    for s in &rec.siblings {
        if !crate::node::plugin::valid_plugin_name(s) {
            return Ok(false);
        }
        let intact = state::read_receipt(prefix, s)?.is_some_and(|sr| {
            sr.digest == digest
                && state::verify_files(&prefix.plugin_dir(s), &sr.files) == (vec![], vec![])
        });
        if !intact {
            return Ok(false);
        }
    }
    Ok(true)
}

fn receipt_satisfies(rec: &Receipt, p: &Policy, strict_identity: bool) -> bool {
    let trusted_signer = rec
        .signer
        .as_ref()
        .is_some_and(|s| p.keys.iter().any(|k| &k.fingerprint() == s));
    let t = rec.trusted.clone().unwrap_or_default();
    let claims = p
        .annotations
        .iter()
        .all(|(k, v)| t.claims.get(k) == Some(v));
    trusted_signer && claims && (t.tlog || !p.require_tlog) && (t.identity || !strict_identity)
}

/// The repositories a signature may name for an artifact installed from `loc`: `loc`'s
/// own, and those a registries.conf mirror stands in for (as containers/image's
/// `remapIdentity` would), so that installing from a mirror by its own name passes
/// `--strict-identity`.
fn accepted_repositories(loc: &Location) -> Vec<String> {
    let Location::Registry(r) = loc else {
        return Vec::new();
    };
    let own = normalize_repository(&r.repo_name());
    let mut out = vec![own.clone()];
    for (source, mirror) in mirror_mappings() {
        let rest = match own.strip_prefix(&normalize_repository(&mirror)) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => continue,
        };
        let name = normalize_repository(&format!("{source}{rest}"));
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// `(source prefix or location, mirror location)` for every `[[registry.mirror]]` in
/// registries.conf (wildcard prefixes aside). A configuration that cannot be read maps
/// nothing: a mismatch then stays a mismatch.
fn mirror_mappings() -> Vec<(String, String)> {
    use crate::oci::registries_conf::{ConfSources, RegistriesConf};
    let Ok(conf) = RegistriesConf::load(&ConfSources::from_env(None)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in conf
        .registries()
        .iter()
        .filter(|e| !e.prefix.starts_with("*."))
    {
        for m in &e.mirrors {
            out.push((e.prefix.clone(), m.location.clone()));
            if !e.location.is_empty() && e.location != e.prefix {
                out.push((e.location.clone(), m.location.clone()));
            }
        }
    }
    out
}

/// `registry/repository` the way cosign writes `docker-reference`, without tag or digest;
/// Docker Hub's aliases folded to `docker.io` and its official images under `library/`.
fn normalize_repository(s: &str) -> String {
    let s = s.split('@').next().unwrap_or(s);
    let s = match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => &s[..i],
        _ => s,
    };
    let (host, repo) = s.split_once('/').unwrap_or(("docker.io", s));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    match (host, repo.contains('/')) {
        ("docker.io", false) => format!("docker.io/library/{repo}"),
        _ => format!("{host}/{repo}"),
    }
}

/// The `critical.identity.docker-reference` of a cosign simple-signing payload.
fn signed_repository(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let r = v.pointer("/critical/identity/docker-reference")?.as_str()?;
    Some(normalize_repository(r))
}

/// Compare the repository the signatures name with where the artifact came from: a
/// mismatch is a warning, or under `strict` a refusal (cosign 12). Also gathers the
/// policy facts the receipt records.
fn check_identity(
    loc: &Location,
    verified: Vec<Verified>,
    policy: Option<&Policy>,
    strict: bool,
) -> anyhow::Result<Checked> {
    let Some(p) = policy else {
        return Ok(Checked::default());
    };
    let accepted = accepted_repositories(loc);
    let named: Vec<String> = verified
        .iter()
        .filter_map(|v| signed_repository(&v.payload))
        .collect();
    let matches = named.iter().any(|n| accepted.contains(n));
    let mut warnings = Vec::new();
    if !matches {
        let what = match (named.first(), accepted.first()) {
            (Some(n), Some(a)) => format!(
                "the signature was made for {} (its docker-reference), not for {a}, where it was installed from",
                crate::progress::escape(n)
            ),
            (None, _) => "the signature names no repository (no docker-reference)".to_string(),
            (Some(_), None) => format!(
                "{} is not a registry repository, so the repository the signature names cannot be compared",
                loc.repo_name()
            ),
        };
        if strict {
            crate::bail_kind!(
                Kind::NoMatchingSignature,
                "--strict-identity: {what}; nothing was installed"
            );
        }
        if !named.is_empty() && !accepted.is_empty() {
            warnings.push(format!(
                "{what}; anyone who can push to one repository can replay a signature from another this way. \
                 Pass --strict-identity to refuse such signatures"
            ));
        }
    }
    let first = verified.first();
    let mut claims = p.annotations.clone();
    if let Some(v) = first {
        claims.extend(payload_claims(&v.payload));
    }
    let trusted = first.map(|v| Trusted {
        claims,
        tlog: v.integrated_time.is_some(),
        identity: matches,
    });
    Ok(Checked {
        verified,
        trusted,
        warnings,
        ..Default::default()
    })
}

/// The string claims (`optional`) of a simple-signing payload.
fn payload_claims(payload: &[u8]) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    let Some(o) = v.get("optional").and_then(|o| o.as_object()) else {
        return Vec::new();
    };
    o.iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_normalise_like_cosign_writes_them() {
        for (a, b) in [
            (
                "127.0.0.1:5000/plugins/hello",
                "127.0.0.1:5000/plugins/hello",
            ),
            (
                "127.0.0.1:5000/plugins/hello:1.0",
                "127.0.0.1:5000/plugins/hello",
            ),
            ("reg.example/a/b@sha256:00", "reg.example/a/b"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox",
            ),
            ("docker.io/busybox", "docker.io/library/busybox"),
            ("busybox", "docker.io/library/busybox"),
        ] {
            assert_eq!(normalize_repository(a), b, "{a}");
        }
    }

    #[test]
    fn download_cap_covers_the_limits() {
        let l = Limits::default();
        let cap = download_cap(&l);
        assert!(
            cap > l.max_total_bytes && cap < l.max_total_bytes + (32 << 20),
            "{cap}"
        );
    }
}
