//! Executing a [`LaunchPlan`]: files, taps and their network, monitor
//! sockets, QEMU, the post-start steps, the runtime record. Every step
//! records its undo before the next one runs.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::Path;

use qmp_protocol::{
    Balloon, Client, Cont, MigrateIncoming, MigrateSetCapabilities, QueryCpusFast, SetPassword,
};
use serde_json::{Map, Value as Json};

use super::plan::{LaunchPlan, PostStartStep, StartMode};
use super::rollback::{Rollback, Undo};
use crate::hvparams::{CpuMask, CpuSet};
use crate::instance::{connect, fault_point};
use crate::net::Tap;
use crate::node::Node;
use crate::process::{ChildStderr, PassFd, spawn_with_fds};
use crate::spec::InstanceSpec;
use crate::state::{self, RuntimeRecord, Socket};
use crate::timing::StepClock;

/// How long QEMU may take from spawn to answering its monitor, unless
/// [`MONITOR_TIMEOUT_ENV`] says otherwise.
pub const MONITOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Environment variable overriding [`MONITOR_TIMEOUT`], in seconds (a slow
/// host; the fault-injection suite's stopped QEMU).
pub const MONITOR_TIMEOUT_ENV: &str = "KVM_HYPERVISOR_MONITOR_TIMEOUT";

fn monitor_timeout() -> std::time::Duration {
    std::env::var(MONITOR_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(MONITOR_TIMEOUT, std::time::Duration::from_secs)
}

/// A failed step: its name and why.
pub(crate) type StepError = (&'static str, Box<dyn std::error::Error + Send + Sync>);
pub(crate) type StepResult<T> = Result<T, StepError>;

/// Names the step of a fallible result.
pub(crate) fn at<T, E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
    r: Result<T, E>,
) -> StepResult<T> {
    r.map_err(|e| {
        (
            step,
            Box::new(e) as Box<dyn std::error::Error + Send + Sync>,
        )
    })
}

/// What a launch produced.
pub(crate) struct Launched {
    pub(crate) pid: i32,
    pub(crate) qmp: Client,
    pub(crate) taps: Vec<String>,
}

/// Runs `plan` for `spec` up to a QEMU that answers its monitor; every undo
/// step goes to `rb`.
pub(crate) async fn launch(
    node: &Node,
    spec: &InstanceSpec,
    plan: &LaunchPlan,
    rb: &mut Rollback,
    log: &Path,
    clock: &mut StepClock,
) -> StepResult<Launched> {
    let name = spec.name().as_str();
    let run = &node.run;
    // Stale files of an earlier life (a crash) go first.
    for which in state::Socket::ALL {
        let _ = std::fs::remove_file(run.socket(name, which));
    }
    let _ = std::fs::remove_file(run.shutdown_flag(name));
    if spec.hvparams().use_chroot() {
        let dir = run.chroot_dir(name);
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        at("chroot", builder.create(&dir))?;
        rb.push(Undo::RemoveDir(dir));
    }
    clock.lap("files");
    let taps = open_taps(plan)?;
    // Recorded before anything the host must undo exists (NIC routes and
    // rules, QEMU): an interrupted start is visible to every later command,
    // which can stop or clean it up.
    let tap_names: Vec<String> = taps.iter().map(|t| t.name().to_string()).collect();
    record_incomplete(node, spec, plan, &tap_names, rb)?;
    fault_point("record", None);
    configure_nics(node, plan, &taps, rb).await?;
    fault_point("nic-up", None);
    clock.lap("taps");
    let listeners = bind_sockets(plan, rb)?;
    clock.lap("sockets");
    at(
        "log",
        std::fs::create_dir_all(log.parent().unwrap_or(Path::new("/"))),
    )?;
    let log_file = at("log", private_file(log))?;
    if spec.hvparams().serial_console() {
        // A fresh console log for this boot (QEMU appends to it).
        at("log", private_file(&run.console_log(name)))?;
    }
    let mut pass: Vec<PassFd<'_>> = listeners
        .iter()
        .map(|(n, l)| PassFd {
            target: *n,
            fd: l.as_fd(),
        })
        .collect();
    for (t, tap) in plan.taps.iter().zip(&taps) {
        let queues = t.fds.iter().zip(tap.fds());
        let vhost = t.vhost_fds.iter().zip(tap.vhost_fds());
        for (n, fd) in queues.chain(vhost) {
            pass.push(PassFd {
                target: *n,
                fd: fd.as_fd(),
            });
        }
    }
    let stderr = ChildStderr::File(log_file);
    let binary = Path::new(&plan.argv[0]);
    let child = at(
        "spawn",
        spawn_with_fds(binary, &plan.argv[1..], &pass, stderr),
    )?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    clock.lap("spawn");
    // What QEMU creates itself goes too if the start fails (undone after
    // the kill, so QEMU cannot recreate it).
    for which in [Socket::Monitor, Socket::Serial, Socket::GuestAgent] {
        rb.push(Undo::RemoveFile(run.socket(name, which)));
    }
    rb.push(Undo::RemoveFile(run.console_log(name)));
    // A control group of its own while QEMU is still paused; its directory
    // goes after the kill if the start fails.
    match crate::cgroup::place(name, pid).await {
        Ok(placement) => {
            tracing::debug!(instance = name, ?placement, "QEMU placed in its own cgroup");
            if let crate::cgroup::Placement::Directory { path } = placement {
                rb.push(Undo::RemoveDir(path));
            }
        }
        Err(why) => tracing::warn!(
            instance = name,
            why,
            "QEMU stays in the cgroup of whoever started it"
        ),
    }
    rb.push(Undo::Kill(pid));
    rb.push(Undo::RemoveFile(run.pid_file(name)));
    fault_point("spawn", Some(pid));
    // Our copies of the sockets and taps close here; QEMU holds its own.
    // The child runs in its own session and is not waited for.
    drop(pass);
    drop(listeners);
    drop(child);
    drop(taps);
    let qmp = at(
        "monitor",
        connect(&run.socket(name, Socket::Qmp), monitor_timeout()).await,
    )?;
    // QEMU made its own sockets 0700 (umask 077): sockets need no x bit.
    for which in [Socket::Monitor, Socket::Serial, Socket::GuestAgent] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        let _ = std::fs::set_permissions(run.socket(name, which), mode);
    }
    clock.lap("monitor");
    fault_point("monitor", Some(pid));
    Ok(Launched {
        pid,
        qmp,
        taps: tap_names,
    })
}

/// Opens each NIC's tap (closed again by drop on failure).
fn open_taps(plan: &LaunchPlan) -> StepResult<Vec<Tap>> {
    plan.nics
        .iter()
        .map(|nic| at("tap", Tap::open(nic.tap())))
        .collect()
}

/// Configures each NIC's host side (bridge, or routes and rules; or the
/// node's NIC script) before QEMU sees it. On a migration's target, as in
/// Ganeti: a routed NIC is left alone until the migration succeeded
/// (`finalize_target`; its host route would take the guest's traffic away
/// from the source while the guest still runs there), and an `ext` NIC's
/// script runs with `MIGRATION_PHASE=pre`, its failure only logged.
async fn configure_nics(
    node: &Node,
    plan: &LaunchPlan,
    taps: &[Tap],
    rb: &mut Rollback,
) -> StepResult<()> {
    use crate::net::{MigrationPhase, NicMode};
    let incoming = matches!(plan.mode, StartMode::Incoming { .. });
    let mut setup = crate::nicsetup::NicSetup::for_node(node);
    for (nic, tap) in plan.nics.iter().zip(taps) {
        let config = nic.config();
        let phase = match (incoming, config.mode) {
            (true, NicMode::Routed) => continue,
            (true, NicMode::Ext) => Some(MigrationPhase::Pre),
            _ => None,
        };
        let up = setup.up(config, tap.name(), phase).await;
        if let (Some(_), Err(error)) = (phase, &up) {
            tracing::warn!(tap = %tap.name(), %error, "NIC pre-migration set-up failed (ignored, as in Ganeti)");
            continue;
        }
        at("nic-up", up)?;
        rb.push(Undo::NicDown(Box::new((
            config.clone(),
            tap.name().clone(),
            setup.down_script().map(std::path::Path::to_owned),
        ))));
    }
    Ok(())
}

/// Writes the record of a start in progress (`incomplete`), remembering the
/// record it replaces (a reboot's) so a failure puts that one back.
fn record_incomplete(
    node: &Node,
    spec: &InstanceSpec,
    plan: &LaunchPlan,
    taps: &[String],
    rb: &mut Rollback,
) -> StepResult<()> {
    let name = spec.name().as_str();
    let path = node.run.runtime_file(name);
    let previous = std::fs::read(&path).ok();
    let mut record = runtime_record(spec, plan, taps);
    record.incomplete = true;
    at("record", node.write_record(name, &record))?;
    rb.push(Undo::RestoreFile {
        path,
        contents: previous,
    });
    Ok(())
}

/// Binds the monitor sockets QEMU gets as descriptors. Each is bound (and
/// listening, private by the umask) under a temporary name, then
/// hard-linked to its final path and the temporary name removed: whoever
/// watches `ctrl/` sees `IN_CREATE` at the final path (all Ganeti's kvmd
/// looks for) only once the socket accepts connections (bound to its final
/// path directly, it could be found between `bind(2)` and `listen(2)`:
/// "Connection refused", and neither kvmd nor our monitor daemon tries
/// again).
fn bind_sockets(
    plan: &LaunchPlan,
    rb: &mut Rollback,
) -> StepResult<Vec<(i32, std::os::unix::net::UnixListener)>> {
    use nix::sys::stat::{Mode, umask};
    let mut listeners = Vec::new();
    for s in &plan.listen_sockets {
        let _ = std::fs::remove_file(&s.path);
        let file = s.path.file_name().map(|f| f.to_string_lossy().into_owned());
        let tmp = s.path.with_file_name(format!(
            ".{}.tmp-{}",
            file.unwrap_or_default(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let old = umask(Mode::from_bits_truncate(0o077));
        let bound = std::os::unix::net::UnixListener::bind(&tmp);
        umask(old);
        let l = at("monitor-socket", bound)?;
        rb.push(Undo::RemoveFile(tmp.clone()));
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        at("monitor-socket", std::fs::set_permissions(&tmp, mode))?;
        let linked = std::fs::hard_link(&tmp, &s.path);
        let _ = std::fs::remove_file(&tmp);
        at("monitor-socket", linked)?;
        rb.push(Undo::RemoveFile(s.path.clone()));
        listeners.push((s.fd, l));
    }
    Ok(listeners)
}

/// Runs the plan's post-start steps in order.
pub(crate) async fn post_start(
    plan: &LaunchPlan,
    qmp: &Client,
    pid: i32,
    clock: &mut StepClock,
) -> StepResult<()> {
    for step in &plan.post_start {
        match step {
            PostStartStep::SetPassword { protocol, file } => {
                let text = at("password", std::fs::read_to_string(file))?;
                let password = text.lines().next().unwrap_or_default().to_owned();
                let protocol = *protocol;
                at(
                    "password",
                    qmp.execute(SetPassword { protocol, password }).await,
                )?;
            }
            PostStartStep::PinCpus { mask } => at("pinning", pin_cpus(qmp, pid, mask).await)?,
            PostStartStep::Balloon { mib } => {
                let bytes = mib.checked_mul(1024 * 1024).unwrap_or(u64::MAX);
                at("balloon", qmp.execute(Balloon::bytes(bytes)).await)?;
            }
            PostStartStep::Cont => at("cont", qmp.execute(Cont).await)?,
            PostStartStep::MigrateIncoming {
                uri,
                caps,
                tls_creds,
            } => {
                let on = caps.iter().map(|c| (c.clone(), true));
                let events = MigrateSetCapabilities::new(on);
                at("migrate-incoming", qmp.execute(events).await)?;
                if let Some(dir) = tls_creds {
                    let creds = crate::migration::tls_object(dir, "server");
                    at("migrate-incoming", qmp.execute(creds).await)?;
                    let tls = qmp_protocol::MigrateSetParameters {
                        tls_creds: Some(crate::migration::TLS_ID.to_owned()),
                        ..Default::default()
                    };
                    at("migrate-incoming", qmp.execute(tls).await)?;
                }
                let listen = MigrateIncoming { uri: uri.clone() };
                at("migrate-incoming", qmp.execute(listen).await)?;
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        clock.lap(step.name());
        fault_point(step.name(), Some(pid));
    }
    Ok(())
}

/// Writes the runtime record of what `plan` started with `taps`.
pub(crate) fn commit(
    node: &Node,
    spec: &InstanceSpec,
    plan: &LaunchPlan,
    taps: &[String],
) -> StepResult<()> {
    let name = spec.name().as_str();
    let record = runtime_record(spec, plan, taps);
    at("record", node.write_record(name, &record))
}

/// CPU pinning from `cpu_mask`: one mask pins *every* thread of QEMU
/// (Ganeti pins only the main thread, reference §11.2.6); a per-vCPU mask
/// pins each vCPU thread as `query-cpus-fast` reports it.
async fn pin_cpus(qmp: &Client, pid: i32, mask: &str) -> Result<(), PinError> {
    let mask = CpuMask::parse(mask).map_err(|e| PinError(e.to_string()))?;
    match mask {
        CpuMask::Single(CpuSet::All) => Ok(()),
        CpuMask::Single(CpuSet::Cpus(cpus)) => {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|e| PinError(e.to_string()))?;
            for t in tasks.flatten() {
                if let Ok(tid) = t.file_name().to_string_lossy().parse::<i32>() {
                    set_affinity(tid, &cpus)?;
                }
            }
            Ok(())
        }
        CpuMask::PerVcpu(sets) => {
            let cpus = qmp
                .execute(QueryCpusFast)
                .await
                .map_err(|e| PinError(e.to_string()))?;
            for c in cpus {
                let Some(CpuSet::Cpus(set)) =
                    usize::try_from(c.cpu_index).ok().and_then(|i| sets.get(i))
                else {
                    continue;
                };
                set_affinity(i32::try_from(c.thread_id).unwrap_or(0), set)?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("CPU pinning failed: {0}")]
struct PinError(String);

fn set_affinity(tid: i32, cpus: &BTreeSet<u32>) -> Result<(), PinError> {
    let mut set = nix::sched::CpuSet::new();
    for c in cpus {
        set.set(*c as usize).map_err(|e| PinError(e.to_string()))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
        .map_err(|e| PinError(format!("thread {tid}: {e}")))
}

/// The record of what `plan` started: the instance in the spec's shape and
/// each device's record entry, as the device model derived it.
fn runtime_record(spec: &InstanceSpec, plan: &LaunchPlan, taps: &[String]) -> RuntimeRecord {
    let mut instance = match serde_json::to_value(spec) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    };
    for key in ["hvparams", "disks", "nics"] {
        instance.remove(key);
    }
    let disks = plan.disks.iter().map(|d| d.record().clone()).collect();
    let nics = plan
        .nics
        .iter()
        .zip(taps)
        .map(|(n, tap)| {
            let mut r = n.record().clone();
            r.tap = Some(tap.clone());
            r
        })
        .collect();
    RuntimeRecord {
        version: state::RECORD_VERSION,
        origin: state::Origin::Ours,
        instance,
        hvparams: spec.hvparams().to_map(),
        machine: Some(plan.machine.clone()),
        qemu: Some(state::QemuIdentity {
            path: plan.argv[0].clone(),
            version: None,
        }),
        argv: plan.argv.clone(),
        guest_argv: plan.guest_argv.clone(),
        disks,
        nics,
        incomplete: false,
    }
}

/// Creates (or truncates) `path` readable and writable by us alone.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open(2): set it.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}
