//! The three kinds of plugin artifact — a Lua tree (tar/tar.gz), a LuaRocks rock (zip),
//! a plugin server (a tar with `kplug-server.json`) — told apart and handed to the module
//! that knows each: [`unpack`], [`rock`], [`external`]. The same dispatch for what is
//! installed: `list`, `uninstall` and `rollback` of a Lua plugin go to [`state`], of a
//! plugin server to [`external`]. Nothing below this module knows about the others.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bail_kind;
use crate::error::{fail, Kind};
use crate::node::limits::Limits;
use crate::node::state::{self, Broken, Listed, Prefix, Uninstalled};
use crate::node::unpack::{self, sniff, unpack_file, ExtractedPlugin, Format, NameHints};
use crate::node::{external, rock};

/// Everything one artifact unpacked to.
#[derive(Debug)]
pub struct Extracted {
    /// Lua plugins, each in `staging/<name>` (several only from a rock).
    pub plugins: Vec<ExtractedPlugin>,
    /// What a rock carried besides the plugins.
    pub rock: Option<rock::RockReport>,
    /// An external plugin server (then `plugins` is empty).
    pub server: Option<external::StagedServer>,
}

/// Unpack the artifact file at `path` whatever it is: a tar/tar.gz plugin tree, a rock
/// (`.all.rock`, or a `.src.rock` of a pure-Lua tree), or an external plugin server
/// (a tar with `kplug-server.json`). `lua_dirs` are searched for the modules a rock
/// carries besides its plugins, to say whether they are installed.
pub fn extract_file(
    path: &Path,
    staging: &Path,
    limits: &Limits,
    hints: &NameHints,
    lua_dirs: &[PathBuf],
) -> Result<Extracted> {
    let raw = staging.join("raw");
    std::fs::create_dir(&raw).with_context(|| format!("creating {}", raw.display()))?;
    if sniff(path)? == Format::Zip {
        let all = unpack_file(path, &raw, limits)?;
        let (plugins, report) = rock::from_unpacked(&raw, all, staging, hints, lua_dirs, limits)?;
        return Ok(Extracted {
            plugins,
            rock: Some(report),
            server: None,
        });
    }
    let all = unpack_file(path, &raw, limits)?;
    if raw.join(external::MANIFEST).is_file() {
        let server = external::stage(&raw, all, staging, hints)?;
        return Ok(Extracted {
            plugins: vec![],
            rock: None,
            server: Some(server),
        });
    }
    let p = unpack::plugin_from_tree(&raw, all, staging, hints, limits)?;
    Ok(Extracted {
        plugins: vec![p],
        rock: None,
        server: None,
    })
}

/// [`extract_file`] for the verbs that take one Lua plugin (`pull`, `install`): a tar or a
/// rock; a rock with several plugins needs `name_hint` to pick one; a plugin-server
/// artifact is refused (its install is [`external::install`]).
pub fn extract_plugin_file(
    path: &Path,
    staging: &Path,
    limits: &Limits,
    name_hint: Option<&str>,
) -> Result<ExtractedPlugin> {
    let mut ex = extract_file(path, staging, limits, &NameHints::from_repo(name_hint), &[])?;
    if let Some(s) = ex.server {
        bail_kind!(
            Kind::Usage,
            "this artifact is the external plugin server {0}, not a Lua plugin tree or rock, \
             which is all `pull` unpacks: install it on the node with `kplug install REF \
             [--bin-dir DIR] [--enable]` (it checks the server by running its query \
             command), or fetch the artifact file as is with `oras pull REF`",
            s.manifest.name
        );
    }
    if let Some(r) = &ex.rock {
        for n in r.notes() {
            crate::progress::note(n);
        }
    }
    let pick = match ex.plugins.len() {
        1 => 0,
        _ => match name_hint.and_then(|h| ex.plugins.iter().position(|p| p.name == h)) {
            Some(i) => i,
            None => bail_kind!(
                Kind::Usage,
                "the rock holds several plugins: {}; choose one with --name",
                ex.plugins
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    Ok(ex.plugins.swap_remove(pick))
}

/// What [`check_file`] found in an artifact about to be published.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    /// `lua`, `rock` or `server`.
    pub kind: &'static str,
    pub names: Vec<String>,
    pub version: Option<String>,
    /// What a rock carries besides its plugins.
    pub notes: Vec<String>,
}

/// Check a file the way every node will before it is published (`push`): unpack it in
/// a scratch directory through the same gate and limits as `install`, and run the same
/// plugin checks. Nothing is kept.
pub fn check_file(path: &Path, limits: &Limits, hints: &NameHints) -> Result<Checked> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let ex = extract_file(path, scratch.path(), limits, hints, &[]).map_err(|e| {
        let kind = crate::error::kind_of(&e);
        fail(
            kind,
            format!("{}: every node would refuse it: {e:#}", path.display()),
        )
    })?;
    let (kind, names, version) = match (&ex.server, &ex.rock) {
        (Some(s), _) => (
            "server",
            vec![s.manifest.name.clone()],
            s.manifest.version.clone(),
        ),
        (None, rock) => (
            if rock.is_some() { "rock" } else { "lua" },
            ex.plugins.iter().map(|p| p.name.clone()).collect(),
            ex.plugins.first().and_then(|p| p.version.clone()),
        ),
    };
    Ok(Checked {
        kind,
        names,
        version,
        notes: ex.rock.map(|r| r.notes()).unwrap_or_default(),
    })
}

/// `rollback` of a Lua plugin or a plugin server. The caller holds the lock.
pub fn rollback(prefix: &Prefix, name: &str, force: bool) -> Result<()> {
    match external::read_server(prefix, name)? {
        Some(_) => external::rollback(prefix, name, force),
        None => state::rollback(prefix, name, force),
    }
}

/// `uninstall` of a Lua plugin or a plugin server. The caller holds the lock.
pub fn uninstall(prefix: &Prefix, name: &str) -> Result<Uninstalled> {
    let is_server = state::read_receipt(prefix, name)?.is_some()
        && external::read_server(prefix, name)?.is_some();
    if !is_server {
        return state::uninstall(prefix, name);
    }
    let leftovers = external::uninstall(prefix, name)?;
    std::fs::remove_file(prefix.receipt_path(name))?;
    Ok(Uninstalled {
        leftovers,
        original: None,
    })
}

/// Every installed plugin with its integrity: a Lua plugin's tree, or a plugin server's
/// files, against its receipt; and the receipts that cannot be trusted.
pub fn list_checked(prefix: &Prefix) -> Result<(Vec<Listed>, Vec<Broken>)> {
    let (mut listed, broken) = state::list_checked(prefix)?;
    for l in &mut listed {
        if let Some(server) = external::read_server(prefix, &l.receipt.name)? {
            (l.modified, l.missing) = external::verify(&server);
        }
    }
    Ok((listed, broken))
}

/// [`list_checked`], failing on the first receipt that cannot be trusted.
pub fn list(prefix: &Prefix) -> Result<Vec<Listed>> {
    let (listed, broken) = list_checked(prefix)?;
    if let Some(b) = broken.first() {
        return Err(fail(Kind::Integrity, b.error.clone()));
    }
    Ok(listed)
}
