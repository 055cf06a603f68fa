//! What is known of an instance, from QMP when QEMU answers, else from its
//! argv and record.

use std::time::Duration;

use qmp_protocol::{QueryBalloon, QueryCpusFast, QueryStatus};
use serde::Serialize;
use serde_json::Value as Json;

use crate::instance::connect;
use crate::node::Node;
use crate::state::{self, Liveness, RuntimeFile, RuntimeRecord, Socket, StateError};

/// The state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum InstanceState {
    /// Running.
    Running,
    /// Paused (or never continued).
    Paused,
    /// Migrating.
    Migrating,
    /// QEMU is alive but reports another state.
    Other,
    /// QEMU is gone after the guest powered itself off.
    ShutdownByGuest,
    /// QEMU is gone without a stop or a guest power-off: it crashed or was killed.
    Crashed,
    /// A start was interrupted (its process killed): QEMU may run, not yet
    /// configured; `stop` or `cleanup` finishes it off.
    Incomplete,
    /// Files are left (a pid file, say) but no QEMU runs and there is no
    /// runtime record, or the record cannot be read: `cleanup` removes them.
    Stale,
}

/// What `info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    /// The instance.
    pub name: String,
    /// Its UUID, from the runtime record.
    pub uuid: Option<String>,
    /// Its state.
    pub state: InstanceState,
    /// QEMU's pid, when alive.
    pub pid: Option<i32>,
    /// Memory in MiB now (from the balloon, or the argv).
    pub memory_mib: Option<u64>,
    /// Its maximum memory in MiB (the spec's `memory`, what QEMU was
    /// started with), from the runtime record.
    pub memory_max_mib: Option<u64>,
    /// vCPUs.
    pub vcpus: Option<u32>,
    /// Seconds since QEMU started.
    pub uptime_secs: Option<u64>,
    /// QEMU's version.
    pub qemu_version: Option<String>,
    /// The machine type.
    pub machine: Option<String>,
    /// Whether the numbers came from QMP (else from the argv).
    pub from_qmp: bool,
    /// Devices: kind, uuid and QEMU id.
    pub devices: Vec<DeviceSummary>,
    /// The control group QEMU runs in, when it is one of ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<std::path::PathBuf>,
    /// What that control group has used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::cgroup::Usage>,
    /// Why the instance is [`InstanceState::Stale`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One device in [`InstanceInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    /// `disk` or `nic`.
    pub kind: &'static str,
    /// Its UUID.
    pub uuid: String,
    /// Its name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// QEMU device id.
    pub id: Option<String>,
    /// Where it sits (`pci.0 0xc`, `scsi.0 target 1`).
    pub placement: Option<String>,
    /// Disks: the path or URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Disks: the size in MiB, as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
    /// NICs: the MAC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// NICs: the mode (`bridged`, `routed`, …) and link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// NICs: the bridge, routing table or switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// NICs: the IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host tap, for NICs.
    pub tap: Option<String>,
}

/// Why `info` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InfoError {
    /// Nothing is known of the instance.
    #[error("instance {0} is not running and has no runtime record")]
    Unknown(String),
    /// The run directory.
    #[error(transparent)]
    State(#[from] StateError),
}

/// How long `info` waits for the control monitor: longer than a hotplug
/// removal holds it ([`crate::hotplug::REMOVAL_DEADLINE`]), so `info` during
/// one reports the real state; still bounded.
const MONITOR_BUSY_WAIT: Duration = Duration::from_secs(15);

/// What is known of `name`. A QEMU whose monitor does not answer within
/// 15 s is described from its argv instead; nothing hangs.
pub async fn info(node: &Node, name: &str) -> Result<InstanceInfo, InfoError> {
    state::check_name(name)?;
    let record = node
        .run
        .read_runtime(name)
        .ok()
        .flatten()
        .map(|f: RuntimeFile| f.record());
    let devices = record.as_ref().map(devices_of).unwrap_or_default();
    let machine = record.as_ref().and_then(|r| r.machine.clone());
    let incomplete = record.as_ref().is_some_and(|r| r.incomplete);
    let mut info = describe(node, name, record.as_ref(), devices, machine).await?;
    if incomplete {
        info.state = InstanceState::Incomplete;
    }
    if let Some(pid) = info.pid
        && let Some(dir) = crate::cgroup::cgroup_dir(name)
        && std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|p| p.lines().any(|l| l.trim() == pid.to_string()))
    {
        info.usage = crate::cgroup::usage(name);
        info.cgroup = Some(dir);
    }
    if let Some(r) = &record {
        let field = |k: &str| r.instance.get(k);
        info.uuid = field("uuid").and_then(|u| u.as_str()).map(str::to_owned);
        info.memory_max_mib = field("memory").and_then(serde_json::Value::as_u64);
    }
    Ok(info)
}

async fn describe(
    node: &Node,
    name: &str,
    record: Option<&RuntimeRecord>,
    devices: Vec<DeviceSummary>,
    machine: Option<String>,
) -> Result<InstanceInfo, InfoError> {
    match state::liveness(&node.run, name) {
        Liveness::Running { pid, argv } => {
            let mut info = InstanceInfo {
                name: name.to_owned(),
                uuid: None,
                state: InstanceState::Other,
                pid: Some(pid),
                memory_mib: argv.memory_mib,
                memory_max_mib: None,
                vcpus: argv.vcpus,
                uptime_secs: uptime(pid),
                qemu_version: None,
                machine,
                from_qmp: false,
                devices,
                cgroup: None,
                usage: None,
                problem: None,
            };
            if let Ok(qmp) = connect(&node.run.socket(name, Socket::Qmp), MONITOR_BUSY_WAIT).await {
                let v = qmp.version();
                info.qemu_version = Some(format!("{}.{}.{}", v.major, v.minor, v.micro));
                if let Ok(s) = qmp
                    .execute(QueryStatus)
                    .timeout(Duration::from_secs(2))
                    .await
                {
                    use qmp_protocol::RunState as R;
                    info.state = match s.status {
                        R::Running => InstanceState::Running,
                        R::Paused | R::Prelaunch => InstanceState::Paused,
                        R::Inmigrate | R::Postmigrate | R::FinishMigrate => {
                            InstanceState::Migrating
                        }
                        _ => InstanceState::Other,
                    };
                    info.from_qmp = true;
                }
                if let Ok(b) = qmp
                    .execute(QueryBalloon)
                    .timeout(Duration::from_secs(2))
                    .await
                {
                    info.memory_mib = Some(b.actual / (1024 * 1024));
                }
                if let Ok(c) = qmp
                    .execute(QueryCpusFast)
                    .timeout(Duration::from_secs(2))
                    .await
                {
                    info.vcpus = u32::try_from(c.len()).ok();
                }
            }
            Ok(info)
        }
        _ if record.is_some() => {
            let by_guest = node.run.shutdown_flag(name).exists();
            let r = record;
            let num = |k: &str| r.and_then(|r| r.instance.get(k)).and_then(Json::as_u64);
            Ok(InstanceInfo {
                name: name.to_owned(),
                uuid: None,
                state: if by_guest {
                    InstanceState::ShutdownByGuest
                } else {
                    InstanceState::Crashed
                },
                pid: None,
                memory_mib: num("memory"),
                memory_max_mib: None,
                vcpus: num("vcpus").and_then(|v| u32::try_from(v).ok()),
                uptime_secs: None,
                qemu_version: None,
                machine,
                from_qmp: false,
                devices,
                cgroup: None,
                usage: None,
                problem: None,
            })
        }
        _ => Err(InfoError::Unknown(name.to_owned())),
    }
}

fn devices_of(r: &RuntimeRecord) -> Vec<DeviceSummary> {
    let place = |h: &Option<state::HvInfo>| {
        h.as_ref().map(|h| match (&h.addr, h.scsi_id) {
            (Some(a), _) => format!("{} {a}", h.bus.as_deref().unwrap_or("?")),
            (None, Some(t)) => format!("{} target {t}", h.bus.as_deref().unwrap_or("?")),
            _ => "auto".to_owned(),
        })
    };
    let disks = r.disks.iter().map(|d| DeviceSummary {
        kind: "disk",
        uuid: d.uuid.clone(),
        name: d.name.clone(),
        id: d.hvinfo.as_ref().map(|h| h.id.clone()),
        placement: place(&d.hvinfo),
        source: d.path.clone().or_else(|| d.uri.clone()),
        size_mib: d.size,
        mac: None,
        mode: None,
        link: None,
        ip: None,
        tap: None,
    });
    let nics = r.nics.iter().map(|n| DeviceSummary {
        kind: "nic",
        uuid: n.uuid.clone(),
        name: n.name.clone(),
        id: n.hvinfo.as_ref().map(|h| h.id.clone()),
        placement: place(&n.hvinfo),
        source: None,
        size_mib: None,
        mac: n.mac.clone(),
        mode: n.mode.clone(),
        link: n.link.clone().filter(|l| !l.is_empty()),
        ip: n.ip.clone(),
        tap: n.tap.clone(),
    });
    disks.chain(nics).collect()
}

fn uptime(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let boot_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = start_ticks as f64 / ticks as f64;
    Some((boot_uptime - started).max(0.0) as u64)
}

/// Names of every instance the run directory knows, running or not.
pub fn list(node: &Node) -> Result<Vec<String>, StateError> {
    node.run.instances()
}

/// What is known of every instance of the run directory: one bad instance
/// (a stale pid file, an unreadable record) is one [`InstanceState::Stale`]
/// row, never a failed listing.
pub async fn info_all(node: &Node) -> Result<Vec<InstanceInfo>, StateError> {
    let mut all = Vec::new();
    for name in list(node)? {
        let info = match info(node, &name).await {
            Ok(i) => i,
            Err(e) => InstanceInfo {
                name,
                uuid: None,
                state: InstanceState::Stale,
                pid: None,
                memory_mib: None,
                memory_max_mib: None,
                vcpus: None,
                uptime_secs: None,
                qemu_version: None,
                machine: None,
                from_qmp: false,
                devices: Vec::new(),
                cgroup: None,
                usage: None,
                problem: Some(e.to_string()),
            },
        };
        all.push(info);
    }
    Ok(all)
}
