//! VMM core.
