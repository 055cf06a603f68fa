//! An asynchronous client for the QEMU Machine Protocol (QMP).
//!
//! This crate will hold a tokio-based QMP client: it reads the greeting,
//! negotiates `qmp_capabilities` (a typestate makes commands impossible before
//! that), correlates replies to commands by `id` so several commands may be in
//! flight at once, fans events out to listeners registered *before* a command is
//! sent, enforces a per-command timeout, and passes file descriptors with
//! `SCM_RIGHTS` for `getfd` and `add-fd`.
//!
//! It knows nothing about Ganeti, instances or run directories: it speaks QMP on
//! a Unix stream and nothing else.
