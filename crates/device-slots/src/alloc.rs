//! Slot allocators: propose, then commit once QEMU confirmed the device.

use std::collections::BTreeSet;
use std::fmt;

use crate::SlotError;

/// The number of slots (device numbers) on a PCI bus.
pub const PCI_SLOTS: u8 = 32;
/// Ganeti's default `kvm_pci_reservations`.
pub const DEFAULT_PCI_RESERVATIONS: u8 = 12;
/// Ganeti's SCSI targets per bus.
pub const DEFAULT_SCSI_TARGETS: u8 = 16;

/// A PCI slot (device number), 0 to 31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciSlot(u8);

impl PciSlot {
    /// A slot; `None` above 31.
    pub fn new(slot: u8) -> Option<PciSlot> {
        (slot < PCI_SLOTS).then_some(PciSlot(slot))
    }
    /// Parses Ganeti's `hex(slot)` form (`0xc`), also with padding (`0x0c`) or without `0x`.
    pub fn parse_hex(s: &str) -> Result<PciSlot, SlotError> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        u8::from_str_radix(digits, 16)
            .ok()
            .and_then(PciSlot::new)
            .ok_or_else(|| SlotError::BadHvInfo(format!("`{s}` is not a PCI slot")))
    }
    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
    /// Python's `hex()`: lowercase, unpadded (`0xc`, `0x10`).
    pub fn hex(self) -> String {
        format!("{:#x}", self.0)
    }
}

impl fmt::Display for PciSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A SCSI target id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScsiId(u8);

impl ScsiId {
    /// A target id.
    pub fn new(id: u8) -> ScsiId {
        ScsiId(id)
    }
    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A device QEMU reports on a bus (from `query-pci`), for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDevice {
    /// Its slot.
    pub slot: u8,
    /// Its `qdev_id`, empty for devices QEMU created itself.
    pub qdev_id: String,
}

/// A slot QEMU uses that the allocator did not know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected {
    /// The slot.
    pub slot: PciSlot,
    /// What QEMU has there (`qdev_id`, possibly empty).
    pub qdev_id: String,
}

/// The PCI slots of one bus, the first `reserved` left to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciAllocator {
    bus: String,
    reserved: u8,
    used: BTreeSet<u8>,
}

impl PciAllocator {
    /// An allocator for `bus` leaving slots `0..reserved` to QEMU.
    pub fn new(bus: &str, reserved: u8) -> Result<PciAllocator, SlotError> {
        if reserved > PCI_SLOTS {
            return Err(SlotError::TooManyReserved {
                reserved,
                max: PCI_SLOTS,
            });
        }
        Ok(PciAllocator {
            bus: bus.to_owned(),
            reserved,
            used: BTreeSet::new(),
        })
    }

    /// The bus name.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// The lowest free slot, without taking it.
    pub fn propose(&self) -> Result<PciSlot, SlotError> {
        (self.reserved..PCI_SLOTS)
            .find(|s| !self.used.contains(s))
            .map(PciSlot)
            .ok_or_else(|| SlotError::Exhausted {
                bus: self.bus.clone(),
            })
    }

    /// Takes `slot`, e.g. once QEMU confirmed the device there.
    pub fn commit(&mut self, slot: PciSlot) -> Result<(), SlotError> {
        if slot.0 < self.reserved {
            return Err(SlotError::Reserved {
                bus: self.bus.clone(),
                slot: slot.0,
            });
        }
        if !self.used.insert(slot.0) {
            return Err(SlotError::InUse {
                bus: self.bus.clone(),
                slot: slot.0,
            });
        }
        Ok(())
    }

    /// [`propose`](Self::propose) and [`commit`](Self::commit) in one step,
    /// for planning a start where nothing runs yet.
    pub fn take(&mut self) -> Result<PciSlot, SlotError> {
        let slot = self.propose()?;
        self.used.insert(slot.0);
        Ok(slot)
    }

    /// Frees `slot`.
    pub fn release(&mut self, slot: PciSlot) {
        self.used.remove(&slot.0);
    }

    /// Marks a slot used whatever it is (a device from a runtime record, or one
    /// QEMU placed itself). Reserved slots are accepted here: they are QEMU's.
    pub fn mark_used(&mut self, slot: PciSlot) {
        self.used.insert(slot.0);
    }

    /// Whether `slot` is taken.
    pub fn is_used(&self, slot: PciSlot) -> bool {
        self.used.contains(&slot.0)
    }

    /// Compares with what QEMU reports on this bus: every slot outside the
    /// reserved range that QEMU uses and we did not know is returned and
    /// marked used, so it is never handed out (Ganeti collides there, its
    /// issues #1620/#1622).
    pub fn reconcile(&mut self, observed: &[ObservedDevice]) -> Vec<Unexpected> {
        let mut out = Vec::new();
        for d in observed {
            let Some(slot) = PciSlot::new(d.slot) else {
                continue;
            };
            if slot.0 >= self.reserved && self.used.insert(slot.0) {
                out.push(Unexpected {
                    slot,
                    qdev_id: d.qdev_id.clone(),
                });
            }
        }
        out
    }

    /// Free slots left.
    pub fn free(&self) -> usize {
        (self.reserved..PCI_SLOTS)
            .filter(|s| !self.used.contains(s))
            .count()
    }
}

/// The targets of one SCSI bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiAllocator {
    bus: String,
    targets: u8,
    used: BTreeSet<u8>,
}

impl ScsiAllocator {
    /// An allocator for `targets` targets on `bus`.
    pub fn new(bus: &str, targets: u8) -> ScsiAllocator {
        ScsiAllocator {
            bus: bus.to_owned(),
            targets,
            used: BTreeSet::new(),
        }
    }
    /// The bus name.
    pub fn bus(&self) -> &str {
        &self.bus
    }
    /// The lowest free target, without taking it.
    pub fn propose(&self) -> Result<ScsiId, SlotError> {
        (0..self.targets)
            .find(|t| !self.used.contains(t))
            .map(ScsiId)
            .ok_or_else(|| SlotError::Exhausted {
                bus: self.bus.clone(),
            })
    }
    /// Takes `id`.
    pub fn commit(&mut self, id: ScsiId) -> Result<(), SlotError> {
        if id.0 >= self.targets || !self.used.insert(id.0) {
            return Err(SlotError::InUse {
                bus: self.bus.clone(),
                slot: id.0,
            });
        }
        Ok(())
    }
    /// Propose and commit in one step.
    pub fn take(&mut self) -> Result<ScsiId, SlotError> {
        let id = self.propose()?;
        self.used.insert(id.0);
        Ok(id)
    }
    /// Frees `id`.
    pub fn release(&mut self, id: ScsiId) {
        self.used.remove(&id.0);
    }
    /// Marks `id` used (from a runtime record).
    pub fn mark_used(&mut self, id: ScsiId) {
        self.used.insert(id.0);
    }
}
