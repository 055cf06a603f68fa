//! Device identifiers and bus slots for QEMU guests, compatible with Ganeti.
//!
//! This crate will hold Ganeti-compatible device ids (`disk-`/`nic-` followed by
//! the first three groups of the device UUID, and the legacy `hotdisk-…-pci-N`
//! forms), the `hvinfo` record stored for every device (driver, id, bus and
//! address, or SCSI channel, target and LUN), and allocators for PCI slots on
//! `pci.0` (with Ganeti's reserved range) and SCSI targets on `scsi.0`, with
//! reconciliation against what QEMU reports in `query-pci`.
//!
//! Architecture invariant: pure data and arithmetic, no I/O.
