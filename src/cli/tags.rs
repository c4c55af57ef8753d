use clap::Args;

use super::Global;

#[derive(Args, Debug)]
pub struct TagsArgs {
    /// Repository (REGISTRY/REPO) or oci:DIR[:NAME].
    pub repository: String,
}

pub async fn run(g: &Global, a: TagsArgs) -> anyhow::Result<()> {
    let (_, store) = super::open(g, &a.repository, false).await?;
    let tags = store.list_tags().await?;
    if g.json {
        return super::print_json(&tags);
    }
    for t in tags {
        println!("{t}");
    }
    Ok(())
}
