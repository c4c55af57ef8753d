use std::io::Read;

use clap::Args;

use super::{Global, Printer};
use crate::error::Kind;
use crate::ops::login::{self, LoginOptions};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host (e.g. ghcr.io, registry.example.com:5000).
    pub registry: String,
    /// User name (for a token, what the registry expects, e.g. your user on ghcr.io).
    #[arg(short, long)]
    pub username: String,
    /// Read the password from stdin (the only way: it never appears in `ps` or history).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host whose credentials to remove, as given to `kplug login`.
    pub registry: String,
}

pub async fn run(g: &Global, out: &Printer, a: LoginArgs) -> anyhow::Result<()> {
    if !a.password_stdin {
        crate::bail_kind!(Kind::Usage, "pass the password on stdin with --password-stdin (e.g. `echo \"$TOKEN\" | kplug login {} -u {} --password-stdin`)", a.registry, a.username);
    }
    let mut pw = String::new();
    std::io::stdin().read_to_string(&mut pw)?;
    let o = LoginOptions {
        registry: a.registry,
        username: a.username,
        password: pw.trim_end_matches(['\n', '\r']).to_string(),
        store: g.store_options(),
    };
    let r = login::login(&o).await?;
    crate::progress::note(format!(
        "Login Succeeded (credentials stored in {})",
        r.config.display()
    ));
    if out.is_json() {
        return out.json_value(&r);
    }
    Ok(())
}

pub async fn logout(out: &Printer, a: LogoutArgs) -> anyhow::Result<()> {
    let r = login::logout(&a.registry)?;
    crate::progress::note(match r.removed {
        true => format!("Removed login credentials for {}", r.registry),
        false => format!("Not logged in to {}", r.registry),
    });
    if out.is_json() {
        return out.json_value(&r);
    }
    Ok(())
}
