//! rootfs-builder: bake chinit into root images and initramfs archives, and build guest kernels.

pub mod kernel;
