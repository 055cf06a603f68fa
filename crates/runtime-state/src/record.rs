//! Our runtime record: versioned, and it stores the model (instance, hvparams,
//! each device's hvinfo, the QEMU identity and machine type), not only an argv,
//! so a restart or migration can re-render the command line for the QEMU at
//! hand while keeping the guest ABI.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// The record version this program writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// Where a device sits, as Ganeti's `hvinfo` (key order: driver, id, bus, then
/// addr, or channel, scsi-id, lun).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HvInfo {
    /// QEMU device driver (`virtio-blk-pci`, `scsi-hd`, `e1000`, …).
    pub driver: String,
    /// QEMU device id (`disk-7c079136-2573-4112`).
    pub id: String,
    /// The bus (`pci.0`, `scsi.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// PCI address, Python `hex()` style (`0xc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// SCSI channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
    /// SCSI target.
    #[serde(default, rename = "scsi-id", skip_serializing_if = "Option::is_none")]
    pub scsi_id: Option<u32>,
    /// SCSI LUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
}

/// One disk of a running instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// The disk's UUID.
    pub uuid: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `rw` or `ro`.
    #[serde(default = "rw")]
    pub mode: String,
    /// Kernelspace path (for Ganeti: the `instance-disks` link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Userspace URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Where the device sits in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hvinfo: Option<HvInfo>,
    /// Keys we do not interpret (Ganeti's `dev_type`, `logical_id`, …), kept
    /// so a Ganeti file round-trips.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

fn rw() -> String {
    "rw".to_owned()
}

/// One NIC of a running instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicRecord {
    /// The NIC's UUID.
    pub uuid: String,
    /// Its MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `bridged`, `routed`, `openvswitch` or `ext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Bridge, routing table or switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// VLAN, when Ganeti's nicparams had the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<String>,
    /// The host tap interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// Where the device sits in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hvinfo: Option<HvInfo>,
    /// Keys we do not interpret (`network`, `netinfo`, …).
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// The QEMU binary an instance was started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuIdentity {
    /// The binary.
    pub path: String,
    /// Its version (`7.2.0`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Which program wrote a runtime file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// This program.
    #[default]
    Ours,
    /// Ganeti (converted from its 4-element form).
    Ganeti,
}

/// The runtime record of one running instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// Always [`RECORD_VERSION`] when written by this program.
    pub version: u32,
    /// Who wrote it.
    #[serde(default)]
    pub origin: Origin,
    /// The instance as started, in the instance-spec shape (without hvparams).
    pub instance: Map<String, Json>,
    /// Every hvparam at start time.
    pub hvparams: Map<String, Json>,
    /// The resolved machine type, e.g. `pc-i440fx-7.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The QEMU binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<QemuIdentity>,
    /// The argv as launched.
    pub argv: Vec<String>,
    /// Ganeti's recorded argv (its "phase A") whose guest part `argv`
    /// keeps: an instance that Ganeti's KVM layer started and that arrived
    /// here by migration. Handed on as the argv of Ganeti's runtime format,
    /// so the instance can go back to Ganeti's layer unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_argv: Option<Vec<String>>,
    /// Disks, in order.
    pub disks: Vec<DiskRecord>,
    /// NICs, in order.
    pub nics: Vec<NicRecord>,
    /// Written before QEMU is spawned and cleared once it runs configured:
    /// a start that was interrupted (the starting process killed) leaves
    /// this set, so later commands know to finish or undo it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}
