//! SIGINT/SIGTERM as a value. `cli::run` records the signal here and cancels the
//! operation; code that waits synchronously (the prefix lock) polls [`check`] so that a
//! wait never outlives Ctrl-C.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{fail, Kind};

static CODE: AtomicI32 = AtomicI32::new(0);

/// Record an interrupt: `code` is the exit code (130 SIGINT, 143 SIGTERM).
pub fn set(code: i32) {
    CODE.store(code, Ordering::SeqCst);
}

/// The exit code of the interrupt received, if any.
pub fn code() -> Option<i32> {
    match CODE.load(Ordering::SeqCst) {
        0 => None,
        c => Some(c),
    }
}

/// The error an interrupted operation ends with: one line, the signal's exit code.
pub fn error(code: i32) -> anyhow::Error {
    let sig = if code == 143 { "SIGTERM" } else { "SIGINT" };
    fail(
        Kind::Interrupted(code),
        format!("interrupted ({sig}); temporary files removed"),
    )
}

/// `Err` once an interrupt was received.
pub fn check() -> anyhow::Result<()> {
    match code() {
        Some(c) => Err(error(c)),
        None => Ok(()),
    }
}
