//! `completion` and `man`: generated from the clap definitions, so they never drift from
//! what kplug accepts.

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::Printer;
use crate::error::Kind;

#[derive(Args, Debug)]
#[command(after_help = "\
Install:
  bash:        kplug completion bash > /etc/bash_completion.d/kplug
  zsh:         kplug completion zsh > \"${fpath[1]}/_kplug\"
  fish:        kplug completion fish > ~/.config/fish/completions/kplug.fish
  powershell:  kplug completion powershell >> $PROFILE")]
pub struct CompletionArgs {
    /// Shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Install:  sudo kplug man --output-dir /usr/local/share/man/man1 && man kplug")]
pub struct ManArgs {
    /// Write kplug.1 and one kplug-<verb>.1 page per verb into this directory (else
    /// kplug.1 on stdout).
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ManReport {
    output_dir: PathBuf,
    pages: Vec<String>,
}

pub fn completion(a: CompletionArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "kplug", &mut std::io::stdout());
    Ok(())
}

pub fn man(out: &Printer, a: ManArgs) -> anyhow::Result<()> {
    let cmd = super::Cli::command();
    let Some(dir) = a.output_dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    if !dir.is_dir() {
        crate::bail_kind!(
            Kind::Usage,
            "{} is not a directory (create it first)",
            dir.display()
        );
    }
    clap_mangen::generate_to(cmd.clone(), &dir)
        .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", dir.display()))?;
    let mut pages = vec!["kplug.1".to_string()];
    pages.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("kplug-{}.1", s.get_name())),
    );
    crate::progress::note(format!(
        "wrote {} man pages into {}",
        pages.len(),
        dir.display()
    ));
    out.result(
        &ManReport {
            output_dir: dir.clone(),
            pages,
        },
        |_| {},
    )
}
