//! cloud-hypervisor: its command line ([`argv`]) and its REST API ([`api`]).

pub mod api;
pub mod argv;

pub use argv::argv;
