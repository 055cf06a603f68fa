//! Typed commands: the ones Ganeti's KVM hypervisor sends, plus a few a
//! capability prober needs.
//!
//! Argument structs serialise to exactly the members QEMU's schema (7.2)
//! names, with booleans as JSON booleans and optional members left out when
//! `None`. Reply structs ignore members they do not know, and enums have an
//! `Other` variant for values newer QEMUs may add.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::command::{Command, DEVICE_TIMEOUT, QUERY_TIMEOUT, SLOW_TIMEOUT};

/// A command without arguments.
macro_rules! no_argument_command {
    ($(#[$meta:meta])* $ty:ident, $name:literal, $returns:ty, $timeout:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $ty;

        impl Command for $ty {
            const NAME: &'static str = $name;
            type Returns = $returns;
            const TIMEOUT: Duration = $timeout;
        }
    };
}

/// Implement [`Command`] for an argument struct.
macro_rules! command {
    ($ty:ident, $name:literal, $returns:ty, $timeout:expr) => {
        impl Command for $ty {
            const NAME: &'static str = $name;
            type Returns = $returns;
            const TIMEOUT: Duration = $timeout;
        }
    };
}

// ---------------------------------------------------------------------------
// Devices, netdevs, block nodes

/// `device_add`: hot-plug a device.
///
/// Properties keep their JSON type: pass `true`, not `"on"`.
///
/// ```
/// use qmp_protocol::DeviceAdd;
///
/// let add = DeviceAdd::new("virtio-blk-pci", "disk-1234")
///     .bus("pci.0")
///     .property("addr", "0x5")
///     .property("drive", "disk-1234")
///     .property("write-cache", true);
/// # let _ = add;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceAdd {
    /// The device type, e.g. `virtio-net-pci`.
    pub driver: String,
    /// The device id (`qdev_id`).
    pub id: String,
    /// The bus to plug into, e.g. `pci.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Further device properties.
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl DeviceAdd {
    /// A device of type `driver` with id `id` and no other properties.
    pub fn new(driver: impl Into<String>, id: impl Into<String>) -> Self {
        DeviceAdd {
            driver: driver.into(),
            id: id.into(),
            bus: None,
            properties: Map::new(),
        }
    }

    /// Plug into `bus`.
    pub fn bus(mut self, bus: impl Into<String>) -> Self {
        self.bus = Some(bus.into());
        self
    }

    /// Set a device property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}
command!(DeviceAdd, "device_add", (), DEVICE_TIMEOUT);

/// `device_del`: ask the guest to release a device. Completion is the
/// `DEVICE_DELETED` event; listen for it before sending this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceDel {
    /// The device id or QOM path.
    pub id: String,
}

impl DeviceDel {
    /// Remove device `id`.
    pub fn new(id: impl Into<String>) -> Self {
        DeviceDel { id: id.into() }
    }
}
command!(DeviceDel, "device_del", (), QUERY_TIMEOUT);

/// `netdev_add`: create a network backend.
///
/// ```
/// use qmp_protocol::NetdevAdd;
///
/// let add = NetdevAdd::new("tap", "nic-1")
///     .property("fds", "tapfd-0:tapfd-1")
///     .property("vhost", true);
/// # let _ = add;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetdevAdd {
    /// The netdev id.
    pub id: String,
    /// The backend type, e.g. `tap`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Further backend properties.
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl NetdevAdd {
    /// A backend of type `kind` with id `id`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        NetdevAdd {
            id: id.into(),
            kind: kind.into(),
            properties: Map::new(),
        }
    }

    /// Set a backend property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}
command!(NetdevAdd, "netdev_add", (), DEVICE_TIMEOUT);

/// `netdev_del`: remove a network backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetdevDel {
    /// The netdev id.
    pub id: String,
}

impl NetdevDel {
    /// Remove netdev `id`.
    pub fn new(id: impl Into<String>) -> Self {
        NetdevDel { id: id.into() }
    }
}
command!(NetdevDel, "netdev_del", (), QUERY_TIMEOUT);

/// `blockdev-add`: create a block node.
///
/// ```
/// use qmp_protocol::BlockdevAdd;
/// use serde_json::json;
///
/// let add = BlockdevAdd::new("raw", "disk-1234")
///     .property("file", json!({"driver": "file", "filename": "/dev/fdset/3"}))
///     .property("read-only", false);
/// # let _ = add;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockdevAdd {
    /// The node name.
    #[serde(rename = "node-name")]
    pub node_name: String,
    /// The block driver, e.g. `raw`.
    pub driver: String,
    /// Further driver options (nested objects allowed).
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl BlockdevAdd {
    /// A node of driver `driver` named `node_name`.
    pub fn new(driver: impl Into<String>, node_name: impl Into<String>) -> Self {
        BlockdevAdd {
            node_name: node_name.into(),
            driver: driver.into(),
            properties: Map::new(),
        }
    }

    /// Set a driver option.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}
command!(BlockdevAdd, "blockdev-add", (), DEVICE_TIMEOUT);

/// `blockdev-del`: remove a block node no device uses any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockdevDel {
    /// The node name.
    #[serde(rename = "node-name")]
    pub node_name: String,
}

impl BlockdevDel {
    /// Remove node `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        BlockdevDel {
            node_name: node_name.into(),
        }
    }
}
command!(BlockdevDel, "blockdev-del", (), SLOW_TIMEOUT);

/// `block_resize`: grow (or shrink) a block node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockResize {
    /// The block backend name (legacy); use `node_name` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The node name.
    #[serde(rename = "node-name", skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The new size in bytes.
    pub size: u64,
}

impl BlockResize {
    /// Resize node `node_name` to `size` bytes.
    pub fn node(node_name: impl Into<String>, size: u64) -> Self {
        BlockResize {
            device: None,
            node_name: Some(node_name.into()),
            size,
        }
    }
}
command!(BlockResize, "block_resize", (), DEVICE_TIMEOUT);

// ---------------------------------------------------------------------------
// File descriptors

/// `getfd`: name the file descriptor sent with this command.
///
/// Send it with [`Execute::with_fd`](crate::Execute::with_fd) or use
/// [`Client::get_fd`](crate::Client::get_fd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetFd {
    /// The name QEMU will know the descriptor by.
    pub fdname: String,
}

impl GetFd {
    /// Name the passed descriptor `fdname`.
    pub fn new(fdname: impl Into<String>) -> Self {
        GetFd {
            fdname: fdname.into(),
        }
    }
}
command!(GetFd, "getfd", (), QUERY_TIMEOUT);

/// `closefd`: close a descriptor passed with `getfd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseFd {
    /// The name given with `getfd`.
    pub fdname: String,
}

impl CloseFd {
    /// Close descriptor `fdname`.
    pub fn new(fdname: impl Into<String>) -> Self {
        CloseFd {
            fdname: fdname.into(),
        }
    }
}
command!(CloseFd, "closefd", (), QUERY_TIMEOUT);

/// `add-fd`: put the file descriptor sent with this command into an fd set
/// (a new one unless `fdset_id` is given). Files then open it as
/// `/dev/fdset/<fdset-id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddFd {
    /// The set to add to; `None` creates a new set.
    #[serde(rename = "fdset-id", skip_serializing_if = "Option::is_none")]
    pub fdset_id: Option<i64>,
    /// A free-form note stored with the descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}
command!(AddFd, "add-fd", AddFdInfo, QUERY_TIMEOUT);

/// Reply to `add-fd`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AddFdInfo {
    /// The set the descriptor went into.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptor's number inside QEMU.
    pub fd: i64,
}

/// `remove-fd`: remove one descriptor, or a whole set, from an fd set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveFd {
    /// The set.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptor (QEMU's number); `None` removes every descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
}

impl RemoveFd {
    /// Remove every descriptor of set `fdset_id`.
    pub fn set(fdset_id: i64) -> Self {
        RemoveFd { fdset_id, fd: None }
    }
}
command!(RemoveFd, "remove-fd", (), QUERY_TIMEOUT);

no_argument_command!(
    /// `query-fdsets`: the fd sets and their descriptors.
    QueryFdsets,
    "query-fdsets",
    Vec<FdsetInfo>,
    QUERY_TIMEOUT
);

/// One fd set (`query-fdsets`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct FdsetInfo {
    /// The set id.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptors in the set.
    #[serde(default)]
    pub fds: Vec<FdsetFdInfo>,
}

/// One descriptor in an fd set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct FdsetFdInfo {
    /// The descriptor's number inside QEMU.
    pub fd: i64,
    /// The note given with `add-fd`.
    #[serde(default)]
    pub opaque: Option<String>,
}

// ---------------------------------------------------------------------------
// Queries

no_argument_command!(
    /// `query-pci`: the PCI buses and their devices.
    QueryPci,
    "query-pci",
    Vec<PciInfo>,
    QUERY_TIMEOUT
);

/// One PCI bus (`query-pci`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PciInfo {
    /// The bus number.
    pub bus: i64,
    /// The devices on the bus.
    #[serde(default)]
    pub devices: Vec<PciDeviceInfo>,
}

/// One PCI device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PciDeviceInfo {
    /// The bus number.
    pub bus: i64,
    /// The slot.
    pub slot: i64,
    /// The function.
    pub function: i64,
    /// The device id given at `-device`/`device_add` (empty if none).
    #[serde(default)]
    pub qdev_id: String,
    /// Vendor and device ids.
    #[serde(default)]
    pub id: PciDeviceId,
    /// The devices behind this device if it is a bridge.
    #[serde(default)]
    pub pci_bridge: Option<PciBridgeInfo>,
}

/// PCI vendor and device ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PciDeviceId {
    /// Device id.
    #[serde(default)]
    pub device: i64,
    /// Vendor id.
    #[serde(default)]
    pub vendor: i64,
}

/// The secondary bus of a PCI bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PciBridgeInfo {
    /// The devices behind the bridge.
    #[serde(default)]
    pub devices: Vec<PciDeviceInfo>,
}

no_argument_command!(
    /// `query-block`: the block backends of devices.
    QueryBlock,
    "query-block",
    Vec<BlockInfo>,
    QUERY_TIMEOUT
);

/// One block backend (`query-block`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BlockInfo {
    /// The backend name (empty for `-blockdev` nodes attached to a device).
    pub device: String,
    /// The device's id or QOM path.
    #[serde(default)]
    pub qdev: Option<String>,
    /// The backend type (usually `unknown`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Whether the medium is removable.
    #[serde(default)]
    pub removable: bool,
    /// Whether the medium is locked.
    #[serde(default)]
    pub locked: bool,
    /// The inserted medium, if any.
    #[serde(default)]
    pub inserted: Option<BlockDeviceInfo>,
}

/// The medium inserted in a block backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BlockDeviceInfo {
    /// The file name.
    #[serde(default)]
    pub file: String,
    /// The top node's name.
    #[serde(rename = "node-name", default)]
    pub node_name: Option<String>,
    /// Read-only.
    #[serde(default)]
    pub ro: bool,
    /// The format driver.
    #[serde(default)]
    pub drv: String,
}

no_argument_command!(
    /// `query-cpus-fast`: the vCPUs and their host threads.
    QueryCpusFast,
    "query-cpus-fast",
    Vec<CpuInfoFast>,
    QUERY_TIMEOUT
);

/// One vCPU (`query-cpus-fast`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct CpuInfoFast {
    /// The vCPU index.
    pub cpu_index: i64,
    /// The host thread id running this vCPU.
    pub thread_id: i64,
    /// The QOM path of the vCPU.
    #[serde(default)]
    pub qom_path: String,
    /// The target architecture, e.g. `x86_64`.
    #[serde(default)]
    pub target: String,
}

no_argument_command!(
    /// `query-migrate`: the state of the current (or last) migration.
    QueryMigrate,
    "query-migrate",
    MigrationInfo,
    SLOW_TIMEOUT
);

/// Migration state (`query-migrate`). Every member is optional: QEMU
/// reports only what applies to the current state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct MigrationInfo {
    /// The migration status; `None` if no migration ever started.
    #[serde(default)]
    pub status: Option<MigrationStatus>,
    /// RAM transfer statistics.
    #[serde(default)]
    pub ram: Option<MigrationStats>,
    /// Disk transfer statistics (block migration).
    #[serde(default)]
    pub disk: Option<MigrationStats>,
    /// Milliseconds since the migration started.
    #[serde(default)]
    pub total_time: Option<i64>,
    /// Expected downtime in milliseconds.
    #[serde(default)]
    pub expected_downtime: Option<i64>,
    /// Actual downtime in milliseconds (after completion).
    #[serde(default)]
    pub downtime: Option<i64>,
    /// Setup time in milliseconds.
    #[serde(default)]
    pub setup_time: Option<i64>,
    /// CPU throttle percentage (auto-converge).
    #[serde(default)]
    pub cpu_throttle_percentage: Option<i64>,
    /// Why the migration failed.
    #[serde(default)]
    pub error_desc: Option<String>,
}

/// Migration transfer statistics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct MigrationStats {
    /// Bytes transferred.
    pub transferred: u64,
    /// Bytes remaining.
    pub remaining: u64,
    /// Total bytes.
    pub total: u64,
    /// Pages that were all one byte value.
    pub duplicate: u64,
    /// Pages sent normally.
    pub normal: u64,
    /// Bytes sent normally.
    pub normal_bytes: u64,
    /// Dirty pages per second.
    pub dirty_pages_rate: u64,
    /// Throughput in megabits per second.
    pub mbps: f64,
    /// Dirty bitmap synchronisations so far.
    pub dirty_sync_count: u64,
    /// Page requests from the destination during postcopy.
    pub postcopy_requests: u64,
    /// The target page size.
    pub page_size: u64,
}

/// A migration status (`query-migrate`, `MIGRATION` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MigrationStatus {
    /// No migration.
    None,
    /// Setting up.
    Setup,
    /// Being cancelled.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// Pre-copy in progress.
    Active,
    /// Post-copy in progress.
    PostcopyActive,
    /// Post-copy paused by a network failure.
    PostcopyPaused,
    /// Post-copy recovering.
    PostcopyRecover,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// COLO checkpointing.
    Colo,
    /// Paused before switchover (`pause-before-switchover`).
    PreSwitchover,
    /// Migrating device state.
    Device,
    /// Waiting for a failover device to unplug.
    WaitUnplug,
    /// A status this crate does not know.
    #[serde(other)]
    Other,
}

no_argument_command!(
    /// `query-balloon`: the guest's current memory size.
    QueryBalloon,
    "query-balloon",
    BalloonInfo,
    QUERY_TIMEOUT
);

/// Reply to `query-balloon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BalloonInfo {
    /// The guest's memory in bytes.
    pub actual: u64,
}

no_argument_command!(
    /// `query-status`: whether the VM runs and its run state.
    QueryStatus,
    "query-status",
    StatusInfo,
    QUERY_TIMEOUT
);

/// Reply to `query-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct StatusInfo {
    /// Whether the vCPUs run.
    pub running: bool,
    /// Whether single-stepping is on (removed in newer QEMUs).
    #[serde(default)]
    pub singlestep: bool,
    /// The run state.
    pub status: RunState,
}

/// A VM run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunState {
    /// Stopped by a debugger.
    Debug,
    /// Waiting for an incoming migration.
    Inmigrate,
    /// An internal error stopped the VM.
    InternalError,
    /// An I/O error stopped the VM.
    IoError,
    /// Stopped (`stop`).
    Paused,
    /// Stopped after an outgoing migration.
    Postmigrate,
    /// Not started yet (`-S`).
    Prelaunch,
    /// Finishing an outgoing migration.
    FinishMigrate,
    /// Restoring a snapshot.
    RestoreVm,
    /// Running.
    Running,
    /// Saving a snapshot.
    SaveVm,
    /// The guest shut down (`-no-shutdown`).
    Shutdown,
    /// Suspended (ACPI S3).
    Suspended,
    /// Stopped by the watchdog.
    Watchdog,
    /// The guest panicked.
    GuestPanicked,
    /// COLO.
    Colo,
    /// A state this crate does not know.
    #[serde(other)]
    Other,
}

no_argument_command!(
    /// `query-version`: QEMU's version.
    QueryVersion,
    "query-version",
    crate::VersionInfo,
    QUERY_TIMEOUT
);

no_argument_command!(
    /// `query-commands`: the commands this QEMU has.
    QueryCommands,
    "query-commands",
    Vec<CommandInfo>,
    QUERY_TIMEOUT
);

/// One command (`query-commands`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CommandInfo {
    /// The command name.
    pub name: String,
}

no_argument_command!(
    /// `query-qmp-schema`: the QAPI schema, for capability probing.
    QueryQmpSchema,
    "query-qmp-schema",
    Vec<SchemaInfo>,
    SLOW_TIMEOUT
);

/// One schema entity (`query-qmp-schema`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SchemaInfo {
    /// The entity name (commands and events by name, types by number).
    pub name: String,
    /// `builtin`, `enum`, `array`, `object`, `alternate`, `command`, `event`.
    #[serde(rename = "meta-type")]
    pub meta_type: String,
    /// Feature flags, e.g. `deprecated`.
    #[serde(default)]
    pub features: Vec<String>,
    /// The members that depend on the meta-type.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

no_argument_command!(
    /// `query-machines`: the machine types this QEMU has.
    QueryMachines,
    "query-machines",
    Vec<MachineInfo>,
    QUERY_TIMEOUT
);

/// One machine type (`query-machines`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct MachineInfo {
    /// The machine name, e.g. `pc-i440fx-7.2`.
    pub name: String,
    /// An alias, e.g. `pc`.
    #[serde(default)]
    pub alias: Option<String>,
    /// Whether this is the default machine.
    #[serde(default)]
    pub is_default: bool,
    /// The maximum number of vCPUs.
    #[serde(default)]
    pub cpu_max: i64,
    /// Whether vCPUs can be hot-plugged.
    #[serde(default)]
    pub hotpluggable_cpus: bool,
    /// Whether the machine is deprecated.
    #[serde(default)]
    pub deprecated: bool,
    /// The default CPU model.
    #[serde(default)]
    pub default_cpu_type: Option<String>,
    /// The default RAM backend id.
    #[serde(default)]
    pub default_ram_id: Option<String>,
}

// ---------------------------------------------------------------------------
// Migration

/// `migrate`: start an outgoing migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migrate {
    /// Where to, e.g. `tcp:192.0.2.1:8102`.
    pub uri: String,
    /// Resume a paused post-copy migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}

impl Migrate {
    /// Migrate to `uri`.
    pub fn new(uri: impl Into<String>) -> Self {
        Migrate {
            uri: uri.into(),
            resume: None,
        }
    }
}
command!(Migrate, "migrate", (), SLOW_TIMEOUT);

/// `migrate-set-parameters`: tune migration. Unset members are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateSetParameters {
    /// Bandwidth limit in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Maximum tolerated downtime in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    /// Post-copy bandwidth limit in bytes per second (QEMU ≥ 3.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_postcopy_bandwidth: Option<u64>,
    /// XBZRLE cache size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xbzrle_cache_size: Option<u64>,
    /// Number of multifd channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u64>,
    /// Initial auto-converge throttle percentage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u64>,
    /// Auto-converge throttle increment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u64>,
    /// Maximum auto-converge throttle percentage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_throttle: Option<u64>,
    /// The id of the `tls-creds` object to migrate over TLS with; `""`
    /// turns TLS off again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_creds: Option<String>,
    /// The host name the target's certificate is checked against, when
    /// not the migration URI's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_hostname: Option<String>,
}
command!(
    MigrateSetParameters,
    "migrate-set-parameters",
    (),
    QUERY_TIMEOUT
);

/// `migrate-set-capabilities`: switch migration capabilities on or off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateSetCapabilities {
    /// The capabilities to set.
    pub capabilities: Vec<MigrationCapabilityStatus>,
}

impl MigrateSetCapabilities {
    /// Set each named capability to `state`.
    pub fn new<S: Into<String>>(capabilities: impl IntoIterator<Item = (S, bool)>) -> Self {
        MigrateSetCapabilities {
            capabilities: capabilities
                .into_iter()
                .map(|(capability, state)| MigrationCapabilityStatus {
                    capability: capability.into(),
                    state,
                })
                .collect(),
        }
    }
}
command!(
    MigrateSetCapabilities,
    "migrate-set-capabilities",
    (),
    QUERY_TIMEOUT
);

/// A migration capability and whether it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MigrationCapabilityStatus {
    /// The capability, e.g. `postcopy-ram`.
    pub capability: String,
    /// Whether it is on.
    pub state: bool,
}

no_argument_command!(
    /// `query-migrate-capabilities`: the migration capabilities and their state.
    QueryMigrateCapabilities,
    "query-migrate-capabilities",
    Vec<MigrationCapabilityStatus>,
    QUERY_TIMEOUT
);

no_argument_command!(
    /// `migrate-start-postcopy`: switch a running migration to post-copy.
    MigrateStartPostcopy,
    "migrate-start-postcopy",
    (),
    SLOW_TIMEOUT
);

no_argument_command!(
    /// `migrate_cancel`: cancel the outgoing migration.
    MigrateCancel,
    "migrate_cancel",
    (),
    SLOW_TIMEOUT
);

/// `migrate-incoming`: start listening for an incoming migration
/// (QEMU started with `-incoming defer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateIncoming {
    /// Where to listen, e.g. `tcp:0:8102`.
    pub uri: String,
}

impl MigrateIncoming {
    /// Listen on `uri`.
    pub fn new(uri: impl Into<String>) -> Self {
        MigrateIncoming { uri: uri.into() }
    }
}
command!(MigrateIncoming, "migrate-incoming", (), SLOW_TIMEOUT);

/// `object-add`: create a user-creatable QOM object, e.g. the
/// `tls-creds-x509` a TLS migration names.
///
/// ```
/// use qmp_protocol::ObjectAdd;
///
/// let creds = ObjectAdd::new("tls-creds-x509", "migtls0")
///     .property("dir", "/etc/pki/qemu")
///     .property("endpoint", "server")
///     .property("verify-peer", true);
/// # let _ = creds;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectAdd {
    /// The object type.
    #[serde(rename = "qom-type")]
    pub qom_type: String,
    /// The object id.
    pub id: String,
    /// The type's properties.
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl ObjectAdd {
    /// An object of type `qom_type` with id `id` and no properties.
    pub fn new(qom_type: impl Into<String>, id: impl Into<String>) -> Self {
        ObjectAdd {
            qom_type: qom_type.into(),
            id: id.into(),
            properties: Map::new(),
        }
    }

    /// Set a property (JSON types kept: `true`, not `"on"`).
    #[must_use]
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}
command!(ObjectAdd, "object-add", (), QUERY_TIMEOUT);

/// `object-del`: remove a user-creatable object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectDel {
    /// The object id.
    pub id: String,
}

impl ObjectDel {
    /// Remove object `id`.
    pub fn new(id: impl Into<String>) -> Self {
        ObjectDel { id: id.into() }
    }
}
command!(ObjectDel, "object-del", (), QUERY_TIMEOUT);

// ---------------------------------------------------------------------------
// Run control

no_argument_command!(
    /// `stop`: pause the vCPUs. Emits `STOP` if the VM was running.
    Stop,
    "stop",
    (),
    SLOW_TIMEOUT
);

no_argument_command!(
    /// `cont`: resume the vCPUs. Emits `RESUME`.
    Cont,
    "cont",
    (),
    SLOW_TIMEOUT
);

no_argument_command!(
    /// `system_powerdown`: press the ACPI power button.
    SystemPowerdown,
    "system_powerdown",
    (),
    QUERY_TIMEOUT
);

no_argument_command!(
    /// `system_reset`: reset the machine.
    SystemReset,
    "system_reset",
    (),
    QUERY_TIMEOUT
);

no_argument_command!(
    /// `quit`: terminate QEMU. Emits `SHUTDOWN`; then QEMU closes the socket.
    Quit,
    "quit",
    (),
    SLOW_TIMEOUT
);

// ---------------------------------------------------------------------------
// Display, balloon, QOM

/// The display protocol of `set_password`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayProtocol {
    /// VNC.
    Vnc,
    /// SPICE.
    Spice,
}

/// `set_password`: set the VNC or SPICE password.
///
/// Its `Debug` output and this crate's logs never show the password.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SetPassword {
    /// The protocol.
    pub protocol: DisplayProtocol,
    /// The new password.
    pub password: String,
}

impl SetPassword {
    /// Set the `protocol` password to `password`.
    pub fn new(protocol: DisplayProtocol, password: impl Into<String>) -> Self {
        SetPassword {
            protocol,
            password: password.into(),
        }
    }
}

impl fmt::Debug for SetPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPassword")
            .field("protocol", &self.protocol)
            .field("password", &crate::redact::REDACTED)
            .finish()
    }
}
command!(SetPassword, "set_password", (), QUERY_TIMEOUT);

/// `balloon`: ask the guest to shrink or grow to `value` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Balloon {
    /// The target memory size in bytes.
    pub value: u64,
}

impl Balloon {
    /// Target `bytes` of guest memory.
    pub fn bytes(bytes: u64) -> Self {
        Balloon { value: bytes }
    }
}
command!(Balloon, "balloon", (), QUERY_TIMEOUT);

/// `qom-get`: read a QOM property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QomGet {
    /// The object's QOM path.
    pub path: String,
    /// The property.
    pub property: String,
}

impl QomGet {
    /// Read `property` of the object at `path`.
    pub fn new(path: impl Into<String>, property: impl Into<String>) -> Self {
        QomGet {
            path: path.into(),
            property: property.into(),
        }
    }
}
command!(QomGet, "qom-get", Value, QUERY_TIMEOUT);

/// `qom-list`: the properties of a QOM object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QomList {
    /// The object's QOM path.
    pub path: String,
}

impl QomList {
    /// List the properties of the object at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        QomList { path: path.into() }
    }
}
command!(QomList, "qom-list", Vec<ObjectPropertyInfo>, QUERY_TIMEOUT);

/// One property (`qom-list`, `device-list-properties`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct ObjectPropertyInfo {
    /// The property name.
    pub name: String,
    /// The property type, e.g. `bool` or `child<virtio-net-device>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
    /// The default value.
    #[serde(default)]
    pub default_value: Option<Value>,
}

/// `qom-list-types`: the QOM types, optionally those implementing a type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QomListTypes {
    /// Only types implementing this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub implements: Option<String>,
    /// Include abstract types.
    #[serde(rename = "abstract", skip_serializing_if = "Option::is_none")]
    pub include_abstract: Option<bool>,
}
command!(
    QomListTypes,
    "qom-list-types",
    Vec<ObjectTypeInfo>,
    QUERY_TIMEOUT
);

/// One QOM type (`qom-list-types`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ObjectTypeInfo {
    /// The type name.
    pub name: String,
    /// Whether the type is abstract.
    #[serde(rename = "abstract", default)]
    pub is_abstract: bool,
    /// The parent type.
    #[serde(default)]
    pub parent: Option<String>,
}

/// `device-list-properties`: the properties of a device type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceListProperties {
    /// The device type, e.g. `virtio-net-pci`.
    pub typename: String,
}

impl DeviceListProperties {
    /// List the properties of device type `typename`.
    pub fn new(typename: impl Into<String>) -> Self {
        DeviceListProperties {
            typename: typename.into(),
        }
    }
}
command!(
    DeviceListProperties,
    "device-list-properties",
    Vec<ObjectPropertyInfo>,
    QUERY_TIMEOUT
);

/// `query-command-line-options`: the command-line options QEMU accepts
/// (only those described by `QemuOpts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueryCommandLineOptions {
    /// Only this option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
}
command!(
    QueryCommandLineOptions,
    "query-command-line-options",
    Vec<CommandLineOptionInfo>,
    QUERY_TIMEOUT
);

/// One command-line option (`query-command-line-options`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CommandLineOptionInfo {
    /// The option name, e.g. `drive`.
    pub option: String,
    /// Its parameters.
    #[serde(default)]
    pub parameters: Vec<CommandLineParameterInfo>,
}

/// One parameter of a command-line option.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CommandLineParameterInfo {
    /// The parameter name.
    pub name: String,
    /// `string`, `boolean`, `number` or `size`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Help text.
    #[serde(default)]
    pub help: Option<String>,
    /// The default value, as text.
    #[serde(default)]
    pub default: Option<String>,
}

no_argument_command!(
    /// `query-cpu-definitions`: the CPU models this QEMU has.
    QueryCpuDefinitions,
    "query-cpu-definitions",
    Vec<CpuDefinitionInfo>,
    QUERY_TIMEOUT
);

/// One CPU model (`query-cpu-definitions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct CpuDefinitionInfo {
    /// The model name.
    pub name: String,
    /// Whether it is safe to migrate.
    #[serde(default)]
    pub migration_safe: Option<bool>,
    /// Whether the model never changes between QEMU versions.
    #[serde(rename = "static", default)]
    pub is_static: bool,
    /// Features the host cannot provide (empty if usable).
    #[serde(default)]
    pub unavailable_features: Option<Vec<String>>,
    /// The QOM type name.
    #[serde(default)]
    pub typename: String,
    /// The model this one is an alias of.
    #[serde(default)]
    pub alias_of: Option<String>,
    /// Whether the model is deprecated.
    #[serde(default)]
    pub deprecated: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::command::default_timeout;

    fn args<C: Command>(cmd: &C) -> Value {
        serde_json::to_value(cmd).unwrap()
    }

    fn reply<C: Command>(v: Value) -> C::Returns {
        crate::client::decode_return::<C::Returns>(C::NAME, v).unwrap()
    }

    #[test]
    fn device_add_keeps_booleans_and_flattens_properties() {
        let cmd = DeviceAdd::new("virtio-net-pci", "nic-1")
            .bus("pci.0")
            .property("addr", "0x6")
            .property("mq", true)
            .property("vectors", 6);
        assert_eq!(
            args(&cmd),
            json!({"driver": "virtio-net-pci", "id": "nic-1", "bus": "pci.0",
                   "addr": "0x6", "mq": true, "vectors": 6})
        );
    }

    #[test]
    fn device_add_without_bus_omits_it() {
        assert_eq!(
            args(&DeviceAdd::new("virtio-balloon-pci", "balloon0")),
            json!({"driver": "virtio-balloon-pci", "id": "balloon0"})
        );
    }

    #[test]
    fn netdev_add_names_type() {
        let cmd = NetdevAdd::new("tap", "nic-1")
            .property("fds", "a:b")
            .property("vhost", false);
        assert_eq!(
            args(&cmd),
            json!({"id": "nic-1", "type": "tap", "fds": "a:b", "vhost": false})
        );
    }

    #[test]
    fn blockdev_add_uses_node_name() {
        let cmd = BlockdevAdd::new("raw", "disk-1").property(
            "file",
            json!({"driver": "file", "filename": "/dev/fdset/2"}),
        );
        assert_eq!(
            args(&cmd),
            json!({"node-name": "disk-1", "driver": "raw",
                   "file": {"driver": "file", "filename": "/dev/fdset/2"}})
        );
    }

    #[test]
    fn block_resize_by_node_omits_device() {
        assert_eq!(
            args(&BlockResize::node("disk-1", 1 << 30)),
            json!({"node-name": "disk-1", "size": 1073741824})
        );
    }

    #[test]
    fn add_fd_without_set_is_empty() {
        assert_eq!(args(&AddFd::default()), json!({}));
        assert_eq!(
            args(&AddFd {
                fdset_id: Some(3),
                opaque: Some("disk-1".to_owned())
            }),
            json!({"fdset-id": 3, "opaque": "disk-1"})
        );
    }

    #[test]
    fn migrate_set_parameters_omits_unset() {
        let cmd = MigrateSetParameters {
            max_bandwidth: Some(33554432),
            downtime_limit: Some(30),
            ..Default::default()
        };
        assert_eq!(
            args(&cmd),
            json!({"max-bandwidth": 33554432, "downtime-limit": 30})
        );
    }

    #[test]
    fn migrate_set_capabilities_lists_states() {
        let cmd = MigrateSetCapabilities::new([("postcopy-ram", true), ("xbzrle", false)]);
        assert_eq!(
            args(&cmd),
            json!({"capabilities": [{"capability": "postcopy-ram", "state": true},
                                    {"capability": "xbzrle", "state": false}]})
        );
    }

    #[test]
    fn set_password_debug_hides_password() {
        let cmd = SetPassword::new(DisplayProtocol::Vnc, "hunter2");
        assert_eq!(
            format!("{cmd:?}"),
            r#"SetPassword { protocol: Vnc, password: "<redacted>" }"#
        );
        assert_eq!(
            args(&cmd),
            json!({"protocol": "vnc", "password": "hunter2"})
        );
    }

    #[test]
    fn qom_list_types_renames_abstract() {
        let cmd = QomListTypes {
            implements: Some("pci-device".to_owned()),
            include_abstract: Some(false),
        };
        assert_eq!(
            args(&cmd),
            json!({"implements": "pci-device", "abstract": false})
        );
    }

    #[test]
    fn no_argument_commands_serialise_to_null() {
        assert_eq!(args(&QueryStatus), Value::Null);
    }

    #[test]
    fn status_with_unknown_state_and_members_decodes() {
        let status = reply::<QueryStatus>(
            json!({"status": "hibernating", "running": false, "new-member": 1}),
        );
        assert_eq!(status.status, RunState::Other);
        assert!(!status.running);
    }

    #[test]
    fn status_of_qemu_7_2_decodes() {
        let status = reply::<QueryStatus>(
            json!({"status": "prelaunch", "singlestep": false, "running": false}),
        );
        assert_eq!(status.status, RunState::Prelaunch);
    }

    #[test]
    fn migration_info_decodes_partial_stats() {
        let info = reply::<QueryMigrate>(json!({
            "status": "active", "total-time": 1200, "expected-downtime": 300,
            "ram": {"transferred": 1000, "remaining": 50, "total": 2000, "mbps": 812.5,
                    "dirty-sync-count": 3, "brand-new": 9}
        }));
        assert_eq!(info.status, Some(MigrationStatus::Active));
        assert_eq!(info.total_time, Some(1200));
        let ram = info.ram.unwrap();
        assert_eq!(ram.transferred, 1000);
        assert_eq!(ram.remaining, 50);
        assert_eq!(ram.dirty_sync_count, 3);
        assert_eq!(ram.mbps, 812.5);
    }

    #[test]
    fn empty_migration_info_has_no_status() {
        assert_eq!(reply::<QueryMigrate>(json!({})), MigrationInfo::default());
    }

    #[test]
    fn unit_reply_accepts_any_object() {
        reply::<Stop>(json!({}));
        reply::<Stop>(json!({"future": true}));
    }

    #[test]
    fn mismatched_reply_keeps_raw_json() {
        let err =
            crate::client::decode_return::<BalloonInfo>("query-balloon", json!({"actual": "lots"}))
                .unwrap_err();
        assert!(matches!(
            err,
            crate::QmpError::BadReply { ref command, ref raw, .. }
                if command == "query-balloon" && *raw == json!({"actual": "lots"})
        ));
    }

    #[test]
    fn query_pci_decodes_bridges() {
        let buses = reply::<QueryPci>(json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 5, "function": 0, "qdev_id": "disk-1", "irq_pin": 1,
             "class_info": {"class": 256}, "id": {"device": 4097, "vendor": 6900}, "regions": []},
            {"bus": 0, "slot": 6, "function": 0, "qdev_id": "", "id": {"device": 1, "vendor": 2},
             "pci_bridge": {"bus": {"number": 1}, "devices": [
                 {"bus": 1, "slot": 0, "function": 0, "qdev_id": "nic-1", "id": {"device": 3, "vendor": 4}}
             ]}}
        ]}]));
        assert_eq!(buses[0].devices[0].qdev_id, "disk-1");
        assert_eq!(buses[0].devices[0].slot, 5);
        let bridge = buses[0].devices[1].pci_bridge.as_ref().unwrap();
        assert_eq!(bridge.devices[0].qdev_id, "nic-1");
    }

    #[test]
    fn query_fdsets_decodes() {
        let sets = reply::<QueryFdsets>(
            json!([{"fdset-id": 1, "fds": [{"fd": 25, "opaque": "disk-1"}, {"fd": 26}]}]),
        );
        assert_eq!(sets[0].fdset_id, 1);
        assert_eq!(sets[0].fds[0].fd, 25);
        assert_eq!(sets[0].fds[0].opaque.as_deref(), Some("disk-1"));
        assert_eq!(sets[0].fds[1].opaque, None);
    }

    #[test]
    fn query_cpus_fast_decodes() {
        let cpus = reply::<QueryCpusFast>(json!([{"cpu-index": 0, "thread-id": 4242,
            "qom-path": "/machine/unattached/device[0]", "target": "x86_64",
            "props": {"core-id": 0}}]));
        assert_eq!(cpus[0].cpu_index, 0);
        assert_eq!(cpus[0].thread_id, 4242);
        assert_eq!(cpus[0].target, "x86_64");
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/qemu-7.2/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn fixture_json(name: &str) -> Value {
        serde_json::from_str(&fixture(name)).unwrap()
    }

    #[test]
    fn query_version_of_qemu_7_2_decodes() {
        let version = reply::<QueryVersion>(fixture_json("qmp-query-version.json"));
        assert_eq!(version.qemu, crate::QemuVersion::new(7, 2, 22));
        assert_eq!(version.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
    }

    #[test]
    fn query_machines_of_qemu_7_2_decodes() {
        let machines = reply::<QueryMachines>(fixture_json("qmp-query-machines.json"));
        let pc = machines
            .iter()
            .find(|m| m.alias.as_deref() == Some("pc"))
            .unwrap();
        assert_eq!(pc.name, "pc-i440fx-7.2");
        assert!(pc.is_default);
    }

    #[test]
    fn query_cpu_definitions_of_qemu_7_2_decodes() {
        let cpus = reply::<QueryCpuDefinitions>(fixture_json("qmp-query-cpu-definitions.json"));
        let qemu64 = cpus.iter().find(|c| c.name == "qemu64").unwrap();
        assert_eq!(qemu64.typename, "qemu64-x86_64-cpu");
    }

    #[test]
    fn query_migrate_capabilities_of_qemu_7_2_decodes() {
        let caps =
            reply::<QueryMigrateCapabilities>(fixture_json("qmp-query-migrate-capabilities.json"));
        let postcopy = caps
            .iter()
            .find(|c| c.capability == "postcopy-ram")
            .unwrap();
        assert!(!postcopy.state);
    }

    #[test]
    fn typed_timeouts_match_the_table() {
        fn check<C: Command>() {
            assert_eq!(C::TIMEOUT, default_timeout(C::NAME), "{}", C::NAME);
        }
        check::<DeviceAdd>();
        check::<DeviceDel>();
        check::<NetdevAdd>();
        check::<NetdevDel>();
        check::<GetFd>();
        check::<CloseFd>();
        check::<AddFd>();
        check::<RemoveFd>();
        check::<QueryFdsets>();
        check::<BlockdevAdd>();
        check::<BlockdevDel>();
        check::<BlockResize>();
        check::<QueryPci>();
        check::<QueryBlock>();
        check::<QueryCpusFast>();
        check::<QueryMigrate>();
        check::<QueryBalloon>();
        check::<QueryStatus>();
        check::<QueryVersion>();
        check::<QueryCommands>();
        check::<QueryQmpSchema>();
        check::<QueryMachines>();
        check::<Migrate>();
        check::<MigrateSetParameters>();
        check::<MigrateSetCapabilities>();
        check::<MigrateStartPostcopy>();
        check::<MigrateCancel>();
        check::<MigrateIncoming>();
        check::<ObjectAdd>();
        check::<ObjectDel>();
        check::<Stop>();
        check::<Cont>();
        check::<SystemPowerdown>();
        check::<SystemReset>();
        check::<Quit>();
        check::<SetPassword>();
        check::<Balloon>();
        check::<QomGet>();
        check::<QomList>();
        check::<QomListTypes>();
        check::<DeviceListProperties>();
        check::<QueryCommandLineOptions>();
        check::<QueryCpuDefinitions>();
        check::<QueryMigrateCapabilities>();
    }

    #[test]
    fn every_typed_command_exists_in_qemu_7_2() {
        let names = [
            DeviceAdd::NAME,
            DeviceDel::NAME,
            NetdevAdd::NAME,
            NetdevDel::NAME,
            GetFd::NAME,
            CloseFd::NAME,
            AddFd::NAME,
            RemoveFd::NAME,
            QueryFdsets::NAME,
            BlockdevAdd::NAME,
            BlockdevDel::NAME,
            BlockResize::NAME,
            QueryPci::NAME,
            QueryBlock::NAME,
            QueryCpusFast::NAME,
            QueryMigrate::NAME,
            QueryBalloon::NAME,
            QueryStatus::NAME,
            QueryVersion::NAME,
            QueryCommands::NAME,
            QueryQmpSchema::NAME,
            QueryMachines::NAME,
            Migrate::NAME,
            MigrateSetParameters::NAME,
            MigrateSetCapabilities::NAME,
            MigrateStartPostcopy::NAME,
            MigrateCancel::NAME,
            MigrateIncoming::NAME,
            ObjectAdd::NAME,
            ObjectDel::NAME,
            Stop::NAME,
            Cont::NAME,
            SystemPowerdown::NAME,
            SystemReset::NAME,
            Quit::NAME,
            SetPassword::NAME,
            Balloon::NAME,
            QomGet::NAME,
            QomList::NAME,
            QomListTypes::NAME,
            DeviceListProperties::NAME,
            QueryCommandLineOptions::NAME,
            QueryCpuDefinitions::NAME,
            QueryMigrateCapabilities::NAME,
        ];
        let known = fixture("qmp-commands.txt");
        let known: Vec<&str> = known.lines().map(str::trim).collect();
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !known.contains(n))
            .collect();
        assert_eq!(missing, Vec::<&str>::new());
    }
}
