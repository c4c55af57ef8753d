use std::io::Read;

use clap::Args;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use super::Global;
use crate::error::{fail, Kind};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host (e.g. ghcr.io, registry.example.com:5000).
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password from stdin (the only way: it never appears in `ps` or history).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    pub registry: String,
}

pub async fn run(g: &Global, a: LoginArgs) -> anyhow::Result<()> {
    if !a.password_stdin {
        crate::bail_kind!(Kind::Usage, "pass the password on stdin with --password-stdin (e.g. `echo \"$TOKEN\" | kplug login {} -u {} --password-stdin`)", a.registry, a.username);
    }
    let mut pw = String::new();
    std::io::stdin().read_to_string(&mut pw)?;
    let pw = pw.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        crate::bail_kind!(Kind::Usage, "empty password on stdin");
    }
    let registry = a
        .registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let registry = if registry == "index.docker.io" {
        "docker.io"
    } else {
        registry
    };
    check_credentials(g, registry, &a.username, &pw).await?;
    let path = crate::oci::auth::store_credentials(registry, &a.username, &pw)?;
    crate::progress::note(format!(
        "Login Succeeded (credentials stored in {})",
        path.display()
    ));
    Ok(())
}

/// Ask the registry whether the credentials work, as `docker login` does with `GET /v2/`.
async fn check_credentials(g: &Global, registry: &str, user: &str, pw: &str) -> anyhow::Result<()> {
    let host = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    let client = crate::oci::store::remote::client_for(host, &g.store_options())?;
    let auth = RegistryAuth::Basic(user.to_string(), pw.to_string());
    // A token registry validates the password at its token endpoint; a basic-auth one
    // only on a real request, so probe a tag list (404 = authenticated but no such repo).
    let probe = Reference::with_tag(
        registry.to_string(),
        "kplug/login-probe".into(),
        "latest".into(),
    );
    client
        .auth(&probe, &auth, RegistryOperation::Pull)
        .await
        .map_err(|e| crate::oci::store::remote::map_err(e, &format!("logging in to {registry}")))?;
    match client.list_tags(&probe, &auth, Some(1), None).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = crate::oci::store::remote::map_err(
                e,
                &format!("logging in to {registry} as {user}"),
            );
            match crate::error::kind_of(&e) {
                Kind::NotFound => Ok(()),
                Kind::Auth => Err(fail(Kind::Auth, format!("{e:#}"))),
                _ => Err(e),
            }
        }
    }
}

pub async fn logout(_g: &Global, a: LogoutArgs) -> anyhow::Result<()> {
    if crate::oci::auth::remove_credentials(&a.registry)? {
        crate::progress::note(format!("Removed login credentials for {}", a.registry));
    } else {
        crate::progress::note(format!("Not logged in to {}", a.registry));
    }
    Ok(())
}
