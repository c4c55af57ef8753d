//! Registry credentials: docker's config.json (`auths`, `credsStore`, `credHelpers`),
//! `REGISTRY_AUTH_FILE`, and `kplug login`/`logout` writing them back.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

/// The key docker uses for Docker Hub in config.json.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Where credentials are read from and written to: `REGISTRY_AUTH_FILE` (podman/skopeo),
/// else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .unwrap_or_else(|| PathBuf::from(".docker"));
    dir.join("config.json")
}

/// The config.json key for a registry host.
pub fn server_key(registry: &str) -> String {
    if registry == "docker.io" || registry == "index.docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Credentials for `registry`, or anonymous when none are configured.
pub fn credentials_for(registry: &str) -> anyhow::Result<RegistryAuth> {
    let path = config_path();
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) => return Ok(RegistryAuth::Anonymous),
    };
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(f), &server_key(registry)) {
        Ok(DockerCredential::UsernamePassword(u, p)) => Ok(RegistryAuth::Basic(u, p)),
        Ok(DockerCredential::IdentityToken(_)) => {
            tracing::warn!(
                "{}: identity tokens for {registry} are not supported; continuing anonymously (use `kplug login` with a password or access token)",
                path.display()
            );
            Ok(RegistryAuth::Anonymous)
        }
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        Err(e) => Err(crate::error::fail(
            crate::error::Kind::Auth,
            format!(
                "reading credentials for {registry} from {}: {e}; fix the file or run `kplug login {registry}`",
                path.display()
            ),
        )),
    }
}

fn load_config() -> anyhow::Result<(PathBuf, serde_json::Map<String, serde_json::Value>)> {
    let path = config_path();
    let map = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok((path, map))
}

fn save_config(
    path: &std::path::Path,
    map: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let mut bytes = serde_json::to_vec_pretty(map)?;
    bytes.push(b'\n');
    // Created 0600 from the start: the file holds credentials.
    crate::tree::write_atomic_mode(path, &bytes, crate::tree::SECRET_MODE)?;
    Ok(())
}

/// The credential helper configured for a server, if any (`credHelpers` wins over `credsStore`).
fn helper_for(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    map.get("credHelpers")
        .and_then(|h| h.get(key))
        .or_else(|| map.get("credsStore"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn run_helper(helper: &str, verb: &str, input: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let prog = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&prog)
        .arg(verb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running credential helper {prog}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "credential helper {prog} {verb} failed: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Record credentials for `registry` the way `docker login` does.
pub fn store_credentials(registry: &str, user: &str, password: &str) -> anyhow::Result<PathBuf> {
    let key = server_key(registry);
    let (path, mut map) = load_config()?;
    if let Some(helper) = helper_for(&map, &key) {
        let input =
            serde_json::json!({"ServerURL": key, "Username": user, "Secret": password}).to_string();
        run_helper(&helper, "store", &input)?;
        return Ok(path);
    }
    let auths = map
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .context("config.json: `auths` is not an object")?;
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    auths.insert(key, serde_json::json!({ "auth": enc }));
    save_config(&path, &map)?;
    Ok(path)
}

/// Forget credentials for `registry`. Returns whether anything was removed.
pub fn remove_credentials(registry: &str) -> anyhow::Result<bool> {
    let key = server_key(registry);
    let (path, mut map) = load_config()?;
    if let Some(helper) = helper_for(&map, &key) {
        run_helper(&helper, "erase", &key)?;
        return Ok(true);
    }
    let removed = map
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .map(|a| a.remove(&key).is_some())
        .unwrap_or(false);
    if removed {
        save_config(&path, &map)?;
    }
    Ok(removed)
}
