//! A typed model of a QEMU invocation, rendered to an argv.
//!
//! This crate will hold the model of a `qemu-system-*` command line (machine,
//! accelerator, CPU, memory, chardevs, monitors, displays, `-blockdev`,
//! `-device`, `-netdev`, `-object`, privilege drop, sandbox) and its rendering
//! in QEMU's `key=value` notation with correct escaping (`,` doubled, long-form
//! booleans, bracketed IPv6), plus parsers for what a QEMU binary reports about
//! itself (`--help`, `-machine help`).
//!
//! Architecture invariant: this crate does no I/O. It neither reads files nor
//! spawns QEMU; facts about the binary are passed in as data.
