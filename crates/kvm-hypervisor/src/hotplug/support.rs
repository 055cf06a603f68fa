//! Whether an instance allows hotplug, per device type (Ganeti's
//! `HotplugSupported` + `VerifyHotplugSupport`).

use std::collections::BTreeSet;

use serde::Serialize;

use super::plan::{instance_name, is_q35, record_hvparams};
use crate::hvparams::DiskType;
use crate::state::RuntimeRecord;

/// Whether one device type can be hot-plugged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSupport {
    /// Hot-add possible.
    pub add: bool,
    /// Hot-remove possible.
    pub remove: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

/// What [`check`](super::check) reports (Ganeti's `HotplugSupported` + `VerifyHotplugSupport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotplugSupport {
    /// The instance.
    pub name: String,
    /// Disks (`disk_type`).
    pub disk: DeviceSupport,
    /// NICs (`nic_type`).
    pub nic: DeviceSupport,
}

/// Pure: what hotplug the instance of `record` allows, given the QMP
/// commands its QEMU has and the devices it has (`/machine/peripheral`).
pub fn support(
    record: &RuntimeRecord,
    commands: &BTreeSet<String>,
    peripherals: &BTreeSet<String>,
) -> HotplugSupport {
    let hv = record_hvparams(record);
    let mut disk = Vec::new();
    let mut nic = Vec::new();
    let dt = hv.disk_type();
    if dt != DiskType::Paravirtual && !dt.is_scsi() {
        disk.push(format!("disk_type {} is not hot-pluggable", dt.as_str()));
    }
    if dt.is_scsi() && !peripherals.contains("scsi") {
        disk.push("the instance has no SCSI controller (it started without SCSI disks)".into());
    }
    if !hv.nic_type().is_pci() {
        nic.push(format!(
            "nic_type {} is not hot-pluggable",
            hv.nic_type().as_str()
        ));
    }
    if is_q35(record) {
        let q = "PCI hotplug on q35 machines is not supported".to_owned();
        if !dt.is_scsi() {
            disk.push(q.clone());
        }
        nic.push(q);
    }
    for c in ["add-fd", "blockdev-add", "device_add", "device_del"] {
        if !commands.contains(c) {
            disk.push(format!("QEMU lacks the {c} command"));
        }
    }
    for c in ["getfd", "netdev_add", "device_add", "device_del"] {
        if !commands.contains(c) {
            nic.push(format!("QEMU lacks the {c} command"));
        }
    }
    let acpi = hv.acpi();
    let verdict = |reasons: Vec<String>, pci: bool| {
        let add = reasons.is_empty();
        let mut reasons = reasons;
        let remove = add && (acpi || !pci);
        if add && !remove {
            reasons.push("acpi is off: the guest cannot be asked to release PCI devices".into());
        }
        DeviceSupport {
            add,
            remove,
            reasons,
        }
    };
    HotplugSupport {
        name: instance_name(record),
        disk: verdict(disk, !dt.is_scsi()),
        nic: verdict(nic, true),
    }
}
