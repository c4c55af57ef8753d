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
use crate::ops::verify::TrustOptions;

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
}

impl TrustArgs {
    pub fn options(&self) -> anyhow::Result<TrustOptions> {
        Ok(TrustOptions {
            keys: self.keys.clone(),
            annotations: parse_annotations(&self.annotations)?,
            rekor_key: self.rekor_key.clone(),
            require_tlog: self.require_tlog,
        })
    }
}

/// How signatures travel with copied artifacts (copy, mirror, load).
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
    pub fn carry(&self) -> anyhow::Result<Carry> {
        let policy = if self.signed_only {
            Some(Arc::new(self.trust.options()?.policy()?))
        } else {
            if !self.trust.keys.is_empty() {
                crate::bail_kind!(
                    Kind::Usage,
                    "--key only applies with --signed-only (copy verifies nothing otherwise)"
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

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Most files an archive may unpack to.
    #[arg(long, default_value_t = Limits::default().max_files)]
    pub max_files: u64,
    /// Most bytes an archive may unpack to.
    #[arg(long, default_value_t = Limits::default().max_total_bytes)]
    pub max_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_files: self.max_files,
            max_total_bytes: self.max_bytes,
            ..Default::default()
        }
    }
}

/// Options shared by every verb that touches a node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Lua tree the plugin goes into (<prefix>/kong/plugins/<name>/).
    #[arg(long, value_name = "DIR", env = "KPLUG_PREFIX")]
    pub prefix: Option<PathBuf>,
    /// Kong configuration file to read (and edit with --enable/--disable).
    #[arg(long, value_name = "FILE", default_value = "/etc/kong/kong.conf")]
    pub kong_conf: PathBuf,
    /// Use the first writable directory of KONG_LUA_PACKAGE_PATH / lua_package_path as prefix.
    #[arg(long, conflicts_with = "prefix")]
    pub use_package_path: bool,
}

impl NodeArgs {
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            prefix: self.prefix.clone(),
            kong_conf: self.kong_conf.clone(),
            use_package_path: self.use_package_path,
        }
    }
}
