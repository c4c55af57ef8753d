//! The size limits one plugin archive must fit, the same on both sides: `pack` and `push`
//! refuse what `install` and `pull` would refuse on every node.

use anyhow::Result;

use crate::error::Kind;

pub const DEFAULT_MAX_FILES: u64 = 10_000;
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 << 20;
pub const DEFAULT_MAX_RATIO: u64 = 200;

/// Below this many expanded bytes the ratio is not checked (small files compress well).
pub const RATIO_FLOOR: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files and directories.
    pub max_files: u64,
    /// Sum of the file sizes.
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
    /// Expanded/compressed, checked once past [`RATIO_FLOOR`] expanded bytes.
    pub max_ratio: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_files: DEFAULT_MAX_FILES,
        max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        max_ratio: DEFAULT_MAX_RATIO,
    };

    /// One line for `--help`: "10000 files, 64 MiB per file, 256 MiB in all, 200x expansion".
    pub fn describe(&self) -> String {
        format!(
            "{} files, {} per file, {} in all, {}x expansion",
            self.max_files,
            mib(self.max_file_bytes),
            mib(self.max_total_bytes),
            self.max_ratio
        )
    }

    /// Check the files a tree would pack to (`sizes`), before anything is written.
    pub fn check_tree<'a>(&self, sizes: impl IntoIterator<Item = (&'a str, u64)>) -> Result<()> {
        let (mut count, mut total) = (0u64, 0u64);
        for (path, size) in sizes {
            count += 1;
            total = total.saturating_add(size);
            let why = if size > self.max_file_bytes {
                format!(
                    "{path} is {size} bytes, over the {} bytes limit per file",
                    self.max_file_bytes
                )
            } else if count > self.max_files {
                format!("more than {} files and directories", self.max_files)
            } else if total > self.max_total_bytes {
                format!("the files add up to over {} bytes", self.max_total_bytes)
            } else {
                continue;
            };
            crate::bail_kind!(
                Kind::Unsafe,
                "{why}: every node would refuse this plugin with its default limits ({})",
                self.describe()
            );
        }
        Ok(())
    }

    /// Whether `expanded` bytes from `compressed` is over the ratio (a likely bomb).
    pub fn ratio_exceeded(&self, expanded: u64, compressed: u64) -> bool {
        expanded > RATIO_FLOOR && expanded > self.max_ratio.saturating_mul(compressed)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

fn mib(n: u64) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_and_check() {
        assert_eq!(
            Limits::DEFAULT.describe(),
            "10000 files, 64 MiB per file, 256 MiB in all, 200x expansion"
        );
        let l = Limits {
            max_files: 2,
            max_file_bytes: 10,
            max_total_bytes: 15,
            ..Limits::DEFAULT
        };
        l.check_tree([("a", 10), ("b", 5)]).unwrap();
        let e = l.check_tree([("a", 11)]).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::Unsafe);
        assert!(format!("{e}").contains("a is 11 bytes"), "{e}");
        assert!(format!("{}", l.check_tree([("a", 9), ("b", 9)]).unwrap_err()).contains("add up"));
        assert!(format!(
            "{}",
            l.check_tree([("a", 1), ("b", 1), ("c", 1)]).unwrap_err()
        )
        .contains("more than 2"));
        assert!(!l.ratio_exceeded(RATIO_FLOOR, 1));
        assert!(l.ratio_exceeded(RATIO_FLOOR + 1, 1));
    }
}
