//! `login` / `logout`: credentials in docker's `config.json`, checked against the registry
//! before they are stored.

use std::path::PathBuf;

use crate::error::Kind;
use crate::oci::store;

/// What `login` asks for.
pub struct LoginOptions {
    pub registry: String,
    pub username: String,
    pub password: String,
    pub store: store::Options,
}

/// Where the credentials went.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginReport {
    pub registry: String,
    pub config: PathBuf,
}

pub async fn login(o: &LoginOptions) -> anyhow::Result<LoginReport> {
    if o.password.is_empty() {
        crate::bail_kind!(Kind::Usage, "empty password on stdin");
    }
    let registry = normalize(&o.registry);
    store::remote::check_credentials(&registry, &o.username, &o.password, &o.store).await?;
    let config = crate::oci::auth::store_credentials(&registry, &o.username, &o.password)?;
    Ok(LoginReport { registry, config })
}

/// What `logout` did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogoutReport {
    pub registry: String,
    /// False when there were no credentials for it.
    pub removed: bool,
}

pub fn logout(registry: &str) -> anyhow::Result<LogoutReport> {
    let registry = normalize(registry);
    let removed = crate::oci::auth::remove_credentials(&registry)?;
    Ok(LogoutReport { registry, removed })
}

/// `https://index.docker.io/` → `docker.io`; a scheme and trailing slash are dropped.
fn normalize(registry: &str) -> String {
    let r = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match r {
        "index.docker.io" => "docker.io".to_string(),
        r => r.to_string(),
    }
}
