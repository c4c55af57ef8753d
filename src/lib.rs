//! kplug: Kong Gateway plugins as signed, generic OCI artifacts.
//!
//! Layers, one direction: `cli` → `ops` → {`oci`, `trust`, `node`} → base modules
//! (`error`, `digest`, `tree`, `progress`). See docs/architecture.md.
pub mod cli;
pub mod digest;
pub mod error;
pub mod interrupt;
pub mod node;
pub mod oci;
pub mod ops;
pub mod progress;
pub mod tree;
pub mod trust;
