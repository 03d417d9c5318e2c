//! QEMU: its command line ([`argv`]) and QMP ([`qmp`]).

pub mod argv;
pub mod qmp;

pub use argv::{argv, PMEM_UNSUPPORTED, VHOST_USER_NOT_MIGRATABLE};
