//! Snapshot start: `host-probe snapshot` boots a guest to ready and saves it into a directory with a
//! manifest ([`take`]); `host-probe run --restore` restores copies of it and makes each unique
//! ([`restore`]). See docs/snapshot.md.

pub mod manifest;
pub mod restore;
pub mod take;

pub use manifest::Manifest;
pub use restore::{RestoreFigures, RestoreOptions};
pub use take::{take, Taken};
