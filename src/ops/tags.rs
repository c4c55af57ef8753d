//! `list-tags`: the tags of a registry repository or of a name in an OCI layout.

use crate::oci::reference::Location;
use crate::oci::store;

pub async fn list_tags(repository: &str, opts: &store::Options) -> anyhow::Result<Vec<String>> {
    let mut loc = crate::oci::reference::parse(repository)?;
    // `oci:DIR:WORD` names a tag elsewhere (skopeo's form); listing tags, WORD is the name.
    if let Location::OciDir { name, tag, .. } | Location::OciArchive { name, tag, .. } = &mut loc {
        if name.is_none() {
            *name = tag.take();
        }
    }
    let st = store::open(&loc, opts).await?;
    Ok(st.list_tags().await?)
}
