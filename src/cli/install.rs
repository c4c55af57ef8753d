use std::path::PathBuf;

use clap::Args;

use super::args::{LimitArgs, NodeArgs, TrustArgs};
use super::output::{ReceiptJson, RELOAD_HINT};
use super::{Global, Printer};
use crate::error::{fail, Kind};
use crate::node::state::Outcome;
use crate::ops::install::{self, InstallReport, InstallRequest};
use crate::ops::node::Enabled;

#[derive(Args, Debug)]
#[command(after_help = super::output::with_exit_codes("\
What it does: resolves a tag once, verifies the signature with --key before anything is
written (and before the download is used), unpacks under the --max-* limits into
<prefix>/kong/plugins/<name>/ in one atomic swap, keeps the version it replaces for
`kplug rollback`, and records a receipt that `kplug list` shows. Installing the same digest
again changes nothing.

Kong loads the plugin once it is listed in `plugins =` (--enable does that, in --kong-conf)
and you run `kong prepare && kong reload` (or restart Kong). `kplug doctor` checks the
node first."))]
pub struct InstallArgs {
    /// Artifact: REGISTRY/REPO@DIGEST (or :TAG, resolved once), oci:DIR[:REF],
    /// oci-archive:FILE[:REF], docker-archive:FILE (crane pull), or a plugin .tar.gz file.
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Detached signature of a plain .tar.gz file (base64, as `kplug sign-blob` and
    /// `cosign sign-blob` write it).
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
    /// Plugin name for archives of bare files (default: the repository's last component);
    /// with any archive, checked against the plugin it holds.
    #[arg(long)]
    pub name: Option<String>,
    /// Owner of the installed files as UID:GID (default: the installing user).
    #[arg(long, value_name = "UID:GID")]
    pub owner: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Write KONG_PLUGINS=… and KONG_LUA_PACKAGE_PATH=… lines for this install to FILE
    /// (merged with what FILE already says), for Kong's environment.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Take over kong/plugins/<name> although kplug did not install it: its files are kept
    /// in kong/plugins/.kplug/adopted/<name> and `kplug uninstall` puts them back.
    #[arg(long)]
    pub adopt: bool,
    /// Install a plugin named like one Kong ships (rate-limiting, jwt, cors, …); it then
    /// shadows Kong's own or is shadowed by it, depending on lua_package_path.
    #[arg(long)]
    pub allow_bundled_name: bool,
    /// Install an older version (semver) than the one installed.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Refuse a signature whose docker-reference names another repository than the one
    /// installed from (default: a warning; registries.conf mirrors are accepted).
    #[arg(long)]
    pub strict_identity: bool,
    /// Plugin servers (artifacts with kplug-server.json): directory of the executable Kong
    /// starts [default: where the server is installed, else /usr/local/bin, Kong's
    /// default plugin-server path]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Plugin servers of several files: their trees go to DIR/<name>/, with
    /// <bin-dir>/<name> a link to the entrypoint [default: where the server is
    /// installed, else /usr/local/lib/kplug/servers]
    #[arg(long, value_name = "DIR")]
    pub lib_dir: Option<PathBuf>,
    /// Plugin servers: longest run of the query command (`-dump`/`--dump`) that checks
    /// the installed server, e.g. 20s.
    #[arg(long, value_name = "DURATION", value_parser = super::args::parse_duration)]
    pub query_timeout: Option<std::time::Duration>,
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
#[serde(rename_all = "camelCase")]
struct Installed<'a> {
    outcome: &'static str,
    path: &'a PathBuf,
    #[serde(flatten)]
    receipt: ReceiptJson<'a>,
    files: &'a [crate::tree::FileEntry],
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<&'a Enabled>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    /// A plugin server: how Kong runs it and what its query printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerJson<'a>>,
    /// The other plugins of a rock that holds several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also: Vec<Installed<'a>>,
    /// What a rock carries besides its plugins.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerJson<'a> {
    #[serde(flatten)]
    receipt: &'a crate::node::external::ServerReceipt,
    plugins: &'a [crate::node::external::PluginInfo],
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Unchanged => "unchanged",
        Outcome::Installed { .. } => "installed",
    }
}

pub async fn run(g: &Global, out: &Printer, a: InstallArgs) -> anyhow::Result<()> {
    let req = InstallRequest {
        trust: match a.insecure_skip_verify {
            true => None,
            false => Some(a.trust.options()?),
        },
        reference: a.reference,
        signature: a.signature,
        node: a.node.options(),
        enable: a.enable,
        name: a.name,
        owner: a.owner.as_deref().map(parse_owner).transpose()?,
        limits: a.limits.limits(),
        store: g.store_options(),
        adopt: a.adopt,
        allow_bundled_name: a.allow_bundled_name,
        allow_downgrade: a.allow_downgrade,
        strict_identity: a.strict_identity,
        server: install::ServerOptions {
            bin_dir: a.bin_dir,
            lib_dir: a.lib_dir,
            query_timeout: a.query_timeout,
        },
    };
    let r = install::install(&req).await?;
    status(&r);
    let json = Installed {
        outcome: outcome_word(&r.outcome),
        path: &r.path,
        receipt: ReceiptJson::of(&r.receipt),
        files: match &r.server {
            Some(s) => &s.receipt.files,
            None => &r.receipt.files,
        },
        enabled: r.enabled.as_ref(),
        source: r.source.as_deref(),
        server: r.server.as_ref().map(|s| ServerJson {
            receipt: &s.receipt,
            plugins: &s.plugins,
        }),
        also: r
            .also
            .iter()
            .map(|a| Installed {
                outcome: outcome_word(&a.outcome),
                path: &a.path,
                receipt: ReceiptJson::of(&a.receipt),
                files: &a.receipt.files,
                enabled: a.enabled.as_ref(),
                source: None,
                server: None,
                also: Vec::new(),
                notes: &[],
            })
            .collect(),
        notes: &r.notes,
    };
    out.result(&json, |t| {
        t.line(r.path.display().to_string());
        for a in &r.also {
            t.line(a.path.display().to_string());
        }
    })?;
    if let Some(e) = &r.enabled {
        crate::progress::note(enabled_note(e, &r.receipt.name));
    }
    for a in &r.also {
        if let Some(e) = &a.enabled {
            crate::progress::note(enabled_note(e, &a.receipt.name));
        }
    }
    if let Some(file) = &a.env_file {
        env_file(file, &r)?;
    }
    Ok(())
}

/// `--env-file`: what Kong needs to load what was just installed.
fn env_file(file: &std::path::Path, r: &InstallReport) -> anyhow::Result<()> {
    if let Some(s) = &r.server {
        let name = &r.receipt.name;
        let vars = crate::ops::node::server_env(name, &s.receipt);
        let current = crate::ops::node::env("KONG_PLUGINS");
        let plugins =
            crate::ops::k8s::write_server_env_file(file, name, &vars, current.as_deref())?;
        crate::progress::note(format!(
            "wrote {}: KONG_PLUGINS={plugins} KONG_PLUGINSERVER_NAMES and the {} lines",
            file.display(),
            vars.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return Ok(());
    }
    let prefix =
        crate::ops::k8s::prefix_of(&r.path).expect("installs go to <prefix>/kong/plugins/<name>");
    let current = crate::ops::node::env("KONG_PLUGINS");
    let e = crate::ops::k8s::write_env_file(file, prefix, &r.receipt.name, current.as_deref())?;
    crate::progress::note(format!(
        "wrote {}: KONG_PLUGINS={} KONG_LUA_PACKAGE_PATH={}",
        file.display(),
        e.kong_plugins,
        e.lua_package_path
    ));
    Ok(())
}

/// The status lines on stderr: what verified, what was installed, what to know.
fn status(r: &InstallReport) {
    use crate::progress::escape;
    if !r.verified.is_empty() {
        crate::progress::note(super::output::check_list(&r.reference, &r.verified));
    }
    for w in &r.warnings {
        eprintln!("WARNING: {w}");
    }
    for n in &r.notes {
        crate::progress::note(escape(n));
    }
    if let Some(s) = &r.server {
        let listed: Vec<String> = s
            .plugins
            .iter()
            .map(|p| {
                format!(
                    "{} {} (priority {})",
                    p.name,
                    escape(&p.version),
                    p.priority
                )
            })
            .collect();
        crate::progress::note(format!(
            "plugin server: Kong starts `{}`, queries `{}` (it lists {}), socket {}",
            s.receipt.start_cmd,
            s.receipt.query_cmd,
            listed.join(", "),
            s.receipt.socket
        ));
    }
    for a in &r.also {
        crate::progress::note(format!(
            "{} {} from the same rock into {}",
            outcome_word(&a.outcome),
            a.receipt.name,
            a.path.display()
        ));
    }
    let rc = &r.receipt;
    let previous = |previous: &Option<String>, differs: &[String]| {
        match (previous, differs) {
        (None, _) => String::new(),
        (Some(p), []) => format!("; previous {p} kept for `kplug rollback {}`", rc.name),
        (Some(p), d) => format!(
            "; previous {p} kept, but it had been changed since kplug installed it ({}): `kplug rollback` will refuse it without --force",
            d.join(", ")
        ),
    }
    };
    crate::progress::note(match &r.outcome {
        Outcome::Unchanged => format!("{} {} already installed; nothing to do", rc.name, rc.digest),
        Outcome::Installed {
            previous: p,
            previous_differs,
            adopted,
        } => format!(
            "installed {} {} ({}) into {}{}{}{}",
            rc.name,
            escape(rc.version.as_deref().unwrap_or("")),
            rc.digest,
            r.path.display(),
            previous(p, previous_differs),
            adopted
                .as_ref()
                .map(|a| format!("; the files that were there are kept in {} and `kplug uninstall {}` puts them back", a.display(), rc.name))
                .unwrap_or_default(),
            // With --enable, the note on enabling says it.
            match (&r.enabled, &r.server) {
                (None, None) => format!("\nonce it is listed in kong.conf `plugins =` (--enable does it), {RELOAD_HINT} to load it"),
                (None, Some(_)) => format!("\nonce kong.conf has its pluginserver_* lines and lists it in `plugins =` (--enable writes them), {RELOAD_HINT} to load it"),
                (Some(_), _) => String::new(),
            }
        ),
    });
}

fn enabled_note(e: &Enabled, name: &str) -> String {
    match e {
        Enabled::KongConf {
            path,
            changed,
            env_line,
        } => {
            let mut s = match changed {
                true => format!(
                    "enabled {name} in {}; {RELOAD_HINT} to load it",
                    path.display()
                ),
                false => format!("{name} is already enabled in {}", path.display()),
            };
            if let Some(line) = env_line {
                for var in line
                    .lines()
                    .filter_map(|l| l.strip_prefix("export ")?.split('=').next())
                {
                    let key = var.trim_start_matches("KONG_").to_ascii_lowercase();
                    s.push_str(&format!(
                        "\n{var} is set in this environment and overrides `{key} =` in {}, without {name}",
                        path.display()
                    ));
                }
                s.push_str(&format!("; set in Kong's environment:\n{line}"));
            }
            s
        }
        Enabled::Environment { line } => {
            format!(
                "no kong.conf found; export this in Kong's environment, then restart Kong:\n{line}"
            )
        }
    }
}
