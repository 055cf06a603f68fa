//! Live migration between nodes, one step per party as Ganeti's hypervisor
//! API has it (reference §1.7):
//!
//! - source: [`migration_info`] (the runtime record the target needs);
//! - target: [`accept`] starts QEMU for the incoming instance, re-planned
//!   for this node (its QEMU, new taps) with the same guest machine: each
//!   disk and NIC, hot-plugged ones included, keeps the placement the record
//!   gives it; the target's record exists from the start, so a failed or
//!   abandoned incoming instance can always be stopped and cleaned;
//! - source: [`migrate`] sets the migration parameters (Ganeti's
//!   `migration_bandwidth`, `migration_downtime`) and starts; with a
//!   deadline it follows the migration through QEMU's `MIGRATION` events;
//! - [`status`], [`cancel`] (the source keeps running; Ganeti sends no
//!   cancel, §11.4.3);
//! - [`finalize_source`] and [`finalize_target`]: on success the source is
//!   stopped and cleaned and the target runs; on failure the source goes on
//!   and the target is stopped and cleaned.
//!
//! Transient QEMU states (`setup`, `device`, `pre-switchover`,
//! `wait-unplug`, `cancelling`) are not failures (Ganeti's §11.4 bug).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use qmp_protocol::{
    Cont, EventFilter, Migrate, MigrateCancel, MigrateSetCapabilities, MigrateSetParameters,
    MigrationInfo, MigrationStatus, QmpError, QueryMigrate, QueryStatus,
};
use serde::Serialize;
use serde_json::Value as Json;

use crate::instance::{Instance, OpenError};
use crate::launch::plan::StartMode;
use crate::launch::{How, StartError, Started, start_with};
use crate::lifecycle::{Ending, StopError, StopOptions, spec_from_record, stop};
use crate::node::Node;
use crate::spec::SpecProblems;
use crate::state::{RuntimeRecord, StateError};

const LOCK_WAIT: Duration = Duration::from_secs(30);
const MONITOR_WAIT: Duration = Duration::from_secs(10);

/// Why a migration step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The run directory or the record.
    #[error(transparent)]
    State(#[from] StateError),
    /// The instance is unknown, not running or does not answer.
    #[error(transparent)]
    Instance(#[from] OpenError),
    /// The record does not make a spec.
    #[error("the runtime record of {name} is not a valid spec")]
    BadRecord {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: SpecProblems,
    },
    /// The incoming QEMU could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Stopping a party failed.
    #[error(transparent)]
    Stop(#[from] StopError),
    /// QMP.
    #[error("QMP on instance {name}")]
    Qmp {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: Box<QmpError>,
    },
    /// The migration ended without completing.
    #[error("the migration of {name} ended {status}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotCompleted {
        /// The instance.
        name: String,
        /// How it ended (`failed`, `cancelled`).
        status: String,
        /// QEMU's reason.
        error: Option<String>,
    },
    /// Not an `ADDR:PORT` (IPv6 in brackets).
    #[error("`{0}` is not ADDR:PORT (an IP address; IPv6 in brackets, e.g. [2001:db8::1]:4444)")]
    BadAddress(String),
    /// The migration did not end within the deadline (it goes on).
    #[error("the migration of {name} did not end within {after:?}; it goes on")]
    Timeout {
        /// The instance.
        name: String,
        /// The deadline.
        after: Duration,
    },
}

/// QEMU's `tcp:` URI of `ADDR:PORT`, an IPv6 address in brackets
/// (`[2001:db8::1]:4444`; Ganeti forgets them, §11.4.4).
pub fn tcp_uri(addr: &str) -> Result<String, MigrationError> {
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| MigrationError::BadAddress(addr.to_owned()))?;
    Ok(format!("tcp:{parsed}"))
}

fn qmp_err(name: &str) -> impl FnOnce(QmpError) -> MigrationError + '_ {
    move |source| MigrationError::Qmp {
        name: name.to_owned(),
        source: Box::new(source),
    }
}

/// The runtime record of the running instance `name`, as the target needs it.
pub async fn migration_info(node: &Node, name: &str) -> Result<RuntimeRecord, MigrationError> {
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    Ok(inst.record.clone())
}

/// Starts the incoming instance of `record` on this node, listening on
/// `listen` (`ADDR:PORT`; IPv6 addresses in brackets).
pub async fn accept(
    node: &Node,
    record: &RuntimeRecord,
    listen: &str,
) -> Result<Started, MigrationError> {
    let name = record
        .instance
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_owned();
    let spec = spec_from_record(record).map_err(|source| MigrationError::BadRecord {
        name: name.clone(),
        source,
    })?;
    let mut placements = BTreeMap::new();
    let hvinfos = record
        .disks
        .iter()
        .map(|d| (&d.uuid, &d.hvinfo))
        .chain(record.nics.iter().map(|n| (&n.uuid, &n.hvinfo)));
    for (uuid, hvinfo) in hvinfos {
        let placement = hvinfo
            .as_ref()
            .and_then(|h| serde_json::to_value(h).ok())
            .and_then(|v| device_slots::HvInfo::from_json(&v).ok())
            .map(|h| h.placement);
        if let Some(p) = placement {
            placements.insert(uuid.clone(), p);
        }
    }
    // A NIC without its option ROM was hot-plugged under chroot.
    let hot_plugged_nics: BTreeSet<String> = record
        .nics
        .iter()
        .filter(|n| n.extra.get("romfile").is_some())
        .map(|n| n.uuid.clone())
        .collect();
    let uri = tcp_uri(listen)?;
    let how = How {
        mode: StartMode::Incoming { uri },
        placements,
        hot_plugged_nics,
    };
    Ok(start_with(node, &spec, how).await?)
}

/// Where a migration stands.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// QEMU's status (`active`, `completed`, …).
    pub status: String,
    /// Whether it ended (`completed`, `failed`, `cancelled`).
    pub finished: bool,
    /// RAM transferred, bytes.
    pub transferred: Option<u64>,
    /// RAM in all, bytes.
    pub total: Option<u64>,
    /// RAM left, bytes.
    pub remaining: Option<u64>,
    /// Milliseconds since the start.
    pub total_time_ms: Option<i64>,
    /// The downtime, once completed, ms.
    pub downtime_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

fn status_name(s: Option<MigrationStatus>) -> String {
    s.and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "none".to_owned())
}

fn progress(info: &MigrationInfo) -> Progress {
    let ram = info.ram.as_ref();
    let finished = matches!(
        info.status,
        Some(MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled)
    );
    Progress {
        status: status_name(info.status),
        finished,
        transferred: ram.map(|r| r.transferred),
        total: ram.map(|r| r.total),
        remaining: ram.map(|r| r.remaining),
        total_time_ms: info.total_time,
        downtime_ms: info.downtime,
        error: info.error_desc.clone(),
    }
}

/// Starts migrating `name` to `target` (`ADDR:PORT`), with Ganeti's
/// `migration_bandwidth` (MiB/s) and `migration_downtime` (ms); with
/// `wait`, follows it up to that deadline and returns how it ended.
pub async fn migrate(
    node: &Node,
    name: &str,
    target: &str,
    wait: Option<Duration>,
) -> Result<Progress, MigrationError> {
    let uri = tcp_uri(target)?;
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let hv = crate::hotplug::record_hvparams(&inst.record);
    let q = &inst.qmp;
    // Events, and Ganeti's migration_caps (the target sets the same).
    let caps = std::iter::once("events")
        .chain(hv.migration_cap_list())
        .map(|c| (c.to_owned(), true));
    q.execute(MigrateSetCapabilities::new(caps))
        .await
        .map_err(qmp_err(name))?;
    let mib = u64::try_from(hv.migration_bandwidth()).unwrap_or(32);
    let params = MigrateSetParameters {
        max_bandwidth: Some(mib.saturating_mul(1024 * 1024)),
        downtime_limit: u64::try_from(hv.migration_downtime()).ok(),
        ..MigrateSetParameters::default()
    };
    q.execute(params).await.map_err(qmp_err(name))?;
    // Listen before sending, so the end is never missed.
    let mut events = q.listen(EventFilter::new("MIGRATION"));
    q.execute(Migrate::new(uri)).await.map_err(qmp_err(name))?;
    tracing::info!(instance = name, target, "migration started");
    let Some(deadline) = wait else {
        let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
        return Ok(progress(&info));
    };
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match events.wait(left).await {
            Ok(ev) => {
                let st = ev.data.get("status").and_then(Json::as_str).unwrap_or("");
                if matches!(st, "completed" | "failed" | "cancelled") {
                    break;
                }
            }
            Err(QmpError::EventTimeout { .. }) => {
                return Err(MigrationError::Timeout {
                    name: name.to_owned(),
                    after: deadline,
                });
            }
            Err(e) => return Err(qmp_err(name)(e)),
        }
    }
    let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
    let p = progress(&info);
    if p.status != "completed" {
        return Err(MigrationError::NotCompleted {
            name: name.to_owned(),
            status: p.status,
            error: p.error,
        });
    }
    tracing::info!(instance = name, total_ms = ?p.total_time_ms, downtime_ms = ?p.downtime_ms, "migrated");
    Ok(p)
}

/// Where the migration of `name` stands (either party).
pub async fn status(node: &Node, name: &str) -> Result<Progress, MigrationError> {
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let info = inst
        .qmp
        .execute(QueryMigrate)
        .await
        .map_err(qmp_err(name))?;
    Ok(progress(&info))
}

/// Cancels the outgoing migration of `name`; the source goes on.
pub async fn cancel(node: &Node, name: &str) -> Result<(), MigrationError> {
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    inst.qmp
        .execute(MigrateCancel)
        .await
        .map_err(qmp_err(name))?;
    Ok(())
}

fn kill() -> StopOptions {
    StopOptions {
        timeout: Duration::from_secs(10),
        force: true,
    }
}

/// The source's end of a migration: after success its QEMU (paused in
/// `postmigrate`) is stopped and every file of it removed; after a failure
/// the guest goes on (`cont` if QEMU paused it).
pub async fn finalize_source(
    node: &Node,
    name: &str,
    success: bool,
) -> Result<Option<Ending>, MigrationError> {
    if success {
        return Ok(Some(stop(node, name, kill()).await?));
    }
    resume(node, name).await?;
    Ok(None)
}

/// The target's end of a migration: after success the guest runs here;
/// after a failure the incoming QEMU is stopped and cleaned up (its record
/// exists from the start, so this works whatever state it reached).
pub async fn finalize_target(
    node: &Node,
    name: &str,
    success: bool,
) -> Result<Option<Ending>, MigrationError> {
    if success {
        resume(node, name).await?;
        return Ok(None);
    }
    Ok(Some(stop(node, name, kill()).await?))
}

/// Lets the guest run if QEMU holds it paused.
async fn resume(node: &Node, name: &str) -> Result<(), MigrationError> {
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let s = inst.qmp.execute(QueryStatus).await.map_err(qmp_err(name))?;
    if !s.running {
        inst.qmp.execute(Cont).await.map_err(qmp_err(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_uri_takes_ipv4_and_bracketed_ipv6() {
        assert_eq!(tcp_uri("192.0.2.7:8102").unwrap(), "tcp:192.0.2.7:8102");
        assert_eq!(
            tcp_uri("[2001:db8::1]:4444").unwrap(),
            "tcp:[2001:db8::1]:4444"
        );
    }

    #[test]
    fn tcp_uri_refuses_what_is_not_addr_port() {
        for bad in [
            "2001:db8::1:4444",
            "node2:8102",
            "192.0.2.7",
            "192.0.2.7:99999",
            "",
        ] {
            let err = tcp_uri(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "`{bad}` is not ADDR:PORT (an IP address; IPv6 in brackets, e.g. [2001:db8::1]:4444)"
                )
            );
        }
    }
}
