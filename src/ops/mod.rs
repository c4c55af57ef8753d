//! Operations: one module per verb family, an options struct in and a typed report out.
//! They use the stores (`oci`), signatures (`trust`) and node state (`node`); `cli` only
//! parses arguments, calls one of these, and renders its report.
pub mod blob;
pub mod install;
pub mod k8s;
pub mod keys;
pub mod login;
pub mod mirror;
pub mod node;
pub mod pack;
pub mod pull;
pub mod push;
pub mod sign;
pub mod tags;
pub mod transfer;
pub mod verify;
