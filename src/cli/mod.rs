//! Command-line interface: one file per verb. Each parses its arguments, calls one
//! operation in `crate::ops`, and renders the result through the [`Printer`]. Shared
//! argument groups are in `args`; no verb file imports another.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::oci::store;
pub use output::Printer;

mod args;
mod blob;
mod copy;
mod doctor;
mod install;
mod k8s;
mod keys;
mod list;
mod load;
mod login;
mod meta;
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

/// `kplug --version`: the package version, the commit and the build date (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KPLUG_COMMIT"),
    ", built ",
    env!("KPLUG_BUILD_DATE"),
    ")"
);

const GLOBAL: &str = "Global options";

#[derive(Parser, Debug)]
#[command(
    name = "kplug",
    version = VERSION,
    about = "Distribute Kong Gateway plugins as signed OCI artifacts",
    long_about = "Distribute Kong Gateway custom plugins as signed OCI artifacts.\n\n\
        Publish: `kplug push ./my-plugin REGISTRY/REPO:VERSION --sign --key cosign.key`.\n\
        Install on a node: `kplug install REGISTRY/REPO:VERSION --key cosign.pub --enable`,\n\
        then `kong prepare && kong reload`. Signatures are cosign's, registries any OCI one.",
    after_help = output::EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb takes; shown under their own heading in each verb's `--help`.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Print only results (no progress or status lines).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// More logging (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Talk plain HTTP to registries (the default for localhost / 127.0.0.1).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub plain_http: bool,
    /// Skip TLS certificate verification of registries (not signature verification).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) for registry TLS; repeatable.
    #[arg(long = "ca-file", global = true, value_name = "PEM", help_heading = GLOBAL)]
    pub ca_files: Vec<PathBuf>,
    /// Per registry request: most time to connect and get an answer (e.g. 30, 30s, 500ms, 2m).
    #[arg(long, global = true, env = "KPLUG_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = args::parse_duration, help_heading = GLOBAL)]
    pub timeout: std::time::Duration,
    /// Most time a transfer may go without receiving or sending a byte.
    #[arg(long, global = true, env = "KPLUG_STALL_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = args::parse_duration, help_heading = GLOBAL)]
    pub stall_timeout: std::time::Duration,
    /// Mirrors and registry settings (containers-registries.conf v2); default:
    /// $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, /etc/containers/registries.conf.
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub registries_conf: Option<PathBuf>,
    /// Read only from the mirrors of a registry that has some, never from the registry itself.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_fallback: bool,
    /// Machine-readable JSON on stdout (camelCase keys).
    #[arg(long, global = true, help_heading = GLOBAL)]
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pack a plugin directory into a reproducible <name>-<version>.tar.gz, checked as a node would.
    Pack(pack::PackArgs),
    /// Push a plugin (.tar.gz or directory) as a generic OCI artifact (cosign upload blob layout).
    Push(push::PushArgs),
    /// Pull a plugin artifact: the .tar.gz itself, or unpacked into a directory.
    Pull(pull::PullArgs),
    /// Copy an artifact and its signatures between any two stores, by digest.
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
    /// List the tags of a repository, or the artifacts of an OCI layout or archive.
    ListTags(tags::TagsArgs),
    /// Create a cosign key pair (cosign.key encrypted, cosign.pub).
    GenerateKeyPair(keys::GenerateArgs),
    /// Encrypt an existing EC P-256 PEM key as a cosign key pair.
    ImportKeyPair(keys::ImportArgs),
    /// Sign an artifact by digest (cosign-compatible .sig manifest).
    Sign(sign::SignArgs),
    /// Verify an artifact's signatures (cosign's checks and exit codes).
    Verify(verify::VerifyArgs),
    /// Sign a file: a detached, cosign-compatible base64 signature (cosign sign-blob).
    SignBlob(blob::SignBlobArgs),
    /// Verify a file against a detached signature (cosign verify-blob).
    VerifyBlob(blob::VerifyBlobArgs),
    /// Verify, fetch and atomically install a plugin on this node.
    Install(install::InstallArgs),
    /// Remove a plugin installed by kplug.
    Uninstall(uninstall::UninstallArgs),
    /// List plugins installed by kplug, with digest, signer and integrity.
    List(list::ListArgs),
    /// Swap a plugin with the version its last install replaced (again: swap back).
    Rollback(rollback::RollbackArgs),
    /// Check this node's Kong configuration against installed plugins.
    Doctor(doctor::DoctorArgs),
    /// Kubernetes YAML for a plugin: ConfigMaps, init container, Helm values, KongPluginInstallation.
    K8s(k8s::K8sArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completion(meta::CompletionArgs),
    /// Write the man pages, generated from these definitions.
    Man(meta::ManArgs),
}

/// Parse the command line as clap does, except that an unknown flag that looks like a
/// cosign signature flag is never answered with "did you mean --insecure" (or
/// --insecure-skip-verify): those turn off TLS checks or verification, which is not what
/// someone reaching for a signature option wants.
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|e| without_transport_suggestion(e).exit())
}

fn without_transport_suggestion(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let arg = arg.clone();
    let suggested = match e.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => return e,
    };
    // Flags that lower a guard: TLS checks, or (install) signature verification itself.
    let lowers_a_guard = |s: &String| {
        let flag = s.split_whitespace().next().unwrap_or_default();
        (flag.contains("insecure") && flag != "--insecure-ignore-tlog")
            || flag.ends_with("plain-http")
            || flag.ends_with("ca-file")
    };
    if !suggested.iter().any(lowers_a_guard) || !signature_like(&arg) {
        return e;
    }
    e.remove(ContextKind::SuggestedArg);
    e.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![format!(
            "{arg} is not a kplug option; signatures are checked with --key (see --help). \
             --insecure only turns off registry TLS certificate checks, and \
             --insecure-skip-verify all verification"
        )
        .into()]),
    );
    e
}

/// An option name that is about signatures, keys or transparency logs (cosign's words).
fn signature_like(arg: &str) -> bool {
    const WORDS: &[&str] = &[
        "tlog", "sct", "sig", "key", "cert", "rekor", "fulcio", "verif", "identity", "oidc",
        "issuer", "bundle", "attest", "trust", "claim",
    ];
    let a = arg.to_ascii_lowercase();
    a.starts_with("--insecure-") || WORDS.iter().any(|w| a.contains(w))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.global);
    crate::progress::set_quiet(cli.global.quiet);
    let out = Printer::new(cli.global.json);
    // Generated from the definitions; no runtime needed.
    match cli.command {
        Command::Completion(a) => return meta::completion(a),
        Command::Man(a) => return meta::man(&out, a),
        _ => {}
    }
    // One thread runs every task: an HTTP connection and the code reading its body hand
    // each chunk over without waking another thread (a 1 GiB pull: 3,500 context switches
    // instead of 17,000, 0.2 s less CPU), and a node running kplug gets no worker pool.
    // Disk writes and CPU-bound work go to threads of their own (`sink`, spawn_blocking).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
        Command::SignBlob(a) => blob::sign(out, a).await,
        Command::VerifyBlob(a) => blob::verify(out, a).await,
        Command::Install(a) => install::run(g, out, a).await,
        Command::Uninstall(a) => uninstall::run(out, a).await,
        Command::List(a) => list::run(out, a).await,
        Command::Rollback(a) => rollback::run(out, a).await,
        Command::Doctor(a) => doctor::run(out, a).await,
        Command::K8s(a) => k8s::run(g, out, a).await,
        Command::Completion(_) | Command::Man(_) => Ok(()),
    }
}

/// Colour only for a person: stderr is a terminal and NO_COLOR is not set
/// (https://no-color.org), so logs in pipes and files carry no escape codes.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Issue 11.15: `login -u`, `logout <REGISTRY>`, `import-key-pair --force` had no help.
    #[test]
    fn every_argument_has_a_help_line() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments().filter(|a| !a.is_hide_set()) {
                if a.get_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "kplug", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:?}");
    }

    /// pack and push refuse exactly what install refuses by default.
    #[test]
    fn publishing_limits_are_install_defaults() {
        let cli = Cli::try_parse_from(["kplug", "push", "dir", "reg.example/x:1"]).unwrap();
        let Command::Push(p) = cli.command else {
            panic!("push")
        };
        assert_eq!(p.limits.limits(), crate::node::unpack::Limits::default());
    }

    #[test]
    fn signature_flags_are_told_apart() {
        assert!(signature_like("--insecure-ignore-sct"));
        assert!(signature_like("--certificate-identity"));
        assert!(!signature_like("--insecur"));
        assert!(!signature_like("--plain"));
    }
}
