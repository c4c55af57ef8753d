//! Registry credentials and authentication challenges.
//!
//! Credentials come from docker's config.json (`auths`, `credsStore`, `credHelpers`) or
//! `REGISTRY_AUTH_FILE`; `kplug login`/`logout` write them back under a lock beside the
//! file, so that concurrent logins do not lose each other's entries. Credential helpers
//! are run here, never echoing what they print (a failing helper may print the secret).
//! [`Challenge`] parses `WWW-Authenticate` (RFC 7235) as registries send it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;

use crate::error::{fail, Kind};

/// The key docker uses for Docker Hub in config.json.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// What to present to a registry (or its token server).
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
        }
    }
}

impl Credential {
    pub fn basic(user: &str, password: &str) -> Credential {
        Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        match self {
            Credential::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        }
    }
}

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

/// `https://host/v1/` → `host`, as docker matches `auths` keys.
fn key_host(key: &str) -> &str {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    k.split('/').next().unwrap_or(k)
}

/// Credentials for `registry`, or `None` (anonymous) when none are configured.
pub fn credentials_for(registry: &str) -> anyhow::Result<Option<Credential>> {
    let path = config_path();
    let map = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).map_err(
            |e| {
                fail(
                    Kind::Auth,
                    format!(
                        "{} is not valid JSON ({e}); fix it or run `kplug login {registry}`",
                        path.display()
                    ),
                )
            },
        )?,
        Err(_) => return Ok(None),
    };
    let key = server_key(registry);
    if let Some(helper) = helper_for(&map, &key) {
        return helper_get(&helper, &key);
    }
    let Some(entry) = map.get("auths").and_then(|a| a.as_object()).and_then(|a| {
        a.get(&key).or_else(|| {
            a.iter()
                .find(|(k, _)| key_host(k) == key_host(&key))
                .map(|e| e.1)
        })
    }) else {
        return Ok(None);
    };
    auth_entry(entry).map_err(|why| {
        fail(
            Kind::Auth,
            format!(
                "{}: the entry for {registry} {why}; run `kplug login {registry}` again",
                path.display()
            ),
        )
    })
}

/// One `auths` entry: `auth` (base64 `user:password`) or `username`/`password`.
fn auth_entry(entry: &serde_json::Value) -> Result<Option<Credential>, &'static str> {
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(a) = s("auth") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| "has an `auth` value that is not base64")?;
        let text = String::from_utf8(raw).map_err(|_| "has an `auth` value that is not UTF-8")?;
        let (u, p) = text
            .split_once(':')
            .ok_or("has an `auth` value that is not user:password")?;
        return Ok(Some(Credential::basic(u, p)));
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok(Some(Credential::basic(u, p)));
    }
    if s("identitytoken").is_some() {
        tracing::warn!("identity tokens are not supported; continuing anonymously (use `kplug login` with a password or access token)");
    }
    Ok(None)
}

/// The credential helper configured for a server, if any (`credHelpers` wins over `credsStore`).
fn helper_for(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    map.get("credHelpers")
        .and_then(|h| h.get(key).or_else(|| h.get(key_host(key))))
        .or_else(|| map.get("credsStore"))
        .and_then(|v| v.as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// What a helper printed on success; on failure only its name and exit status are told:
/// its output may hold the secret.
fn run_helper(helper: &str, verb: &str, input: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let prog = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&prog)
        .arg(verb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(
                Kind::Auth,
                format!(
                    "cannot run credential helper {prog} (configured in {}): {e}",
                    config_path().display()
                ),
            )
        })?;
    // A helper that exits without reading stdin is reported by its status below.
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes());
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    // docker's helpers say "credentials not found" on stdout for an unknown server.
    if verb == "get" && String::from_utf8_lossy(&out.stdout).contains("credentials not found") {
        return Ok(Vec::new());
    }
    let status = match out.status.code() {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_string(),
    };
    Err(fail(
        Kind::Auth,
        format!("credential helper {prog} {verb} failed ({status}); its output is not shown because it may contain secrets"),
    ))
}

fn helper_get(helper: &str, key: &str) -> anyhow::Result<Option<Credential>> {
    let out = run_helper(helper, "get", key)?;
    if out.is_empty() {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        username: String,
        secret: String,
    }
    let r: Reply = serde_json::from_slice(&out).map_err(|_| {
        fail(
            Kind::Auth,
            format!("credential helper docker-credential-{helper} get answered something that is not its JSON (not shown: it may contain secrets)"),
        )
    })?;
    if r.username == "<token>" {
        tracing::warn!("docker-credential-{helper} holds an identity token for {key}; identity tokens are not supported, continuing anonymously");
        return Ok(None);
    }
    Ok(Some(Credential::basic(&r.username, &r.secret)))
}

/// config.json read, changed and written back under an exclusive lock on a `.lock` file
/// beside it (the file itself is replaced by a rename, so it cannot carry the lock).
fn edit_config<T>(
    change: impl FnOnce(
        &Path,
        &mut serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<(T, bool)>,
) -> anyhow::Result<T> {
    let path = config_path();
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let lock_path = path.with_file_name(lock_name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut map = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (out, dirty) = change(&path, &mut map)?;
    if dirty {
        let mut bytes = serde_json::to_vec_pretty(&map)?;
        bytes.push(b'\n');
        // Created 0600 from the start: the file holds credentials.
        crate::tree::write_atomic_mode(&path, &bytes, crate::tree::SECRET_MODE)?;
    }
    drop(lock);
    Ok(out)
}

/// Record credentials for `registry` the way `docker login` does.
pub fn store_credentials(registry: &str, user: &str, password: &str) -> anyhow::Result<PathBuf> {
    let key = server_key(registry);
    edit_config(|path, map| {
        if let Some(helper) = helper_for(map, &key) {
            let input = serde_json::json!({"ServerURL": key, "Username": user, "Secret": password})
                .to_string();
            run_helper(&helper, "store", &input)?;
            return Ok((path.to_path_buf(), false));
        }
        let auths = map
            .entry("auths")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .context("config.json: `auths` is not an object")?;
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        auths.insert(key.clone(), serde_json::json!({ "auth": enc }));
        Ok((path.to_path_buf(), true))
    })
}

/// Forget credentials for `registry`. Returns whether anything was removed.
pub fn remove_credentials(registry: &str) -> anyhow::Result<bool> {
    let key = server_key(registry);
    edit_config(|_, map| {
        if let Some(helper) = helper_for(map, &key) {
            run_helper(&helper, "erase", &key)?;
            return Ok((true, false));
        }
        let removed = map
            .get_mut("auths")
            .and_then(|a| a.as_object_mut())
            .map(|a| a.remove(&key).is_some())
            .unwrap_or(false);
        Ok((removed, removed))
    })
}

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// Docker's token flow: get a token from `realm` for `service` and a scope.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// The first challenge kplug can answer in a `WWW-Authenticate` value (Bearer over
    /// Basic when both are offered).
    pub fn parse(header: &str) -> Option<Challenge> {
        let mut basic = false;
        for (scheme, params) in parse_challenges(header) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                if let Some(realm) = get("realm") {
                    return Some(Challenge::Bearer {
                        realm,
                        service: get("service"),
                        scope: get("scope"),
                    });
                }
            } else if scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
        basic.then_some(Challenge::Basic)
    }
}

/// RFC 7235 challenges: `scheme k=v, k="quoted, with \"escapes\"", scheme2 …`.
fn parse_challenges(s: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize, set: &[u8]| {
        while *i < b.len() && set.contains(&b[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && !b" \t,=\"".contains(&b[*i]) {
            *i += 1;
        }
        s[start..*i].to_string()
    };
    while i < b.len() {
        skip(&mut i, b" \t,");
        let word = token(&mut i);
        if word.is_empty() {
            i += 1;
            continue;
        }
        skip(&mut i, b" \t");
        if i < b.len() && b[i] == b'=' && !out.is_empty() {
            i += 1;
            skip(&mut i, b" \t");
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = s[i..].chars().next().unwrap_or('?');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            out.last_mut().expect("checked").1.push((word, value));
        } else {
            out.push((word, Vec::new()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="kplug-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="a, b", Bearer realm=https://t/x, service="s \"q\"""#),
            Some(Challenge::Bearer {
                realm: "https://t/x".into(),
                service: Some("s \"q\"".into()),
                scope: None,
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn auths_entries() {
        let e =
            serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode("u:p:q")});
        assert_eq!(auth_entry(&e).unwrap(), Some(Credential::basic("u", "p:q")));
        let e = serde_json::json!({"username": "u", "password": "p"});
        assert_eq!(auth_entry(&e).unwrap(), Some(Credential::basic("u", "p")));
        assert!(auth_entry(&serde_json::json!({"auth": "%%"})).is_err());
        assert_eq!(key_host("https://index.docker.io/v1/"), "index.docker.io");
    }
}
