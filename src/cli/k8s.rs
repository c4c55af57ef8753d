//! `kplug k8s configmap|init-container|helm-values|kpi SRC`: Kubernetes YAML on stdout.

use clap::{Args, Subcommand, ValueEnum};

use super::args::{LimitArgs, TrustArgs};
use super::{Global, Printer};
use crate::error::{fail, Kind};
use crate::ops::k8s::{self, InitOptions, KeySource, KpiTarget, Loaded, PodOptions};

#[derive(Args, Debug)]
pub struct K8sArgs {
    #[command(subcommand)]
    pub what: K8sCommand,
}

#[derive(Subcommand, Debug)]
pub enum K8sCommand {
    /// ConfigMaps holding every file, one per directory (or, with --patch, the Deployment
    /// patch whose volume items rebuild the tree under /opt/kong/plugins/<name>/).
    Configmap(ConfigmapArgs),
    /// The Deployment patch adding a `kplug install` init container (verifies on the node).
    InitContainer(InitArgs),
    /// Values for the Helm `kong` chart: plugins.configMaps, or the init container.
    HelmValues(HelmArgs),
    /// A KongPluginInstallation and the GatewayConfiguration or DataPlane that installs it.
    Kpi(KpiArgs),
}

#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Plugin directory, plugin .tar.gz, or reference (REGISTRY/REPO[:TAG|@DIGEST], oci:DIR…).
    pub src: String,
    /// Plugin name, when the layout does not say it.
    #[arg(long)]
    pub name: Option<String>,
    /// Plugin version for a directory (else rockspec, else handler.lua VERSION).
    #[arg(long = "version", value_name = "VERSION")]
    pub plugin_version: Option<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Read a reference without verifying its signature. Dangerous.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Namespace of the rendered objects (default: none, kubectl's current one).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The Kong container of the pod.
    #[arg(long, default_value = "proxy")]
    pub container: String,
    /// KONG_PLUGINS before this plugin is added (e.g. bundled,other-plugin).
    #[arg(long, default_value = "bundled")]
    pub kong_plugins: String,
}

#[derive(Args, Debug)]
pub struct InitPodArgs {
    /// The reference the pod installs (default: SRC pinned to its digest, when SRC is one).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// The kplug image (built from the repository's Dockerfile).
    #[arg(long, default_value = concat!("kplug:", env!("CARGO_PKG_VERSION")))]
    pub kplug_image: String,
    /// ConfigMap holding the cosign public key as `cosign.pub`.
    #[arg(
        long,
        default_value = "kplug-cosign-pub",
        conflicts_with = "key_secret"
    )]
    pub key_configmap: String,
    /// Secret holding the cosign public key as `cosign.pub` (instead of a ConfigMap).
    #[arg(long)]
    pub key_secret: Option<String>,
    /// kubernetes.io/dockerconfigjson Secret with the registry credentials.
    #[arg(long)]
    pub pull_secret: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConfigmapArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the Deployment patch (volumes, volumeMounts, env) instead of the ConfigMaps.
    #[arg(long)]
    pub patch: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub pod: InitPodArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// plugins.configMaps with subdirectories (apply `kplug k8s configmap SRC` first).
    Configmap,
    /// deployment.initContainers + userDefinedVolumes/userDefinedVolumeMounts.
    InitContainer,
}

#[derive(Args, Debug)]
pub struct HelmArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// How the chart gets the plugin: ConfigMaps it mounts, or the verifying init container.
    #[arg(long, value_enum, default_value = "configmap")]
    pub way: Way,
    #[command(flatten)]
    pub pod: InitPodArgs,
}

#[derive(Args, Debug)]
pub struct KpiArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The KPI image (default: SRC pinned to its digest, when SRC is a reference).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Secret (dockerconfigjson) the Operator pulls the image with.
    #[arg(long)]
    pub pull_secret: Option<String>,
    /// Name of the GatewayConfiguration to render.
    #[arg(long, default_value = "kong", conflicts_with = "dataplane")]
    pub gateway_configuration: String,
    /// Render a DataPlane of this name instead of a GatewayConfiguration.
    #[arg(long, value_name = "NAME")]
    pub dataplane: Option<String>,
    /// Kong image of the DataPlane.
    #[arg(long, default_value = "kong:3.9")]
    pub kong_image: String,
}

pub async fn run(g: &Global, out: &Printer, a: K8sArgs) -> anyhow::Result<()> {
    let yaml = match a.what {
        K8sCommand::Configmap(c) => {
            let p = load(g, &c.source).await?;
            let cms = k8s::configmap_layout(&p)?;
            let o = pod(&c.source);
            if c.patch {
                k8s::render_configmap_patch(&p, &cms, &o)?
            } else {
                k8s::render_configmaps(&p, &cms, &o)?
            }
        }
        K8sCommand::InitContainer(i) => {
            let p = load(g, &i.source).await?;
            let r = reference(&p, &i.pod.reference)?;
            k8s::render_init_patch(&p.name, &r, &pod(&i.source), &init(&i.pod))?
        }
        K8sCommand::HelmValues(h) => {
            let p = load(g, &h.source).await?;
            match h.way {
                Way::Configmap => k8s::render_helm_configmaps(&p, &k8s::configmap_layout(&p)?)?,
                Way::InitContainer => {
                    let r = reference(&p, &h.pod.reference)?;
                    k8s::render_helm_init(&p.name, &r, &pod(&h.source), &init(&h.pod))?
                }
            }
        }
        K8sCommand::Kpi(k) => {
            let p = load(g, &k.source).await?;
            k8s::check_kpi_image(&p)?;
            let r = reference(&p, &k.reference)?;
            let target = match &k.dataplane {
                Some(n) => KpiTarget::DataPlane {
                    name: n.clone(),
                    kong_image: k.kong_image.clone(),
                },
                None => KpiTarget::GatewayConfiguration(k.gateway_configuration.clone()),
            };
            let o = pod(&k.source);
            k8s::render_kpi(&p.name, &r, &o, k.pull_secret.as_deref(), &target)?
        }
    };
    if out.is_json() {
        let docs = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(<serde_json::Value as serde::Deserialize>::deserialize)
            .collect::<Result<Vec<_>, _>>()?;
        return out.json_value(&docs);
    }
    print!("{yaml}");
    Ok(())
}

async fn load(g: &Global, a: &SourceArgs) -> anyhow::Result<Loaded> {
    let policy = if !k8s::is_reference(&a.src) || a.insecure_skip_verify {
        None
    } else {
        Some(a.trust.options()?.policy().map_err(|e| {
            fail(
                crate::error::kind_of(&e),
                format!(
                    "{e:#}; a reference is verified before it is read (or, at your own risk, \
                     --insecure-skip-verify)"
                ),
            )
        })?)
    };
    k8s::load(&k8s::SourceOptions {
        src: a.src.clone(),
        name: a.name.clone(),
        version: a.plugin_version.clone(),
        store: g.store_options(),
        policy,
        limits: a.limits.limits(),
    })
    .await
}

fn pod(a: &SourceArgs) -> PodOptions {
    PodOptions {
        namespace: a.namespace.clone(),
        container: a.container.clone(),
        kong_plugins: a.kong_plugins.clone(),
    }
}

fn init(a: &InitPodArgs) -> InitOptions {
    InitOptions {
        kplug_image: a.kplug_image.clone(),
        key: match &a.key_secret {
            Some(s) => KeySource::Secret(s.clone()),
            None => KeySource::ConfigMap(a.key_configmap.clone()),
        },
        pull_secret: a.pull_secret.clone(),
    }
}

/// What the cluster pulls: `--ref`, else the verified source pinned to its digest.
fn reference(p: &Loaded, given: &Option<String>) -> anyhow::Result<String> {
    given.clone().or_else(|| p.pinned.clone()).ok_or_else(|| {
        fail(
            Kind::Usage,
            "SRC is a local plugin: give the reference the cluster pulls with --ref \
             REGISTRY/REPO@DIGEST (what `kplug push` printed)",
        )
    })
}
