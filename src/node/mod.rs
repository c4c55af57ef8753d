//! The node side: plugin trees, hostile-archive unpacking, install state, kong.conf and
//! the start-up checks of `doctor`.
pub mod bundled;
pub mod declarative;
pub mod doctor;
pub mod external;
pub mod gate;
pub mod kinds;
pub mod kongconf;
pub mod limits;
pub mod lock;
pub mod lua;
pub mod names;
pub mod plugin;
pub mod rock;
pub mod rockspec;
pub mod state;
pub mod unpack;
