//! Crash recovery: an intent journal entry (written before the first QMP
//! step of a change) lets the next operation finish or undo a change whose
//! process died midway, and pending removals complete once QEMU has dropped
//! the device.

use device_slots::DeviceKind;
use serde_json::Value as Json;

use super::{HotplugError, REMOVAL_PENDING, Recovery, disk_id, is_pending, nic_id};
use crate::instance::Instance;
use crate::launch::rollback::{Rollback, Undo};
use crate::state::{IntentAction, IntentDevice};

impl Instance<'_> {
    /// Finishes or undoes an interrupted operation, and completes pending
    /// removals whose devices QEMU has dropped.
    pub(super) async fn recover(&mut self) -> Result<Vec<Recovery>, HotplugError> {
        let mut done = Vec::new();
        let intent = self.node.run.read_intent(&self.name);
        let any_pending = self.record.disks.iter().any(|d| is_pending(&d.extra))
            || self.record.nics.iter().any(|n| is_pending(&n.extra));
        if intent.is_none() && !any_pending {
            // Nothing to finish: spare QEMU the QOM walk.
            return Ok(done);
        }
        let peripherals = self.peripherals().await?;
        if let Some(intent) = intent {
            let present = peripherals.contains_key(&intent.id);
            match (intent.action, present) {
                (IntentAction::Add, true) => {
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
                (IntentAction::Add, false) => {
                    let mut steps = Rollback::default();
                    if let Some(n) = &intent.nic
                        && let Some((cfg, tap)) =
                            crate::devices::nic_config_of(&self.name, n, self.record.nics.len())
                    {
                        let script = self.node.nic_down_script().map(std::path::Path::to_owned);
                        steps.push(Undo::NicDown(Box::new((cfg, tap, script))));
                    }
                    for name in &intent.fd_names {
                        steps.push(Undo::CloseFd(name.clone()));
                    }
                    if intent.kind == IntentDevice::Disk {
                        steps.push(Undo::BlockdevDel(intent.id.clone()));
                    } else {
                        steps.push(Undo::NetdevDel(intent.id.clone()));
                    }
                    steps.run(Some(&self.qmp)).await;
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
            self.node.run.clear_intent(&self.name);
        }
        let pending: Vec<(String, String, DeviceKind)> = self
            .record
            .disks
            .iter()
            .filter(|d| is_pending(&d.extra))
            .map(|d| (d.uuid.clone(), disk_id(d), DeviceKind::Disk))
            .chain(
                self.record
                    .nics
                    .iter()
                    .filter(|n| is_pending(&n.extra))
                    .map(|n| (n.uuid.clone(), nic_id(n), DeviceKind::Nic)),
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
}
