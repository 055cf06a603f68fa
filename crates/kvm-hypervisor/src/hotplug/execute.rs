//! Executing hotplug plans against a running instance: every step records
//! its undo before the next runs; the record changes only after QEMU
//! confirmed the device.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use device_slots::{DeviceId, DeviceKind, HvInfo};
use qmp_protocol::{
    AddFd, BlockdevDel, DeviceDel, EventFilter, NetdevDel, QmpError, QueryFdsets, RemoveFd,
};
use serde_json::{Map, Value as Json, json};

use super::plan::{
    DiskAddPlan, NicAddPlan, not_supported, plan_hot_add_disk, plan_hot_add_nic, record_hvparams,
};
use super::{
    Added, HotplugError, NotVisible, REMOVAL_PENDING, Removal, boxed, device_env, disk_id, label,
    nic_down, nic_id, open_disk,
};
use crate::instance::{Instance, fault_point};
use crate::launch::rollback::{Rollback, Undo};
use crate::net::Tap;
use crate::spec::{DiskSpec, NicSpec};
use crate::state::{Intent, IntentAction, IntentDevice};
use crate::timing::StepClock;

impl Instance<'_> {
    pub(super) fn entry_extra(&mut self, uuid: &str) -> Option<&mut Map<String, Json>> {
        if let Some(d) = self.record.disks.iter_mut().find(|d| d.uuid == uuid) {
            return Some(&mut d.extra);
        }
        self.record
            .nics
            .iter_mut()
            .find(|n| n.uuid == uuid)
            .map(|n| &mut n.extra)
    }

    pub(super) async fn remove_fdsets(&self, id: &str) {
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
    pub(super) async fn finish_removal(
        &mut self,
        kind: DeviceKind,
        uuid: &str,
        id: &str,
    ) -> Result<(), HotplugError> {
        let legacy = DeviceId::parse(id)
            .ok()
            .and_then(|d| d.legacy_slot())
            .is_some();
        if kind == DeviceKind::Disk {
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
                if let Some((cfg, tap)) = crate::devices::nic_config_of(&self.name, &n, pos) {
                    nic_down(self.node, &cfg, &tap).await;
                }
                let _ = std::fs::remove_file(self.node.run.nic_file(&self.name, uuid));
            }
        }
        self.save()?;
        tracing::info!(instance = %self.name, id, "device removed");
        Ok(())
    }

    pub(super) async fn add_disk(&mut self, disk: &DiskSpec) -> Result<Added, HotplugError> {
        let mut clock = StepClock::start("add-disk");
        let hv = record_hvparams(&self.record);
        let observed = self.observed_pci().await?;
        clock.lap("query-pci");
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
            &device_env(Some(disk)),
        )?;
        clock.lap("plan");
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
        clock.lap("open-file");
        self.write_intent(&Intent {
            action: IntentAction::Add,
            kind: IntentDevice::Disk,
            uuid: plan.record.uuid.clone(),
            id: id.clone(),
            disk: Some(plan.record.clone()),
            nic: None,
            fd_names: Vec::new(),
        })?;
        clock.lap("intent");
        let mut undo = Rollback::default();
        let result = self
            .add_disk_steps(&plan, file, &mut undo, &mut clock)
            .await;
        match result {
            Ok(()) => {
                self.record.disks.push(plan.record.clone());
                self.save()?;
                clock.lap("record");
                self.clear_intent();
                clock.lap("intent-clear");
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
                undo.run(Some(&self.qmp)).await;
                self.clear_intent();
                Err(step_err(step)(source))
            }
        }
    }

    pub(super) async fn add_disk_steps(
        &self,
        plan: &DiskAddPlan,
        file: Option<OwnedFd>,
        undo: &mut Rollback,
        clock: &mut StepClock,
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
            clock.lap("add-fd");
            fault_point("add-fd", Some(self.pid));
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
        clock.lap("blockdev-add");
        fault_point("blockdev-add", Some(self.pid));
        self.qmp
            .execute(plan.device.clone())
            .await
            .map_err(|e| ("device_add", boxed(e)))?;
        undo.push(Undo::DeviceDel(id.clone()));
        clock.lap("device_add");
        fault_point("device_add", Some(self.pid));
        if !self
            .verify(&plan.hvinfo)
            .await
            .map_err(|e| ("verify", boxed(e)))?
        {
            return Err(("verify", boxed(NotVisible(id))));
        }
        clock.lap("verify");
        // The block node holds its own descriptor now.
        if let Some(set) = fdset
            && let Err(e) = self.qmp.execute(RemoveFd::set(set)).await
        {
            tracing::warn!(fdset = set, error = %e, "remove-fd failed");
        }
        clock.lap("remove-fd");
        Ok(())
    }

    pub(super) async fn add_nic(
        &mut self,
        nic: &NicSpec,
        keep: Option<&HvInfo>,
    ) -> Result<Added, HotplugError> {
        if nic.mode() == crate::spec::NicMode::Routed
            && let Some(ip) = nic.ip()
            && let Some(owner) = crate::node::routed_ip_owner(self.node, ip, &self.name)
        {
            return Err(HotplugError::IpTaken {
                ip: ip.to_string(),
                owner,
            });
        }
        let observed = self.observed_pci().await?;
        let attempt = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        let plan = plan_hot_add_nic(
            &self.record,
            nic,
            &observed,
            &device_env(None),
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
        let mut undo = Rollback::default();
        crate::nicsetup::NicSetup::for_node(self.node)
            .up(&plan.config, &tap_name, None)
            .await
            .map_err(|e| step_err("nic-up")(boxed(e)))?;
        undo.push(Undo::NicDown(Box::new((
            plan.config.clone(),
            tap_name.clone(),
            self.node.nic_down_script().map(std::path::Path::to_owned),
        ))));
        let mut record_entry = plan.record.clone();
        record_entry.tap = Some(tap_name.to_string());
        let intent = Intent {
            action: IntentAction::Add,
            kind: IntentDevice::Nic,
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
            undo.run(Some(&self.qmp)).await;
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
                undo.run(Some(&self.qmp)).await;
                self.clear_intent();
                Err(step_err(step)(source))
            }
        }
    }

    pub(super) async fn add_nic_steps(
        &self,
        plan: &NicAddPlan,
        tap: Tap,
        undo: &mut Rollback,
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
        fault_point("netdev_add", Some(self.pid));
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

    pub(super) async fn remove(
        &mut self,
        kind: DeviceKind,
        uuid: &str,
        deadline: Duration,
    ) -> Result<(Removal, Option<HvInfo>), HotplugError> {
        let (id, hvinfo) = match kind {
            DeviceKind::Disk => self
                .record
                .disks
                .iter()
                .find(|d| d.uuid == uuid)
                .map(|d| (disk_id(d), d.hvinfo.clone())),
            DeviceKind::Nic => self
                .record
                .nics
                .iter()
                .find(|n| n.uuid == uuid)
                .map(|n| (nic_id(n), n.hvinfo.clone())),
        }
        .ok_or_else(|| HotplugError::UnknownDevice {
            name: self.name.clone(),
            kind: label(kind),
            uuid: uuid.to_owned(),
        })?;
        let hvinfo = hvinfo
            .and_then(|h| serde_json::to_value(h).ok())
            .and_then(|v| HvInfo::from_json(&v).ok());
        self.write_intent(&Intent {
            action: IntentAction::Remove,
            kind: match kind {
                DeviceKind::Disk => IntentDevice::Disk,
                DeviceKind::Nic => IntentDevice::Nic,
            },
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

    pub(super) async fn remove_steps(
        &mut self,
        kind: DeviceKind,
        uuid: &str,
        id: &str,
        deadline: Duration,
    ) -> Result<Removal, HotplugError> {
        let mut events = self.qmp.listen(
            EventFilter::new("DEVICE_DELETED")
                .or_event("DEVICE_UNPLUG_GUEST_ERROR")
                .data_eq("device", id),
        );
        let sent = self.qmp.execute(DeviceDel::new(id)).await;
        fault_point("device_del", Some(self.pid));
        match sent {
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
