//! Hotplug: disks and NICs added to and removed from a running instance,
//! and disk resize (Ganeti's `HotAddDevice`, `HotDelDevice`,
//! `HotModDevice`, `ResizeDisk`, `VerifyHotplugSupport`).
//!
//! Planning is pure: [`plan_hot_add_disk`] and [`plan_hot_add_nic`] turn the
//! runtime record, the device spec and what QEMU reports on its PCI bus into
//! a plan (hvinfo, QMP commands, tap options, the record entry to commit).
//! Execution walks the plan and undoes every step in reverse on failure; the
//! runtime record changes only after QEMU confirmed the device (QOM
//! `realized`, and `query-pci` for PCI devices).
//!
//! Differences from Ganeti, on purpose (reference §11.3):
//! - `DEVICE_DELETED` is listened for before `device_del` and matched on the
//!   device id, so SCSI removal (whose event precedes the reply) works (§11.3.1);
//! - verification uses the QOM tree, which sees SCSI disks and `-blockdev`
//!   drives (§11.3.2), and needs no sleeping retries;
//! - hot-added disks get `auto-read-only: false` as at start (§11.3.3);
//! - NIC removal waits for the guest before `netdev_del` and then takes the
//!   NIC's network configuration down (§11.3.4);
//! - NICs are found by UUID, never by position (§11.3.5);
//! - the QEMU id comes from the record's hvinfo, so legacy
//!   `hotdisk-…-pci-N` devices can be removed and resized (§11.3.6);
//! - a non-hotpluggable device type is [`HotplugError::NotSupported`] (§11.3.7);
//! - every failed add is rolled back (§11.3.8);
//! - fd names carry a per-attempt tag, so a retry never collides (§11.3.11).
//!
//! A guest that does not release a device within the deadline leaves it
//! "removal pending" in the runtime record; the next operation on the
//! instance (or [`recover`]) completes the removal once QEMU has dropped the
//! device. An intent file (`conf/<name>.intent`) written before the first
//! QMP step lets the next operation finish or undo a hotplug whose process
//! died midway.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU8;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use device_slots::{
    DeviceId, DeviceKind, HvInfo, ObservedDevice, PciAllocator, PciSlot, Placement, ScsiAllocator,
    ScsiId, SlotError,
};
use qmp_protocol::{
    AddFd, BlockResize, BlockdevAdd, BlockdevDel, Client, CloseFd, DeviceAdd, DeviceDel,
    EventFilter, NetdevAdd, NetdevDel, QmpError, QomGet, QomList, QueryCommands, QueryFdsets,
    QueryPci, RemoveFd,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::hvparams::{DiskAio, DiskCache, DiskType, HvParams, NicType};
use crate::lifecycle::{Node, connect};
use crate::net::{NicConfig, Tap, TapName, TapOptions};
use crate::spec::{DiskMode, DiskSource, DiskSpec, InstanceSpec, NicSpec, SpecProblems};
use crate::state::{
    self, DiskRecord, Format, InstanceLock, Liveness, LockWait, NicRecord, RuntimeRecord,
    StateError,
};

/// How long the guest gets to release a device before its removal is
/// recorded as pending.
pub const REMOVAL_DEADLINE: Duration = Duration::from_secs(10);

/// The key marking a device whose removal the guest has not completed yet
/// (kept in the record entry's extra keys).
pub const REMOVAL_PENDING: &str = "removal_pending";

/// Environment variable naming a step after which the process kills itself
/// with SIGKILL (a test hook for crash recovery): `blockdev-add`, `netdev_add`.
pub const CRASH_HOOK_ENV: &str = "KVM_HYPERVISOR_TEST_CRASH_AFTER";

const MONITOR_WAIT: Duration = Duration::from_secs(5);
const LOCK_WAIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------- errors

/// Why a hotplug operation failed. After an add failed, everything it did
/// was undone and the runtime record is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HotplugError {
    /// Hotplug is not possible for this instance or device type.
    #[error("hotplug is not supported for {name}: {reason}")]
    NotSupported {
        /// The instance.
        name: String,
        /// Why not.
        reason: String,
    },
    /// The run directory, the lock or the record.
    #[error(transparent)]
    State(#[from] StateError),
    /// A device spec that does not parse.
    #[error("invalid {what} spec: {problems}")]
    Spec {
        /// `disk` or `NIC`.
        what: &'static str,
        /// Every problem.
        problems: SpecProblems,
    },
    /// No device with that UUID.
    #[error("instance {name} has no {kind} with UUID {uuid}")]
    UnknownDevice {
        /// The instance.
        name: String,
        /// `disk` or `NIC`.
        kind: &'static str,
        /// The UUID asked for.
        uuid: String,
    },
    /// A device with that UUID or QEMU id exists already.
    #[error("instance {name} already has a device {what}")]
    Duplicate {
        /// The instance.
        name: String,
        /// The UUID or id.
        what: String,
    },
    /// The bus is full.
    #[error("no free slot for {what}")]
    NoSlot {
        /// The device.
        what: String,
        /// The allocator's error (names the bus).
        #[source]
        source: SlotError,
    },
    /// The device's QEMU id cannot be derived.
    #[error("no QEMU id for {what}")]
    DeviceId {
        /// The device.
        what: String,
        /// Why.
        #[source]
        source: SlotError,
    },
    /// vhost-net asked for but missing (QEMU 7.2 would abort).
    #[error(
        "vhost_net is on but {} is missing on this host",
        crate::host::VHOST_NET_DEVICE
    )]
    VhostNetMissing,
    /// A step of an add failed; the earlier steps were undone.
    #[error("hot-adding {id} failed at step `{step}`; earlier steps were undone")]
    Step {
        /// The device id.
        id: String,
        /// The step.
        step: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The guest refused to release the device (`DEVICE_UNPLUG_GUEST_ERROR`).
    #[error("the guest refused to release {id}")]
    GuestRefused {
        /// The device id.
        id: String,
    },
    /// The device's removal has not completed; it cannot be re-added or modified yet.
    #[error("{id} is still being removed: the guest has not released it yet")]
    RemovalPending {
        /// The device id.
        id: String,
    },
    /// A disk size that is not a positive number of bytes.
    #[error("{0} is not a disk size")]
    BadSize(String),
    /// Talking to QEMU failed.
    #[error("QMP on instance {name}")]
    Qmp {
        /// The instance.
        name: String,
        /// The cause.
        #[source]
        source: Box<QmpError>,
    },
}

// ---------------------------------------------------------------- specs

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

// ---------------------------------------------------------------- plans

/// Facts about the host that planning needs, gathered by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Whether `/dev/vhost-net` exists.
    pub vhost_net: bool,
    /// Kernelspace disk paths that are block devices (others are files).
    pub block_devices: Vec<PathBuf>,
}

impl HostFacts {
    /// The facts for `disk` and vhost-net on this host.
    pub fn gather(disk: Option<&DiskSpec>) -> HostFacts {
        let block_devices = match disk.map(DiskSpec::source) {
            Some(DiskSource::Path(p)) if crate::host::is_block_device(p) => vec![p.clone()],
            _ => Vec::new(),
        };
        HostFacts {
            vhost_net: Path::new(crate::host::VHOST_NET_DEVICE).exists(),
            block_devices,
        }
    }
}

/// A kernelspace disk we open and pass to QEMU with `add-fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDisk {
    /// The path.
    pub path: PathBuf,
    /// Opened read-only (mode `ro`).
    pub read_only: bool,
    /// Opened with `O_DIRECT` (the cache mode bypasses the host cache).
    pub direct: bool,
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

/// The hvparams of a running instance, from its record.
pub fn record_hvparams(record: &RuntimeRecord) -> HvParams {
    HvParams::parse(&record.hvparams).0
}

fn not_supported(record: &RuntimeRecord, reason: impl Into<String>) -> HotplugError {
    HotplugError::NotSupported {
        name: instance_name(record),
        reason: reason.into(),
    }
}

fn instance_name(record: &RuntimeRecord) -> String {
    record
        .instance
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_owned()
}

fn is_q35(record: &RuntimeRecord) -> bool {
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

fn placement_props(mut dev: DeviceAdd, p: &Placement) -> DeviceAdd {
    match p {
        Placement::Pci { bus, slot } => dev.bus(bus.as_str()).property("addr", slot.hex()),
        Placement::Scsi {
            bus,
            channel,
            target,
            lun,
        } => {
            dev = dev
                .bus(bus.as_str())
                .property("channel", *channel)
                .property("scsi-id", target.get())
                .property("lun", *lun);
            dev
        }
        Placement::Auto => dev,
    }
}

/// Plans the hot-add of `disk` to the instance of `record`. `observed` is
/// what `query-pci` reports on bus 0, `scsi_observed` the SCSI targets QEMU
/// has. `keep` places the disk where a removed one was (hot-mod).
pub fn plan_hot_add_disk(
    record: &RuntimeRecord,
    disk: &DiskSpec,
    observed: &[ObservedDevice],
    scsi_observed: &[u8],
    facts: &HostFacts,
) -> Result<DiskAddPlan, HotplugError> {
    let hv = record_hvparams(record);
    let disk_type = hv.disk_type();
    let driver = match disk_type {
        DiskType::Paravirtual => "virtio-blk-pci",
        t if t.is_scsi() => t.qemu_driver().unwrap_or("scsi-hd"),
        t => {
            return Err(not_supported(
                record,
                format!("disk_type {} cannot be hot-plugged", t.as_str()),
            ));
        }
    };
    if is_q35(record) && !disk_type.is_scsi() {
        return Err(not_supported(
            record,
            "PCI hotplug on q35 machines is not supported",
        ));
    }
    let uuid = disk.uuid().to_string();
    let what = format!("disk {uuid}");
    let id =
        DeviceId::for_device(DeviceKind::Disk, &uuid).map_err(|source| HotplugError::DeviceId {
            what: what.clone(),
            source,
        })?;
    check_new_device(record, &uuid, &id)?;
    let placement = if disk_type.is_scsi() {
        let target = scsi_targets(record, scsi_observed)
            .propose()
            .map_err(|source| HotplugError::NoSlot {
                what: what.clone(),
                source,
            })?;
        Placement::Scsi {
            bus: "scsi.0".into(),
            channel: 0,
            target,
            lun: 0,
        }
    } else {
        let pci = pci_slots(record, observed)?;
        let slot = pci.propose().map_err(|source| HotplugError::NoSlot {
            what: what.clone(),
            source,
        })?;
        Placement::Pci {
            bus: "pci.0".into(),
            slot,
        }
    };
    let hvinfo = HvInfo {
        driver: driver.to_owned(),
        id: id.clone(),
        placement,
    };
    // (device write-cache, cache.direct, cache.no-flush), as at start.
    let (write_cache, direct, no_flush) = match hv.disk_cache() {
        DiskCache::None => (true, true, false),
        DiskCache::Writethrough => (false, false, false),
        _ => (true, false, false),
    };
    let read_only = disk.mode() == DiskMode::Ro;
    let (file, open) = match disk.source() {
        DiskSource::Path(p) => {
            let kind = if facts.block_devices.contains(p) {
                "host_device"
            } else {
                "file"
            };
            let mut f = json!({"driver": kind, "filename": p.display().to_string()});
            let mut o_direct = direct;
            if let Some(aio) = hv.disk_aio() {
                f["aio"] = json!(aio.as_str());
                if aio == DiskAio::Native {
                    f["cache"] = json!({"direct": true});
                    o_direct = true;
                }
            }
            (
                f,
                Some(OpenDisk {
                    path: p.clone(),
                    read_only,
                    direct: o_direct,
                }),
            )
        }
        DiskSource::Uri(u) => (
            qemu_cmdline::storage_uri(u).map_err(|e| HotplugError::Step {
                id: id.to_string(),
                step: "storage-uri",
                source: Box::new(e),
            })?,
            None,
        ),
    };
    let mut blockdev = BlockdevAdd::new("raw", id.as_str())
        .property(
            "discard",
            hv.disk_discard().map_or("ignore", |d| d.as_str()),
        )
        .property("cache", json!({"direct": direct, "no-flush": no_flush}))
        .property("file", file);
    if read_only {
        blockdev = blockdev.property("read-only", true);
    }
    // As at start (Ganeti forgets it here, reference §11.3.3).
    blockdev = blockdev.property("auto-read-only", false);
    let mut device = placement_props(DeviceAdd::new(driver, id.as_str()), &hvinfo.placement)
        .property("drive", id.as_str());
    if driver != "scsi-generic" {
        device = device.property("write-cache", if write_cache { "on" } else { "off" });
    }
    let record_entry = DiskRecord {
        uuid: uuid.clone(),
        name: disk.name().map(str::to_owned),
        size: disk.size_mib(),
        mode: if read_only { "ro" } else { "rw" }.into(),
        path: match disk.source() {
            DiskSource::Path(p) => Some(p.display().to_string()),
            DiskSource::Uri(_) => None,
        },
        uri: match disk.source() {
            DiskSource::Uri(u) => Some(u.clone()),
            DiskSource::Path(_) => None,
        },
        hvinfo: state_hvinfo(&hvinfo),
        extra: Map::new(),
    };
    Ok(DiskAddPlan {
        hvinfo,
        open,
        blockdev,
        device,
        record: record_entry,
    })
}

fn state_hvinfo(h: &HvInfo) -> Option<state::HvInfo> {
    serde_json::from_value(h.to_json()).ok()
}

/// Plans the hot-add of `nic`. `attempt` tags the fd names so that a retry
/// in the same QEMU life never collides; `keep` reuses a placement (hot-mod).
pub fn plan_hot_add_nic(
    record: &RuntimeRecord,
    nic: &NicSpec,
    observed: &[ObservedDevice],
    facts: &HostFacts,
    attempt: &str,
    keep: Option<&HvInfo>,
) -> Result<NicAddPlan, HotplugError> {
    let hv = record_hvparams(record);
    let nic_type = hv.nic_type();
    if !nic_type.is_pci() {
        return Err(not_supported(
            record,
            format!("nic_type {} cannot be hot-plugged", nic_type.as_str()),
        ));
    }
    if is_q35(record) {
        return Err(not_supported(
            record,
            "PCI hotplug on q35 machines is not supported",
        ));
    }
    let paravirtual = nic_type == NicType::Paravirtual;
    let vhost = paravirtual && hv.vhost_net();
    if vhost && !facts.vhost_net {
        return Err(HotplugError::VhostNetMissing);
    }
    let queues = if paravirtual {
        u8::try_from(hv.virtio_net_queues()).unwrap_or(1).max(1)
    } else {
        1
    };
    let uuid = nic.uuid().to_string();
    let what = format!("NIC {uuid}");
    let id =
        DeviceId::for_device(DeviceKind::Nic, &uuid).map_err(|source| HotplugError::DeviceId {
            what: what.clone(),
            source,
        })?;
    check_new_device(record, &uuid, &id)?;
    let placement = match keep {
        Some(h) => h.placement.clone(),
        None => {
            let pci = pci_slots(record, observed)?;
            let slot = pci.propose().map_err(|source| HotplugError::NoSlot {
                what: what.clone(),
                source,
            })?;
            Placement::Pci {
                bus: "pci.0".into(),
                slot,
            }
        }
    };
    let driver = nic_type.qemu_driver();
    let hvinfo = HvInfo {
        driver: driver.to_owned(),
        id: id.clone(),
        placement,
    };
    let fd_names: Vec<String> = (0..usize::from(queues))
        .map(|i| id.fd_name(&format!("tap{attempt}"), i))
        .collect();
    let vhost_fd_names: Vec<String> = if vhost {
        (0..usize::from(queues))
            .map(|i| id.fd_name(&format!("vhost{attempt}"), i))
            .collect()
    } else {
        Vec::new()
    };
    let mut netdev = NetdevAdd::new("tap", id.as_str());
    if queues == 1 {
        netdev = netdev.property("fd", fd_names.join(":"));
    } else {
        netdev = netdev.property("fds", fd_names.join(":"));
    }
    if vhost {
        netdev = netdev.property("vhost", true).property(
            if queues == 1 { "vhostfd" } else { "vhostfds" },
            vhost_fd_names.join(":"),
        );
    }
    let mut device = placement_props(DeviceAdd::new(driver, id.as_str()), &hvinfo.placement)
        .property("netdev", id.as_str())
        .property("mac", nic.mac().to_string());
    if queues > 1 {
        device = device
            .property("mq", true)
            .property("vectors", 2 * u32::from(queues) + 2);
    }
    if hv.use_chroot() {
        device = device.property("romfile", "");
    }
    let config = crate::lifecycle::nic_config_for(&instance_name(record), nic, record.nics.len());
    let record_entry = NicRecord {
        uuid,
        mac: Some(nic.mac().to_string()),
        ip: nic.ip().map(|i| i.to_string()),
        name: nic.name().map(str::to_owned),
        mode: Some(config.mode.as_str().to_owned()),
        link: Some(nic.link().to_owned()),
        vlan: Some(nic.vlan().to_owned()),
        tap: None,
        hvinfo: state_hvinfo(&hvinfo),
        extra: Map::new(),
    };
    Ok(NicAddPlan {
        hvinfo,
        tap: TapOptions {
            name: None,
            vnet_hdr: paravirtual && hv.vnet_hdr(),
            queues: NonZeroU8::new(queues).unwrap_or(NonZeroU8::MIN),
            vhost,
        },
        config,
        fd_names,
        vhost_fd_names,
        netdev,
        device,
        record: record_entry,
    })
}

// ---------------------------------------------------------------- support

/// Whether one device type can be hot-plugged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Hot-add possible.
    pub add: bool,
    /// Hot-remove possible.
    pub remove: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

/// What [`check`] reports (Ganeti's `HotplugSupported` + `VerifyHotplugSupport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotplugSupport {
    /// The instance.
    pub name: String,
    /// Disks (`disk_type`).
    pub disk: Verdict,
    /// NICs (`nic_type`).
    pub nic: Verdict,
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
        Verdict {
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

// ---------------------------------------------------------------- results

/// What an add did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Added {
    /// `disk` or `nic`.
    pub kind: &'static str,
    /// The device's UUID.
    pub uuid: String,
    /// The QEMU id.
    pub id: String,
    /// The hvinfo written to the record.
    pub hvinfo: Json,
    /// The host tap (NICs).
    pub tap: Option<String>,
}

/// How a removal ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Removal {
    /// The guest released the device; it is gone from QEMU and the record.
    Removed {
        /// The QEMU id.
        id: String,
    },
    /// The guest did not release it in time: recorded as removal pending,
    /// completed by a later operation once it does.
    Pending {
        /// The QEMU id.
        id: String,
    },
}

/// What [`resize_disk`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resized {
    /// The disk's UUID.
    pub uuid: String,
    /// The QEMU id.
    pub id: String,
    /// The new size in bytes.
    pub bytes: u64,
}

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// An interrupted add was completed (the device had reached QEMU).
    FinishedAdd {
        /// The QEMU id.
        id: String,
    },
    /// An interrupted add was undone.
    UndidAdd {
        /// The QEMU id.
        id: String,
    },
    /// A removal (interrupted or pending) was completed.
    FinishedRemoval {
        /// The QEMU id.
        id: String,
    },
    /// A removal is still waiting for the guest.
    StillPending {
        /// The QEMU id.
        id: String,
    },
}

// ---------------------------------------------------------------- intent

/// What an interrupted operation was doing, written before its first QMP step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Intent {
    /// `add` or `remove`.
    action: String,
    /// `disk` or `nic`.
    kind: String,
    /// The device's UUID.
    uuid: String,
    /// The QEMU id.
    id: String,
    /// The record entry to commit when an add is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disk: Option<DiskRecord>,
    /// The record entry to commit when an add is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nic: Option<NicRecord>,
    /// `getfd` names that may still be held by QEMU.
    #[serde(default)]
    fd_names: Vec<String>,
}

/// `conf/<name>.intent`.
pub fn intent_file(node: &Node, name: &str) -> PathBuf {
    node.run
        .runtime_file(name)
        .with_file_name(format!("{name}.intent"))
}

fn crash_hook(step: &str) {
    if std::env::var(CRASH_HOOK_ENV).is_ok_and(|s| s == step) {
        tracing::warn!(step, "test hook: killing this process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

// ---------------------------------------------------------------- session

struct Session<'a> {
    node: &'a Node,
    name: String,
    record: RuntimeRecord,
    qmp: Client,
    _lock: InstanceLock,
}

fn format_of(record: &RuntimeRecord) -> Format {
    match record.origin {
        state::Origin::Ours => Format::Ours,
        state::Origin::Ganeti => Format::Ganeti,
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

enum Undo {
    BlockdevDel(String),
    RemoveFd(i64),
    CloseFd(String),
    NetdevDel(String),
    DeviceDel(String),
    NicDown(Box<(NicConfig, TapName)>),
}

impl<'a> Session<'a> {
    async fn open(node: &'a Node, name: &str) -> Result<Session<'a>, HotplugError> {
        state::check_name(name)?;
        let lock = node.run.lock(name, LockWait::Up(LOCK_WAIT))?;
        let down = |reason: &str| HotplugError::NotSupported {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if !matches!(state::liveness(&node.run, name), Liveness::Running { .. }) {
            // A stale intent of a QEMU that is gone means nothing any more.
            let _ = std::fs::remove_file(intent_file(node, name));
            return Err(down("the instance is not running"));
        }
        let record = node
            .run
            .read_runtime(name)?
            .map(|f| f.record())
            .ok_or_else(|| down("the instance has no runtime record"))?;
        let qmp = connect(&node.run.ctrl(name, ".qmp"), MONITOR_WAIT)
            .await
            .map_err(|e| HotplugError::NotSupported {
                name: name.to_owned(),
                reason: format!("the instance is probably down ({e})"),
            })?;
        Ok(Session {
            node,
            name: name.to_owned(),
            record,
            qmp,
            _lock: lock,
        })
    }

    fn qmp_err(&self) -> impl Fn(QmpError) -> HotplugError + '_ {
        move |source| HotplugError::Qmp {
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn save(&self) -> Result<(), HotplugError> {
        self.node
            .run
            .write_record(&self.name, &self.record, format_of(&self.record))?;
        Ok(())
    }

    fn write_intent(&self, intent: &Intent) -> Result<(), HotplugError> {
        let text = serde_json::to_vec_pretty(intent).unwrap_or_default();
        state::write_atomic(&intent_file(self.node, &self.name), &text, state::FILE_MODE)?;
        Ok(())
    }

    fn clear_intent(&self) {
        let _ = std::fs::remove_file(intent_file(self.node, &self.name));
    }

    async fn peripherals(&self) -> Result<BTreeMap<String, String>, HotplugError> {
        let list = self
            .qmp
            .execute(QomList::new("/machine/peripheral"))
            .await
            .map_err(self.qmp_err())?;
        Ok(list
            .into_iter()
            .filter(|p| p.kind.starts_with("child<"))
            .map(|p| (p.name, p.kind))
            .collect())
    }

    async fn observed_pci(&self) -> Result<Vec<ObservedDevice>, HotplugError> {
        let buses = self.qmp.execute(QueryPci).await.map_err(self.qmp_err())?;
        Ok(buses
            .into_iter()
            .filter(|b| b.bus == 0)
            .flat_map(|b| b.devices)
            .filter_map(|d| {
                Some(ObservedDevice {
                    slot: u8::try_from(d.slot).ok()?,
                    qdev_id: d.qdev_id,
                })
            })
            .collect())
    }

    async fn observed_scsi(&self) -> Result<Vec<u8>, HotplugError> {
        let mut out = Vec::new();
        for (id, kind) in self.peripherals().await? {
            if !kind.starts_with("child<scsi-") {
                continue;
            }
            let v = self
                .qmp
                .execute(QomGet::new(format!("/machine/peripheral/{id}"), "scsi-id"))
                .await
                .map_err(self.qmp_err())?;
            if let Some(t) = v.as_u64().and_then(|t| u8::try_from(t).ok()) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Whether QEMU has device `id`, realized (QOM), and for a PCI device
    /// on `pci.0` at the planned slot (`query-pci`).
    async fn verify(&self, hvinfo: &HvInfo) -> Result<bool, HotplugError> {
        let id = hvinfo.id.as_str();
        let realized = self
            .qmp
            .execute(QomGet::new(format!("/machine/peripheral/{id}"), "realized"))
            .await;
        if !matches!(realized, Ok(Json::Bool(true))) {
            return Ok(false);
        }
        if let Placement::Pci { bus, slot } = &hvinfo.placement
            && bus == "pci.0"
        {
            let seen = self.observed_pci().await?;
            return Ok(seen.iter().any(|d| d.qdev_id == id && d.slot == slot.get()));
        }
        Ok(true)
    }

    async fn undo(&self, steps: Vec<Undo>) {
        for step in steps.into_iter().rev() {
            let r = match &step {
                Undo::BlockdevDel(id) => self.qmp.execute(BlockdevDel::new(id)).await,
                Undo::RemoveFd(set) => self.qmp.execute(RemoveFd::set(*set)).await,
                Undo::CloseFd(n) => self.qmp.execute(CloseFd::new(n)).await,
                Undo::NetdevDel(id) => self.qmp.execute(NetdevDel::new(id)).await,
                Undo::DeviceDel(id) => self.qmp.execute(DeviceDel::new(id)).await,
                Undo::NicDown(b) => {
                    nic_down(&b.0, &b.1).await;
                    Ok(())
                }
            };
            if let Err(e) = r {
                tracing::warn!(instance = %self.name, error = %e, "undoing a hotplug step failed");
            }
        }
    }

    /// Finishes or undoes an interrupted operation, and completes pending
    /// removals whose devices QEMU has dropped.
    async fn recover(&mut self) -> Result<Vec<Recovery>, HotplugError> {
        let mut done = Vec::new();
        let path = intent_file(self.node, &self.name);
        let intent: Option<Intent> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let any_pending = self.record.disks.iter().any(|d| is_pending(&d.extra))
            || self.record.nics.iter().any(|n| is_pending(&n.extra));
        if intent.is_none() && !any_pending {
            // Nothing to finish: spare QEMU the QOM walk.
            return Ok(done);
        }
        let peripherals = self.peripherals().await?;
        if let Some(intent) = intent {
            let present = peripherals.contains_key(&intent.id);
            match (intent.action.as_str(), present) {
                ("add", true) => {
                    if let Some(d) = intent.disk.clone()
                        && !self.record.disks.iter().any(|x| x.uuid == d.uuid)
                    {
                        self.record.disks.push(d);
                    }
                    if let Some(n) = intent.nic.clone()
                        && !self.record.nics.iter().any(|x| x.uuid == n.uuid)
                    {
                        self.record.nics.push(n);
                    }
                    self.remove_fdsets(&intent.id).await;
                    self.save()?;
                    done.push(Recovery::FinishedAdd { id: intent.id });
                }
                ("add", false) => {
                    let mut steps = Vec::new();
                    if let Some(n) = &intent.nic
                        && let Some((cfg, tap)) =
                            crate::lifecycle::nic_config_of(&self.name, n, self.record.nics.len())
                    {
                        steps.push(Undo::NicDown(Box::new((cfg, tap))));
                    }
                    steps.extend(intent.fd_names.iter().cloned().map(Undo::CloseFd));
                    if intent.kind == "disk" {
                        steps.push(Undo::BlockdevDel(intent.id.clone()));
                    } else {
                        steps.push(Undo::NetdevDel(intent.id.clone()));
                    }
                    self.undo(steps).await;
                    self.remove_fdsets(&intent.id).await;
                    done.push(Recovery::UndidAdd { id: intent.id });
                }
                _ => {
                    // An interrupted removal: whether device_del was sent or
                    // not, the entry becomes pending and is completed below
                    // once the device is gone (or by another removal).
                    if let Some(e) = self.entry_extra(&intent.uuid) {
                        e.insert(REMOVAL_PENDING.into(), Json::Bool(true));
                    }
                    self.save()?;
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        let pending: Vec<(String, String, &'static str)> = self
            .record
            .disks
            .iter()
            .filter(|d| is_pending(&d.extra))
            .map(|d| (d.uuid.clone(), disk_id(d), "disk"))
            .chain(
                self.record
                    .nics
                    .iter()
                    .filter(|n| is_pending(&n.extra))
                    .map(|n| (n.uuid.clone(), nic_id(n), "nic")),
            )
            .collect();
        for (uuid, id, kind) in pending {
            if peripherals.contains_key(&id) {
                done.push(Recovery::StillPending { id });
            } else {
                self.finish_removal(kind, &uuid, &id).await?;
                done.push(Recovery::FinishedRemoval { id });
            }
        }
        for r in &done {
            tracing::info!(instance = %self.name, ?r, "hotplug recovery");
        }
        Ok(done)
    }

    fn entry_extra(&mut self, uuid: &str) -> Option<&mut Map<String, Json>> {
        if let Some(d) = self.record.disks.iter_mut().find(|d| d.uuid == uuid) {
            return Some(&mut d.extra);
        }
        self.record
            .nics
            .iter_mut()
            .find(|n| n.uuid == uuid)
            .map(|n| &mut n.extra)
    }

    async fn remove_fdsets(&self, id: &str) {
        let Ok(sets) = self.qmp.execute(QueryFdsets).await else {
            return;
        };
        for s in sets {
            if s.fds.iter().any(|f| f.opaque.as_deref() == Some(id)) {
                let _ = self.qmp.execute(RemoveFd::set(s.fdset_id)).await;
            }
        }
    }

    /// After the device is gone from QEMU: its backend, its network
    /// configuration, its record entry.
    async fn finish_removal(
        &mut self,
        kind: &str,
        uuid: &str,
        id: &str,
    ) -> Result<(), HotplugError> {
        let legacy = DeviceId::parse(id)
            .ok()
            .and_then(|d| d.legacy_slot())
            .is_some();
        if kind == "disk" {
            match self.qmp.execute(BlockdevDel::new(id)).await {
                Ok(()) => {}
                // A legacy `-drive` has no node of that name; QEMU drops
                // such backends with their device.
                Err(e) if legacy || e.qmp_class() == Some("GenericError") => {
                    tracing::debug!(id, error = %e, "no block node to delete");
                }
                Err(e) => return Err(self.qmp_err()(e)),
            }
            self.record.disks.retain(|d| d.uuid != uuid);
        } else {
            if let Err(e) = self.qmp.execute(NetdevDel::new(id)).await {
                tracing::debug!(id, error = %e, "no netdev to delete");
            }
            if let Some(pos) = self.record.nics.iter().position(|n| n.uuid == uuid) {
                let n = self.record.nics.remove(pos);
                if let Some((cfg, tap)) = crate::lifecycle::nic_config_of(&self.name, &n, pos) {
                    nic_down(&cfg, &tap).await;
                }
                let _ = std::fs::remove_file(self.node.run.nic_file(&self.name, uuid));
            }
        }
        self.save()?;
        tracing::info!(instance = %self.name, id, "device removed");
        Ok(())
    }

    async fn add_disk(&mut self, disk: &DiskSpec) -> Result<Added, HotplugError> {
        let hv = record_hvparams(&self.record);
        let observed = self.observed_pci().await?;
        let scsi = if hv.disk_type().is_scsi() {
            if !self.peripherals().await?.contains_key("scsi") {
                return Err(not_supported(
                    &self.record,
                    "the instance has no SCSI controller (it started without SCSI disks)",
                ));
            }
            self.observed_scsi().await?
        } else {
            Vec::new()
        };
        let plan = plan_hot_add_disk(
            &self.record,
            disk,
            &observed,
            &scsi,
            &HostFacts::gather(Some(disk)),
        )?;
        let id = plan.hvinfo.id.to_string();
        let step_err = |step: &'static str| {
            let id = id.clone();
            move |source: Box<dyn std::error::Error + Send + Sync>| HotplugError::Step {
                id,
                step,
                source,
            }
        };
        // Open before anything reaches QEMU: a bad path fails here.
        let file: Option<OwnedFd> = match &plan.open {
            Some(o) => Some(open_disk(o).map_err(|e| step_err("open")(boxed(e)))?),
            None => None,
        };
        self.write_intent(&Intent {
            action: "add".into(),
            kind: "disk".into(),
            uuid: plan.record.uuid.clone(),
            id: id.clone(),
            disk: Some(plan.record.clone()),
            nic: None,
            fd_names: Vec::new(),
        })?;
        let mut undo = Vec::new();
        let result = self.add_disk_steps(&plan, file, &mut undo).await;
        match result {
            Ok(()) => {
                self.record.disks.push(plan.record.clone());
                self.save()?;
                self.clear_intent();
                tracing::info!(instance = %self.name, id, placement = %plan.hvinfo.device_args(), "disk hot-added");
                Ok(Added {
                    kind: "disk",
                    uuid: plan.record.uuid.clone(),
                    id,
                    hvinfo: plan.hvinfo.to_json(),
                    tap: None,
                })
            }
            Err((step, source)) => {
                self.undo(undo).await;
                self.clear_intent();
                Err(step_err(step)(source))
            }
        }
    }

    async fn add_disk_steps(
        &self,
        plan: &DiskAddPlan,
        file: Option<OwnedFd>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), (&'static str, Box<dyn std::error::Error + Send + Sync>)> {
        let id = plan.hvinfo.id.to_string();
        let mut blockdev = plan.blockdev.clone();
        let mut fdset = None;
        if let Some(fd) = file {
            let add = AddFd {
                fdset_id: None,
                opaque: Some(id.clone()),
            };
            let info = self
                .qmp
                .add_fd(add, fd.as_fd())
                .await
                .map_err(|e| ("add-fd", boxed(e)))?;
            drop(fd);
            undo.push(Undo::RemoveFd(info.fdset_id));
            fdset = Some(info.fdset_id);
            if let Some(f) = blockdev.properties.get_mut("file") {
                f["filename"] = json!(format!("/dev/fdset/{}", info.fdset_id));
            }
        }
        self.qmp
            .execute(blockdev)
            .await
            .map_err(|e| ("blockdev-add", boxed(e)))?;
        undo.push(Undo::BlockdevDel(id.clone()));
        crash_hook("blockdev-add");
        self.qmp
            .execute(plan.device.clone())
            .await
            .map_err(|e| ("device_add", boxed(e)))?;
        undo.push(Undo::DeviceDel(id.clone()));
        if !self
            .verify(&plan.hvinfo)
            .await
            .map_err(|e| ("verify", boxed(e)))?
        {
            return Err(("verify", boxed(NotVisible(id))));
        }
        // The block node holds its own descriptor now.
        if let Some(set) = fdset
            && let Err(e) = self.qmp.execute(RemoveFd::set(set)).await
        {
            tracing::warn!(fdset = set, error = %e, "remove-fd failed");
        }
        Ok(())
    }

    async fn add_nic(
        &mut self,
        nic: &NicSpec,
        keep: Option<&HvInfo>,
    ) -> Result<Added, HotplugError> {
        let observed = self.observed_pci().await?;
        let attempt = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        let plan = plan_hot_add_nic(
            &self.record,
            nic,
            &observed,
            &HostFacts::gather(None),
            &attempt,
            keep,
        )?;
        let id = plan.hvinfo.id.to_string();
        let step_err = |step: &'static str| {
            let id = id.clone();
            move |source: Box<dyn std::error::Error + Send + Sync>| HotplugError::Step {
                id,
                step,
                source,
            }
        };
        let tap = Tap::open(&plan.tap).map_err(|e| step_err("tap")(boxed(e)))?;
        let tap_name = tap.name().clone();
        let mut undo = Vec::new();
        let netlink = crate::net::Netlink::new().map_err(|e| step_err("netlink")(boxed(e)))?;
        crate::net::configure_native(&netlink, &plan.config, &tap_name)
            .await
            .map_err(|e| step_err("nic-up")(boxed(e)))?;
        undo.push(Undo::NicDown(Box::new((
            plan.config.clone(),
            tap_name.clone(),
        ))));
        let mut record_entry = plan.record.clone();
        record_entry.tap = Some(tap_name.to_string());
        let intent = Intent {
            action: "add".into(),
            kind: "nic".into(),
            uuid: record_entry.uuid.clone(),
            id: id.clone(),
            disk: None,
            nic: Some(record_entry.clone()),
            fd_names: plan
                .fd_names
                .iter()
                .chain(&plan.vhost_fd_names)
                .cloned()
                .collect(),
        };
        if let Err(e) = self.write_intent(&intent) {
            self.undo(undo).await;
            return Err(e);
        }
        let result = self.add_nic_steps(&plan, tap, &mut undo).await;
        match result {
            Ok(()) => {
                self.record.nics.push(record_entry);
                self.save()?;
                self.clear_intent();
                tracing::info!(instance = %self.name, id, tap = %tap_name, "NIC hot-added");
                Ok(Added {
                    kind: "nic",
                    uuid: plan.record.uuid.clone(),
                    id,
                    hvinfo: plan.hvinfo.to_json(),
                    tap: Some(tap_name.to_string()),
                })
            }
            Err((step, source)) => {
                self.undo(undo).await;
                self.clear_intent();
                Err(step_err(step)(source))
            }
        }
    }

    async fn add_nic_steps(
        &self,
        plan: &NicAddPlan,
        tap: Tap,
        undo: &mut Vec<Undo>,
    ) -> Result<(), (&'static str, Box<dyn std::error::Error + Send + Sync>)> {
        let id = plan.hvinfo.id.to_string();
        for (name, fd) in plan.fd_names.iter().zip(tap.fds()) {
            self.qmp
                .get_fd(name, fd.as_fd())
                .await
                .map_err(|e| ("getfd", boxed(e)))?;
            undo.push(Undo::CloseFd(name.clone()));
        }
        for (name, fd) in plan.vhost_fd_names.iter().zip(tap.vhost_fds()) {
            self.qmp
                .get_fd(name, fd.as_fd())
                .await
                .map_err(|e| ("getfd", boxed(e)))?;
            undo.push(Undo::CloseFd(name.clone()));
        }
        // QEMU holds its own copies; ours close now (Ganeti's `finally`).
        drop(tap);
        self.qmp
            .execute(plan.netdev.clone())
            .await
            .map_err(|e| ("netdev_add", boxed(e)))?;
        // netdev_add consumed the named fds.
        undo.retain(|u| !matches!(u, Undo::CloseFd(_)));
        undo.push(Undo::NetdevDel(id.clone()));
        crash_hook("netdev_add");
        self.qmp
            .execute(plan.device.clone())
            .await
            .map_err(|e| ("device_add", boxed(e)))?;
        undo.push(Undo::DeviceDel(id.clone()));
        if !self
            .verify(&plan.hvinfo)
            .await
            .map_err(|e| ("verify", boxed(e)))?
        {
            return Err(("verify", boxed(NotVisible(id))));
        }
        Ok(())
    }

    async fn remove(
        &mut self,
        kind: &'static str,
        uuid: &str,
        deadline: Duration,
    ) -> Result<(Removal, Option<HvInfo>), HotplugError> {
        let (id, hvinfo) = match kind {
            "disk" => self
                .record
                .disks
                .iter()
                .find(|d| d.uuid == uuid)
                .map(|d| (disk_id(d), d.hvinfo.clone())),
            _ => self
                .record
                .nics
                .iter()
                .find(|n| n.uuid == uuid)
                .map(|n| (nic_id(n), n.hvinfo.clone())),
        }
        .ok_or_else(|| HotplugError::UnknownDevice {
            name: self.name.clone(),
            kind: if kind == "disk" { "disk" } else { "NIC" },
            uuid: uuid.to_owned(),
        })?;
        let hvinfo = hvinfo
            .and_then(|h| serde_json::to_value(h).ok())
            .and_then(|v| HvInfo::from_json(&v).ok());
        self.write_intent(&Intent {
            action: "remove".into(),
            kind: kind.into(),
            uuid: uuid.to_owned(),
            id: id.clone(),
            disk: None,
            nic: None,
            fd_names: Vec::new(),
        })?;
        let result = self.remove_steps(kind, uuid, &id, deadline).await;
        self.clear_intent();
        result.map(|r| (r, hvinfo))
    }

    async fn remove_steps(
        &mut self,
        kind: &'static str,
        uuid: &str,
        id: &str,
        deadline: Duration,
    ) -> Result<Removal, HotplugError> {
        let mut events = self.qmp.listen(
            EventFilter::new("DEVICE_DELETED")
                .or_event("DEVICE_UNPLUG_GUEST_ERROR")
                .data_eq("device", id),
        );
        match self.qmp.execute(DeviceDel::new(id)).await {
            Ok(()) => {}
            Err(e) if e.qmp_class() == Some("DeviceNotFound") => {
                self.finish_removal(kind, uuid, id).await?;
                return Ok(Removal::Removed { id: id.to_owned() });
            }
            // A repeated request for a device already being unplugged:
            // keep waiting for the guest.
            Err(QmpError::Refused { desc, .. }) if desc.contains("in the process of unplug") => {}
            Err(e) => return Err(self.qmp_err()(e)),
        }
        match events.wait(deadline).await {
            Ok(ev) if ev.name == "DEVICE_DELETED" => {
                self.finish_removal(kind, uuid, id).await?;
                Ok(Removal::Removed { id: id.to_owned() })
            }
            Ok(_) => {
                tracing::warn!(instance = %self.name, id, "the guest refused to release the device");
                Err(HotplugError::GuestRefused { id: id.to_owned() })
            }
            Err(QmpError::EventTimeout { .. }) => {
                if let Some(e) = self.entry_extra(uuid) {
                    e.insert(REMOVAL_PENDING.into(), Json::Bool(true));
                }
                self.save()?;
                tracing::info!(instance = %self.name, id, "removal pending: the guest has not released the device yet");
                Ok(Removal::Pending { id: id.to_owned() })
            }
            Err(e) => Err(self.qmp_err()(e)),
        }
    }
}

/// The device never showed up in QEMU after `device_add` succeeded.
#[derive(Debug, thiserror::Error)]
#[error("QEMU does not show device {0} after device_add")]
struct NotVisible(String);

fn is_pending(extra: &Map<String, Json>) -> bool {
    extra.get(REMOVAL_PENDING) == Some(&Json::Bool(true))
}

fn disk_id(d: &DiskRecord) -> String {
    d.hvinfo.as_ref().map(|h| h.id.clone()).unwrap_or_else(|| {
        DeviceId::for_device(DeviceKind::Disk, &d.uuid)
            .map(|i| i.to_string())
            .unwrap_or_default()
    })
}

fn nic_id(n: &NicRecord) -> String {
    n.hvinfo.as_ref().map(|h| h.id.clone()).unwrap_or_else(|| {
        DeviceId::for_device(DeviceKind::Nic, &n.uuid)
            .map(|i| i.to_string())
            .unwrap_or_default()
    })
}

async fn nic_down(cfg: &NicConfig, tap: &TapName) {
    match crate::net::Netlink::new() {
        Ok(nl) => {
            if let Err(e) = crate::net::deconfigure_native(&nl, cfg, tap).await {
                tracing::warn!(tap = %tap, error = %e, "NIC down configuration failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "no netlink for NIC down configuration"),
    }
}

fn open_disk(o: &OpenDisk) -> std::io::Result<OwnedFd> {
    let mut flags = nix::libc::O_CLOEXEC;
    if o.direct {
        flags |= nix::libc::O_DIRECT;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(!o.read_only)
        .custom_flags(flags)
        .open(&o.path)?;
    Ok(OwnedFd::from(f))
}

// ---------------------------------------------------------------- API

/// Hot-adds `disk` to the running instance `name`.
pub async fn add_disk(node: &Node, name: &str, disk: &DiskSpec) -> Result<Added, HotplugError> {
    let mut s = Session::open(node, name).await?;
    s.recover().await?;
    s.add_disk(disk).await
}

/// Hot-adds `nic` to the running instance `name`: a tap with the instance's
/// features, configured (bridged/routed) before QEMU sees it.
pub async fn add_nic(node: &Node, name: &str, nic: &NicSpec) -> Result<Added, HotplugError> {
    let mut s = Session::open(node, name).await?;
    s.recover().await?;
    s.add_nic(nic, None).await
}

/// Hot-removes disk `uuid`, waiting up to `deadline` for the guest.
pub async fn remove_disk(
    node: &Node,
    name: &str,
    uuid: &str,
    deadline: Duration,
) -> Result<Removal, HotplugError> {
    let mut s = Session::open(node, name).await?;
    s.recover().await?;
    s.remove("disk", uuid, deadline).await.map(|r| r.0)
}

/// Hot-removes NIC `uuid`, waiting up to `deadline` for the guest; then its
/// netdev and network configuration go.
pub async fn remove_nic(
    node: &Node,
    name: &str,
    uuid: &str,
    deadline: Duration,
) -> Result<Removal, HotplugError> {
    let mut s = Session::open(node, name).await?;
    s.recover().await?;
    s.remove("nic", uuid, deadline).await.map(|r| r.0)
}

/// Ganeti's hot-mod: removes the NIC with `nic`'s UUID and adds `nic` back
/// in the same slot, with its new parameters.
pub async fn modify_nic(
    node: &Node,
    name: &str,
    nic: &NicSpec,
    deadline: Duration,
) -> Result<Added, HotplugError> {
    let mut s = Session::open(node, name).await?;
    s.recover().await?;
    let uuid = nic.uuid().to_string();
    match s.remove("nic", &uuid, deadline).await? {
        (Removal::Removed { .. }, keep) => s.add_nic(nic, keep.as_ref()).await,
        (Removal::Pending { id }, _) => Err(HotplugError::RemovalPending { id }),
    }
}

/// Resizes disk `uuid` to `bytes` (`block_resize`); legacy
/// (`hotdisk-…-pci-N`) disks by their backend name.
pub async fn resize_disk(
    node: &Node,
    name: &str,
    uuid: &str,
    bytes: u64,
) -> Result<Resized, HotplugError> {
    if bytes == 0 {
        return Err(HotplugError::BadSize("0".into()));
    }
    let mut s = Session::open(node, name).await?;
    s.recover().await?;
    let d = s
        .record
        .disks
        .iter()
        .find(|d| d.uuid == uuid)
        .ok_or_else(|| HotplugError::UnknownDevice {
            name: name.to_owned(),
            kind: "disk",
            uuid: uuid.to_owned(),
        })?;
    if is_pending(&d.extra) {
        return Err(HotplugError::RemovalPending { id: disk_id(d) });
    }
    let id = disk_id(d);
    let legacy = DeviceId::parse(&id)
        .ok()
        .and_then(|i| i.legacy_slot())
        .is_some();
    let cmd = if legacy {
        BlockResize {
            device: Some(id.clone()),
            node_name: None,
            size: bytes,
        }
    } else {
        BlockResize::node(id.clone(), bytes)
    };
    s.qmp.execute(cmd).await.map_err(s.qmp_err())?;
    if let Some(d) = s.record.disks.iter_mut().find(|d| d.uuid == uuid) {
        d.size = Some(bytes.div_ceil(MIB));
    }
    s.save()?;
    tracing::info!(instance = name, id, bytes, "disk resized");
    Ok(Resized {
        uuid: uuid.to_owned(),
        id,
        bytes,
    })
}

/// Whether hotplug is possible for the running instance `name`, per device type.
pub async fn check(node: &Node, name: &str) -> Result<HotplugSupport, HotplugError> {
    let s = Session::open(node, name).await?;
    let commands: BTreeSet<String> = s
        .qmp
        .execute(QueryCommands)
        .await
        .map_err(s.qmp_err())?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let peripherals: BTreeSet<String> = s.peripherals().await?.into_keys().collect();
    Ok(support(&s.record, &commands, &peripherals))
}

/// Finishes or undoes an interrupted hotplug and completes pending
/// removals (also done at the start of every hotplug operation).
pub async fn recover(node: &Node, name: &str) -> Result<Vec<Recovery>, HotplugError> {
    let mut s = Session::open(node, name).await?;
    s.recover().await
}

/// Parses a size: bytes with a `K`/`M`/`G`/`T` suffix (binary), or a plain
/// number of MiB (Ganeti's unit).
pub fn parse_size(s: &str) -> Result<u64, HotplugError> {
    let t = s.trim();
    let bad = || HotplugError::BadSize(s.to_owned());
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, MIB),
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_uppercase().trim_end_matches(['B', 'I']) {
                "K" => 1024,
                "M" => MIB,
                "G" => 1024 * MIB,
                "T" => 1024 * 1024 * MIB,
                "" => 1,
                _ => return Err(bad()),
            };
            (&t[..i], mult)
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(disks: Vec<DiskRecord>, hv: Json) -> RuntimeRecord {
        RuntimeRecord {
            version: state::RECORD_VERSION,
            origin: state::Origin::Ours,
            instance: json!({"name": "hp1"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            hvparams: hv.as_object().cloned().unwrap_or_default(),
            machine: Some("pc-i440fx-7.2".into()),
            qemu: None,
            argv: Vec::new(),
            disks,
            nics: Vec::new(),
        }
    }

    fn disk_at(uuid: &str, id: &str, addr: &str) -> DiskRecord {
        DiskRecord {
            uuid: uuid.into(),
            name: None,
            size: None,
            mode: "rw".into(),
            path: Some("/dev/null".into()),
            uri: None,
            hvinfo: serde_json::from_value(
                json!({"driver": "virtio-blk-pci", "id": id, "bus": "pci.0", "addr": addr}),
            )
            .ok(),
            extra: Map::new(),
        }
    }

    fn spec(uuid: &str) -> DiskSpec {
        parse_disk_spec(&json!({"uuid": uuid, "path": "/dev/null", "size": 64})).unwrap()
    }

    const U1: &str = "11111111-2222-3333-4444-555555555555";
    const U2: &str = "22222222-2222-3333-4444-555555555555";

    #[test]
    fn disk_slot_follows_record_and_reconciliation() {
        let r = record(
            vec![disk_at(U1, "disk-11111111-2222-3333", "0xc")],
            json!({}),
        );
        let observed = [ObservedDevice {
            slot: 0xd,
            qdev_id: String::new(),
        }];
        let plan = plan_hot_add_disk(&r, &spec(U2), &observed, &[], &HostFacts::default()).unwrap();
        assert_eq!(
            plan.hvinfo.device_args(),
            "virtio-blk-pci,id=disk-22222222-2222-3333,bus=pci.0,addr=0xe"
        );
    }

    #[test]
    fn legacy_id_slot_is_never_reused() {
        let mut d = disk_at(U1, "hotdisk-11111111-pci-12", "0xc");
        d.hvinfo = serde_json::from_value(
            json!({"driver": "virtio-blk-pci", "id": "hotdisk-11111111-pci-12"}),
        )
        .ok();
        let r = record(vec![d], json!({}));
        let plan = plan_hot_add_disk(&r, &spec(U2), &[], &[], &HostFacts::default()).unwrap();
        assert_eq!(plan.device.properties["addr"], json!("0xd"));
    }

    #[test]
    fn disk_blockdev_has_auto_read_only_off_and_write_cache_string() {
        let r = record(Vec::new(), json!({}));
        let plan = plan_hot_add_disk(&r, &spec(U2), &[], &[], &HostFacts::default()).unwrap();
        assert_eq!(
            serde_json::to_value(&plan.blockdev).unwrap(),
            json!({"node-name": "disk-22222222-2222-3333", "driver": "raw", "discard": "ignore",
                   "cache": {"direct": false, "no-flush": false},
                   "file": {"driver": "file", "filename": "/dev/null", "aio": "threads"},
                   "auto-read-only": false})
        );
        assert_eq!(
            serde_json::to_value(&plan.device).unwrap(),
            json!({"driver": "virtio-blk-pci", "id": "disk-22222222-2222-3333", "bus": "pci.0",
                   "addr": "0xc", "drive": "disk-22222222-2222-3333", "write-cache": "on"})
        );
        assert_eq!(
            plan.open,
            Some(OpenDisk {
                path: "/dev/null".into(),
                read_only: false,
                direct: false
            })
        );
    }

    #[test]
    fn full_bus_is_no_slot() {
        let r = record(Vec::new(), json!({"kvm_pci_reservations": 31}));
        let observed = [ObservedDevice {
            slot: 31,
            qdev_id: "x".into(),
        }];
        let err =
            plan_hot_add_disk(&r, &spec(U2), &observed, &[], &HostFacts::default()).unwrap_err();
        assert!(matches!(
            err,
            HotplugError::NoSlot { source: SlotError::Exhausted { ref bus }, .. } if bus == "pci.0"
        ));
    }

    #[test]
    fn ide_disk_type_is_not_supported() {
        let r = record(Vec::new(), json!({"disk_type": "ide"}));
        let err = plan_hot_add_disk(&r, &spec(U2), &[], &[], &HostFacts::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hotplug is not supported for hp1: disk_type ide cannot be hot-plugged"
        );
    }

    #[test]
    fn scsi_disk_takes_first_free_target() {
        let r = record(Vec::new(), json!({"disk_type": "scsi-hd"}));
        let plan = plan_hot_add_disk(&r, &spec(U2), &[], &[0, 1], &HostFacts::default()).unwrap();
        assert_eq!(
            plan.hvinfo.device_args(),
            "scsi-hd,id=disk-22222222-2222-3333,bus=scsi.0,channel=0,scsi-id=2,lun=0"
        );
    }

    #[test]
    fn duplicate_uuid_is_refused() {
        let r = record(
            vec![disk_at(U2, "disk-22222222-2222-3333", "0xc")],
            json!({}),
        );
        let err = plan_hot_add_disk(&r, &spec(U2), &[], &[], &HostFacts::default()).unwrap_err();
        assert!(matches!(err, HotplugError::Duplicate { .. }));
    }

    #[test]
    fn nic_with_vhost_but_no_device_is_refused() {
        let r = record(Vec::new(), json!({"vhost_net": true}));
        let nic = parse_nic_spec(&json!({"uuid": U1, "mode": "bridged", "link": "br0"})).unwrap();
        let err = plan_hot_add_nic(&r, &nic, &[], &HostFacts::default(), "a1", None).unwrap_err();
        assert!(matches!(err, HotplugError::VhostNetMissing));
    }

    #[test]
    fn nic_netdev_uses_typed_booleans_and_tagged_fd_names() {
        let r = record(
            Vec::new(),
            json!({"vhost_net": true, "virtio_net_queues": 2}),
        );
        let nic = parse_nic_spec(
            &json!({"uuid": U1, "mac": "aa:00:00:11:22:33", "mode": "bridged", "link": "br0"}),
        )
        .unwrap();
        let facts = HostFacts {
            vhost_net: true,
            block_devices: Vec::new(),
        };
        let plan = plan_hot_add_nic(&r, &nic, &[], &facts, "a1", None).unwrap();
        assert_eq!(
            serde_json::to_value(&plan.netdev).unwrap(),
            json!({"id": "nic-11111111-2222-3333", "type": "tap",
                   "fds": "nic-11111111-2222-3333-tapa1-0:nic-11111111-2222-3333-tapa1-1",
                   "vhost": true,
                   "vhostfds": "nic-11111111-2222-3333-vhosta1-0:nic-11111111-2222-3333-vhosta1-1"})
        );
        assert_eq!(plan.device.properties["mq"], json!(true));
        assert_eq!(plan.device.properties["vectors"], json!(6));
    }

    #[test]
    fn nic_mod_keeps_the_slot() {
        let r = record(Vec::new(), json!({"vhost_net": false}));
        let nic = parse_nic_spec(&json!({"uuid": U1, "mode": "bridged", "link": "br0"})).unwrap();
        let keep = HvInfo::from_json(
            &json!({"driver": "virtio-net-pci", "id": "nic-11111111-2222-3333", "bus": "pci.0", "addr": "0x11"}),
        )
        .unwrap();
        let plan =
            plan_hot_add_nic(&r, &nic, &[], &HostFacts::default(), "a1", Some(&keep)).unwrap();
        assert_eq!(plan.device.properties["addr"], json!("0x11"));
    }

    #[test]
    fn support_refuses_ne2k_isa_and_missing_scsi_controller() {
        let r = record(
            Vec::new(),
            json!({"nic_type": "ne2k_isa", "disk_type": "scsi-hd"}),
        );
        let commands: BTreeSet<String> = [
            "add-fd",
            "blockdev-add",
            "device_add",
            "device_del",
            "getfd",
            "netdev_add",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let s = support(&r, &commands, &BTreeSet::new());
        assert_eq!(
            s.disk.reasons,
            ["the instance has no SCSI controller (it started without SCSI disks)"]
        );
        assert_eq!(s.nic.reasons, ["nic_type ne2k_isa is not hot-pluggable"]);
        assert!(!s.disk.add && !s.nic.add);
    }

    #[test]
    fn sizes_parse_in_mib_by_default() {
        assert_eq!(parse_size("128").unwrap(), 128 * MIB);
        assert_eq!(parse_size("1G").unwrap(), 1024 * MIB);
        assert_eq!(parse_size("64MiB").unwrap(), 64 * MIB);
        assert!(matches!(parse_size("x1"), Err(HotplugError::BadSize(_))));
    }

    #[test]
    fn disk_spec_problems_name_the_field() {
        let err = parse_disk_spec(&json!({"path": "relative"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid disk spec: path: `relative` is not a normalized absolute path"
        );
    }
}
