//! chinit's agent: the readiness endpoint and the control API that chinit serves over TCP and vsock.
//!
//! - [`proto`]: the JSON wire types, shared by chinit and host-probe (no async runtime needed).
//! - [`cmdline`]: the `chinit.*` command-line keys and a typed builder for hosts.
//! - [`marks`]: the port-0x80 phase marks chinit writes and host-probe reads.
//! - [`units`]: how times are written for people.
//! - [`workload`]: the workload file rootfs-builder writes from a container image and chinit starts.
//! - [`client`]: a small blocking HTTP/1.1 client over any `Read + Write`, and the hybrid-vsock handshake.
//! - `server` (feature `server`): HTTP/1.1 over any listener, with bounded headers, bodies, connections
//!   and idle time.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod cmdline;
pub mod marks;
pub mod proto;
#[cfg(feature = "server")]
pub mod server;
pub mod units;
pub mod workload;
