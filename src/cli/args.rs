//! Argument groups shared by several verbs, each turned into the options an operation
//! takes. Verb files flatten these; none of them imports another verb's file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::error::{fail, Kind};
use crate::node::unpack::Limits;
use crate::ops::node::NodeOptions;
use crate::ops::transfer::Carry;
use crate::ops::verify::{KeylessOptions, TrustOptions};

/// `-a k=v` pairs.
pub fn parse_annotations(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| fail(Kind::Usage, format!("annotation {it:?} must be KEY=VALUE")))?;
        if k.is_empty() {
            crate::bail_kind!(Kind::Usage, "annotation {it:?} has an empty key");
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

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
    /// Keyless: Sigstore trusted root (trusted_root.json) to verify Fulcio certificates and
    /// Rekor entries with, offline; or a bundle carrying one (the directory or .tar that
    /// `save`/`mirror --trusted-root` wrote).
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// Keyless: the signer identity the certificate must carry (SAN), exactly.
    #[arg(long, value_name = "IDENTITY", requires = "trusted_root")]
    pub certificate_identity: Option<String>,
    /// Keyless: a regular expression the identity must match (unanchored, as cosign's).
    #[arg(
        long,
        value_name = "REGEXP",
        requires = "trusted_root",
        conflicts_with = "certificate_identity"
    )]
    pub certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer the certificate must name, exactly.
    #[arg(long, value_name = "URL", requires = "trusted_root")]
    pub certificate_oidc_issuer: Option<String>,
    /// Keyless: a regular expression the OIDC issuer must match.
    #[arg(
        long,
        value_name = "REGEXP",
        requires = "trusted_root",
        conflicts_with = "certificate_oidc_issuer"
    )]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Accepted as cosign spells it, and changes nothing: kplug requires transparency-log
    /// entries only with --require-tlog (keyless: for the signing time).
    #[arg(long)]
    pub insecure_ignore_tlog: bool,
}

impl TrustArgs {
    pub fn options(&self) -> anyhow::Result<TrustOptions> {
        if self.insecure_ignore_tlog {
            if self.require_tlog {
                crate::bail_kind!(
                    Kind::Usage,
                    "--insecure-ignore-tlog and --require-tlog contradict each other"
                );
            }
            crate::progress::note(
                "note: --insecure-ignore-tlog changes nothing here: kplug verifies offline, and needs a Rekor entry only with --require-tlog (or, keyless, for the signing time a certificate is checked at)",
            );
        }
        Ok(TrustOptions {
            keys: self.keys.clone(),
            annotations: parse_annotations(&self.annotations)?,
            rekor_key: self.rekor_key.clone(),
            require_tlog: self.require_tlog,
            keyless: self.trusted_root.as_ref().map(|root| KeylessOptions {
                trusted_root: root.clone(),
                identity: self.certificate_identity.clone(),
                identity_regexp: self.certificate_identity_regexp.clone(),
                oidc_issuer: self.certificate_oidc_issuer.clone(),
                oidc_issuer_regexp: self.certificate_oidc_issuer_regexp.clone(),
            }),
        })
    }
}

/// How signatures travel with copied artifacts (copy, mirror, load).
#[derive(Args, Debug, Clone)]
pub struct SignatureArgs {
    /// Copy the artifact only, not its cosign signatures and Sigstore bundles.
    #[arg(long)]
    pub no_signatures: bool,
    /// Copy only what verifies with --key (or --trusted-root); anything else is refused and
    /// nothing of it copied.
    #[arg(long)]
    pub signed_only: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl SignatureArgs {
    pub fn carry(&self) -> anyhow::Result<Carry> {
        self.carry_with(false)
    }

    /// [`carry`](Self::carry) for a verb that can also carry `--trusted-root` into its
    /// destination (`mirror`): then the flag is allowed without `--signed-only`.
    pub fn carry_with(&self, root_travels: bool) -> anyhow::Result<Carry> {
        let policy = if self.signed_only {
            Some(Arc::new(self.trust.options()?.policy()?))
        } else {
            let root_unused = self.trust.trusted_root.is_some() && !root_travels;
            if !self.trust.keys.is_empty() || root_unused {
                crate::bail_kind!(
                    Kind::Usage,
                    "--key and --trusted-root only apply with --signed-only (copy verifies nothing otherwise)"
                );
            }
            None
        };
        Ok(Carry {
            signatures: !self.no_signatures,
            policy,
        })
    }
}

/// The limits a node unpacks a plugin under. `install` and `pull` apply them; `pack` and
/// `push` refuse what they would refuse, so a published plugin installs everywhere with the
/// defaults.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Most files and directories a plugin archive may hold.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_files)]
    pub max_files: u64,
    /// Most bytes a plugin may unpack to, all files together (256 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_total_bytes)]
    pub max_bytes: u64,
    /// Most bytes one file of a plugin may have (64 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_file_bytes)]
    pub max_file_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_files: self.max_files,
            max_total_bytes: self.max_bytes,
            max_file_bytes: self.max_file_bytes,
            ..Default::default()
        }
    }
}

/// Options shared by every verb that touches a node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Lua tree plugins go into, as DIR/kong/plugins/<name>/: a directory on Kong's
    /// lua_package_path (default /usr/local/share/lua/5.1, where luarocks installs). Not
    /// Kong's own `prefix` (its working directory, /usr/local/kong).
    #[arg(
        long,
        visible_alias = "lua-tree",
        value_name = "DIR",
        env = "KPLUG_PREFIX"
    )]
    pub prefix: Option<PathBuf>,
    /// Kong's configuration file: read for `plugins` and `lua_package_path`; changed only by
    /// `install --enable` and `uninstall --disable`. Given explicitly it must exist
    /// [default: /etc/kong/kong.conf, if present].
    #[arg(long, value_name = "FILE")]
    pub kong_conf: Option<PathBuf>,
    /// Use the first writable directory of KONG_LUA_PACKAGE_PATH / lua_package_path as the
    /// Lua tree.
    #[arg(long, conflicts_with = "prefix")]
    pub use_package_path: bool,
    /// Give up waiting after this long when another kplug command holds the prefix lock
    /// (30, 30s, 2m, 500ms) [default: wait, saying which pid holds it].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<std::time::Duration>,
}

impl NodeArgs {
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            // Absolute, so that every path kplug prints (and the lua_package_path it
            // advises) works from Kong's working directory too.
            prefix: self
                .prefix
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or(p.clone())),
            kong_conf: self.kong_conf.clone(),
            use_package_path: self.use_package_path,
            lock_timeout: self.lock_timeout,
        }
    }
}

/// Transport settings for one side of a copy or mirror, named as in `oras copy`: the
/// global `--plain-http`, `--ca-file` and `--insecure` apply to every registry, these only
/// to the source (`--from-*`) or destination (`--to-*`) registry hosts. CA files given
/// either way are trusted for every host (one trust store).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Per-side transport (oras copy's flags)")]
pub struct SideArgs {
    /// Plain HTTP to the source registry.
    #[arg(long)]
    pub from_plain_http: bool,
    /// CA certificate (PEM) of the source registry's TLS; repeatable.
    #[arg(long, value_name = "PEM")]
    pub from_ca_file: Vec<PathBuf>,
    /// Skip TLS verification for the source registry.
    #[arg(long)]
    pub from_insecure: bool,
    /// Plain HTTP to the destination registry.
    #[arg(long)]
    pub to_plain_http: bool,
    /// CA certificate (PEM) of the destination registry's TLS; repeatable.
    #[arg(long, value_name = "PEM")]
    pub to_ca_file: Vec<PathBuf>,
    /// Skip TLS verification for the destination registry.
    #[arg(long)]
    pub to_insecure: bool,
}

impl SideArgs {
    /// Add the per-side settings to `opts` for the registry hosts of each side.
    pub fn apply(
        &self,
        opts: &mut crate::oci::store::Options,
        src_hosts: &[String],
        dst_hosts: &[String],
    ) -> anyhow::Result<()> {
        let side = |plain: bool, cas: &[PathBuf], insecure: bool| {
            (plain || !cas.is_empty() || insecure).then(|| crate::oci::store::HostOptions {
                plain_http: plain,
                tls: !plain && (!cas.is_empty() || insecure),
                insecure,
                ca_files: cas.to_vec(),
            })
        };
        let from = side(self.from_plain_http, &self.from_ca_file, self.from_insecure);
        let to = side(self.to_plain_http, &self.to_ca_file, self.to_insecure);
        if self.from_plain_http && !self.from_ca_file.is_empty()
            || self.to_plain_http && !self.to_ca_file.is_empty()
        {
            crate::bail_kind!(
                Kind::Usage,
                "--*-plain-http and --*-ca-file for the same side contradict each other"
            );
        }
        for (hosts, set, flag) in [(src_hosts, from, "--from-*"), (dst_hosts, to, "--to-*")] {
            let Some(set) = set else { continue };
            if hosts.is_empty() {
                crate::bail_kind!(
                    Kind::Usage,
                    "{flag} flags apply to a registry, and that side is a local store"
                );
            }
            for h in hosts.iter().cloned() {
                if let Some(prev) = opts.hosts.get(&h) {
                    if prev.plain_http != set.plain_http {
                        crate::bail_kind!(Kind::Usage, "{h} is both source and destination, with different --from-*/--to-* transport flags");
                    }
                }
                opts.hosts.insert(h, set.clone());
            }
        }
        Ok(())
    }
}

/// The registry host a reference names, if it names a registry.
pub fn registry_host(reference: &str) -> Option<String> {
    match crate::oci::reference::parse(reference).ok()? {
        crate::oci::reference::Location::Registry(r) => Some(r.host().to_string()),
        _ => None,
    }
}

/// `30`, `30s`, `1.5s`, `500ms`, `2m`: a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30, 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11.16: advice about lua_package_path must hold from Kong's working directory,
    /// so a relative --prefix is made absolute before anything prints it.
    #[test]
    fn prefix_is_absolute() {
        let a = NodeArgs {
            prefix: Some(PathBuf::from("rel/lua")),
            kong_conf: None,
            use_package_path: false,
            lock_timeout: None,
        };
        let p = a.options().prefix.unwrap();
        assert!(p.is_absolute() && p.ends_with("rel/lua"), "{}", p.display());
    }
}

/// `pack`/`push` of an external plugin server (go-pdk, Python or JavaScript kong-pdk).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Plugin servers")]
pub struct ServerArgs {
    /// Pack a plugin server instead of a Lua tree: go (go-pdk), python or js (kong-pdk).
    /// The path is its executable, or a directory holding it (--entrypoint); --name is
    /// the plugin name its query command lists.
    #[arg(long, value_name = "RUNTIME", value_parser = parse_runtime)]
    pub runtime: Option<crate::node::external::Runtime>,
    /// The file Kong starts, relative to the server directory.
    #[arg(long, value_name = "FILE", requires = "runtime")]
    pub entrypoint: Option<String>,
    /// Arguments that make the server print its plugin info (default: -dump for go,
    /// --dump for python and js).
    #[arg(
        long,
        value_name = "ARGS",
        requires = "runtime",
        allow_hyphen_values = true
    )]
    pub query_args: Option<String>,
    /// Socket file name under Kong's prefix (default: <name>.socket for go, <name>.sock
    /// for python and js).
    #[arg(long, value_name = "NAME", requires = "runtime")]
    pub socket: Option<String>,
}

impl ServerArgs {
    pub fn spec(&self) -> Option<crate::ops::pack::ServerSpec> {
        Some(crate::ops::pack::ServerSpec {
            runtime: self.runtime?,
            entrypoint: self.entrypoint.clone(),
            query_args: self
                .query_args
                .as_ref()
                .map(|q| q.split_whitespace().map(str::to_string).collect()),
            socket: self.socket.clone(),
        })
    }
}

fn parse_runtime(s: &str) -> Result<crate::node::external::Runtime, String> {
    use crate::node::external::Runtime;
    match s {
        "go" => Ok(Runtime::Go),
        "python" | "py" => Ok(Runtime::Python),
        "js" | "javascript" | "node" => Ok(Runtime::Js),
        _ => Err(format!("{s:?}: expected go, python or js")),
    }
}
