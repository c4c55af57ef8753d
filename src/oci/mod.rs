//! The registry side: references, content stores, artifact layouts, copy, signature
//! attachment and bundles. Wire types live in [`types`] and are re-exported here.
pub mod artifact;
pub mod auth;
pub mod bundle;
pub mod copy;
pub mod kpi;
pub mod reference;
pub mod registries_conf;
pub mod signatures;
pub mod store;
pub mod tagscheme;
pub mod types;

pub use types::*;
