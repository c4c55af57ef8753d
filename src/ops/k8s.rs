//! Kubernetes manifests for one plugin, the three ways docs/kubernetes.md describes:
//!
//! - ConfigMaps: one per directory of the plugin (ConfigMap keys cannot hold `/`), keys
//!   = file names; mounted either as one projected volume whose `items` put every key
//!   back at its path (`migrations/init.lua`…), or by the Helm `kong` chart's
//!   `plugins.configMaps[].subdirectories`.
//! - an init container running `kplug install` into an `emptyDir` the Kong container
//!   mounts: the only way that verifies signatures on the node.
//! - a KongPluginInstallation of a `kplug push --kpi` image, referenced by a
//!   GatewayConfiguration or DataPlane.
//!
//! Every renderer returns YAML text; objects are built in field order with
//! `serde_yaml_ng` mappings so the output reads like hand-written manifests.

mod envfile;
mod image;
mod source;

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;
use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use crate::error::Kind;
pub use envfile::{
    add_plugin, lua_package_path, prefix_of, write_env_file, write_server_env_file, KongEnv,
};
pub use image::{check_carriable, check_kpi_image, image_of, push_kpi};
pub use source::{is_reference, load, Loaded, SourceOptions};

/// Where the ConfigMap way mounts plugins, as the Helm chart and Kong's docs do:
/// `/opt/kong/plugins/<name>/` with `KONG_LUA_PACKAGE_PATH=/opt/?.lua;/opt/?/init.lua;;`.
pub const CONFIGMAP_ROOT: &str = "/opt";
/// The emptyDir the init container installs into (`--prefix`).
pub const INIT_PREFIX: &str = "/kong-plugins";
/// Kubernetes refuses a ConfigMap whose keys and values add up to more (`MaxSecretSize`).
pub const MAX_CONFIGMAP_BYTES: u64 = 1 << 20;
const KEYS_DIR: &str = "/keys";
const KEY_FILE: &str = "cosign.pub";
const DOCKER_DIR: &str = "/docker";
const EMPTYDIR_VOLUME: &str = "kong-plugins";
const KEYS_VOLUME: &str = "kplug-keys";
const DOCKER_VOLUME: &str = "kplug-docker-config";
/// Kong's image runs as `kong`, uid 1000; the init container writes as the same user.
pub const KONG_UID: i64 = 1000;

/// The pod the manifests are for.
#[derive(Debug, Clone)]
pub struct PodOptions {
    pub namespace: Option<String>,
    /// The Kong container (`proxy` in the Helm chart and the Operator's DataPlanes).
    pub container: String,
    /// `KONG_PLUGINS` before this plugin is added (`bundled`).
    pub kong_plugins: String,
}

/// Where the init container reads the cosign public key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    ConfigMap(String),
    Secret(String),
}

/// The init container's image and what it mounts.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub kplug_image: String,
    /// Holds `cosign.pub`.
    pub key: KeySource,
    /// A `kubernetes.io/dockerconfigjson` Secret (an imagePullSecret) for the registry.
    pub pull_secret: Option<String>,
}

/// One file in a ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmEntry {
    pub key: String,
    /// Path in the plugin directory (`migrations/init.lua`).
    pub path: String,
    pub content: Vec<u8>,
    pub exec: bool,
}

/// The ConfigMap holding one directory of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfigMap {
    pub name: String,
    /// Relative to the plugin dir; empty for the top.
    pub dir: String,
    pub entries: Vec<CmEntry>,
}

// ---------------------------------------------------------------------------------------
// names and keys

/// Kubernetes' ConfigMap key rule (apimachinery `IsConfigMapKey`).
pub fn valid_configmap_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && !k.starts_with("..")
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn short_hash(s: &str) -> String {
    crate::digest::sha256(s.as_bytes())["sha256:".len()..][..8].to_string()
}

/// `want` as a DNS-1123 label (volume, container and ConfigMap names): kept when valid,
/// else lower-cased, other characters turned into `-`, cut to fit, and suffixed with a
/// hash of `want` so that two different inputs never meet.
pub fn dns_label(want: &str) -> String {
    let s: String = want
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    if s == want && !s.is_empty() && s.len() <= 63 {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(63 - 9).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    if cut.is_empty() {
        format!("x-{}", short_hash(want))
    } else {
        format!("{cut}-{}", short_hash(want))
    }
}

fn key_for(file_name: &str) -> String {
    if valid_configmap_key(file_name) {
        return file_name.to_string();
    }
    let s: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    format!("f{}.{}", s.trim_start_matches('.'), short_hash(file_name))
}

/// `kong-plugin-<name>`, `kong-plugin-<name>-<dir>`.
fn configmap_name(plugin: &str, dir: &str) -> String {
    if dir.is_empty() {
        dns_label(&format!("kong-plugin-{plugin}"))
    } else {
        dns_label(&format!("kong-plugin-{plugin}-{dir}"))
    }
}

// ---------------------------------------------------------------------------------------
// ConfigMaps

/// Split the plugin into one ConfigMap per directory, refusing a directory over the
/// ConfigMap size limit before reading it.
pub fn configmap_layout(p: &Loaded) -> anyhow::Result<Vec<PluginConfigMap>> {
    let mut dirs: BTreeMap<String, Vec<&crate::tree::FileEntry>> = BTreeMap::new();
    for f in &p.files {
        let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        dirs.entry(dir.to_string()).or_default().push(f);
    }
    let mut out = Vec::new();
    for (dir, files) in dirs {
        let name = configmap_name(&p.name, &dir);
        let mut entries = Vec::new();
        let mut total = 0u64;
        for f in &files {
            let base = f.path.rsplit('/').next().unwrap_or(&f.path);
            let key = key_for(base);
            total += key.len() as u64 + f.size;
            entries.push((key, *f));
        }
        if total > MAX_CONFIGMAP_BYTES {
            crate::bail_kind!(
                Kind::Usage,
                "plugin {}: ConfigMap {name} ({}) would hold {total} bytes; Kubernetes refuses a \
                 ConfigMap over 1 MiB ({MAX_CONFIGMAP_BYTES} bytes). Use the init-container way \
                 instead: `kplug push` the plugin, then `kplug k8s init-container REF` \
                 (see docs/kubernetes.md)",
                p.name,
                if dir.is_empty() {
                    "the plugin's top directory".to_string()
                } else {
                    format!("{dir}/")
                }
            );
        }
        let entries = entries
            .into_iter()
            .map(|(key, f)| {
                Ok(CmEntry {
                    key,
                    path: f.path.clone(),
                    content: read_bounded(&p.dir.join(&f.path), f.size)?,
                    exec: f.mode & 0o111 != 0,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        out.push(PluginConfigMap { name, dir, entries });
    }
    Ok(out)
}

fn read_bounded(path: &std::path::Path, size: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("reading {}", path.display()))?
        .take(size + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 != size {
        anyhow::bail!("{} changed while it was being read", path.display());
    }
    Ok(buf)
}

/// The ConfigMap objects (`kubectl apply -f`).
pub fn render_configmaps(
    p: &Loaded,
    cms: &[PluginConfigMap],
    o: &PodOptions,
) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    for cm in cms {
        let mut data = Mapping::new();
        let mut binary = Mapping::new();
        for e in &cm.entries {
            match std::str::from_utf8(&e.content) {
                Ok(t) => data.insert(s(&e.key), s(t)),
                Err(_) => binary.insert(
                    s(&e.key),
                    s(base64::engine::general_purpose::STANDARD.encode(&e.content)),
                ),
            };
        }
        let mut ann = provenance(p);
        ann.push((
            "kplug/path",
            s(if cm.dir.is_empty() { "." } else { &cm.dir }),
        ));
        docs.push(obj(vec![
            ("apiVersion", s("v1")),
            ("kind", s("ConfigMap")),
            ("metadata", metadata(&cm.name, o, ann)),
            ("data", nonempty(data)),
            ("binaryData", nonempty(binary)),
        ]));
    }
    to_yaml(&docs)
}

/// The strategic-merge patch of the Kong Deployment for the ConfigMap way
/// (`kubectl patch deployment NAME --patch-file`): one projected volume whose `items`
/// rebuild the tree at `/opt/kong/plugins/<name>/`, and Kong's two variables.
pub fn render_configmap_patch(
    p: &Loaded,
    cms: &[PluginConfigMap],
    o: &PodOptions,
) -> anyhow::Result<String> {
    let sources = cms
        .iter()
        .map(|cm| {
            let items = cm
                .entries
                .iter()
                .map(|e| {
                    obj(vec![
                        ("key", s(&e.key)),
                        ("path", s(&e.path)),
                        (
                            "mode",
                            if e.exec {
                                Value::from(0o755)
                            } else {
                                Value::Null
                            },
                        ),
                    ])
                })
                .collect();
            obj(vec![(
                "configMap",
                obj(vec![
                    ("name", s(&cm.name)),
                    ("items", Value::Sequence(items)),
                ]),
            )])
        })
        .collect();
    let volume_name = configmap_name(&p.name, "");
    let volume = obj(vec![
        ("name", s(&volume_name)),
        (
            "projected",
            obj(vec![("sources", Value::Sequence(sources))]),
        ),
    ]);
    let kong = obj(vec![
        ("name", s(&o.container)),
        (
            "env",
            kong_env(
                &add_plugin(&o.kong_plugins, &p.name),
                &lua_package_path(std::path::Path::new(CONFIGMAP_ROOT)),
            ),
        ),
        (
            "volumeMounts",
            Value::Sequence(vec![mount(
                &volume_name,
                &format!("{CONFIGMAP_ROOT}/kong/plugins/{}", p.name),
                true,
            )]),
        ),
    ]);
    to_yaml(&[pod_patch(vec![
        ("volumes", Value::Sequence(vec![volume])),
        ("containers", Value::Sequence(vec![kong])),
    ])])
}

// ---------------------------------------------------------------------------------------
// init container

/// The `kplug install` init container: verifies `reference` with the mounted key, installs
/// into the shared emptyDir as uid 1000 on a read-only root filesystem.
fn init_container(name: &str, reference: &str, i: &InitOptions) -> Value {
    let args = [
        "install",
        reference,
        "--name",
        name,
        "--key",
        &format!("{KEYS_DIR}/{KEY_FILE}"),
        "--prefix",
        INIT_PREFIX,
        "--env-file",
        &format!("{INIT_PREFIX}/kplug.env"),
    ];
    let mut mounts = vec![
        mount(EMPTYDIR_VOLUME, INIT_PREFIX, false),
        mount(KEYS_VOLUME, KEYS_DIR, true),
    ];
    let mut env = Vec::new();
    if i.pull_secret.is_some() {
        mounts.push(mount(DOCKER_VOLUME, DOCKER_DIR, true));
        env.push(obj(vec![
            ("name", s("DOCKER_CONFIG")),
            ("value", s(DOCKER_DIR)),
        ]));
    }
    obj(vec![
        ("name", s(dns_label(&format!("kplug-install-{name}")))),
        ("image", s(&i.kplug_image)),
        (
            "args",
            Value::Sequence(args.iter().map(|a| s(*a)).collect()),
        ),
        (
            "env",
            if env.is_empty() {
                Value::Null
            } else {
                Value::Sequence(env)
            },
        ),
        (
            "securityContext",
            obj(vec![
                ("runAsNonRoot", Value::Bool(true)),
                ("runAsUser", Value::from(KONG_UID)),
                ("runAsGroup", Value::from(KONG_UID)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                ("allowPrivilegeEscalation", Value::Bool(false)),
                (
                    "capabilities",
                    obj(vec![("drop", Value::Sequence(vec![s("ALL")]))]),
                ),
                ("seccompProfile", obj(vec![("type", s("RuntimeDefault"))])),
            ]),
        ),
        ("volumeMounts", Value::Sequence(mounts)),
    ])
}

/// The emptyDir, the key volume and (with a pull secret) the docker config volume.
fn init_volumes(i: &InitOptions) -> Vec<Value> {
    let key_item = Value::Sequence(vec![obj(vec![("key", s(KEY_FILE)), ("path", s(KEY_FILE))])]);
    let key = match &i.key {
        KeySource::ConfigMap(n) => ("configMap", obj(vec![("name", s(n)), ("items", key_item)])),
        KeySource::Secret(n) => (
            "secret",
            obj(vec![("secretName", s(n)), ("items", key_item)]),
        ),
    };
    let mut v = vec![
        obj(vec![
            ("name", s(EMPTYDIR_VOLUME)),
            ("emptyDir", Value::Mapping(Mapping::new())),
        ]),
        obj(vec![("name", s(KEYS_VOLUME)), key]),
    ];
    if let Some(secret) = &i.pull_secret {
        v.push(obj(vec![
            ("name", s(DOCKER_VOLUME)),
            (
                "secret",
                obj(vec![
                    ("secretName", s(secret)),
                    (
                        "items",
                        Value::Sequence(vec![obj(vec![
                            ("key", s(".dockerconfigjson")),
                            ("path", s("config.json")),
                        ])]),
                    ),
                ]),
            ),
        ]));
    }
    v
}

/// The Deployment patch for the init-container way.
pub fn render_init_patch(
    name: &str,
    reference: &str,
    o: &PodOptions,
    i: &InitOptions,
) -> anyhow::Result<String> {
    let kong = obj(vec![
        ("name", s(&o.container)),
        (
            "env",
            kong_env(
                &add_plugin(&o.kong_plugins, name),
                &lua_package_path(std::path::Path::new(INIT_PREFIX)),
            ),
        ),
        (
            "volumeMounts",
            Value::Sequence(vec![mount(EMPTYDIR_VOLUME, INIT_PREFIX, true)]),
        ),
    ]);
    to_yaml(&[pod_patch(vec![
        (
            "initContainers",
            Value::Sequence(vec![init_container(name, reference, i)]),
        ),
        ("volumes", Value::Sequence(init_volumes(i))),
        ("containers", Value::Sequence(vec![kong])),
    ])])
}

// ---------------------------------------------------------------------------------------
// Helm `kong` chart values

/// `plugins.configMaps` for the chart: it mounts ConfigMap `name` at
/// `/opt/kong/plugins/<pluginName>/` without `items` (so keys must be the file names),
/// each `subdirectories[]` ConfigMap at `<that>/<path>`, and sets `KONG_PLUGINS` and
/// `KONG_LUA_PACKAGE_PATH` itself.
pub fn render_helm_configmaps(p: &Loaded, cms: &[PluginConfigMap]) -> anyhow::Result<String> {
    let volume = format!("kong-plugin-{}", p.name);
    if dns_label(&volume) != volume {
        crate::bail_kind!(
            Kind::Usage,
            "the kong chart would name the plugin's volume {volume:?}, not a valid Kubernetes \
             volume name (lower case letters, digits and '-', at most 63); use \
             `kplug k8s configmap --patch` or the init-container way"
        );
    }
    if let Some(e) = cms
        .iter()
        .flat_map(|c| &c.entries)
        .find(|e| !e.path.ends_with(&e.key))
    {
        crate::bail_kind!(
            Kind::Usage,
            "{:?} is not a valid ConfigMap key and the kong chart mounts plugin ConfigMaps \
             without items; use `kplug k8s configmap --patch` or the init-container way",
            e.path
        );
    }
    let (top, subs): (Vec<_>, Vec<_>) = cms.iter().partition(|c| c.dir.is_empty());
    let subdirs: Vec<Value> = subs
        .iter()
        .map(|c| obj(vec![("name", s(&c.name)), ("path", s(&c.dir))]))
        .collect();
    let entry = obj(vec![
        ("pluginName", s(&p.name)),
        (
            "name",
            s(&top
                .first()
                .context("the plugin has no top-level files")?
                .name),
        ),
        (
            "subdirectories",
            if subdirs.is_empty() {
                Value::Null
            } else {
                Value::Sequence(subdirs)
            },
        ),
    ]);
    to_yaml(&[obj(vec![(
        "plugins",
        obj(vec![("configMaps", Value::Sequence(vec![entry]))]),
    )])])
}

/// The chart's `deployment.initContainers` + `userDefinedVolumes` /
/// `userDefinedVolumeMounts` (the proxy container), and `env.plugins` /
/// `env.lua_package_path`. The chart's own `/opt` entries stay on the path.
pub fn render_helm_init(
    name: &str,
    reference: &str,
    o: &PodOptions,
    i: &InitOptions,
) -> anyhow::Result<String> {
    let path = format!(
        "{}{}",
        lua_package_path(std::path::Path::new(INIT_PREFIX)).trim_end_matches(';'),
        ";/opt/?.lua;/opt/?/init.lua;;"
    );
    to_yaml(&[obj(vec![
        (
            "deployment",
            obj(vec![
                (
                    "initContainers",
                    Value::Sequence(vec![init_container(name, reference, i)]),
                ),
                ("userDefinedVolumes", Value::Sequence(init_volumes(i))),
                (
                    "userDefinedVolumeMounts",
                    Value::Sequence(vec![mount(EMPTYDIR_VOLUME, INIT_PREFIX, true)]),
                ),
            ]),
        ),
        (
            "env",
            obj(vec![
                ("plugins", s(add_plugin(&o.kong_plugins, name))),
                ("lua_package_path", s(path)),
            ]),
        ),
    ])])
}

// ---------------------------------------------------------------------------------------
// KongPluginInstallation

/// What references the KongPluginInstallation.
#[derive(Debug, Clone)]
pub enum KpiTarget {
    /// `gateway-operator.konghq.com/v2beta1` GatewayConfiguration of this name.
    GatewayConfiguration(String),
    /// `gateway-operator.konghq.com/v1beta1` DataPlane of this name running this Kong image.
    DataPlane { name: String, kong_image: String },
}

/// A KongPluginInstallation for `image` and the GatewayConfiguration or DataPlane that
/// installs it. The KPI's name is the plugin name: the Operator mounts the files at
/// `/opt/kong/plugins/<KPI name>/`, and Kong requires `kong.plugins.<name>.handler`.
pub fn render_kpi(
    name: &str,
    image: &str,
    o: &PodOptions,
    pull_secret: Option<&str>,
    target: &KpiTarget,
) -> anyhow::Result<String> {
    if dns_label(name) != name {
        crate::bail_kind!(
            Kind::Usage,
            "plugin name {name:?} cannot name a KongPluginInstallation (the Operator loads the \
             plugin under the KPI's name, which must be lower case letters, digits and '-'); \
             use the init-container way"
        );
    }
    let kpi = obj(vec![
        ("apiVersion", s("gateway-operator.konghq.com/v1alpha1")),
        ("kind", s("KongPluginInstallation")),
        ("metadata", metadata(name, o, Vec::new())),
        (
            "spec",
            obj(vec![
                ("image", s(image)),
                (
                    "imagePullSecretRef",
                    pull_secret.map_or(Value::Null, |p| obj(vec![("name", s(p))])),
                ),
            ]),
        ),
    ]);
    let install = Value::Sequence(vec![obj(vec![("name", s(name))])]);
    let user = match target {
        KpiTarget::GatewayConfiguration(gc) => obj(vec![
            ("apiVersion", s("gateway-operator.konghq.com/v2beta1")),
            ("kind", s("GatewayConfiguration")),
            ("metadata", metadata(gc, o, Vec::new())),
            (
                "spec",
                obj(vec![(
                    "dataPlaneOptions",
                    obj(vec![("pluginsToInstall", install)]),
                )]),
            ),
        ]),
        KpiTarget::DataPlane {
            name: dp,
            kong_image,
        } => {
            let proxy = obj(vec![("name", s(&o.container)), ("image", s(kong_image))]);
            let template = obj(vec![(
                "spec",
                obj(vec![("containers", Value::Sequence(vec![proxy]))]),
            )]);
            obj(vec![
                ("apiVersion", s("gateway-operator.konghq.com/v1beta1")),
                ("kind", s("DataPlane")),
                ("metadata", metadata(dp, o, Vec::new())),
                (
                    "spec",
                    obj(vec![
                        ("deployment", obj(vec![("podTemplateSpec", template)])),
                        ("pluginsToInstall", install),
                    ]),
                ),
            ])
        }
    };
    to_yaml(&[kpi, user])
}

// ---------------------------------------------------------------------------------------
// YAML building blocks

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

/// A mapping in this order; `Null` values are left out.
fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(s(k), v);
        }
    }
    Value::Mapping(m)
}

fn nonempty(m: Mapping) -> Value {
    if m.is_empty() {
        Value::Null
    } else {
        Value::Mapping(m)
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> Value {
    obj(vec![
        ("name", s(name)),
        ("mountPath", s(path)),
        (
            "readOnly",
            if read_only {
                Value::Bool(true)
            } else {
                Value::Null
            },
        ),
    ])
}

fn kong_env(plugins: &str, path: &str) -> Value {
    Value::Sequence(vec![
        obj(vec![("name", s("KONG_PLUGINS")), ("value", s(plugins))]),
        obj(vec![
            ("name", s("KONG_LUA_PACKAGE_PATH")),
            ("value", s(path)),
        ]),
    ])
}

fn pod_patch(pod_spec: Vec<(&str, Value)>) -> Value {
    obj(vec![(
        "spec",
        obj(vec![("template", obj(vec![("spec", obj(pod_spec))]))]),
    )])
}

fn provenance(p: &Loaded) -> Vec<(&'static str, Value)> {
    let mut a = vec![("kplug/plugin", s(&p.name))];
    if let Some(v) = &p.version {
        a.push(("kplug/version", s(v)));
    }
    if let Some(r) = &p.pinned {
        a.push(("kplug/source", s(r)));
    }
    if let Some(k) = &p.signer {
        a.push(("kplug/signer", s(k)));
    }
    a
}

fn metadata(name: &str, o: &PodOptions, annotations: Vec<(&str, Value)>) -> Value {
    obj(vec![
        ("name", s(name)),
        ("namespace", o.namespace.as_deref().map_or(Value::Null, s)),
        (
            "labels",
            obj(vec![("app.kubernetes.io/managed-by", s("kplug"))]),
        ),
        (
            "annotations",
            if annotations.is_empty() {
                Value::Null
            } else {
                obj(annotations)
            },
        ),
    ])
}

/// Documents separated by `---`.
fn to_yaml(docs: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(d)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert_eq!(dns_label("kong-plugin-hello"), "kong-plugin-hello");
        let a = dns_label("kong-plugin-my_plugin");
        assert!(
            a.starts_with("kong-plugin-my-plugin-")
                && a.len() == "kong-plugin-my-plugin-".len() + 8,
            "{a}"
        );
        assert_ne!(
            dns_label("kong-plugin-a-b-c"),
            dns_label("kong-plugin-a-b/c")
        );
        let long = dns_label(&format!("kong-plugin-{}", "x".repeat(64)));
        assert!(long.len() <= 63, "{long}");
        for k in ["handler.lua", "000_base_x.lua", "a-b.c"] {
            assert!(valid_configmap_key(k));
            assert_eq!(key_for(k), k);
        }
        for k in ["a b.lua", "é.lua", "..x", "."] {
            assert!(!valid_configmap_key(k), "{k}");
            assert!(valid_configmap_key(&key_for(k)), "{k} -> {}", key_for(k));
        }
        assert_ne!(key_for("a b"), key_for("a\tb"));
    }
}
