//! `pack`: a plugin directory into a reproducible `<name>-<version>.tar.gz`.

use std::path::PathBuf;

use crate::node::plugin;

/// What `pack` asks for.
pub struct PackOptions {
    /// Plugin directory: bare, `kong/plugins/<name>/…`, or a LuaRocks tree.
    pub dir: PathBuf,
    /// Output file (default `<name>-<version>.tar.gz` in the current directory).
    pub output: Option<PathBuf>,
    pub name: Option<String>,
    pub version: Option<String>,
}

impl PackOptions {
    /// The same, writing the default file name into `dir`.
    pub fn into_dir(self, dir: &std::path::Path) -> PackOptions {
        PackOptions {
            output: Some(dir.to_path_buf()),
            ..self
        }
    }
}

/// Pack; an `output` that is a directory gets the default file name inside it.
pub fn pack(o: &PackOptions) -> anyhow::Result<plugin::Packed> {
    let src = plugin::locate(&o.dir, o.name.as_deref(), o.version.as_deref())?;
    let file = plugin::default_archive_name(&src.name, &src.version);
    let out = match &o.output {
        Some(d) if d.is_dir() => d.join(file),
        Some(f) => f.clone(),
        None => PathBuf::from(file),
    };
    plugin::pack(&src, &out)
}
