//! Error kinds, the typed error of the store boundary, and the one mapping to exit codes.
//!
//! Code anywhere returns `anyhow::Result`; where the failure class matters to a script
//! (auth, not found, signature), the chain carries an [`Error`] with a [`Kind`], or a
//! [`StoreError`] from a store. [`kind_of`] walks the chain and [`Kind::exit_code`] is the
//! only place kinds become exit codes.

use std::fmt;

/// Failure classes with stable exit codes. 10/11/12 are cosign's verify codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Anything else.
    #[default]
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
    /// Interrupted by SIGINT (130) or SIGTERM (143).
    Interrupted(i32),
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
            Kind::Interrupted(code) => code,
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

/// The error for a local input file named on the command line (a plugin, key, signature,
/// mirror manifest, list file) that cannot be read: always [`Kind::Usage`] (exit 2), the
/// one rule for "the file you gave is not there". Content missing from a store is
/// [`Kind::NotFound`] (exit 3).
pub fn input_error(what: &str, path: &std::path::Path, e: &std::io::Error) -> anyhow::Error {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        k => k.to_string(),
    };
    fail(
        Kind::Usage,
        format!("cannot read {what} {}: {why}", path.display()),
    )
}

/// Read a local input file, see [`input_error`].
pub fn read_input(what: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| input_error(what, path, &e))
}

/// `bail!` with a kind: `bail_kind!(Kind::NotFound, "tag {t} not found")`.
#[macro_export]
macro_rules! bail_kind {
    ($kind:expr, $($arg:tt)*) => {
        return Err($crate::error::fail($kind, format!($($arg)*)).into())
    };
}

/// What a store (registry, OCI layout, archive) reports. The contract every store keeps:
/// an absent tag, manifest, blob or repository is `NotFound` and nothing else, so callers
/// can tell "not there" from "broken" (see `oci::store::Found`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Tag, manifest, blob or repository absent.
    #[error("{0}")]
    NotFound(String),
    /// 401/403, or no usable credentials.
    #[error("{0}")]
    Auth(String),
    /// Content does not match its digest or declared size, or the store's own metadata
    /// is corrupt.
    #[error("{0}")]
    Integrity(String),
    /// Over a bound set for untrusted input (a manifest or metadata file too large).
    #[error("{0}")]
    TooLarge(String),
    /// The store cannot do this, or was asked in a way it does not accept.
    #[error("{0}")]
    Unsupported(String),
    /// Configuration the user can fix (a CA file, a media type, a digest's syntax).
    #[error("{0}")]
    Config(String),
    /// Network or disk failure that retries did not cure: connection, TLS, timeout, 5xx.
    #[error("{0}")]
    Transport(String),
}

impl StoreError {
    pub fn kind(&self) -> Kind {
        match self {
            StoreError::NotFound(_) => Kind::NotFound,
            StoreError::Auth(_) => Kind::Auth,
            StoreError::Integrity(_) => Kind::Integrity,
            StoreError::TooLarge(_) => Kind::Unsafe,
            StoreError::Unsupported(_) | StoreError::Config(_) => Kind::Usage,
            StoreError::Transport(_) => Kind::Other,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }
}

/// Helpers below the store boundary (digest checks, atomic writes) speak `anyhow` with a
/// [`Kind`]; crossing the boundary keeps that kind.
impl From<anyhow::Error> for StoreError {
    fn from(e: anyhow::Error) -> Self {
        let msg = format!("{e:#}");
        match kind_of(&e) {
            Kind::NotFound => StoreError::NotFound(msg),
            Kind::Auth => StoreError::Auth(msg),
            Kind::Integrity => StoreError::Integrity(msg),
            Kind::Unsafe => StoreError::TooLarge(msg),
            Kind::Usage => StoreError::Config(msg),
            _ => StoreError::Transport(msg),
        }
    }
}

/// The first [`Kind`] found in the error chain, or `Other`.
pub fn kind_of(err: &anyhow::Error) -> Kind {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<Error>()
                .map(|e| e.kind)
                .or_else(|| e.downcast_ref::<StoreError>().map(StoreError::kind))
        })
        .unwrap_or(Kind::Other)
}
