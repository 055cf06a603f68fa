//! Starting, stopping, inspecting and cleaning up instances.
//!
//! Every mutation takes the instance's lock. A failed start undoes every step
//! it did, in reverse order, and reports the step with QEMU's own log lines.
//! A graceful stop waits for QEMU to exit (an ACPI power-down, then SIGTERM,
//! then SIGKILL, each with a deadline) and only then takes the network down
//! (Ganeti tears it down while the guest still runs, reference §11.2.2).

use std::collections::BTreeSet;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qmp_protocol::{
    Balloon, Client, Cont, DisplayProtocol, Handshake, QueryBalloon, QueryCpusFast, QueryStatus,
    SetPassword,
};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use crate::caps::{self, CapsError};
use crate::hvparams::{CpuMask, CpuSet};
use crate::net::{Netlink, NicConfig, NicMode as TapNicMode, Tap, TapName, TapOptions};
use crate::plan::{LaunchPlan, PlanError, plan_start};
use crate::process::{ChildStderr, PassFd, spawn_with_fds};
use crate::spec::{DiskSource, InstanceSpec, NicMode};
use crate::state::{
    self, Format, Liveness, LockWait, RunDir, RuntimeFile, RuntimeRecord, StateError,
};
use crate::validate::{Finding, validate_on_host};

/// How long QEMU may take from spawn to answering its monitor.
pub const MONITOR_TIMEOUT: Duration = Duration::from_secs(30);

/// A node: its run directory and capability cache.
#[derive(Debug, Clone)]
pub struct Node {
    /// The run directory.
    pub run: RunDir,
    /// Where QEMU capabilities are cached.
    pub cache_dir: PathBuf,
    /// The uid pool for `security_model=pool` (inclusive ranges), as
    /// Ganeti's cluster-wide `uid_pool`.
    pub uid_pool: Vec<(u32, u32)>,
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
            uid_pool: Vec::new(),
        })
    }

    /// Sets the uid pool.
    pub fn with_uid_pool(mut self, pool: Vec<(u32, u32)>) -> Node {
        self.uid_pool = pool;
        self
    }
}

/// Options of [`start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Leave the VM paused (no `cont`).
    pub paused: bool,
}

/// What [`start`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The instance.
    pub name: String,
    /// QEMU's pid.
    pub pid: i32,
    /// The machine type.
    pub machine: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Whether it was left paused.
    pub paused: bool,
    /// The balloon target set at start, MiB (None: full memory).
    pub balloon_mib: Option<u64>,
    /// Warnings from planning.
    pub warnings: Vec<String>,
}

/// Why a start failed. Nothing it did is left behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The run directory or the lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// The instance runs already.
    #[error("instance {name} is already running (pid {pid})")]
    AlreadyRunning {
        /// The instance.
        name: String,
        /// Its QEMU.
        pid: i32,
    },
    /// The spec does not fit this host.
    #[error(
        "instance {name} cannot start on this host:{}",
        findings_list(problems)
    )]
    Invalid {
        /// The instance.
        name: String,
        /// The problems.
        problems: Vec<Finding>,
    },
    /// No uid could be taken from the pool.
    #[error("instance {name}: {why}")]
    UidPool {
        /// The instance.
        name: String,
        /// Why.
        why: String,
    },
    /// QEMU's capabilities could not be had.
    #[error(transparent)]
    Caps(#[from] CapsError),
    /// The plan failed.
    #[error("cannot plan {name}")]
    Plan {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: PlanError,
    },
    /// A step failed; everything done before it was undone.
    #[error("starting {name} failed at step `{step}`{}", log_tail(qemu_log))]
    Step {
        /// The instance.
        name: String,
        /// The step.
        step: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// QEMU's last log lines, if it ran.
        qemu_log: String,
    },
}

fn findings_list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("\n  {}: {}", f.field, f.message))
        .collect()
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(10)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("; QEMU said:\n  {}", tail.join("\n  "))
    }
}

/// One thing to undo if a later step fails.
enum Undo {
    RemoveFile(PathBuf),
    RemoveDir(PathBuf),
    Deconfigure(Box<(NicConfig, TapName)>),
    Kill(i32),
}

struct Rollback {
    undo: Vec<Undo>,
}

impl Rollback {
    async fn run(self, netlink: Option<&Netlink>) {
        for u in self.undo.into_iter().rev() {
            match u {
                Undo::RemoveFile(p) => {
                    let _ = std::fs::remove_file(p);
                }
                Undo::RemoveDir(p) => {
                    let _ = std::fs::remove_dir(p);
                }
                Undo::Deconfigure(boxed) => {
                    let (nic, tap) = *boxed;
                    if let Some(nl) = netlink
                        && let Err(e) = crate::net::deconfigure_native(nl, &nic, &tap).await
                    {
                        tracing::warn!(tap = %tap, error = %e, "undoing NIC configuration failed");
                    }
                }
                Undo::Kill(pid) => {
                    kill_and_wait(
                        pid,
                        nix::sys::signal::Signal::SIGKILL,
                        Duration::from_secs(10),
                    )
                    .await;
                }
            }
        }
    }
}

fn nic_config(spec: &InstanceSpec, i: usize) -> NicConfig {
    nic_config_for(spec.name().as_str(), &spec.nics()[i], i)
}

/// The network configuration of NIC `n`, the `index`th of `instance`.
pub(crate) fn nic_config_for(instance: &str, n: &crate::spec::NicSpec, index: usize) -> NicConfig {
    NicConfig {
        instance: instance.to_owned(),
        instance_tags: Vec::new(),
        index,
        uuid: n.uuid().to_string(),
        name: n.name().map(str::to_owned),
        mac: n.mac().to_string(),
        mode: match n.mode() {
            NicMode::Bridged => TapNicMode::Bridged,
            NicMode::Routed => TapNicMode::Routed,
            NicMode::Openvswitch => TapNicMode::Openvswitch,
        },
        link: n.link().to_owned(),
        vlan: (!n.vlan().is_empty()).then(|| n.vlan().to_owned()),
        ip: n.ip(),
        network: None,
    }
}

fn step_err(
    name: &str,
    step: &'static str,
    log: &Path,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> StartError {
    let name = name.to_owned();
    let qemu_log = std::fs::read_to_string(log).unwrap_or_default();
    move |source| StartError::Step {
        name,
        step,
        source,
        qemu_log,
    }
}

/// Starts `spec` on `node`.
pub async fn start(
    node: &Node,
    spec: &InstanceSpec,
    opts: StartOptions,
) -> Result<Started, StartError> {
    let name = spec.name().as_str();
    let lock = node.run.lock(name, LockWait::No)?;
    let result = start_locked(node, spec, opts).await;
    // A start that failed before anything existed leaves not even its lock
    // file (removed while held; a waiter notices and retries on a new one).
    let nothing_there = !node.run.runtime_file(name).exists() && !node.run.pid_file(name).exists();
    if result.is_err() && nothing_there {
        let _ = std::fs::remove_file(lock.path());
    }
    drop(lock);
    result
}

async fn start_locked(
    node: &Node,
    spec: &InstanceSpec,
    opts: StartOptions,
) -> Result<Started, StartError> {
    let name = spec.name().as_str();
    if let Liveness::Running { pid, .. } = state::liveness(&node.run, name) {
        return Err(StartError::AlreadyRunning {
            name: name.to_owned(),
            pid,
        });
    }
    // Host checks first (a missing kvm_path is reported as such), then the
    // same checks with what this QEMU can do.
    let mut facts = crate::host::gather(spec);
    let invalid = |problems| StartError::Invalid {
        name: name.to_owned(),
        problems,
    };
    let report = validate_on_host(spec, &facts, Vec::new());
    if !report.is_valid() {
        return Err(invalid(report.problems));
    }
    let binary = PathBuf::from(spec.hvparams().kvm_path());
    let caps = caps::capabilities(&binary, &node.cache_dir).await?.caps;
    facts.hv.qemu = Some(crate::host::qemu_facts(&caps));
    let report = validate_on_host(spec, &facts, Vec::new());
    if !report.is_valid() {
        return Err(invalid(report.problems));
    }
    let mut env = crate::host::plan_env(spec, &caps);
    let mut rb = Rollback { undo: Vec::new() };
    if spec.hvparams().security_model() == crate::hvparams::SecurityModel::Pool {
        env.pool_user = Some(allocate_uid(node, name)?);
        rb.undo.push(Undo::RemoveFile(node.run.uid_file(name)));
    }
    let plan = match plan_start(spec, &caps, &node.run, &env) {
        Ok(p) => p,
        Err(source) => {
            rb.run(None).await;
            return Err(StartError::Plan {
                name: name.to_owned(),
                source,
            });
        }
    };
    let log = node.run.qemu_log(name);
    let netlink = if plan.taps.is_empty() {
        None
    } else {
        Some(Netlink::new().map_err(|e| step_err(name, "netlink", &log)(Box::new(e)))?)
    };
    match launch(node, spec, &plan, opts, &mut rb, netlink.as_ref(), &log).await {
        Ok(mut started) => {
            started.warnings = plan.warnings.clone();
            tracing::info!(instance = name, pid = started.pid, "started");
            Ok(started)
        }
        Err((step, source)) => {
            rb.run(netlink.as_ref()).await;
            let err = step_err(name, step, &log)(source);
            let _ = std::fs::remove_file(&log);
            Err(err)
        }
    }
}

type StepResult<T> = Result<T, (&'static str, Box<dyn std::error::Error + Send + Sync>)>;

fn at<T, E: std::error::Error + Send + Sync + 'static>(
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

async fn launch(
    node: &Node,
    spec: &InstanceSpec,
    plan: &LaunchPlan,
    opts: StartOptions,
    rb: &mut Rollback,
    netlink: Option<&Netlink>,
    log: &Path,
) -> StepResult<Started> {
    let name = spec.name().as_str();
    let hv = spec.hvparams();
    let run = &node.run;
    // Stale files of an earlier life (a crash) go first.
    for suffix in state::CTRL_SUFFIXES {
        let _ = std::fs::remove_file(run.ctrl(name, suffix));
    }
    if hv.use_chroot() {
        let dir = run.chroot_dir(name);
        at(
            "chroot",
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&dir),
        )?;
        rb.undo.push(Undo::RemoveDir(dir));
    }
    // Taps, configured before QEMU sees them.
    let mut taps = Vec::new();
    for (i, t) in plan.taps.iter().enumerate() {
        let options = TapOptions {
            name: None,
            vnet_hdr: t.vnet_hdr,
            queues: std::num::NonZeroU8::new(u8::try_from(t.fds.len()).unwrap_or(1))
                .unwrap_or(std::num::NonZeroU8::MIN),
            vhost: !t.vhost_fds.is_empty(),
        };
        let tap = at("tap", Tap::open(&options))?;
        let nic = nic_config(spec, i);
        if let Some(nl) = netlink {
            at(
                "nic-up",
                crate::net::configure_native(nl, &nic, tap.name()).await,
            )?;
            rb.undo
                .push(Undo::Deconfigure(Box::new((nic, tap.name().clone()))));
        }
        taps.push(tap);
    }
    // Monitor sockets, bound by us and passed to QEMU.
    let mut listeners = Vec::new();
    for s in &plan.listen_sockets {
        let _ = std::fs::remove_file(&s.path);
        let l = at(
            "monitor-socket",
            std::os::unix::net::UnixListener::bind(&s.path),
        )?;
        rb.undo.push(Undo::RemoveFile(s.path.clone()));
        at(
            "monitor-socket",
            std::fs::set_permissions(&s.path, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        )?;
        listeners.push((s.fd, l));
    }
    at(
        "log",
        std::fs::create_dir_all(log.parent().unwrap_or(Path::new("/"))),
    )?;
    let log_file = at("log", std::fs::File::create(log))?;
    let mut pass: Vec<PassFd<'_>> = listeners
        .iter()
        .map(|(n, l)| PassFd {
            target: *n,
            fd: l.as_fd(),
        })
        .collect();
    for (t, tap) in plan.taps.iter().zip(&taps) {
        for (n, fd) in t.fds.iter().zip(tap.fds()) {
            pass.push(PassFd {
                target: *n,
                fd: fd.as_fd(),
            });
        }
        for (n, fd) in t.vhost_fds.iter().zip(tap.vhost_fds()) {
            pass.push(PassFd {
                target: *n,
                fd: fd.as_fd(),
            });
        }
    }
    let child = at(
        "spawn",
        spawn_with_fds(
            Path::new(&plan.argv[0]),
            &plan.argv[1..],
            &pass,
            ChildStderr::File(log_file),
        ),
    )?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    rb.undo.push(Undo::Kill(pid));
    rb.undo.push(Undo::RemoveFile(run.pid_file(name)));
    drop(pass);
    drop(listeners);
    // Our copies of the taps close here; QEMU holds its own.
    let tap_names: Vec<String> = taps.iter().map(|t| t.name().to_string()).collect();
    drop(taps);
    // The child is reaped by whoever waits for it; we hand it over to the
    // system by not waiting (it runs in its own session).
    drop(child);

    let qmp = at(
        "monitor",
        connect(&plan.listen_sockets[0].path, MONITOR_TIMEOUT).await,
    )?;
    for (param, protocol) in [
        (hv.vnc_password_file(), DisplayProtocol::Vnc),
        (hv.spice_password_file(), DisplayProtocol::Spice),
    ] {
        if param.is_empty() {
            continue;
        }
        let text = at("password", std::fs::read_to_string(param))?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        at(
            "password",
            qmp.execute(SetPassword { protocol, password }).await,
        )?;
    }
    at("pinning", pin_cpus(&qmp, pid, hv.cpu_mask()).await)?;
    let balloon_mib = startup_memory(spec.memory(), spec.min_memory());
    if let Some(mib) = balloon_mib {
        at(
            "balloon",
            qmp.execute(Balloon::bytes(mib * 1024 * 1024)).await,
        )?;
    }
    if !opts.paused {
        at("cont", qmp.execute(Cont).await)?;
    }
    let record = runtime_record(spec, plan, &tap_names);
    at("record", run.write_record(name, &record, Format::Ours))?;
    let _ = std::fs::remove_file(run.ctrl(name, ".shutdown"));
    Ok(Started {
        name: name.to_owned(),
        pid,
        machine: plan.machine.clone(),
        accel: format!("{:?}", plan.accel).to_lowercase(),
        paused: opts.paused,
        balloon_mib,
        warnings: Vec::new(),
    })
}

/// Ganeti's start-up memory: all of `memory` when the node has it free,
/// else what is free but at least `min_memory`. `None`: no balloon needed.
fn startup_memory(memory: u64, min_memory: u64) -> Option<u64> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib / 1024)
        })?;
    (available < memory).then(|| available.max(min_memory))
}

/// Connects to a monitor socket and negotiates, within `timeout`.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, qmp_protocol::QmpError> {
    match tokio::time::timeout(timeout, async {
        Handshake::connect(path).await?.negotiate().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(qmp_protocol::QmpError::Timeout {
            command: "qmp_capabilities".into(),
            timeout,
        }),
    }
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

fn runtime_record(spec: &InstanceSpec, plan: &LaunchPlan, taps: &[String]) -> RuntimeRecord {
    let mut instance = match serde_json::to_value(spec) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    };
    instance.remove("hvparams");
    instance.remove("disks");
    instance.remove("nics");
    let hv = |h: &crate::slots::HvInfo| serde_json::from_value(h.to_json()).ok();
    let disks = spec
        .disks()
        .iter()
        .zip(&plan.disks)
        .map(|(d, p)| state::DiskRecord {
            uuid: d.uuid().to_string(),
            name: d.name().map(str::to_owned),
            size: d.size_mib(),
            mode: match d.mode() {
                crate::spec::DiskMode::Rw => "rw".into(),
                crate::spec::DiskMode::Ro => "ro".into(),
            },
            path: match d.source() {
                DiskSource::Path(p) => Some(p.display().to_string()),
                DiskSource::Uri(_) => None,
            },
            uri: match d.source() {
                DiskSource::Uri(u) => Some(u.clone()),
                DiskSource::Path(_) => None,
            },
            hvinfo: hv(&p.hvinfo),
            extra: Map::new(),
        })
        .collect();
    let nics = spec
        .nics()
        .iter()
        .zip(&plan.nics)
        .zip(taps)
        .map(|((n, p), tap)| state::NicRecord {
            uuid: n.uuid().to_string(),
            mac: Some(n.mac().to_string()),
            ip: n.ip().map(|i| i.to_string()),
            name: n.name().map(str::to_owned),
            mode: Some(json!(n.mode()).as_str().unwrap_or_default().to_owned()),
            link: Some(n.link().to_owned()),
            vlan: Some(n.vlan().to_owned()),
            tap: Some(tap.clone()),
            hvinfo: hv(&p.hvinfo),
            extra: Map::new(),
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
        disks,
        nics,
    }
}

// ---------------------------------------------------------------- stop

/// Options of [`stop`].
#[derive(Debug, Clone, Copy)]
pub struct StopOptions {
    /// How long the guest gets to power off after the ACPI button.
    pub timeout: Duration,
    /// Kill at once.
    pub force: bool,
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// It was not running.
    NotRunning,
    /// The guest powered off after the ACPI power button.
    Graceful,
    /// SIGTERM.
    Terminated,
    /// SIGKILL.
    Killed,
}

/// Why a stop failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// The run directory or the lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// QEMU survived SIGKILL (an uninterruptible sleep).
    #[error("instance {name}: QEMU (pid {pid}) did not exit even after SIGKILL")]
    Unkillable {
        /// The instance.
        name: String,
        /// Its pid.
        pid: i32,
    },
}

/// Stops `name`: ACPI power-down (when ACPI is on and not `force`), wait up
/// to `timeout`, then SIGTERM, then SIGKILL; then the NICs are taken down and
/// every file removed. Needs no runtime record.
pub async fn stop(node: &Node, name: &str, opts: StopOptions) -> Result<Ending, StopError> {
    let lock = node.run.lock(name, LockWait::Up(Duration::from_secs(30)))?;
    let record = node
        .run
        .read_runtime(name)
        .ok()
        .flatten()
        .map(|f| f.record());
    let ending = match state::liveness(&node.run, name) {
        Liveness::Running { pid, .. } => {
            let acpi = record
                .as_ref()
                .and_then(|r| r.hvparams.get("acpi"))
                .and_then(Json::as_bool)
                .unwrap_or(true);
            if opts.force {
                kill_now(name, pid).await?
            } else {
                end_qemu(node, name, pid, acpi, opts.timeout).await?
            }
        }
        _ => Ending::NotRunning,
    };
    // The network goes down only now that QEMU is gone.
    if let Some(r) = &record {
        deconfigure_nics(name, r).await;
    }
    let _ = node.run.cleanup_locked(name, lock);
    tracing::info!(instance = name, ?ending, "stopped");
    Ok(ending)
}

/// `--force`: SIGKILL at once.
async fn kill_now(name: &str, pid: i32) -> Result<Ending, StopError> {
    match kill_and_wait(
        pid,
        nix::sys::signal::Signal::SIGKILL,
        Duration::from_secs(10),
    )
    .await
    {
        None => Ok(Ending::NotRunning),
        Some(true) => Ok(Ending::Killed),
        Some(false) => Err(StopError::Unkillable {
            name: name.to_owned(),
            pid,
        }),
    }
}

async fn end_qemu(
    node: &Node,
    name: &str,
    pid: i32,
    graceful: bool,
    timeout: Duration,
) -> Result<Ending, StopError> {
    use nix::sys::signal::Signal;
    let Some(exit) = ProcessExit::watch(pid) else {
        return Ok(Ending::NotRunning);
    };
    if graceful {
        let asked = async {
            let qmp = connect(&node.run.ctrl(name, ".qmp"), Duration::from_secs(5)).await?;
            qmp.execute(qmp_protocol::SystemPowerdown).await
        }
        .await;
        match asked {
            Ok(_) if exit.wait(timeout).await => return Ok(Ending::Graceful),
            Ok(_) => tracing::info!(instance = name, ?timeout, "guest did not power off in time"),
            Err(e) => tracing::info!(instance = name, error = %e, "ACPI power-down not possible"),
        }
    }
    if !graceful || !exit.done() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        if exit.wait(Duration::from_secs(10)).await {
            return Ok(Ending::Terminated);
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        if exit.wait(Duration::from_secs(10)).await {
            return Ok(Ending::Killed);
        }
        return Err(StopError::Unkillable {
            name: name.to_owned(),
            pid,
        });
    }
    Ok(Ending::Graceful)
}

async fn deconfigure_nics(name: &str, r: &RuntimeRecord) {
    let nics: Vec<(NicConfig, TapName)> = r
        .nics
        .iter()
        .enumerate()
        .filter_map(|(i, n)| nic_config_of(name, n, i))
        .collect();
    if nics.is_empty() {
        return;
    }
    let Ok(nl) = Netlink::new() else { return };
    for (nic, tap) in nics {
        if let Err(e) = crate::net::deconfigure_native(&nl, &nic, &tap).await {
            tracing::warn!(instance = name, tap = %tap, error = %e, "NIC down configuration failed");
        }
    }
}

/// The network configuration of a recorded NIC with a native mode (bridged
/// or routed) and a tap, the `index`th of instance `name`.
pub(crate) fn nic_config_of(
    name: &str,
    n: &state::NicRecord,
    index: usize,
) -> Option<(NicConfig, TapName)> {
    let tap = n.tap.as_deref().and_then(|t| TapName::new(t).ok())?;
    let mode = match n.mode.as_deref() {
        Some("routed") => TapNicMode::Routed,
        Some("bridged") => TapNicMode::Bridged,
        _ => return None,
    };
    Some((
        NicConfig {
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
        },
        tap,
    ))
}

/// Kills `pid` with `signal` and waits for it to exit, at most `limit`:
/// `None` when it does not exist, else whether it exited in time.
async fn kill_and_wait(
    pid: i32,
    signal: nix::sys::signal::Signal,
    limit: Duration,
) -> Option<bool> {
    let exit = ProcessExit::watch(pid)?;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    Some(exit.wait(limit).await)
}

/// Waits for a process (not necessarily our child) to exit through a pidfd,
/// which signals at exit even while the process lingers as a zombie that
/// `kill(pid, 0)` would call alive.
pub struct ProcessExit {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl ProcessExit {
    /// Watches `pid`; `None` when it does not exist.
    pub fn watch(pid: i32) -> Option<ProcessExit> {
        // SAFETY: pidfd_open(2) with a pid and no flags; it returns a new
        // descriptor we own or -1.
        let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        let raw = i32::try_from(raw).ok().filter(|r| *r >= 0)?;
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the descriptor is owned by the AsyncFd and closed only
        // when it is dropped, after deregistration.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
        .map(|fd| ProcessExit { fd })
    }

    /// Whether the process has exited, without waiting.
    pub fn done(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.fd.get_ref().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Waits for the exit, at most `limit`; whether it exited.
    pub async fn wait(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.fd.readable()).await,
            Ok(Ok(_))
        )
    }
}

// ---------------------------------------------------------------- info

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
}

/// What `info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    /// The instance.
    pub name: String,
    /// Its state.
    pub state: InstanceState,
    /// QEMU's pid, when alive.
    pub pid: Option<i32>,
    /// Memory in MiB (from the balloon, or the argv).
    pub memory_mib: Option<u64>,
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
}

/// One device in [`InstanceInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    /// `disk` or `nic`.
    pub kind: &'static str,
    /// Its UUID.
    pub uuid: String,
    /// QEMU device id.
    pub id: Option<String>,
    /// Where it sits (`pci.0 0xc`, `scsi.0 target 1`).
    pub placement: Option<String>,
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

/// What is known of `name`. A QEMU that does not answer its monitor within
/// two seconds is described from its argv instead; nothing hangs.
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
    match state::liveness(&node.run, name) {
        Liveness::Running { pid, argv } => {
            let mut info = InstanceInfo {
                name: name.to_owned(),
                state: InstanceState::Other,
                pid: Some(pid),
                memory_mib: argv.memory_mib,
                vcpus: argv.vcpus,
                uptime_secs: uptime(pid),
                qemu_version: None,
                machine,
                from_qmp: false,
                devices,
            };
            if let Ok(qmp) = connect(&node.run.ctrl(name, ".qmp"), Duration::from_secs(2)).await {
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
            let by_guest = node.run.ctrl(name, ".shutdown").exists();
            let r = record.as_ref();
            let num = |k: &str| r.and_then(|r| r.instance.get(k)).and_then(Json::as_u64);
            Ok(InstanceInfo {
                name: name.to_owned(),
                state: if by_guest {
                    InstanceState::ShutdownByGuest
                } else {
                    InstanceState::Crashed
                },
                pid: None,
                memory_mib: num("memory"),
                vcpus: num("vcpus").and_then(|v| u32::try_from(v).ok()),
                uptime_secs: None,
                qemu_version: None,
                machine,
                from_qmp: false,
                devices,
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
        id: d.hvinfo.as_ref().map(|h| h.id.clone()),
        placement: place(&d.hvinfo),
        tap: None,
    });
    let nics = r.nics.iter().map(|n| DeviceSummary {
        kind: "nic",
        uuid: n.uuid.clone(),
        id: n.hvinfo.as_ref().map(|h| h.id.clone()),
        placement: place(&n.hvinfo),
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

/// Removes every file of a stopped instance; refuses a live one.
pub fn cleanup(node: &Node, name: &str) -> Result<Vec<PathBuf>, StateError> {
    node.run.cleanup(name)
}

/// Sets the balloon target of a running instance.
pub async fn balloon(node: &Node, name: &str, mib: u64) -> Result<(), BalloonError> {
    let record = node.run.read_runtime(name)?.map(|f| f.record());
    let max = record
        .as_ref()
        .and_then(|r| r.instance.get("memory"))
        .and_then(Json::as_u64);
    if let Some(max) = max
        && mib > max
    {
        return Err(BalloonError::AboveMaximum { mib, max });
    }
    if mib == 0 {
        return Err(BalloonError::Zero);
    }
    let qmp = connect(&node.run.ctrl(name, ".qmp"), Duration::from_secs(5)).await?;
    qmp.execute(Balloon::bytes(mib * 1024 * 1024)).await?;
    Ok(())
}

/// Why a balloon request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalloonError {
    /// More than the instance's memory.
    #[error("{mib} MiB is more than the instance's memory ({max} MiB)")]
    AboveMaximum {
        /// Asked for.
        mib: u64,
        /// The maximum.
        max: u64,
    },
    /// Zero.
    #[error("0 MiB is not a balloon target")]
    Zero,
    /// The run directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// QMP.
    #[error(transparent)]
    Qmp(#[from] qmp_protocol::QmpError),
}

// ---------------------------------------------------------------- reboot

/// Why a reboot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebootError {
    /// No runtime record to restart from.
    #[error("instance {0} has no runtime record to restart from")]
    NoRecord(String),
    /// The record no longer makes a valid spec.
    #[error("the runtime record of {name} is not a valid spec")]
    BadRecord {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: crate::spec::SpecProblems,
    },
    /// The run directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The stop failed.
    #[error(transparent)]
    Stop(#[from] StopError),
    /// The start failed.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The instance spec a runtime record was started from (ours), or the
/// nearest spec for a Ganeti record.
pub fn spec_from_record(r: &RuntimeRecord) -> Result<InstanceSpec, crate::spec::SpecProblems> {
    let mut spec = Json::Object(r.instance.clone());
    spec["hvparams"] = Json::Object(r.hvparams.clone());
    spec["disks"] = r
        .disks
        .iter()
        .map(|d| {
            let mut j = json!({"uuid": d.uuid, "mode": d.mode});
            if let Some(n) = &d.name {
                j["name"] = json!(n);
            }
            if let Some(s) = d.size {
                j["size"] = json!(s);
            }
            match (&d.path, &d.uri) {
                (_, Some(u)) => j["uri"] = json!(u),
                (Some(p), None) => j["path"] = json!(p),
                (None, None) => {}
            }
            j
        })
        .collect();
    spec["nics"] = r
        .nics
        .iter()
        .map(|n| {
            let mut j = json!({"uuid": n.uuid});
            for (k, v) in [
                ("mac", &n.mac),
                ("name", &n.name),
                ("mode", &n.mode),
                ("link", &n.link),
                ("vlan", &n.vlan),
                ("ip", &n.ip),
            ] {
                if let Some(v) = v {
                    j[k] = json!(v);
                }
            }
            j
        })
        .collect();
    InstanceSpec::from_value(&spec).map(|l| l.spec)
}

/// A real reboot (Ganeti's "soft" reboot is a hard kill, reference
/// §11.2.1): a graceful stop (ACPI power-down, waiting up to `timeout`),
/// or a kill with `hard`, then a start from the runtime record, re-planned
/// for the QEMU at hand.
pub async fn reboot(
    node: &Node,
    name: &str,
    hard: bool,
    timeout: Duration,
) -> Result<Started, RebootError> {
    let record = node
        .run
        .read_runtime(name)?
        .ok_or_else(|| RebootError::NoRecord(name.to_owned()))?
        .record();
    let spec = spec_from_record(&record).map_err(|source| RebootError::BadRecord {
        name: name.to_owned(),
        source,
    })?;
    stop(
        node,
        name,
        StopOptions {
            timeout,
            force: hard,
        },
    )
    .await?;
    Ok(start(node, &spec, StartOptions::default()).await?)
}

/// Takes the lowest free uid of the pool for `name` (recorded in
/// `uid/<name>`, released by cleanup on every path, so a reboot cannot leak
/// it as Ganeti's does, reference §11.2.7). QEMU runs as the uid's user.
fn allocate_uid(node: &Node, name: &str) -> Result<String, StartError> {
    let err = |why: String| StartError::UidPool {
        name: name.to_owned(),
        why,
    };
    if node.uid_pool.is_empty() {
        return Err(err(
            "security_model is `pool` but this node has no uid pool (--uid-pool)".into(),
        ));
    }
    let dir = node.run.root().join("uid");
    let lock = state::InstanceLock::acquire(
        &dir.join(".pool.lock"),
        "uid pool",
        LockWait::Up(Duration::from_secs(10)),
    )?;
    let taken = take_free_uid(node, name, &dir);
    // Removed while held (a waiter notices the new inode and retries), so
    // the pool leaves no file behind.
    let _ = std::fs::remove_file(lock.path());
    drop(lock);
    taken
}

fn take_free_uid(node: &Node, name: &str, dir: &Path) -> Result<String, StartError> {
    let err = |why: String| StartError::UidPool {
        name: name.to_owned(),
        why,
    };
    let used: BTreeSet<u32> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    for &(lo, hi) in &node.uid_pool {
        for uid in lo..=hi {
            if used.contains(&uid) {
                continue;
            }
            let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            else {
                continue;
            };
            state::write_atomic(
                &node.run.uid_file(name),
                format!("{uid}\n").as_bytes(),
                state::FILE_MODE,
            )?;
            tracing::info!(
                instance = name,
                uid,
                user = user.name,
                "uid taken from the pool"
            );
            return Ok(user.name);
        }
    }
    Err(err("every uid of the pool that has a user is taken".into()))
}

/// Parses a uid pool: `2000-2099,3000` (Ganeti's `uid_pool` syntax).
pub fn parse_uid_pool(text: &str) -> Result<Vec<(u32, u32)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| {
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            let n = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("`{r}` is not a uid or uid range"))
            };
            let (lo, hi) = (n(lo)?, n(hi)?);
            if lo > hi {
                return Err(format!("range `{r}` is descending"));
            }
            Ok((lo, hi))
        })
        .collect()
}
