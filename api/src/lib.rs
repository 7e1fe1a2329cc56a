//! API models.
