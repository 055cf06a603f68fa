//! Device identifiers and bus slots for QEMU guests, compatible with Ganeti.
//!
//! - [`DeviceId`]: Ganeti's ids (`disk-`/`nic-` and the first three groups of
//!   the device's UUID) and its legacy ones (`hotdisk-…-pci-N`).
//! - [`HvInfo`]: driver, id and placement of a device, read and written in
//!   Ganeti's `hvinfo` form, rendered as a `-device` argument.
//! - [`PciAllocator`] (32 slots, the first `kvm_pci_reservations` left to
//!   QEMU), [`ScsiAllocator`] (16 targets): propose, then commit once QEMU
//!   confirmed; exhaustion is an error naming the bus; [`PciAllocator::reconcile`]
//!   marks slots QEMU uses that we did not know.
//! - [`PcieLayout`]: q35's root ports, one per hot-pluggable device plus spares.
//!
//! Architecture invariant: pure data and arithmetic, no I/O; no workspace
//! dependencies.
//!
//! ```
//! use device_slots::{DeviceId, DeviceKind, HvInfo, PciAllocator, Placement};
//!
//! let mut pci = PciAllocator::new("pci.0", 12).unwrap();
//! let id = DeviceId::for_device(DeviceKind::Disk, "7c079136-2573-4112-82d0-0d3d2aa90d8f").unwrap();
//! let info = HvInfo { driver: "virtio-blk-pci".into(), id, placement: Placement::Pci { bus: "pci.0".into(), slot: pci.take().unwrap() } };
//! assert_eq!(info.device_args(), "virtio-blk-pci,id=disk-7c079136-2573-4112,bus=pci.0,addr=0xc");
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod alloc;
mod hvinfo;
mod id;
mod pcie;

pub use alloc::{
    DEFAULT_PCI_RESERVATIONS, DEFAULT_SCSI_TARGETS, ObservedDevice, PCI_SLOTS, PciAllocator,
    PciSlot, ScsiAllocator, ScsiId, Unexpected,
};
pub use hvinfo::{HvInfo, Placement};
pub use id::{DeviceId, DeviceKind, MAX_ID_LEN};
pub use pcie::{PCIE_ROOT_BUS, PcieLayout, RootPort};

/// What can go wrong with ids and slots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// Every slot of the bus is taken.
    #[error("no free slot on bus {bus}")]
    Exhausted {
        /// The bus.
        bus: String,
    },
    /// The slot is already taken.
    #[error("slot {slot} on bus {bus} is already in use")]
    InUse {
        /// The bus.
        bus: String,
        /// The slot or target.
        slot: u8,
    },
    /// The slot is in the range left to QEMU.
    #[error("slot {slot} on bus {bus} is reserved for devices QEMU places itself")]
    Reserved {
        /// The bus.
        bus: String,
        /// The slot.
        slot: u8,
    },
    /// More reserved slots than the bus has.
    #[error("{reserved} reserved slots, but the bus has {max}")]
    TooManyReserved {
        /// Asked for.
        reserved: u8,
        /// The bus size.
        max: u8,
    },
    /// Not a UUID.
    #[error("`{0}` is not a UUID")]
    BadUuid(String),
    /// Not a QEMU device id.
    #[error(
        "`{0}` is not a QEMU device id (a letter, then letters, digits, `.`, `_`, `-`; at most 32)"
    )]
    BadId(String),
    /// A malformed hvinfo.
    #[error("bad hvinfo: {0}")]
    BadHvInfo(String),
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
