//! What QEMU reports of a running instance's devices: QOM peripherals,
//! `query-pci`, SCSI targets, and whether a device is realized where planned.

use std::collections::BTreeMap;

use device_slots::{HvInfo, ObservedDevice, Placement};
use qmp_protocol::{QomGet, QomList, QueryPci};
use serde_json::Value as Json;

use super::HotplugError;
use crate::instance::Instance;

impl Instance<'_> {
    pub(super) async fn peripherals(&self) -> Result<BTreeMap<String, String>, HotplugError> {
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

    pub(super) async fn observed_pci(&self) -> Result<Vec<ObservedDevice>, HotplugError> {
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

    pub(super) async fn observed_scsi(&self) -> Result<Vec<u8>, HotplugError> {
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
    pub(super) async fn verify(&self, hvinfo: &HvInfo) -> Result<bool, HotplugError> {
        let id = hvinfo.id.as_str();
        // `query-pci` lists realized devices only: for a device on `pci.0`
        // it alone tells both that it is realized and where.
        if let Placement::Pci { bus, slot } = &hvinfo.placement
            && bus == "pci.0"
        {
            let seen = self.observed_pci().await?;
            return Ok(seen.iter().any(|d| d.qdev_id == id && d.slot == slot.get()));
        }
        let realized = self
            .qmp
            .execute(QomGet::new(format!("/machine/peripheral/{id}"), "realized"))
            .await;
        Ok(matches!(realized, Ok(Json::Bool(true))))
    }
}
