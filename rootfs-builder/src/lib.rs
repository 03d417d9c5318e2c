//! rootfs-builder: bake chinit into root images and initramfs archives, and build guest kernels.
//!
//! Pure parts (plan, size, ELF check, cpio, modules.dep, path resolution, debugfs commands) are
//! plain functions; external tools are called through [`tools`].

pub mod baseline;
pub mod cleanup;
pub mod cli;
pub mod cpio;
pub mod debugfs;
pub mod elf;
pub mod error;
pub mod ext4;
pub mod gpt;
pub mod hash;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod oci;
pub mod plan;
pub mod progress;
pub mod resolve;
pub mod run;
pub mod size;
pub mod tools;
