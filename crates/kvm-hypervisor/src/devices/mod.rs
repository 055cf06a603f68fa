//! One model of the devices an instance's disks and NICs become.
//!
//! A [`DiskDevice`] or [`NicDevice`] is built once from the spec entry, its
//! placement and the host's facts; the cold start renders it to command-line
//! options ([`Device::to_opts`], [`DiskDevice::blockdev`],
//! [`NicDevice::netdev_opts`]) and hotplug to QMP arguments
//! ([`Device::to_device_add`], [`DiskDevice::blockdev_add`],
//! [`NicDevice::netdev_add`]), and the runtime record's entry is derived
//! from the same value. So a hot-added device is the device a start with it
//! would have created, which live migration relies on: the target rebuilds
//! hot-plugged devices through the cold-start path.
//!
//! The one deliberate difference between the two paths is the NIC option
//! ROM under `use_chroot`: QEMU loads ROM files at start, before it enters
//! its chroot, but cannot find them for a hot-added NIC afterwards, so a NIC
//! hot-added to a chrooted instance gets `romfile=""` (as in Ganeti) and
//! its record entry keeps `"romfile": ""` so a rebuild matches it.

mod disk;
mod nic;

use device_slots::{DeviceId, DeviceKind, HvInfo, Placement};
use qemu_cmdline::{OptValue, Opts};
use qmp_protocol::DeviceAdd;
use serde_json::Value as Json;

pub use disk::{DiskDevice, OpenDisk, disk_driver, effective_cache};
pub use nic::{NicDevice, nic_config, nic_config_of};

/// How a device reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plug {
    /// On QEMU's command line.
    Cold,
    /// With `device_add` into a running QEMU.
    Hot,
}

/// Why a device cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device's QEMU id cannot be derived from its UUID.
    #[error("no QEMU id for {what}")]
    DeviceId {
        /// The device (`disk 0 (UUID)`).
        what: String,
        /// Why.
        #[source]
        source: device_slots::SlotError,
    },
    /// A userspace disk URI (or CD-ROM path) QEMU cannot use.
    #[error("disk {uuid}")]
    StorageUri {
        /// The disk's UUID or block node name.
        uuid: String,
        /// The cause.
        #[source]
        source: qemu_cmdline::CmdlineError,
    },
    /// vhost-net asked for but missing (QEMU 7.2 would abort).
    #[error(
        "vhost_net is on but {} is missing on this host (load the vhost_net module, or set vhost_net to false)",
        crate::host::VHOST_NET_DEVICE
    )]
    VhostNetMissing,
}

/// The QEMU id of a disk or NIC (Ganeti's `disk-`/`nic-` scheme).
pub fn device_id(kind: DeviceKind, uuid: &str, what: &str) -> Result<DeviceId, DeviceError> {
    DeviceId::for_device(kind, uuid).map_err(|source| DeviceError::DeviceId {
        what: what.to_owned(),
        source,
    })
}

/// A guest device: driver, id, placement and properties, in the order they
/// are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    driver: String,
    id: DeviceId,
    placement: Placement,
    props: Vec<(&'static str, OptValue)>,
}

impl Device {
    /// A device of `driver` with `id` at `placement`.
    pub fn new(driver: &str, id: DeviceId, placement: Placement) -> Device {
        Device {
            driver: driver.to_owned(),
            id,
            placement,
            props: Vec::new(),
        }
    }

    /// Adds a property.
    pub fn with(mut self, key: &'static str, value: impl Into<OptValue>) -> Device {
        self.props.push((key, value.into()));
        self
    }

    /// The driver.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The id.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// Where it sits.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Its properties beyond driver, id and placement.
    pub fn props(&self) -> &[(&'static str, OptValue)] {
        &self.props
    }

    /// The placement's properties.
    pub fn placement_props(&self) -> Vec<(&'static str, OptValue)> {
        placement_props(&self.placement)
    }

    /// The `-device` argument.
    pub fn to_opts(&self) -> Opts {
        let mut o = Opts::new(&self.driver).set("id", self.id.as_str());
        for (k, v) in self.placement_props().into_iter().chain(self.props.clone()) {
            o.push(k, v);
        }
        o
    }

    /// The `device_add` arguments.
    pub fn to_device_add(&self) -> DeviceAdd {
        let mut d = DeviceAdd::new(self.driver.as_str(), self.id.as_str());
        for (k, v) in self.placement_props().into_iter().chain(self.props.clone()) {
            d = match k {
                "bus" => d.bus(v.to_string()),
                _ => d.property(k, json_value(&v)),
            };
        }
        d
    }

    /// Ganeti's hvinfo of the device.
    pub fn hvinfo(&self) -> HvInfo {
        HvInfo {
            driver: self.driver.clone(),
            id: self.id.clone(),
            placement: self.placement.clone(),
        }
    }
}

/// The properties of a placement: `bus`, `addr` on PCI; `bus`, `channel`,
/// `scsi-id`, `lun` on SCSI; none where QEMU places the device.
pub fn placement_props(placement: &Placement) -> Vec<(&'static str, OptValue)> {
    match placement {
        Placement::Pci { bus, slot } => {
            vec![("bus", bus.as_str().into()), ("addr", slot.hex().into())]
        }
        Placement::Scsi {
            bus,
            channel,
            target,
            lun,
        } => vec![
            ("bus", bus.as_str().into()),
            ("channel", (*channel).into()),
            ("scsi-id", target.get().into()),
            ("lun", (*lun).into()),
        ],
        Placement::Auto => Vec::new(),
    }
}

/// A property value as QMP wants it: booleans and integers typed; strings
/// (including QEMU's `OnOffAuto` values such as `write-cache`) as strings.
pub fn json_value(v: &OptValue) -> Json {
    match v {
        OptValue::Str(s) => Json::String(s.clone()),
        OptValue::Bool(b) => Json::Bool(*b),
        OptValue::Int(i) => Json::from(*i),
    }
}

/// The record's form of an hvinfo.
pub(crate) fn state_hvinfo(h: &HvInfo) -> Option<runtime_state::HvInfo> {
    serde_json::from_value(h.to_json()).ok()
}
