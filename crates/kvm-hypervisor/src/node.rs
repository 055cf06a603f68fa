//! The node: what it has (`node_info`) and whether it can run instances
//! (`verify`), as Ganeti's `GetNodeInfo` and `Verify`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::caps;
use crate::state::{
    Format, Origin, RunDir, RuntimeRecord, StateError, UidPool, render, render_shared,
};

/// A node: its run directory and capability cache.
#[derive(Debug, Clone)]
pub struct Node {
    /// The run directory.
    pub run: RunDir,
    /// Where QEMU capabilities are cached.
    pub cache_dir: PathBuf,
    /// The uid pool for `security_model=pool` (inclusive ranges), as
    /// Ganeti's cluster-wide `uid_pool`.
    pub uid_pool: UidPool,
    /// The NIC script that sets NICs' host sides up and down, with
    /// Ganeti's `kvm-nic-setup` contract (e.g. Ganeti's
    /// `/usr/lib/ganeti/kvm-nic-setup`); without one, bridged and routed
    /// NICs are set up natively and `openvswitch` and `ext` ones refused.
    pub nic_script: Option<PathBuf>,
    /// The NIC script only sets up (Ganeti 3.0's `kvm-ifup`, which knows
    /// no `down`, as Ganeti 3.0 never tears a NIC down by script): the
    /// host side is torn down natively.
    pub nic_script_up_only: bool,
    /// Whether Ganeti's own KVM layer shares the run directory (a Ganeti
    /// node): the runtime files of instances we start are then written in
    /// the shared form (`runtime_state::render_shared`), Ganeti's array
    /// with our record inside, so that Ganeti's layer can run them too (on
    /// a migration's target, or once the node goes back to it).
    pub shared_with_ganeti: bool,
    /// Where defined instances are kept: a stop of one of them keeps its
    /// console log until its next start.
    pub config: Option<crate::defined::ConfigDir>,
}

impl Node {
    /// Opens (creating if needed) the run directory at `run_root`.
    pub fn open(
        run_root: impl Into<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Result<Node, StateError> {
        Ok(Node {
            run: RunDir::open(run_root)?,
            cache_dir: cache_dir.into(),
            uid_pool: UidPool::default(),
            nic_script: None,
            nic_script_up_only: false,
            shared_with_ganeti: false,
            config: None,
        })
    }

    /// Sets the uid pool.
    pub fn with_uid_pool(mut self, pool: UidPool) -> Node {
        self.uid_pool = pool;
        self
    }

    /// Sets the NIC script.
    pub fn with_nic_script(mut self, script: Option<PathBuf>) -> Node {
        self.nic_script = script;
        self
    }

    /// Says whether the NIC script only sets up.
    pub fn with_nic_script_up_only(mut self, up_only: bool) -> Node {
        self.nic_script_up_only = up_only;
        self
    }

    /// The script that tears NICs down: the NIC script, unless it only
    /// sets up (then the teardown is native).
    pub fn nic_down_script(&self) -> Option<&Path> {
        if self.nic_script_up_only {
            None
        } else {
            self.nic_script.as_deref()
        }
    }

    /// Sets the config directory of defined instances.
    pub fn with_config_dir(mut self, config: Option<crate::defined::ConfigDir>) -> Node {
        self.config = config;
        self
    }

    /// Says whether Ganeti's own KVM layer shares the run directory.
    pub fn with_shared_with_ganeti(mut self, shared: bool) -> Node {
        self.shared_with_ganeti = shared;
        self
    }

    /// `record` as this node writes it: Ganeti's form for an instance
    /// Ganeti's layer started, the shared form for ours on a node Ganeti's
    /// layer shares, else our record.
    pub fn render_record(&self, record: &RuntimeRecord) -> String {
        match (record.origin, self.shared_with_ganeti) {
            (Origin::Ganeti, _) => render(record, Format::Ganeti),
            (Origin::Ours, true) => render_shared(record, &self.ganeti_argv(record)),
            (Origin::Ours, false) => render(record, Format::Ours),
        }
    }

    /// Writes instance `name`'s runtime file ([`Node::render_record`]).
    pub fn write_record(&self, name: &str, record: &RuntimeRecord) -> Result<(), StateError> {
        self.run.write_runtime(name, &self.render_record(record))
    }

    /// The phase A Ganeti's layer would run for `record` (ours).
    fn ganeti_argv(&self, record: &RuntimeRecord) -> Vec<String> {
        let devices: Vec<String> = record
            .disks
            .iter()
            .filter_map(|d| d.hvinfo.as_ref())
            .chain(record.nics.iter().filter_map(|n| n.hvinfo.as_ref()))
            .map(|h| h.id.clone())
            .collect();
        let name = record
            .instance
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let serial = record
            .hvparams
            .get("serial_console")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        crate::launch::keep::ganeti_phase_a(
            &record.argv,
            &devices,
            name,
            &self.run.root().display().to_string(),
            serial,
        )
    }
}

/// Facts about this node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// QEMU's version (`7.2.22`), when the binary could be probed.
    pub qemu_version: Option<String>,
    /// Online CPUs.
    pub cpus: Option<u32>,
    /// Total memory, MiB.
    pub memory_total_mib: Option<u64>,
    /// Available memory, MiB.
    pub memory_free_mib: Option<u64>,
    /// Whether QEMU reports KVM usable.
    pub kvm: Option<bool>,
    /// Memory the host itself is actively using, MiB (`Active` of
    /// /proc/meminfo; Ganeti's `memory_dom0`).
    pub memory_active_mib: Option<u64>,
    /// Physical CPU packages (sockets).
    pub cpu_sockets: Option<u32>,
    /// NUMA nodes.
    pub numa_nodes: Option<u32>,
}

pub(crate) fn meminfo(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
                .map(|k| k / 1024)
        })
}

/// What this node has; `qemu` is probed (or read from the cache).
pub async fn node_info(qemu: &Path, cache_dir: &Path) -> NodeInfo {
    let caps = caps::capabilities(qemu, cache_dir)
        .await
        .ok()
        .map(|p| p.caps);
    NodeInfo {
        qemu_version: caps.as_ref().map(|c| c.version.to_string()),
        cpus: nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
            .ok()
            .flatten()
            .and_then(|n| u32::try_from(n).ok()),
        memory_total_mib: meminfo("MemTotal"),
        memory_free_mib: meminfo("MemAvailable"),
        kvm: caps.and_then(|c| c.kvm),
        memory_active_mib: meminfo("Active"),
        cpu_sockets: cpu_sockets(),
        numa_nodes: numa_nodes(),
    }
}

/// Distinct `physical id`s of /proc/cpuinfo (1 where it has none, as in
/// many VMs).
fn cpu_sockets() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let ids: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("physical id")?.split(':').nth(1))
        .map(str::trim)
        .collect();
    u32::try_from(ids.len().max(1)).ok()
}

/// The `nodeN` directories of /sys/devices/system/node (1 without NUMA).
fn numa_nodes() -> Option<u32> {
    let count = match std::fs::read_dir("/sys/devices/system/node") {
        Ok(dir) => dir
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("node"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
            .max(1),
        Err(_) => 1,
    };
    u32::try_from(count).ok()
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    /// Fine.
    Ok,
    /// Works, with a caveat.
    Warn,
    /// Instances cannot run (or not safely).
    Fail,
}

/// One check of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: &'static str,
    /// The verdict.
    pub verdict: CheckOutcome,
    /// Details.
    pub detail: String,
}

/// Checks the QEMU binary, /dev/kvm, /dev/net/tun, /dev/vhost-net and the
/// run directory's permissions.
pub async fn verify(qemu: &Path, cache_dir: &Path, run: &RunDir) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |what, verdict, detail: String| {
        out.push(Check {
            what,
            verdict,
            detail,
        })
    };
    match caps::capabilities(qemu, cache_dir).await {
        Ok(p) => check(
            "qemu",
            CheckOutcome::Ok,
            format!("{} runs: QEMU {}", qemu.display(), p.caps.version),
        ),
        Err(e) => check("qemu", CheckOutcome::Fail, format!("{e}")),
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => check("kvm", CheckOutcome::Ok, "/dev/kvm can be opened".into()),
        Err(e) => check(
            "kvm",
            CheckOutcome::Warn,
            format!("/dev/kvm: {e}; guests will run under TCG emulation"),
        ),
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => check("tun", CheckOutcome::Ok, "/dev/net/tun can be opened".into()),
        Err(e) => check(
            "tun",
            CheckOutcome::Fail,
            format!("/dev/net/tun: {e}; instances with NICs cannot start"),
        ),
    }
    if Path::new(crate::host::VHOST_NET_DEVICE).exists() {
        check(
            "vhost-net",
            CheckOutcome::Ok,
            "/dev/vhost-net exists".into(),
        );
    } else {
        check(
            "vhost-net",
            CheckOutcome::Warn,
            "/dev/vhost-net is missing: set vhost_net=false (or load vhost_net)".into(),
        );
    }
    out.extend(run_dir_checks(run));
    out
}

/// The run directory's permissions: who else can reach the VMs' sockets
/// and records.
fn run_dir_checks(run: &RunDir) -> Vec<Check> {
    let mut out = Vec::new();
    for (sub, max_other) in [("ctrl", 0o000), ("conf", 0o000), ("pid", 0o005)] {
        let path = run.root().join(sub);
        let mut check = |verdict, detail: String| {
            out.push(Check {
                what: "run-dir",
                verdict,
                detail,
            })
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o007 & !max_other == 0 => {
                check(
                    CheckOutcome::Ok,
                    format!(
                        "{} is mode {:o}",
                        path.display(),
                        m.permissions().mode() & 0o777
                    ),
                );
            }
            // Others who can write could replace sockets and records: a
            // failure. Others who can only list and read (Ganeti makes its
            // run directories 0775) learn names and records, not access:
            // our sockets are 0600 whatever their directory.
            Ok(m) if m.permissions().mode() & 0o002 != 0 => check(
                CheckOutcome::Fail,
                format!(
                    "{} is mode {:o}: others can replace the VMs' control sockets and records",
                    path.display(),
                    m.permissions().mode() & 0o777
                ),
            ),
            Ok(m) => check(
                CheckOutcome::Warn,
                format!(
                    "{} is mode {:o}: others can list the VMs' control sockets and read their records",
                    path.display(),
                    m.permissions().mode() & 0o777
                ),
            ),
            Err(e) => check(CheckOutcome::Fail, format!("{}: {e}", path.display())),
        }
    }
    out
}

/// The instance other than `except` whose live (or interrupted) QEMU has a
/// routed NIC with `ip`: routing it to a second tap would take it away from
/// that one (its host route moves).
pub(crate) fn routed_ip_owner(node: &Node, ip: std::net::IpAddr, except: &str) -> Option<String> {
    let names = node.run.instances().ok()?;
    names.into_iter().filter(|n| n != except).find(|other| {
        let Ok(Some(file)) = node.run.read_runtime(other) else {
            return false;
        };
        let record = file.record();
        let alive = record.incomplete
            || matches!(
                crate::state::liveness(&node.run, other),
                crate::state::Liveness::Running { .. }
            );
        alive
            && record.nics.iter().any(|n| {
                n.mode.as_deref() == Some("routed")
                    && n.ip.as_deref().and_then(|i| i.parse().ok()) == Some(ip)
            })
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn run_dir_others_who_can_write_fail_others_who_can_read_warn() {
        let root = std::env::temp_dir().join(format!("kvmh-node-verify-{}", std::process::id()));
        let run = RunDir::open(&root).expect("run dir");
        let set = |sub: &str, mode: u32| {
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(mode))
                .expect("chmod")
        };
        // Ganeti's own modes (0775 for ctrl and conf), then a writable one.
        set("ctrl", 0o775);
        set("conf", 0o777);
        set("pid", 0o755);
        let got: Vec<(CheckOutcome, String)> = run_dir_checks(&run)
            .into_iter()
            .map(|c| (c.verdict, c.detail))
            .collect();
        let _ = std::fs::remove_dir_all(&root);
        let r = root.display();
        assert_eq!(
            got,
            [
                (
                    CheckOutcome::Warn,
                    format!(
                        "{r}/ctrl is mode 775: others can list the VMs' control sockets and read their records"
                    )
                ),
                (
                    CheckOutcome::Fail,
                    format!(
                        "{r}/conf is mode 777: others can replace the VMs' control sockets and records"
                    )
                ),
                (CheckOutcome::Ok, format!("{r}/pid is mode 755")),
            ]
        );
    }
}
