//! `hvinfo`: where a device sits, as Ganeti stores it in the runtime file.

use serde_json::{Map, Value as Json, json};

use crate::id::DeviceId;
use crate::{PciSlot, ScsiId, SlotError};

/// The bus a device is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A PCI slot on a bus (`pci.0`, or a PCIe root port on q35).
    Pci {
        /// The bus name.
        bus: String,
        /// The slot (device number) on it.
        slot: PciSlot,
    },
    /// A target on a SCSI bus.
    Scsi {
        /// The bus name (`scsi.0`).
        bus: String,
        /// Channel (always 0 here).
        channel: u8,
        /// Target.
        target: ScsiId,
        /// LUN (always 0 here).
        lun: u8,
    },
    /// No explicit address: QEMU places it (IDE, ISA devices).
    Auto,
}

/// Driver, id and placement of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvInfo {
    /// The QEMU device driver (`virtio-blk-pci`, `scsi-hd`, …).
    pub driver: String,
    /// The device id.
    pub id: DeviceId,
    /// Where it sits.
    pub placement: Placement,
}

impl HvInfo {
    /// Ganeti's hvinfo object, keys in Ganeti's order: driver, id, bus, then
    /// addr (`hex(slot)`, e.g. `0xc`) or channel, scsi-id, lun.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("driver".into(), json!(self.driver));
        m.insert("id".into(), json!(self.id.as_str()));
        match &self.placement {
            Placement::Pci { bus, slot } => {
                m.insert("bus".into(), json!(bus));
                m.insert("addr".into(), json!(slot.hex()));
            }
            Placement::Scsi {
                bus,
                channel,
                target,
                lun,
            } => {
                m.insert("bus".into(), json!(bus));
                m.insert("channel".into(), json!(channel));
                m.insert("scsi-id".into(), json!(target.get()));
                m.insert("lun".into(), json!(lun));
            }
            Placement::Auto => {}
        }
        Json::Object(m)
    }

    /// Reads an hvinfo object (ours or Ganeti's, legacy ids included).
    pub fn from_json(v: &Json) -> Result<HvInfo, SlotError> {
        let bad = |why: &str| SlotError::BadHvInfo(format!("{why} in {v}"));
        let s = |k: &str| v.get(k).and_then(Json::as_str);
        let driver = s("driver").ok_or_else(|| bad("no driver"))?.to_owned();
        let id = DeviceId::parse(s("id").ok_or_else(|| bad("no id"))?)?;
        let placement = match (s("bus"), s("addr"), v.get("scsi-id")) {
            (Some(bus), Some(addr), _) => Placement::Pci {
                bus: bus.to_owned(),
                slot: PciSlot::parse_hex(addr)?,
            },
            (Some(bus), None, Some(target)) => {
                let int = |k: &str| v.get(k).and_then(Json::as_u64).unwrap_or(0);
                let target = target
                    .as_u64()
                    .and_then(|t| u8::try_from(t).ok())
                    .ok_or_else(|| bad("bad scsi-id"))?;
                Placement::Scsi {
                    bus: bus.to_owned(),
                    channel: u8::try_from(int("channel")).map_err(|_| bad("bad channel"))?,
                    target: ScsiId::new(target),
                    lun: u8::try_from(int("lun")).map_err(|_| bad("bad lun"))?,
                }
            }
            _ => Placement::Auto,
        };
        Ok(HvInfo {
            driver,
            id,
            placement,
        })
    }

    /// Ganeti's `-device` string: the driver, then `,k=v` for every key
    /// (`virtio-blk-pci,id=disk-…,bus=pci.0,addr=0xc`).
    pub fn device_args(&self) -> String {
        let mut s = format!("{},id={}", self.driver, self.id);
        match &self.placement {
            Placement::Pci { bus, slot } => s.push_str(&format!(",bus={bus},addr={}", slot.hex())),
            Placement::Scsi {
                bus,
                channel,
                target,
                lun,
            } => s.push_str(&format!(
                ",bus={bus},channel={channel},scsi-id={},lun={lun}",
                target.get()
            )),
            Placement::Auto => {}
        }
        s
    }
}
