//! Command-line interface: one file per verb. Each parses its arguments, calls one
//! operation in `crate::ops`, and renders the result through the [`Printer`]. Shared
//! argument groups are in `args`; no verb file imports another.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::oci::store;
pub use output::Printer;

mod args;
mod copy;
mod doctor;
mod install;
mod k8s;
mod keys;
mod list;
mod load;
mod login;
mod mirror;
mod output;
mod pack;
mod pull;
mod push;
mod rollback;
mod save;
mod sign;
mod tags;
mod uninstall;
mod verify;

#[derive(Parser, Debug)]
#[command(
    name = "kplug",
    version,
    about = "Distribute Kong Gateway plugins as signed OCI artifacts"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Print only results (no progress or status lines).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More logging (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Talk plain HTTP to registries (the default for localhost / 127.0.0.1).
    #[arg(long, global = true)]
    pub plain_http: bool,
    /// Skip TLS certificate verification.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) for registry TLS; repeatable.
    #[arg(long = "ca-file", global = true, value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// Per registry request: most time to connect and get an answer (e.g. 30, 30s, 500ms, 2m).
    #[arg(long, global = true, env = "KPLUG_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Most time a transfer may go without receiving or sending a byte.
    #[arg(long, global = true, env = "KPLUG_STALL_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: std::time::Duration,
    /// Mirrors and registry settings (containers-registries.conf v2); default:
    /// $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, /etc/containers/registries.conf.
    #[arg(long, global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Read only from the mirrors of a registry that has some, never from the registry itself.
    #[arg(long, global = true)]
    pub no_fallback: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    pub fn store_options(&self) -> store::Options {
        store::Options {
            plain_http: self.plain_http,
            insecure: self.insecure,
            ca_files: self.ca_files.clone(),
            timeout: Some(self.timeout),
            stall_timeout: Some(self.stall_timeout),
            use_registries_conf: true,
            registries_conf: self.registries_conf.clone(),
            no_fallback: self.no_fallback,
            ..Default::default()
        }
    }
}

/// `30`, `30s`, `500ms`, `2m`: a positive duration.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30, 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !(secs > 0.0 && secs < 1e7) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pack a plugin directory into a reproducible <name>-<version>.tar.gz.
    Pack(pack::PackArgs),
    /// Push a plugin (.tar.gz or directory) as a generic OCI artifact (cosign upload blob layout).
    Push(push::PushArgs),
    /// Pull a plugin artifact: the .tar.gz itself, or unpacked into a directory.
    Pull(pull::PullArgs),
    /// Copy an artifact between any two stores, by digest.
    #[command(
        after_help = "Transport per side, as `oras copy`: --plain-http, --ca-file and --insecure apply to every \
registry; --from-plain-http / --to-plain-http, --from-ca-file / --to-ca-file and --from-insecure / \
--to-insecure apply to the source or destination registry only (CA files are trusted for both). \
Example, plain loopback registry to a TLS one:\n  kplug copy 127.0.0.1:5000/kong/hello:1 \
registry.example.com/kong/hello:1 --to-ca-file ca.pem"
    )]
    Copy(copy::CopyArgs),
    /// Mirror many artifacts with their signatures (mirror.yaml or a list file).
    Mirror(mirror::MirrorArgs),
    /// Save artifacts and their signatures into an OCI layout or oci-archive, for an air gap.
    Save(save::SaveArgs),
    /// Push a saved bundle into a registry, artifacts and signatures under their tags.
    Load(load::LoadArgs),
    /// Log in to a registry (writes docker's config.json).
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(login::LogoutArgs),
    /// List the tags of a repository or OCI layout.
    ListTags(tags::TagsArgs),
    /// Create a cosign key pair (cosign.key encrypted, cosign.pub).
    GenerateKeyPair(keys::GenerateArgs),
    /// Encrypt an existing EC P-256 PEM key as a cosign key pair.
    ImportKeyPair(keys::ImportArgs),
    /// Sign an artifact by digest (cosign-compatible .sig manifest).
    Sign(sign::SignArgs),
    /// Verify an artifact's signatures (cosign's checks and exit codes).
    Verify(verify::VerifyArgs),
    /// Verify, fetch and atomically install a plugin on this node.
    Install(install::InstallArgs),
    /// Remove a plugin installed by kplug.
    Uninstall(uninstall::UninstallArgs),
    /// List plugins installed by kplug, with digest, signer and integrity.
    List(list::ListArgs),
    /// Put back the previously installed version of a plugin.
    Rollback(rollback::RollbackArgs),
    /// Check this node's Kong configuration against installed plugins.
    Doctor(doctor::DoctorArgs),
    /// Kubernetes YAML for a plugin: ConfigMaps, init container, Helm values, KongPluginInstallation.
    K8s(k8s::K8sArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.global);
    crate::progress::set_quiet(cli.global.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = Printer::new(cli.global.json);
    rt.block_on(async move {
        let signal = interrupted();
        let work = dispatch(cli, &out);
        tokio::select! {
            r = work => r,
            // Dropping `work` drops its temp files and staging dirs (they clean up on drop).
            code = signal => Err(crate::interrupt::error(code)),
        }
    })
}

/// SIGINT or SIGTERM: record it (for code that waits synchronously, see
/// `crate::interrupt`) and return the exit code, 130 or 143.
async fn interrupted() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    let code = tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    crate::interrupt::set(code);
    code
}

async fn dispatch(cli: Cli, out: &Printer) -> anyhow::Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Pack(a) => pack::run(out, a).await,
        Command::Push(a) => push::run(g, out, a).await,
        Command::Pull(a) => pull::run(g, out, a).await,
        Command::Copy(a) => copy::run(g, out, a).await,
        Command::Mirror(a) => mirror::run(g, out, a).await,
        Command::Save(a) => save::run(g, out, a).await,
        Command::Load(a) => load::run(g, out, a).await,
        Command::Login(a) => login::run(g, out, a).await,
        Command::Logout(a) => login::logout(out, a).await,
        Command::ListTags(a) => tags::run(g, out, a).await,
        Command::GenerateKeyPair(a) => keys::generate(out, a).await,
        Command::ImportKeyPair(a) => keys::import(out, a).await,
        Command::Sign(a) => sign::run(g, out, a).await,
        Command::Verify(a) => verify::run(g, out, a).await,
        Command::Install(a) => install::run(g, out, a).await,
        Command::Uninstall(a) => uninstall::run(out, a).await,
        Command::List(a) => list::run(out, a).await,
        Command::Rollback(a) => rollback::run(out, a).await,
        Command::Doctor(a) => doctor::run(out, a).await,
        Command::K8s(a) => k8s::run(g, out, a).await,
    }
}

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // rustls-platform-verifier logs every certificate failure at error level; kplug's
    // own error says it once, with the fix.
    let default = format!("{default},rustls_platform_verifier=off");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// The summary of a multi-artifact run: a table on stderr, or `--json` on stdout.
fn report_outcomes(out: &Printer, outcomes: &[crate::oci::copy::Outcome]) -> anyhow::Result<()> {
    if out.is_json() {
        return out.json_value(&serde_json::json!({
            "artifacts": outcomes,
            "totals": crate::oci::copy::totals(outcomes),
        }));
    }
    crate::progress::note(crate::oci::copy::summary(outcomes));
    Ok(())
}
