use clap::Args;

use super::Global;
use crate::oci::reference::Location;

#[derive(Args, Debug)]
pub struct TagsArgs {
    /// Repository (REGISTRY/REPO) or oci:DIR[:NAME].
    pub repository: String,
}

pub async fn run(g: &Global, a: TagsArgs) -> anyhow::Result<()> {
    let mut loc = crate::oci::reference::parse(&a.repository)?;
    // `oci:DIR:WORD` names a tag elsewhere (skopeo's form); listing tags, WORD is the name.
    if let Location::OciDir { name, tag, .. } | Location::OciArchive { name, tag, .. } = &mut loc {
        if name.is_none() {
            *name = tag.take();
        }
    }
    let store = crate::oci::store::open(&loc, &g.store_options(), false).await?;
    let tags = store.list_tags().await?;
    if g.json {
        return super::print_json(&tags);
    }
    for t in tags {
        println!("{t}");
    }
    Ok(())
}
