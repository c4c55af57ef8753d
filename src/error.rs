//! Error kinds that map to process exit codes.
//!
//! Code anywhere returns `anyhow::Result`; where the failure class matters to a
//! script (auth, not found, signature), it wraps a [`Error`] carrying a [`Kind`].
//! `main` walks the chain and exits with the first kind it finds.

use std::fmt;

/// Failure classes with stable exit codes. 10/11/12 are cosign's verify codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else.
    Other,
    /// Reference, tag, manifest or blob does not exist.
    NotFound,
    /// 401/403 from a registry, or no usable credentials.
    Auth,
    /// Content does not match its digest, or a store is corrupt.
    Integrity,
    /// Archive or plugin tree refused: unsafe path, link, device, size cap, invalid layout.
    Unsafe,
    /// Input the user can fix: bad reference, bad flag combination, unreadable key file.
    Usage,
    /// cosign 10: the signature manifest exists but holds no signatures.
    NoSignatures,
    /// cosign 11: no signature tag / referrer for the digest.
    SigTagNotFound,
    /// cosign 12: signatures exist but none verifies against the given keys and policy.
    NoMatchingSignature,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Auth => 4,
            Kind::Integrity => 5,
            Kind::Unsafe => 6,
            Kind::NoSignatures => 10,
            Kind::SigTagNotFound => 11,
            Kind::NoMatchingSignature => 12,
        }
    }
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Build an `anyhow::Error` of the given kind.
pub fn fail(kind: Kind, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Error {
        kind,
        msg: msg.into(),
    })
}

/// `bail!` with a kind: `bail_kind!(Kind::NotFound, "tag {t} not found")`.
#[macro_export]
macro_rules! bail_kind {
    ($kind:expr, $($arg:tt)*) => {
        return Err($crate::error::fail($kind, format!($($arg)*)))
    };
}

/// The first [`Kind`] found in the error chain, or `Other`.
pub fn kind_of(err: &anyhow::Error) -> Kind {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>().map(|e| e.kind))
        .unwrap_or(Kind::Other)
}
