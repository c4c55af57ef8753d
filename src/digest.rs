//! sha256 digests: formatting, validation and hashing on the way through.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::Kind;

/// `sha256:<hex>` of a byte slice.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Check `d` is `sha256:` + 64 lowercase hex digits and return the hex part.
///
/// Digests end up in file paths (`blobs/sha256/<hex>`), so anything else is refused.
pub fn hex_of(d: &str) -> anyhow::Result<&str> {
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(crate::error::fail(
            Kind::Usage,
            format!("invalid digest {d:?}: expected sha256:<64 lowercase hex digits>"),
        )),
    }
}

/// Running sha256 + byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    h: Sha256,
    n: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, b: &[u8]) {
        self.h.update(b);
        self.n += b.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn finish(self) -> (String, u64) {
        (format!("sha256:{}", hex::encode(self.h.finalize())), self.n)
    }
    /// Error of kind `Integrity` unless the content seen equals `want` (and `size`, when given).
    pub fn check(self, want: &str, size: Option<u64>, what: &str) -> anyhow::Result<()> {
        let (got, n) = self.finish();
        if got != want {
            crate::bail_kind!(
                Kind::Integrity,
                "{what}: content digest {got} does not match the expected {want}; the store is corrupt or the transfer was altered"
            );
        }
        if let Some(s) = size {
            if s != n {
                crate::bail_kind!(
                    Kind::Integrity,
                    "{what}: {n} bytes received but the descriptor says {s}"
                );
            }
        }
        Ok(())
    }
}

/// A `Read` that hashes what passes through it.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A `Write` that hashes what passes through it.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hash a file in a streaming way.
pub fn sha256_file(path: &std::path::Path) -> io::Result<(String, u64)> {
    let mut r = HashingReader::new(std::fs::File::open(path)?);
    io::copy(&mut r, &mut io::sink())?;
    Ok(r.hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_validation() {
        assert!(hex_of(crate::oci::EMPTY_DIGEST).is_ok());
        assert!(hex_of("sha256:../../etc/passwd").is_err());
        assert!(hex_of("sha512:abcd").is_err());
        assert_eq!(sha256(b"{}"), crate::oci::EMPTY_DIGEST);
    }
}
