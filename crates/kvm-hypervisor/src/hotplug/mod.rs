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
//! device. An intent journal entry (`conf/<name>.intent`, kept by
//! `runtime-state`) written before the first QMP step lets the next
//! operation finish or undo a hotplug whose process died midway.

mod execute;
mod observe;
mod plan;
mod recover;
mod support;

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use device_slots::{DeviceId, DeviceKind, SlotError};
use qmp_protocol::{BlockResize, QmpError, QueryCommands};
use serde::Serialize;
use serde_json::{Map, Value as Json};

pub use self::plan::{
    DiskAddPlan, NicAddPlan, parse_disk_spec, parse_nic_spec, pci_slots, plan_hot_add_disk,
    plan_hot_add_nic, record_hvparams, scsi_targets,
};
pub use self::support::{DeviceSupport, HotplugSupport, support};
use crate::devices::{DeviceError, OpenDisk};
use crate::instance::{Instance, OpenError};
use crate::launch::plan::PlanEnv;
use crate::net::{NicConfig, TapName};
use crate::node::Node;
use crate::spec::{DiskSource, DiskSpec, NicSpec, SpecProblems};
use crate::state::{DiskRecord, Intent, NicRecord, StateError};

/// How long the guest gets to release a device before its removal is
/// recorded as pending.
pub const REMOVAL_DEADLINE: Duration = Duration::from_secs(10);

/// The key marking a device whose removal the guest has not completed yet
/// (kept in the record entry's extra keys).
pub const REMOVAL_PENDING: &str = "removal_pending";

pub use crate::instance::CRASH_HOOK_ENV;

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
    /// The instance is unknown, not running, or does not answer.
    #[error(transparent)]
    Instance(#[from] OpenError),
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
    /// No device answers to what the user named.
    #[error("instance {name} has no {kind} `{selector}` (its {kind}s: {known})")]
    NoSuchDevice {
        /// The instance.
        name: String,
        /// `disk` or `NIC`.
        kind: &'static str,
        /// What was asked for.
        selector: String,
        /// Its devices of that kind, as index, name and UUID.
        known: String,
    },
    /// A UUID prefix that more than one device has.
    #[error("`{selector}` names more than one {kind} of {name}: {matches}")]
    AmbiguousDevice {
        /// The instance.
        name: String,
        /// `disk` or `NIC`.
        kind: &'static str,
        /// What was asked for.
        selector: String,
        /// The UUIDs it could be.
        matches: String,
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
    /// The disk or NIC cannot be built.
    #[error(transparent)]
    Device(#[from] DeviceError),
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
    #[error("{0} is not a disk size (a number of MiB, or with a unit: 1.5G, 512MiB, 100GB)")]
    BadSize(String),
    /// A routed NIC's IP that another live instance routes already.
    #[error("{ip} is routed to instance {owner} already")]
    IpTaken {
        /// The IP.
        ip: String,
        /// The instance that has it.
        owner: String,
    },
    /// A resize that would shrink the disk, without `allow_shrink`.
    #[error(
        "{id} is {previous} bytes: resizing it to {bytes} bytes would discard its last {} bytes; shrinking needs --allow-shrink",
        previous - bytes
    )]
    WouldShrink {
        /// The device id.
        id: String,
        /// Its size now.
        previous: u64,
        /// The size asked for.
        bytes: u64,
    },
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
    /// The size before, in bytes (when QEMU or the record knew it).
    pub previous_bytes: Option<u64>,
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

/// Locks `name`, reads its record and connects to its monitor.
async fn open<'a>(node: &'a Node, name: &str) -> Result<Instance<'a>, HotplugError> {
    Ok(Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?)
}

impl Instance<'_> {
    pub(super) fn qmp_err(&self) -> impl Fn(QmpError) -> HotplugError + '_ {
        move |source| HotplugError::Qmp {
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    pub(super) fn write_intent(&self, intent: &Intent) -> Result<(), HotplugError> {
        Ok(self.node.run.write_intent(&self.name, intent)?)
    }

    pub(super) fn clear_intent(&self) {
        self.node.run.clear_intent(&self.name);
    }
}

/// The host facts a device needs: vhost-net, and whether `disk` is a block device.
fn device_env(disk: Option<&DiskSpec>) -> PlanEnv {
    let block_devices = match disk.map(DiskSpec::source) {
        Some(DiskSource::Path(p)) if crate::host::is_block_device(p) => vec![p.clone()],
        _ => Vec::new(),
    };
    PlanEnv {
        vhost_net: Path::new(crate::host::VHOST_NET_DEVICE).exists(),
        block_devices,
        ..PlanEnv::default()
    }
}

/// `disk` or `NIC`, for messages.
fn label(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Disk => "disk",
        DeviceKind::Nic => "NIC",
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// The device never showed up in QEMU after `device_add` succeeded.
#[derive(Debug, thiserror::Error)]
#[error("QEMU does not show device {0} after device_add")]
pub(super) struct NotVisible(pub(super) String);

pub(super) fn is_pending(extra: &Map<String, Json>) -> bool {
    extra.get(REMOVAL_PENDING) == Some(&Json::Bool(true))
}

pub(super) fn disk_id(d: &DiskRecord) -> String {
    d.hvinfo.as_ref().map(|h| h.id.clone()).unwrap_or_else(|| {
        DeviceId::for_device(DeviceKind::Disk, &d.uuid)
            .map(|i| i.to_string())
            .unwrap_or_default()
    })
}

pub(super) fn nic_id(n: &NicRecord) -> String {
    n.hvinfo.as_ref().map(|h| h.id.clone()).unwrap_or_else(|| {
        DeviceId::for_device(DeviceKind::Nic, &n.uuid)
            .map(|i| i.to_string())
            .unwrap_or_default()
    })
}

pub(super) async fn nic_down(node: &crate::Node, cfg: &NicConfig, tap: &TapName) {
    let mut setup = crate::nicsetup::NicSetup::for_node(node);
    if let Err(e) = setup.down(cfg, tap).await {
        tracing::warn!(tap = %tap, error = %e, "NIC down configuration failed");
    }
}

pub(super) fn open_disk(o: &OpenDisk) -> std::io::Result<OwnedFd> {
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

/// Hot-adds `disk` to the running instance `name`.
pub async fn add_disk(node: &Node, name: &str, disk: &DiskSpec) -> Result<Added, HotplugError> {
    let mut s = open(node, name).await?;
    let mut clock = crate::timing::StepClock::start("add-disk");
    s.recover().await?;
    clock.lap("recover");
    s.add_disk(disk).await
}

/// Hot-adds `nic` to the running instance `name`: a tap with the instance's
/// features, configured (bridged/routed) before QEMU sees it.
pub async fn add_nic(node: &Node, name: &str, nic: &NicSpec) -> Result<Added, HotplugError> {
    let mut s = open(node, name).await?;
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
    let mut s = open(node, name).await?;
    s.recover().await?;
    s.remove(DeviceKind::Disk, uuid, deadline)
        .await
        .map(|r| r.0)
}

/// Hot-removes NIC `uuid`, waiting up to `deadline` for the guest; then its
/// netdev and network configuration go.
pub async fn remove_nic(
    node: &Node,
    name: &str,
    uuid: &str,
    deadline: Duration,
) -> Result<Removal, HotplugError> {
    let mut s = open(node, name).await?;
    s.recover().await?;
    s.remove(DeviceKind::Nic, uuid, deadline).await.map(|r| r.0)
}

/// Ganeti's hot-mod: removes the NIC with `nic`'s UUID and adds `nic` back
/// in the same slot, with its new parameters.
pub async fn modify_nic(
    node: &Node,
    name: &str,
    nic: &NicSpec,
    deadline: Duration,
) -> Result<Added, HotplugError> {
    let mut s = open(node, name).await?;
    s.recover().await?;
    let uuid = nic.uuid().to_string();
    match s.remove(DeviceKind::Nic, &uuid, deadline).await? {
        (Removal::Removed { .. }, keep) => s.add_nic(nic, keep.as_ref()).await,
        (Removal::Pending { id }, _) => Err(HotplugError::RemovalPending { id }),
    }
}

/// Resizes disk `uuid` to `bytes` (`block_resize`); legacy
/// (`hotdisk-…-pci-N`) disks by their backend name. Grows only, as Ganeti's
/// `grow-disk`: a smaller size discards the end of the disk's data and is
/// refused unless `allow_shrink`.
pub async fn resize_disk(
    node: &Node,
    name: &str,
    uuid: &str,
    size: DiskSize,
    allow_shrink: bool,
) -> Result<Resized, HotplugError> {
    if matches!(size, DiskSize::To(0) | DiskSize::Grow(0)) {
        return Err(HotplugError::BadSize("0".into()));
    }
    let mut s = open(node, name).await?;
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
    let mib = d.size.and_then(|m| m.checked_mul(MIB));
    let previous = current_size(&s, &id).await.or(mib);
    let bytes = match (size, previous) {
        (DiskSize::To(bytes), _) => bytes,
        (DiskSize::Grow(by), Some(previous)) => previous
            .checked_add(by)
            .ok_or_else(|| HotplugError::BadSize(format!("+{by}")))?,
        (DiskSize::Grow(by), None) => {
            return Err(HotplugError::BadSize(format!(
                "+{by} bytes: the disk's size is not known, give the new size"
            )));
        }
    };
    if let Some(previous) = previous
        && bytes < previous
        && !allow_shrink
    {
        return Err(HotplugError::WouldShrink {
            id,
            previous,
            bytes,
        });
    }
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
    tracing::info!(instance = name, id, bytes, ?previous, "disk resized");
    Ok(Resized {
        uuid: uuid.to_owned(),
        id,
        previous_bytes: previous,
        bytes,
    })
}

/// The size QEMU reports for block node `id`, if it has one by that name.
async fn current_size(s: &Instance<'_>, id: &str) -> Option<u64> {
    let args = serde_json::json!({"flat": true});
    let nodes = s
        .qmp
        .execute_raw("query-named-block-nodes", args)
        .await
        .ok()?;
    nodes
        .as_array()?
        .iter()
        .find(|n| n["node-name"] == id)
        .and_then(|n| n["image"]["virtual-size"].as_u64())
}

/// Whether hotplug is possible for the running instance `name`, per device type.
pub async fn check(node: &Node, name: &str) -> Result<HotplugSupport, HotplugError> {
    let s = open(node, name).await?;
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
    let mut s = open(node, name).await?;
    s.recover().await
}

/// A disk's new size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSize {
    /// This many bytes.
    To(u64),
    /// This many bytes more than it has now.
    Grow(u64),
}

/// `SIZE` or `+SIZE` (grow by), each as [`parse_size()`] reads it.
pub fn parse_disk_size(s: &str) -> Result<DiskSize, HotplugError> {
    match s.trim().strip_prefix('+') {
        Some(by) => parse_size(by).map(DiskSize::Grow),
        None => parse_size(s).map(DiskSize::To),
    }
}

/// The UUID of the `kind` (`disk` or `NIC`) of `record` (instance `name`)
/// that `selector` names: its UUID, its name, its index among the
/// instance's devices of that kind, or a prefix of its UUID that no other
/// has.
pub fn select_device(
    record: &crate::state::RuntimeRecord,
    name: &str,
    kind: &'static str,
    selector: &str,
) -> Result<String, HotplugError> {
    /// A device: its UUID and name.
    type Device<'a> = (&'a str, Option<&'a str>);
    let devices: Vec<Device<'_>> = if kind == "disk" {
        record
            .disks
            .iter()
            .map(|d| (d.uuid.as_str(), d.name.as_deref()))
            .collect()
    } else {
        record
            .nics
            .iter()
            .map(|n| (n.uuid.as_str(), n.name.as_deref()))
            .collect()
    };
    let by = |want: &dyn Fn(&Device<'_>) -> bool| -> Vec<&str> {
        devices.iter().filter(|d| want(d)).map(|d| d.0).collect()
    };
    let exact = by(&|d| d.0 == selector);
    let named = by(&|d| d.1 == Some(selector));
    let indexed: Vec<&str> = selector
        .parse::<usize>()
        .ok()
        .filter(|_| selector.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|i| devices.get(i))
        .map(|d| vec![d.0])
        .unwrap_or_default();
    let prefixed = by(&|d| !selector.is_empty() && d.0.starts_with(selector));
    for found in [exact, named, indexed] {
        if let [one] = found.as_slice() {
            return Ok((*one).to_owned());
        }
    }
    match prefixed.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(HotplugError::NoSuchDevice {
            name: name.to_owned(),
            kind,
            selector: selector.to_owned(),
            known: if devices.is_empty() {
                "none".to_owned()
            } else {
                devices
                    .iter()
                    .enumerate()
                    .map(|(i, (uuid, n))| match n {
                        Some(n) => format!("{i} {n} {uuid}"),
                        None => format!("{i} {uuid}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
        many => Err(HotplugError::AmbiguousDevice {
            name: name.to_owned(),
            kind,
            selector: selector.to_owned(),
            matches: many.join(", "),
        }),
    }
}

/// [`select_device`] on instance `name`'s runtime record.
pub fn device_uuid(
    node: &Node,
    name: &str,
    kind: &'static str,
    selector: &str,
) -> Result<String, HotplugError> {
    let record = match node.run.read_runtime(name)? {
        Some(file) => file.record(),
        None => {
            return Err(HotplugError::Instance(OpenError::Unknown(name.to_owned())));
        }
    };
    select_device(&record, name, kind, selector)
}

/// Parses a disk size: a plain number is MiB (Ganeti's unit); a number with
/// a unit may be fractional. `K`, `M`, `G`, `T` (QEMU's notation) and `KiB`
/// … `TiB` are binary; `KB` … `TB` are decimal: `1.5G` is 1.5 GiB, `100MB`
/// is 100,000,000 bytes. The result is rounded up to whole 512-byte sectors.
pub fn parse_size(s: &str) -> Result<u64, HotplugError> {
    let bad = || HotplugError::BadSize(s.to_owned());
    let t = s.trim();
    // QEMU's single-letter units are binary: K -> KiB, M -> MiB.
    let unit_at = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(unit_at);
    let unit = match unit.to_ascii_uppercase().as_str() {
        u @ ("K" | "M" | "G" | "T") => format!("{u}iB"),
        _ => unit.to_owned(),
    };
    let config = parse_size::Config::new().with_default_factor(MIB);
    let bytes = config
        .parse_size(format!("{num}{unit}"))
        .map_err(|_| bad())?;
    if bytes == 0 {
        return Err(bad());
    }
    bytes.checked_next_multiple_of(512).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::DeviceError;
    use crate::launch::plan::PlanEnv;
    use crate::state::{self, DiskRecord, RuntimeRecord};
    use device_slots::{HvInfo, ObservedDevice};
    use serde_json::json;
    use std::collections::BTreeSet;

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
            guest_argv: None,
            incomplete: false,
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
        let plan = plan_hot_add_disk(&r, &spec(U2), &observed, &[], &PlanEnv::default()).unwrap();
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
        let plan = plan_hot_add_disk(&r, &spec(U2), &[], &[], &PlanEnv::default()).unwrap();
        assert_eq!(plan.device.properties["addr"], json!("0xd"));
    }

    #[test]
    fn disk_blockdev_has_auto_read_only_off_and_write_cache_string() {
        let r = record(Vec::new(), json!({}));
        let plan = plan_hot_add_disk(&r, &spec(U2), &[], &[], &PlanEnv::default()).unwrap();
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
            plan_hot_add_disk(&r, &spec(U2), &observed, &[], &PlanEnv::default()).unwrap_err();
        assert!(matches!(
            err,
            HotplugError::NoSlot { source: SlotError::Exhausted { ref bus }, .. } if bus == "pci.0"
        ));
    }

    #[test]
    fn ide_disk_type_is_not_supported() {
        let r = record(Vec::new(), json!({"disk_type": "ide"}));
        let err = plan_hot_add_disk(&r, &spec(U2), &[], &[], &PlanEnv::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hotplug is not supported for hp1: disk_type ide cannot be hot-plugged"
        );
    }

    #[test]
    fn scsi_disk_takes_first_free_target() {
        let r = record(Vec::new(), json!({"disk_type": "scsi-hd"}));
        let plan = plan_hot_add_disk(&r, &spec(U2), &[], &[0, 1], &PlanEnv::default()).unwrap();
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
        let err = plan_hot_add_disk(&r, &spec(U2), &[], &[], &PlanEnv::default()).unwrap_err();
        assert!(matches!(err, HotplugError::Duplicate { .. }));
    }

    #[test]
    fn nic_with_vhost_but_no_device_is_refused() {
        let r = record(Vec::new(), json!({"vhost_net": true}));
        let nic = parse_nic_spec(&json!({"uuid": U1, "mode": "bridged", "link": "br0"})).unwrap();
        let err = plan_hot_add_nic(&r, &nic, &[], &PlanEnv::default(), "a1", None).unwrap_err();
        assert!(matches!(
            err,
            HotplugError::Device(DeviceError::VhostNetMissing)
        ));
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
        let facts = PlanEnv {
            vhost_net: true,
            ..PlanEnv::default()
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
        let plan = plan_hot_add_nic(&r, &nic, &[], &PlanEnv::default(), "a1", Some(&keep)).unwrap();
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
    fn sizes_take_fractions_and_keep_decimal_units_decimal() {
        assert_eq!(parse_size("1.5G").unwrap(), 1536 * MIB);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 1536 * MIB);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_256);
        assert_eq!(parse_size("64M").unwrap(), parse_size("64MiB").unwrap());
        assert_ne!(parse_size("64MB").unwrap(), parse_size("64MiB").unwrap());
    }

    #[test]
    fn zero_and_overflowing_sizes_are_refused() {
        assert_eq!(
            parse_size("0").unwrap_err().to_string(),
            "0 is not a disk size (a number of MiB, or with a unit: 1.5G, 512MiB, 100GB)"
        );
        assert!(matches!(
            parse_size("99999999999T"),
            Err(HotplugError::BadSize(_))
        ));
        assert!(matches!(parse_size("-5"), Err(HotplugError::BadSize(_))));
    }

    #[test]
    fn disk_spec_problems_name_the_field() {
        let err = parse_disk_spec(&json!({"path": "relative"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid disk spec: path: `relative` is not a normalized absolute path"
        );
    }

    #[test]
    fn a_device_is_named_by_uuid_name_index_or_unique_prefix() {
        let mut named = disk_at(
            "7c079136-2573-4112-82d0-0d3d2aa90d8f",
            "disk-7c079136",
            "0xc",
        );
        named.name = Some("data".into());
        let r = record(
            vec![
                named,
                disk_at(
                    "7c0aaaaa-0000-4000-8000-000000000000",
                    "disk-7c0aaaaa",
                    "0xd",
                ),
                disk_at(
                    "9f5c5bd4-6f60-480b-acdc-9bb1a4b7df79",
                    "disk-9f5c5bd4",
                    "0xe",
                ),
            ],
            json!({}),
        );
        let pick = |s: &str| select_device(&r, "hp1", "disk", s).map_err(|e| e.to_string());
        let first = Ok("7c079136-2573-4112-82d0-0d3d2aa90d8f".to_owned());
        assert_eq!(pick("7c079136-2573-4112-82d0-0d3d2aa90d8f"), first);
        assert_eq!(pick("data"), first);
        assert_eq!(pick("0"), first);
        assert_eq!(pick("7c079"), first);
        assert_eq!(
            pick("2"),
            Ok("9f5c5bd4-6f60-480b-acdc-9bb1a4b7df79".to_owned())
        );
        assert_eq!(
            pick("7c0"),
            Err("`7c0` names more than one disk of hp1: \
                 7c079136-2573-4112-82d0-0d3d2aa90d8f, 7c0aaaaa-0000-4000-8000-000000000000"
                .to_owned())
        );
        assert_eq!(
            pick("nope"),
            Err("instance hp1 has no disk `nope` (its disks: \
                 0 data 7c079136-2573-4112-82d0-0d3d2aa90d8f, \
                 1 7c0aaaaa-0000-4000-8000-000000000000, \
                 2 9f5c5bd4-6f60-480b-acdc-9bb1a4b7df79)"
                .to_owned())
        );
        assert_eq!(
            select_device(&r, "hp1", "NIC", "0").map_err(|e| e.to_string()),
            Err("instance hp1 has no NIC `0` (its NICs: none)".to_owned())
        );
    }

    #[test]
    fn a_leading_plus_grows_a_disk() {
        assert_eq!(parse_disk_size("+1G").ok(), Some(DiskSize::Grow(1 << 30)));
        assert_eq!(parse_disk_size("2048").ok(), Some(DiskSize::To(2 << 30)));
        assert!(parse_disk_size("+").is_err());
    }
}
