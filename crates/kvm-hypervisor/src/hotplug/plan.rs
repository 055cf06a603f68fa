//! Planning a hot-add: pure, from the runtime record, the device spec and
//! what QEMU reports; the device itself comes from [`crate::devices`].

use device_slots::{
    DeviceId, DeviceKind, HvInfo, ObservedDevice, PciAllocator, PciSlot, Placement, ScsiAllocator,
    ScsiId,
};
use qmp_protocol::{BlockdevAdd, DeviceAdd, NetdevAdd};
use serde_json::{Value as Json, json};

use super::HotplugError;
use crate::devices::{DiskDevice, NicDevice, OpenDisk, Plug, device_id};
use crate::hvparams::DiskType;
use crate::launch::plan::PlanEnv;
use crate::net::{NicConfig, TapOptions};
use crate::spec::{DiskSpec, InstanceSpec, NicSpec, SpecProblems};
use crate::state::{DiskRecord, NicRecord, RuntimeRecord};

/// Parses one disk spec (the shape of an element of an instance spec's
/// `disks`), reporting every problem with its field name.
pub fn parse_disk_spec(value: &Json) -> Result<DiskSpec, HotplugError> {
    let wrapped = json!({"name": "hotplug", "memory": 1, "vcpus": 1, "disks": [value]});
    let loaded = InstanceSpec::from_value(&wrapped).map_err(|p| HotplugError::Spec {
        what: "disk",
        problems: strip_prefix(p, "disks[0]"),
    })?;
    Ok(loaded.spec.disks()[0].clone())
}

/// Parses one NIC spec (the shape of an element of an instance spec's `nics`).
pub fn parse_nic_spec(value: &Json) -> Result<NicSpec, HotplugError> {
    let wrapped = json!({"name": "hotplug", "memory": 1, "vcpus": 1, "nics": [value]});
    let loaded = InstanceSpec::from_value(&wrapped).map_err(|p| HotplugError::Spec {
        what: "NIC",
        problems: strip_prefix(p, "nics[0]"),
    })?;
    Ok(loaded.spec.nics()[0].clone())
}

fn strip_prefix(mut p: SpecProblems, prefix: &str) -> SpecProblems {
    for problem in &mut p.0 {
        if let Some(rest) = problem.field.strip_prefix(prefix) {
            problem.field = rest.trim_start_matches('.').to_owned();
            if problem.field.is_empty() {
                problem.field = "(spec)".to_owned();
            }
        }
    }
    p
}

/// Everything a disk hot-add does, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskAddPlan {
    /// Where the disk goes.
    pub hvinfo: HvInfo,
    /// The file to open and pass (kernelspace), or none (userspace URI).
    pub open: Option<OpenDisk>,
    /// The block node; for kernelspace disks `file.filename` is replaced by
    /// `/dev/fdset/N` at execution.
    pub blockdev: BlockdevAdd,
    /// The device.
    pub device: DeviceAdd,
    /// The record entry committed once QEMU confirmed the device.
    pub record: DiskRecord,
}

/// Everything a NIC hot-add does, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct NicAddPlan {
    /// Where the NIC goes.
    pub hvinfo: HvInfo,
    /// The tap to open.
    pub tap: TapOptions,
    /// The NIC's network configuration (bridged or routed).
    pub config: NicConfig,
    /// `getfd` names of the tap queue descriptors.
    pub fd_names: Vec<String>,
    /// `getfd` names of the vhost-net descriptors.
    pub vhost_fd_names: Vec<String>,
    /// The netdev.
    pub netdev: NetdevAdd,
    /// The device.
    pub device: DeviceAdd,
    /// The record entry (its `tap` is filled in at execution).
    pub record: NicRecord,
}

pub use crate::instance::record_hvparams;

pub(super) fn not_supported(record: &RuntimeRecord, reason: impl Into<String>) -> HotplugError {
    HotplugError::NotSupported {
        name: instance_name(record),
        reason: reason.into(),
    }
}

pub(super) fn instance_name(record: &RuntimeRecord) -> String {
    record
        .instance
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_owned()
}

pub(super) fn is_q35(record: &RuntimeRecord) -> bool {
    record.machine.as_deref().is_some_and(|m| m.contains("q35"))
}

fn hvinfos(record: &RuntimeRecord) -> impl Iterator<Item = HvInfo> + '_ {
    let disks = record.disks.iter().map(|d| d.hvinfo.as_ref());
    let nics = record.nics.iter().map(|n| n.hvinfo.as_ref());
    disks
        .chain(nics)
        .flatten()
        .filter_map(|h| HvInfo::from_json(&serde_json::to_value(h).ok()?).ok())
}

/// The PCI slots of `pci.0`: the reserved range, every device of the record
/// (legacy ids included), and whatever QEMU reports that we did not know.
pub fn pci_slots(
    record: &RuntimeRecord,
    observed: &[ObservedDevice],
) -> Result<PciAllocator, HotplugError> {
    let hv = record_hvparams(record);
    let reserved =
        u8::try_from(hv.kvm_pci_reservations()).unwrap_or(device_slots::DEFAULT_PCI_RESERVATIONS);
    let mut pci = PciAllocator::new("pci.0", reserved).map_err(|source| HotplugError::NoSlot {
        what: "pci.0".into(),
        source,
    })?;
    for h in hvinfos(record) {
        match &h.placement {
            Placement::Pci { bus, slot } if bus == "pci.0" => pci.mark_used(*slot),
            _ => {
                if let Some(s) = h.id.legacy_slot().and_then(PciSlot::new) {
                    pci.mark_used(s);
                }
            }
        }
    }
    for u in pci.reconcile(observed) {
        tracing::debug!(slot = %u.slot, qdev_id = %u.qdev_id, "slot used by a device the record does not know");
    }
    Ok(pci)
}

/// The targets of `scsi.0`: the record's SCSI disks and the targets QEMU reports.
pub fn scsi_targets(record: &RuntimeRecord, observed: &[u8]) -> ScsiAllocator {
    let mut scsi = ScsiAllocator::new("scsi.0", device_slots::DEFAULT_SCSI_TARGETS);
    for h in hvinfos(record) {
        if let Placement::Scsi { bus, target, .. } = &h.placement
            && bus == "scsi.0"
        {
            scsi.mark_used(*target);
        }
    }
    for t in observed {
        scsi.mark_used(ScsiId::new(*t));
    }
    scsi
}

fn check_new_device(record: &RuntimeRecord, uuid: &str, id: &DeviceId) -> Result<(), HotplugError> {
    let uuids = record
        .disks
        .iter()
        .map(|d| &d.uuid)
        .chain(record.nics.iter().map(|n| &n.uuid));
    for u in uuids {
        if u == uuid {
            return Err(HotplugError::Duplicate {
                name: instance_name(record),
                what: format!("with UUID {uuid}"),
            });
        }
    }
    if hvinfos(record).any(|h| h.id == *id) {
        return Err(HotplugError::Duplicate {
            name: instance_name(record),
            what: format!("with QEMU id {id}"),
        });
    }
    Ok(())
}

/// Plans the hot-add of `disk` to the instance of `record`. `observed` is
/// what `query-pci` reports on bus 0, `scsi_observed` the SCSI targets QEMU
/// has. The device is the one a start with it would create
/// ([`DiskDevice`]).
pub fn plan_hot_add_disk(
    record: &RuntimeRecord,
    disk: &DiskSpec,
    observed: &[ObservedDevice],
    scsi_observed: &[u8],
    env: &PlanEnv,
) -> Result<DiskAddPlan, HotplugError> {
    let hv = record_hvparams(record);
    let disk_type = hv.disk_type();
    if disk_type != DiskType::Paravirtual && !disk_type.is_scsi() {
        let why = format!("disk_type {} cannot be hot-plugged", disk_type.as_str());
        return Err(not_supported(record, why));
    }
    if is_q35(record) && !disk_type.is_scsi() {
        return Err(not_supported(record, Q35));
    }
    let uuid = disk.uuid().to_string();
    let what = format!("disk {uuid}");
    let id = device_id(DeviceKind::Disk, &uuid, &what)?;
    check_new_device(record, &uuid, &id)?;
    let no_slot = |source| HotplugError::NoSlot {
        what: what.clone(),
        source,
    };
    let placement = if disk_type.is_scsi() {
        let target = scsi_targets(record, scsi_observed)
            .propose()
            .map_err(no_slot)?;
        Placement::Scsi {
            bus: "scsi.0".into(),
            channel: 0,
            target,
            lun: 0,
        }
    } else {
        let slot = pci_slots(record, observed)?.propose().map_err(no_slot)?;
        Placement::Pci {
            bus: "pci.0".into(),
            slot,
        }
    };
    let dev = DiskDevice::new(disk, &hv, id, placement, &env.block_devices, false)?;
    Ok(DiskAddPlan {
        hvinfo: dev.device().hvinfo(),
        open: dev.open().cloned(),
        blockdev: dev.blockdev_add(None),
        device: dev.device().to_device_add(),
        record: dev.record().clone(),
    })
}

const Q35: &str = "PCI hotplug on q35 machines is not supported";

/// Plans the hot-add of `nic`. `attempt` tags the fd names so that a retry
/// in the same QEMU life never collides; `keep` reuses a placement (hot-mod).
pub fn plan_hot_add_nic(
    record: &RuntimeRecord,
    nic: &NicSpec,
    observed: &[ObservedDevice],
    env: &PlanEnv,
    attempt: &str,
    keep: Option<&HvInfo>,
) -> Result<NicAddPlan, HotplugError> {
    let hv = record_hvparams(record);
    let nic_type = hv.nic_type();
    if !nic_type.is_pci() {
        let why = format!("nic_type {} cannot be hot-plugged", nic_type.as_str());
        return Err(not_supported(record, why));
    }
    if is_q35(record) {
        return Err(not_supported(record, Q35));
    }
    let uuid = nic.uuid().to_string();
    let what = format!("NIC {uuid}");
    let id = device_id(DeviceKind::Nic, &uuid, &what)?;
    check_new_device(record, &uuid, &id)?;
    let placement = match keep {
        Some(h) => h.placement.clone(),
        None => {
            let slot = pci_slots(record, observed)?
                .propose()
                .map_err(|source| HotplugError::NoSlot { what, source })?;
            Placement::Pci {
                bus: "pci.0".into(),
                slot,
            }
        }
    };
    let name = instance_name(record);
    let index = record.nics.len();
    let dev = NicDevice::new(
        &name,
        index,
        nic,
        &hv,
        id.clone(),
        placement,
        env.vhost_net,
        Plug::Hot,
        false,
    )?;
    let names = |kind: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| id.fd_name(&format!("{kind}{attempt}"), i))
            .collect()
    };
    let fd_names = names("tap", dev.queues());
    let vhost_fd_names = if dev.tap().vhost {
        names("vhost", dev.queues())
    } else {
        Vec::new()
    };
    Ok(NicAddPlan {
        hvinfo: dev.device().hvinfo(),
        tap: dev.tap().clone(),
        config: dev.config().clone(),
        netdev: dev.netdev_add(&fd_names, &vhost_fd_names),
        fd_names,
        vhost_fd_names,
        device: dev.device().to_device_add(),
        record: dev.record().clone(),
    })
}
