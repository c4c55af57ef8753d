use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::Global;
use crate::error::Kind;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Source: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME:TAG], oci-archive:FILE[:TAG], docker-archive:FILE.
    pub reference: String,
    /// Write the plugin archive to this file (default: its title, or <repo>-<tag>.tar.gz).
    #[arg(short, long, conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Unpack the plugin into DIR/kong/plugins/<name>/ (hostile-archive rules apply).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Plugin name for archives that hold bare files (default: the repository's last component).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Most files an archive may unpack to.
    #[arg(long, default_value_t = crate::node::unpack::Limits::default().max_files)]
    pub max_files: u64,
    /// Most bytes an archive may unpack to.
    #[arg(long, default_value_t = crate::node::unpack::Limits::default().max_total_bytes)]
    pub max_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> crate::node::unpack::Limits {
        crate::node::unpack::Limits {
            max_files: self.max_files,
            max_total_bytes: self.max_bytes,
            ..Default::default()
        }
    }
}

pub async fn run(g: &Global, a: PullArgs) -> anyhow::Result<()> {
    let (loc, store) = super::open(g, &a.reference, false).await?;
    let (bytes, desc) = crate::oci::store::fetch_resolved(store.as_ref(), &loc).await?;
    let what = loc.pinned(&desc.digest);
    let r = crate::oci::artifact::resolve_plugin(store.as_ref(), &bytes, &desc, &what).await?;
    match &a.output_dir {
        None => {
            let out = a.output.clone().unwrap_or_else(|| {
                PathBuf::from(crate::oci::artifact::default_file_name(
                    &r.layer,
                    &loc.repo_name(),
                    loc.tag(),
                ))
            });
            crate::oci::store::fetch_blob_to_file(store.as_ref(), &r.layer, &out).await?;
            if g.json {
                return super::print_json(&serde_json::json!({
                    "reference": what, "digest": desc.digest, "layer": r.layer, "path": out,
                }));
            }
            println!("{}", out.display());
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let staging = tempfile::Builder::new()
                .prefix(".kplug-pull-")
                .tempdir_in(dir)?;
            let blob = staging.path().join("blob");
            crate::oci::store::fetch_blob_to_file(store.as_ref(), &r.layer, &blob).await?;
            let hint = a
                .name
                .clone()
                .or_else(|| crate::oci::artifact::name_hint(&loc.repo_name()));
            let ex = extract_blob(&blob, staging.path(), a.limits.limits(), hint).await?;
            let target = dir.join("kong/plugins").join(&ex.name);
            if target.exists() {
                crate::bail_kind!(
                    Kind::Usage,
                    "{} already exists; remove it, pull into an empty directory, or use `kplug install` to replace plugins atomically",
                    target.display()
                );
            }
            std::fs::create_dir_all(target.parent().expect("has parent"))?;
            std::fs::rename(&ex.dir, &target)
                .with_context(|| format!("moving into {}", target.display()))?;
            if g.json {
                return super::print_json(&serde_json::json!({
                    "reference": what, "digest": desc.digest, "name": ex.name, "version": ex.version,
                    "dir": target, "files": ex.files,
                }));
            }
            for f in &ex.files {
                println!("{}", target.join(&f.path).display());
            }
        }
    }
    Ok(())
}

/// Unpack a downloaded plugin archive into `staging/x` off the async runtime (the unpack
/// is blocking file I/O), whatever layout it uses.
pub async fn extract_blob(
    blob: &std::path::Path,
    staging: &std::path::Path,
    limits: crate::node::unpack::Limits,
    name_hint: Option<String>,
) -> anyhow::Result<crate::node::unpack::ExtractedPlugin> {
    let stage = staging.join("x");
    std::fs::create_dir(&stage)?;
    let blob = blob.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&blob)?;
        crate::node::unpack::extract_plugin(
            std::io::BufReader::new(f),
            &stage,
            &limits,
            name_hint.as_deref(),
        )
    })
    .await?
}
