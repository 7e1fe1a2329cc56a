//! Tinyx: builds minimal guest kernels and initramfs images.
