//! Devices of a Wisp microVM.
