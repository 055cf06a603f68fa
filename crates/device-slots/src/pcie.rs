//! q35: hot-pluggable devices each get a `pcie-root-port` on `pcie.0`
//! (the root bus itself is not hot-pluggable), plus spare ports for hotplug.
//!
//! A port's id, chassis and slot all derive from the `pcie.0` slot it
//! occupies (`rp12` at slot 12, chassis 12), and a device's hvinfo names its
//! port as the bus, so a restart from the runtime record recreates the same
//! topology.

use crate::SlotError;
use crate::alloc::{PciAllocator, PciSlot};

/// The q35 root bus.
pub const PCIE_ROOT_BUS: &str = "pcie.0";

/// One `pcie-root-port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPort {
    /// Its slot on `pcie.0`.
    pub slot: PciSlot,
}

impl RootPort {
    /// The port's device id, which is also the bus name of what plugs into it.
    pub fn id(&self) -> String {
        format!("rp{}", self.slot.get())
    }
    /// The chassis number (unique per port).
    pub fn chassis(&self) -> u8 {
        self.slot.get()
    }
    /// The `-device` argument for the port.
    pub fn device_args(&self) -> String {
        format!(
            "pcie-root-port,id={},bus={PCIE_ROOT_BUS},addr={},chassis={},slot={}",
            self.id(),
            self.slot.hex(),
            self.chassis(),
            self.slot.get()
        )
    }
    /// The port whose id is `bus` (`rp12`), if it is one of ours.
    pub fn from_bus(bus: &str) -> Option<RootPort> {
        bus.strip_prefix("rp")?
            .parse()
            .ok()
            .and_then(PciSlot::new)
            .map(|slot| RootPort { slot })
    }
}

/// Root ports on `pcie.0`, the first `reserved` slots left to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcieLayout {
    slots: PciAllocator,
    ports: Vec<RootPort>,
}

impl PcieLayout {
    /// A layout leaving `0..reserved` on `pcie.0` to QEMU.
    pub fn new(reserved: u8) -> Result<PcieLayout, SlotError> {
        Ok(PcieLayout {
            slots: PciAllocator::new(PCIE_ROOT_BUS, reserved)?,
            ports: Vec::new(),
        })
    }

    /// A new port for one device; the device goes on bus `port.id()`, slot 0.
    pub fn add_port(&mut self) -> Result<RootPort, SlotError> {
        let port = RootPort {
            slot: self.slots.take()?,
        };
        self.ports.push(port.clone());
        Ok(port)
    }

    /// Re-creates the port named by a recorded bus (`rp12`).
    pub fn restore_port(&mut self, bus: &str) -> Result<RootPort, SlotError> {
        let port = RootPort::from_bus(bus)
            .ok_or_else(|| SlotError::BadHvInfo(format!("`{bus}` is not a root port")))?;
        self.slots.commit(port.slot)?;
        self.ports.push(port.clone());
        Ok(port)
    }

    /// A slot on `pcie.0` for a device that is not hot-plugged (balloon,
    /// controllers, video), from the same allocator as the ports.
    pub fn take_root_slot(&mut self) -> Result<PciSlot, SlotError> {
        self.slots.take()
    }

    /// Marks a `pcie.0` slot as QEMU's own (q35's ICH9 functions at 0x1f).
    pub fn mark_used(&mut self, slot: PciSlot) {
        self.slots.mark_used(slot);
    }

    /// Adds `n` spare ports for later hotplug.
    pub fn add_spares(&mut self, n: usize) -> Result<Vec<RootPort>, SlotError> {
        (0..n).map(|_| self.add_port()).collect()
    }

    /// Every port, in creation order.
    pub fn ports(&self) -> &[RootPort] {
        &self.ports
    }
}
