//! A NIC: its tap, its netdev, its guest device and its network configuration.

use std::num::NonZeroU8;

use device_slots::{DeviceId, Placement};
use qemu_cmdline::{OptValue, Opts};
use qmp_protocol::NetdevAdd;
use runtime_state::NicRecord;
use serde_json::{Map, Value as Json};

use super::{Device, DeviceError, Plug, json_value, state_hvinfo};
use crate::hvparams::{HvParams, NicType};
use crate::net::{NicConfig, NicMode as NetMode, TapName, TapOptions};
use crate::spec::{NicMode, NicSpec};

/// The record key of a NIC without an option ROM (hot-added under chroot).
const ROMFILE: &str = "romfile";

/// One NIC of an instance, as QEMU, the host network and the runtime record
/// see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NicDevice {
    device: Device,
    tap: TapOptions,
    config: NicConfig,
    record: NicRecord,
}

impl NicDevice {
    /// Builds `nic`, the `index`th NIC of `instance`, with QEMU id `id` at
    /// `placement`. `vhost_net_present`: whether `/dev/vhost-net` exists;
    /// `boot` makes it the first boot device.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        instance: &str,
        index: usize,
        nic: &NicSpec,
        hv: &HvParams,
        id: DeviceId,
        placement: Placement,
        vhost_net_present: bool,
        plug: Plug,
        boot: bool,
    ) -> Result<NicDevice, DeviceError> {
        let nic_type = hv.nic_type();
        let paravirtual = nic_type == NicType::Paravirtual;
        let vhost = paravirtual && hv.vhost_net();
        if vhost && !vhost_net_present {
            return Err(DeviceError::VhostNetMissing);
        }
        let queues = if paravirtual {
            u8::try_from(hv.virtio_net_queues()).unwrap_or(1).max(1)
        } else {
            1
        };
        let mut device = Device::new(nic_type.qemu_driver(), id.clone(), placement)
            .with("netdev", id.as_str())
            .with("mac", nic.mac().to_string());
        if queues > 1 {
            device = device
                .with("mq", true)
                .with("vectors", 2 * u32::from(queues) + 2);
        }
        // QEMU cannot read a ROM file from inside its chroot (see the module doc).
        let no_rom = plug == Plug::Hot && hv.use_chroot();
        if no_rom {
            device = device.with(ROMFILE, "");
        }
        if boot {
            device = device.with("bootindex", 1u8);
        }
        let config = nic_config(instance, nic, index);
        let mut extra = Map::new();
        if no_rom {
            extra.insert(ROMFILE.into(), Json::String(String::new()));
        }
        let record = NicRecord {
            uuid: nic.uuid().to_string(),
            mac: Some(nic.mac().to_string()),
            ip: nic.ip().map(|i| i.to_string()),
            name: nic.name().map(str::to_owned),
            mode: Some(config.mode.as_str().to_owned()),
            link: Some(nic.link().to_owned()),
            vlan: Some(nic.vlan().to_owned()),
            tap: None,
            hvinfo: state_hvinfo(&device.hvinfo()),
            extra,
        };
        let tap = TapOptions {
            name: None,
            vnet_hdr: paravirtual && hv.vnet_hdr(),
            queues: NonZeroU8::new(queues).unwrap_or(NonZeroU8::MIN),
            vhost,
        };
        Ok(NicDevice {
            device,
            tap,
            config,
            record,
        })
    }

    /// The guest device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tap to open for it.
    pub fn tap(&self) -> &TapOptions {
        &self.tap
    }

    /// Its host network configuration.
    pub fn config(&self) -> &NicConfig {
        &self.config
    }

    /// The record entry, without its tap (known once the tap is open).
    pub fn record(&self) -> &NicRecord {
        &self.record
    }

    /// Number of queues (tap descriptors; as many vhost-net ones with vhost).
    pub fn queues(&self) -> usize {
        usize::from(self.tap.queues.get())
    }

    /// The netdev's properties, given how QEMU finds the tap and vhost-net
    /// descriptors: fd numbers on the command line, `getfd` names in QMP.
    fn netdev_props(&self, fds: &[String], vhost_fds: &[String]) -> Vec<(&'static str, OptValue)> {
        let single = self.queues() == 1;
        let mut props = vec![(if single { "fd" } else { "fds" }, fds.join(":").into())];
        if self.tap.vhost {
            props.push(("vhost", true.into()));
            let key = if single { "vhostfd" } else { "vhostfds" };
            props.push((key, vhost_fds.join(":").into()));
        }
        props
    }

    /// The `-netdev` argument, the descriptors at fd numbers `fds` and
    /// `vhost_fds` in QEMU's process.
    pub fn netdev_opts(&self, fds: &[i32], vhost_fds: &[i32]) -> Opts {
        let s = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>();
        let mut o = Opts::new("tap").set("id", self.device.id().as_str());
        for (k, v) in self.netdev_props(&s(fds), &s(vhost_fds)) {
            o.push(k, v);
        }
        o
    }

    /// The `netdev_add` arguments, the descriptors passed with `getfd` under
    /// `fd_names` and `vhost_fd_names`.
    pub fn netdev_add(&self, fd_names: &[String], vhost_fd_names: &[String]) -> NetdevAdd {
        let mut add = NetdevAdd::new("tap", self.device.id().as_str());
        for (k, v) in self.netdev_props(fd_names, vhost_fd_names) {
            add = add.property(k, json_value(&v));
        }
        add
    }
}

/// The network configuration of NIC `n`, the `index`th of `instance`.
pub fn nic_config(instance: &str, n: &NicSpec, index: usize) -> NicConfig {
    NicConfig {
        instance: instance.to_owned(),
        instance_tags: Vec::new(),
        index,
        uuid: n.uuid().to_string(),
        name: n.name().map(str::to_owned),
        mac: n.mac().to_string(),
        mode: match n.mode() {
            NicMode::Bridged => NetMode::Bridged,
            NicMode::Routed => NetMode::Routed,
            NicMode::Openvswitch => NetMode::Openvswitch,
            NicMode::Ext => NetMode::Ext,
        },
        link: n.link().to_owned(),
        vlan: (!n.vlan().is_empty()).then(|| n.vlan().to_owned()),
        ip: n.ip(),
        network: None,
    }
}

/// The network configuration of a recorded NIC with a native mode (bridged
/// or routed) and a tap, the `index`th of instance `name`.
pub fn nic_config_of(name: &str, n: &NicRecord, index: usize) -> Option<(NicConfig, TapName)> {
    let tap = n.tap.as_deref().and_then(|t| TapName::new(t).ok())?;
    let mode = match n.mode.as_deref() {
        Some("routed") => NetMode::Routed,
        Some("bridged") => NetMode::Bridged,
        Some("openvswitch") => NetMode::Openvswitch,
        Some("ext") => NetMode::Ext,
        _ => return None,
    };
    let config = NicConfig {
        instance: name.to_owned(),
        instance_tags: Vec::new(),
        index,
        uuid: n.uuid.clone(),
        name: n.name.clone(),
        mac: n.mac.clone().unwrap_or_default(),
        mode,
        link: n.link.clone().unwrap_or_default(),
        vlan: n.vlan.clone().filter(|v| !v.is_empty()),
        ip: n.ip.as_deref().and_then(|i| i.parse().ok()),
        network: None,
    };
    Some((config, tap))
}
