//! Starting an instance: plan (pure, [`plan`]), then execute
//! ([`execute`]), undoing every step in reverse ([`rollback`]) when one fails.

pub(crate) mod display;
pub(crate) mod execute;
pub(crate) mod keep;
pub(crate) mod plan;
pub(crate) mod rollback;

use std::path::{Path, PathBuf};

use serde::Serialize;

use self::execute::{StepError, commit, launch, post_start};
use self::plan::{PlanError, StartMode, plan_start};
use self::rollback::{Rollback, Undo};
use crate::caps::{self, CapsError};
use crate::cmdline::QemuCaps;
use crate::node::Node;
use crate::spec::InstanceSpec;
use crate::state::{self, Liveness, LockWait, StateError, UidPoolError};
use crate::timing::StepClock;
use crate::validate::{Finding, validate_on_host};

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
    #[error("instance {name}: no uid from the pool")]
    UidPool {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: UidPoolError,
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
    let how = How {
        mode: if opts.paused {
            StartMode::Paused
        } else {
            StartMode::Fresh
        },
        ..How::default()
    };
    start_with(node, spec, how).await
}

/// How a start is asked for, beyond the spec: its mode and the placements
/// and hot-plugged NICs an incoming migration keeps.
#[derive(Debug, Default)]
pub(crate) struct How {
    pub(crate) mode: StartMode,
    pub(crate) placements: std::collections::BTreeMap<String, device_slots::Placement>,
    pub(crate) hot_plugged_nics: std::collections::BTreeSet<String>,
    /// Ganeti's recorded argv, whose guest part is kept (an instance that
    /// Ganeti's KVM layer started, arriving here).
    pub(crate) guest_argv: Option<Vec<String>>,
}

/// [`start`] as `how` asks.
pub(crate) async fn start_with(
    node: &Node,
    spec: &InstanceSpec,
    how: How,
) -> Result<Started, StartError> {
    let name = spec.name().as_str();
    let lock = node.run.lock(name, LockWait::No)?;
    let result = start_locked(node, spec, how).await;
    // A start that failed before anything existed leaves not even its lock
    // file (removed while held; a waiter notices and retries on a new one).
    let nothing_there = !node.run.runtime_file(name).exists() && !node.run.pid_file(name).exists();
    if result.is_err() && nothing_there {
        let _ = std::fs::remove_file(lock.path());
    }
    drop(lock);
    result
}

async fn start_locked(node: &Node, spec: &InstanceSpec, how: How) -> Result<Started, StartError> {
    let name = spec.name().as_str();
    if let Liveness::Running { pid, .. } = state::liveness(&node.run, name) {
        return Err(StartError::AlreadyRunning {
            name: name.to_owned(),
            pid,
        });
    }
    let (plan, mut rb) = prepare(node, spec, how).await?;
    let log = node.run.qemu_log(name);
    match execute(node, spec, &plan, &mut rb, &log).await {
        Ok(pid) => {
            tracing::info!(instance = name, pid, "started");
            Ok(Started {
                name: name.to_owned(),
                pid,
                machine: plan.machine.clone(),
                accel: format!("{:?}", plan.accel).to_lowercase(),
                paused: plan.mode != StartMode::Fresh,
                balloon_mib: plan.post_start.iter().find_map(|s| match s {
                    plan::PostStartStep::Balloon { mib } => Some(*mib),
                    _ => None,
                }),
                warnings: plan.warnings.clone(),
            })
        }
        Err((step, source)) => {
            rb.run(None).await;
            let err = step_err(name, step, &log)(source);
            let _ = std::fs::remove_file(&log);
            Err(err)
        }
    }
}

/// Validates `spec` on this host and against its QEMU; the capabilities
/// and the planning environment.
async fn check(
    node: &Node,
    spec: &InstanceSpec,
    clock: &mut StepClock,
) -> Result<(QemuCaps, plan::PlanEnv), StartError> {
    let name = spec.name().as_str();
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
    clock.lap("validate-host");
    let caps = caps::capabilities(&binary, &node.cache_dir).await?.caps;
    clock.lap("capabilities");
    crate::host::add_qemu(&mut facts, spec, &caps);
    let report = validate_on_host(spec, &facts, Vec::new());
    if !report.is_valid() {
        return Err(invalid(report.problems));
    }
    clock.lap("validate-qemu");
    let taken: Vec<Finding> = spec
        .nics()
        .iter()
        .enumerate()
        .filter(|(_, n)| n.mode() == crate::spec::NicMode::Routed)
        .filter_map(|(i, n)| {
            let ip = n.ip()?;
            let owner = crate::node::routed_ip_owner(node, ip, name)?;
            Some(Finding {
                field: format!("nics[{i}].ip"),
                message: format!("{ip} is routed to instance {owner} already"),
            })
        })
        .collect();
    if !taken.is_empty() {
        return Err(invalid(taken));
    }
    let env = crate::host::plan_env(spec, &caps);
    Ok((caps, env))
}

/// Whether `spec` could start on this node now: every check of [`start`]
/// and a plan, with nothing started, taken or written. A reboot asks this
/// before it stops anything.
pub(crate) async fn check_startable(node: &Node, spec: &InstanceSpec) -> Result<(), StartError> {
    let mut clock = StepClock::start("check");
    let (caps, mut env) = check(node, spec, &mut clock).await?;
    // A pool uid is taken only by the real start; any user name plans alike.
    env.pool_user = Some("uid-pool-user".to_owned());
    plan_start(spec, &caps, &node.run, &env)
        .map(drop)
        .map_err(|source| StartError::Plan {
            name: spec.name().to_string(),
            source,
        })
}

/// Validates `spec` on this host and its QEMU, takes a uid from the pool
/// when asked to, and plans the start.
async fn prepare(
    node: &Node,
    spec: &InstanceSpec,
    how: How,
) -> Result<(plan::LaunchPlan, Rollback), StartError> {
    let name = spec.name().as_str();
    let mut clock = StepClock::start("start");
    let (caps, mut env) = check(node, spec, &mut clock).await?;
    env.mode = how.mode;
    env.ganeti_forms = node.shared_with_ganeti;
    env.placements = how.placements;
    env.hot_plugged_nics = how.hot_plugged_nics;
    let mut rb = Rollback::default();
    if spec.hvparams().security_model() == crate::hvparams::SecurityModel::Pool {
        env.pool_user = Some(allocate_uid(node, name)?);
        rb.push(Undo::RemoveFile(node.run.uid_file(name)));
    }
    let planned = plan_start(spec, &caps, &node.run, &env);
    clock.lap("plan");
    match planned {
        Ok(mut plan) => {
            if let Some(ganeti) = how.guest_argv {
                let devices: Vec<String> = plan
                    .disks
                    .iter()
                    .map(|d| d.device().id().to_string())
                    .chain(plan.nics.iter().map(|n| n.device().id().to_string()))
                    .collect();
                let run = node.run.root().display().to_string();
                plan.argv = keep::keep_guest(&ganeti, &plan.argv, &devices, &run);
                plan.guest_argv = Some(ganeti);
            }
            Ok((plan, rb))
        }
        Err(source) => {
            rb.run(None).await;
            Err(StartError::Plan {
                name: name.to_owned(),
                source,
            })
        }
    }
}

/// Launches, runs the post-start steps and writes the record; QEMU's pid.
async fn execute(
    node: &Node,
    spec: &InstanceSpec,
    plan: &plan::LaunchPlan,
    rb: &mut Rollback,
    log: &Path,
) -> Result<i32, StepError> {
    let mut clock = StepClock::start("start");
    let launched = launch(node, spec, plan, rb, log, &mut clock).await?;
    post_start(plan, &launched.qmp, launched.pid, &mut clock).await?;
    commit(node, spec, plan, &launched.taps)?;
    clock.lap("record");
    crate::instance::fault_point("commit", Some(launched.pid));
    Ok(launched.pid)
}

/// Takes the lowest free uid of the node's pool for `name`; QEMU runs as
/// that uid's user.
fn allocate_uid(node: &Node, name: &str) -> Result<String, StartError> {
    let user_of = |uid| {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid));
        user.ok().flatten().map(|u| u.name)
    };
    let (uid, user) = node
        .run
        .take_uid(name, &node.uid_pool, user_of)
        .map_err(|source| StartError::UidPool {
            name: name.to_owned(),
            source,
        })?;
    tracing::info!(instance = name, uid, user, "uid taken from the pool");
    Ok(user)
}
