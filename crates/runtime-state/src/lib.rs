//! The per-node run directory and the per-instance runtime files.
//!
//! This crate will hold the layout of the run directory (Ganeti's `pid`, `uid`,
//! `ctrl`, `conf`, `nic`, `chroot` and `chroot-quarantine` sub-directories), the
//! versioned runtime record of a running instance, the reader and writer of
//! Ganeti's runtime file in all its historical forms, atomic writes, per-instance
//! locks, and liveness checks through `/proc`.
//!
//! Architecture invariant: this is the only crate that knows on-disk file
//! formats.
