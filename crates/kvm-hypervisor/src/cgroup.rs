//! Each QEMU in a control group of its own, apart from whoever ran
//! `start` (a shell, a systemd unit, Ganeti's node daemon): stopping that
//! does not take the VMs with it, and each VM's CPU and memory use can be
//! read.
//!
//! - Under systemd (`/run/systemd/system` exists): a transient scope
//!   `kvm-hypervisor-NAME.scope` in `machine.slice`, asked of systemd over
//!   D-Bus (`StartTransientUnit` with the QEMU's pid, through `busctl`);
//!   systemd removes the scope when QEMU exits.
//! - Otherwise: a plain cgroup v2 directory `kvm-hypervisor/NAME` under the
//!   unified hierarchy (found in `/proc/self/mountinfo`), with the `cpu` and
//!   `memory` controllers enabled where the parent offers them; removed
//!   when the instance stops.
//!
//! QEMU is moved while it is still paused (`-S`), before the guest runs.
//! A host without cgroup v2 runs its VMs where they were started, with a
//! warning: placement is an improvement, not a condition.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// Where an instance's QEMU was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Placement {
    /// A systemd scope.
    Scope {
        /// The unit.
        unit: String,
    },
    /// A cgroup v2 directory of ours.
    Directory {
        /// The directory.
        path: PathBuf,
    },
}

/// The CPU and memory an instance's control group has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time, microseconds (`cpu.stat`'s `usage_usec`).
    pub cpu_usec: u64,
    /// Memory now, bytes (`memory.current`), where the memory controller
    /// is enabled.
    pub memory_bytes: Option<u64>,
}

/// Our cgroup directory under the unified hierarchy, without systemd.
const OURS: &str = "kvm-hypervisor";

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The unified (v2) hierarchy's mount point, from `/proc/self/mountinfo`.
pub fn unified_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The scope's unit name for instance `name` (instance names are already
/// valid in unit names: letters, digits, `.`, `-`, `_`).
pub fn scope_unit(name: &str) -> String {
    format!("kvm-hypervisor-{name}.scope")
}

/// The cgroup directory of instance `name`: the scope's (under systemd) or
/// ours.
pub fn cgroup_dir(name: &str) -> Option<PathBuf> {
    let root = unified_root()?;
    Some(if systemd_runs() {
        root.join("machine.slice").join(scope_unit(name))
    } else {
        root.join(OURS).join(name)
    })
}

/// Moves `pid` (instance `name`'s QEMU) into a control group of its own;
/// why not, when it cannot be.
pub async fn place(name: &str, pid: i32) -> Result<Placement, String> {
    if systemd_runs() {
        place_in_scope(name, pid).await
    } else {
        place_in_directory(name, pid)
    }
}

async fn place_in_scope(name: &str, pid: i32) -> Result<Placement, String> {
    let unit = scope_unit(name);
    let description = format!("kvm-hypervisor instance {name}");
    let pid = pid.to_string();
    let args = [
        "call",
        "--system",
        "--quiet",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        &unit,
        "fail",
        "3",
        "PIDs",
        "au",
        "1",
        &pid,
        "Slice",
        "s",
        "machine.slice",
        "Description",
        "s",
        &description,
        "0",
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    crate::process::run_with_timeout(
        Path::new("busctl"),
        &args,
        crate::process::BaseEnv::Inherit,
        &[],
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Placement::Scope { unit })
}

fn place_in_directory(name: &str, pid: i32) -> Result<Placement, String> {
    let root = unified_root().ok_or("no cgroup v2 hierarchy is mounted")?;
    let ours = root.join(OURS);
    let fail =
        |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    std::fs::create_dir_all(&ours).map_err(|e| fail("creating", &ours, e))?;
    // Accounting: the controllers the parent offers, enabled for ours
    // (best effort: a controller held by a v1 hierarchy is not offered).
    let offered = std::fs::read_to_string(ours.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["cpu", "memory"] {
        if offered.split_whitespace().any(|c| c == controller) {
            let _ = std::fs::write(
                ours.join("cgroup.subtree_control"),
                format!("+{controller}"),
            );
        }
    }
    let dir = ours.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("creating", &dir, e)),
    }
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .map_err(|e| fail("moving QEMU into", &dir, e))?;
    Ok(Placement::Directory { path: dir })
}

/// Removes instance `name`'s cgroup directory once its QEMU is gone (a
/// systemd scope goes by itself). Nothing to do is not an error.
pub fn remove(name: &str) {
    if systemd_runs() {
        return;
    }
    let Some(dir) = cgroup_dir(name) else { return };
    match std::fs::remove_dir(&dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "cgroup removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the cgroup"),
    }
}

/// What instance `name`'s control group has used, when it has one.
pub fn usage(name: &str) -> Option<Usage> {
    let dir = cgroup_dir(name)?;
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let cpu_usec = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())?;
    let memory_bytes = std::fs::read_to_string(dir.join("memory.current"))
        .ok()
        .and_then(|m| m.trim().parse().ok());
    Some(Usage {
        cpu_usec,
        memory_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_units_are_named_after_the_instance() {
        assert_eq!(
            scope_unit("web1.example.com"),
            "kvm-hypervisor-web1.example.com.scope"
        );
    }
}
