use clap::Args;

use super::{Global, Printer};

#[derive(Args, Debug)]
pub struct TagsArgs {
    /// Repository (REGISTRY/REPO), oci:DIR or oci-archive:FILE (every REF in it), or
    /// oci:DIR:NAME (the tags stored as NAME:TAG).
    pub repository: String,
}

pub async fn run(g: &Global, out: &Printer, a: TagsArgs) -> anyhow::Result<()> {
    let tags = crate::ops::tags::list_tags(&a.repository, &g.store_options()).await?;
    out.result(&tags, |t| {
        for tag in &tags {
            t.line(tag);
        }
    })
}
