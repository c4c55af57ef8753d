//! The entry gate every archive reader (tar, tar.gz, zip/rock) passes each entry through
//! before a byte is written: one function per refusal class, one entry point
//! ([`Gate::admit`]). A refused entry is an error of kind `Unsafe` that names the entry
//! escaped (control characters never reach the terminal raw).

use std::collections::HashMap;

use anyhow::Result;

use crate::error::{fail, Kind};
use crate::node::limits::Limits;
use crate::node::names::escape;

/// What an archive says an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// Anything else, described (`"entry type 'V'"`, `"a socket"`).
    Other(String),
}

/// An entry as read from the archive, untrusted.
#[derive(Debug, Clone)]
pub struct RawEntry<'a> {
    pub name: &'a [u8],
    pub kind: EntryKind,
    /// Permission bits, with setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// Declared size of the data.
    pub size: u64,
}

/// An entry the gate let through: a clean relative path, and the mode to write it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// `/`-joined components, none empty, `.` or `..`.
    pub rel: String,
    pub is_dir: bool,
    /// 0o755 for directories and executables, else 0o644.
    pub mode: u32,
    pub size: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    /// Created as the parent of an entry, not listed itself (yet).
    ImplicitDir,
    Dir,
}

/// Per-archive state: paths seen, counts and bytes so far.
pub struct Gate {
    limits: Limits,
    nodes: HashMap<String, Node>,
    count: u64,
    total: u64,
}

impl Gate {
    pub fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            nodes: HashMap::new(),
            count: 0,
            total: 0,
        }
    }

    /// Admit or refuse one entry. `Ok(None)`: the entry is the destination itself (`./`).
    pub fn admit(&mut self, e: &RawEntry) -> Result<Option<Admitted>> {
        let refuse = |why: String| {
            fail(
                Kind::Unsafe,
                format!("archive entry \"{}\" refused: {why}", escape(e.name)),
            )
        };
        let name = check_name(e.name).map_err(refuse)?;
        let is_dir = check_kind(&e.kind, name).map_err(refuse)?;
        let rel = check_path(name).map_err(refuse)?;
        if rel.is_empty() {
            return if is_dir {
                Ok(None)
            } else {
                Err(refuse("empty path".into()))
            };
        }
        check_mode(e.mode).map_err(refuse)?;
        self.check_count().map_err(refuse)?;
        self.check_unique(&rel, is_dir).map_err(refuse)?;
        if !is_dir {
            self.check_size(e.size).map_err(refuse)?;
        }
        Ok(Some(Admitted {
            rel,
            is_dir,
            mode: if is_dir || e.mode & 0o111 != 0 {
                0o755
            } else {
                0o644
            },
            size: if is_dir { 0 } else { e.size },
        }))
    }

    fn check_count(&mut self) -> Result<(), String> {
        self.count += 1;
        if self.count > self.limits.max_files {
            return Err(format!(
                "more than {} files and directories",
                self.limits.max_files
            ));
        }
        Ok(())
    }

    /// Each path once; never a file where a directory is, or the other way round.
    fn check_unique(&mut self, rel: &str, is_dir: bool) -> Result<(), String> {
        for (i, _) in rel.match_indices('/') {
            match self.nodes.get(&rel[..i]) {
                Some(Node::File) => {
                    return Err(format!("{} is a file, not a directory", &rel[..i]))
                }
                Some(_) => {}
                None => {
                    self.nodes.insert(rel[..i].to_string(), Node::ImplicitDir);
                }
            }
        }
        match (self.nodes.get(rel).copied(), is_dir) {
            (None, _) | (Some(Node::ImplicitDir), true) => {}
            (Some(Node::ImplicitDir | Node::Dir), false) => {
                return Err("a file where a directory is".into())
            }
            _ => return Err("duplicate entry".into()),
        }
        self.nodes
            .insert(rel.to_string(), if is_dir { Node::Dir } else { Node::File });
        Ok(())
    }

    fn check_size(&mut self, size: u64) -> Result<(), String> {
        if size > self.limits.max_file_bytes {
            return Err(format!(
                "{size} bytes, over the {} bytes limit per file",
                self.limits.max_file_bytes
            ));
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total_bytes {
            return Err(format!(
                "the files add up to over {} bytes",
                self.limits.max_total_bytes
            ));
        }
        Ok(())
    }
}

/// Names: UTF-8, no control characters (terminal and log spoofing), no backslash (a
/// Windows separator that would become part of one file name here, and `..` there).
pub fn check_name(raw: &[u8]) -> Result<&str, String> {
    let name = std::str::from_utf8(raw).map_err(|_| "names must be valid UTF-8".to_string())?;
    if name.chars().any(char::is_control) {
        return Err("names must not hold control characters".into());
    }
    if name.contains('\\') {
        return Err("names must not hold a backslash ('\\')".into());
    }
    Ok(name)
}

/// Links, devices and FIFOs are refused; returns whether the entry is a directory.
fn check_kind(kind: &EntryKind, name: &str) -> Result<bool, String> {
    let why = match kind {
        EntryKind::Dir => return Ok(true),
        // Pre-POSIX tar and zip mark directories by a trailing '/'.
        EntryKind::File => return Ok(name.ends_with('/')),
        EntryKind::Symlink => "symbolic links are not allowed",
        EntryKind::HardLink => "hard links are not allowed",
        EntryKind::CharDevice => "character devices are not allowed",
        EntryKind::BlockDevice => "block devices are not allowed",
        EntryKind::Fifo => "FIFOs are not allowed",
        EntryKind::Other(what) => {
            return Err(format!("{what} is not allowed, only files and directories"))
        }
    };
    Err(why.to_string())
}

/// Check a name's path and return it normalised: `/`-joined components, no `.`/empty ones.
pub fn check_path(name: &str) -> Result<String, String> {
    if name.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    if name.len() > 4096 {
        return Err("the path is longer than 4096 bytes".into());
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` components are not allowed".into()),
            c if c.len() > 255 => return Err("a path component is longer than 255 bytes".into()),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn check_mode(mode: u32) -> Result<(), String> {
    if mode & 0o7000 != 0 {
        return Err(format!(
            "setuid, setgid and sticky bits are not allowed (mode {mode:o})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(
        g: &mut Gate,
        name: &[u8],
        kind: EntryKind,
        mode: u32,
    ) -> Result<Option<Admitted>, String> {
        g.admit(&RawEntry {
            name,
            kind,
            mode,
            size: 1,
        })
        .map_err(|e| format!("{e}"))
    }

    #[test]
    fn each_class() {
        let mut g = Gate::new(Limits::DEFAULT);
        let a = admit(&mut g, b"./a//b.lua", EntryKind::File, 0o600)
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.rel.as_str(), a.mode, a.is_dir),
            ("a/b.lua", 0o644, false)
        );
        assert_eq!(admit(&mut g, b"./", EntryKind::Dir, 0o700).unwrap(), None);
        for (name, needle) in [
            (&b"zz\\..\\..\\x.lua"[..], "backslash"),
            (b"\\etc\\passwd", "backslash"),
            (b"evil\x1b[2J.lua", "control"),
            (b"new\nline", "control"),
            (b"c1\xc2\x9b.lua", "control"),
            (b"bad\xff", "UTF-8"),
            (b"/abs", "absolute"),
            (b"a/../../x", "`..`"),
        ] {
            let m = admit(&mut g, name, EntryKind::File, 0o644).unwrap_err();
            assert!(m.contains(needle), "{m}");
            assert!(!m.chars().any(|c| c.is_control()), "{m:?}");
        }
        let m = admit(&mut g, b"evil\x1b[2J.lua", EntryKind::File, 0o644).unwrap_err();
        assert!(m.contains(r#""evil\x1b[2J.lua""#), "{m}");
        assert!(admit(&mut g, b"l", EntryKind::Symlink, 0o777)
            .unwrap_err()
            .contains("symbolic"));
        assert!(admit(&mut g, b"s", EntryKind::Other("a socket".into()), 0)
            .unwrap_err()
            .contains("a socket"));
        assert!(admit(&mut g, b"x", EntryKind::File, 0o4755)
            .unwrap_err()
            .contains("setuid"));
        assert!(admit(&mut g, b"a/b.lua", EntryKind::File, 0o644)
            .unwrap_err()
            .contains("duplicate"));
    }
}
