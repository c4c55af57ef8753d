//! Operations: one module per verb family, an options struct in and a typed report out.
pub mod mirror;
