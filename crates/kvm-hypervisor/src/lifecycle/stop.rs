//! Stopping an instance: ACPI power-down, then SIGTERM, then SIGKILL, each
//! awaited through a pidfd; only then the network goes down (Ganeti tears it
//! down while the guest still runs, reference §11.2.2) and the files go.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value as Json;

use crate::devices::nic_config_of;
use crate::instance::{ProcessExit, connect, kill_and_wait};
use crate::net::{NicConfig, TapName};
use crate::node::Node;
use crate::state::{self, Liveness, LockWait, RuntimeRecord, Socket, StateError};
use qmp_protocol::EventFilter;

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
    /// QEMU exited during the stop, but not by the guest's power-off nor by
    /// our signals: someone else ended it.
    Exited,
}

impl Ending {
    /// How it ended, as a person reads it (`powered off`).
    pub fn describe(self) -> &'static str {
        match self {
            Ending::NotRunning => "was not running",
            Ending::Graceful => "powered off",
            Ending::Terminated => "terminated (SIGTERM)",
            Ending::Killed => "killed (SIGKILL)",
            Ending::Exited => "exited, ended by someone else during the stop",
        }
    }
}

/// Why a stop failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// The run directory or the lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// Not running: nothing to press the power button of.
    #[error("instance {0} is not running")]
    NotRunning(String),
    /// The power button could not be pressed.
    #[error("pressing {name}'s power button: {source}")]
    PowerButton {
        /// The instance.
        name: String,
        /// The cause.
        source: Box<qmp_protocol::QmpError>,
    },
    /// QEMU survived SIGKILL (an uninterruptible sleep).
    #[error("instance {name}: QEMU (pid {pid}) did not exit even after SIGKILL")]
    Unkillable {
        /// The instance.
        name: String,
        /// Its pid.
        pid: i32,
    },
}

/// Presses `name`'s ACPI power button and returns: the guest powers off in
/// its own time (`stop --no-wait`). What is left once QEMU has exited is
/// cleaned up by the next `stop` or `cleanup`, and `info` says
/// `shutdown-by-guest` meanwhile when the monitor runs.
pub async fn press_power_button(node: &Node, name: &str) -> Result<(), StopError> {
    state::check_name(name)?;
    if !matches!(state::liveness(&node.run, name), Liveness::Running { .. }) {
        return Err(StopError::NotRunning(name.to_owned()));
    }
    let err = |source| StopError::PowerButton {
        name: name.to_owned(),
        source: Box::new(source),
    };
    let qmp = connect(&node.run.socket(name, Socket::Qmp), Duration::from_secs(15))
        .await
        .map_err(err)?;
    qmp.execute(qmp_protocol::SystemPowerdown)
        .await
        .map_err(err)?;
    tracing::info!(instance = name, "power button pressed");
    Ok(())
}

/// Stops `name`: ACPI power-down (when ACPI is on and not `force`), wait up
/// to `timeout`, then SIGTERM, then SIGKILL; then the NICs are taken down and
/// every file removed. Needs no runtime record.
pub async fn stop(node: &Node, name: &str, opts: StopOptions) -> Result<Ending, StopError> {
    stop_impl(node, name, opts, false).await
}

/// [`stop`] that keeps the runtime record, for a reboot: the record goes
/// only when a new QEMU has replaced it.
pub(crate) async fn stop_keeping_record(
    node: &Node,
    name: &str,
    opts: StopOptions,
) -> Result<Ending, StopError> {
    stop_impl(node, name, opts, true).await
}

async fn stop_impl(
    node: &Node,
    name: &str,
    opts: StopOptions,
    keep_record: bool,
) -> Result<Ending, StopError> {
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
    // The network goes down only now that QEMU is gone, and its cgroup.
    if let Some(r) = &record {
        deconfigure_nics(node, name, r).await;
    }
    crate::cgroup::remove(name);
    let defined = node.config.as_ref().is_some_and(|c| c.is_defined(name));
    let _ = if keep_record {
        node.run.cleanup_keeping_record(name, lock)
    } else if defined {
        node.run.cleanup_keeping_console_log(name, lock)
    } else {
        node.run.cleanup_locked(name, lock)
    };
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
        match power_down(node, name, &exit, timeout).await {
            Ok(Some(ending)) => return Ok(ending),
            Ok(None) => {
                tracing::info!(instance = name, ?timeout, "guest did not power off in time")
            }
            Err(e) => tracing::info!(instance = name, error = %e, "ACPI power-down not possible"),
        }
    }
    if exit.done() {
        // Gone, and not by our hand: someone else ended it.
        return Ok(Ending::Exited);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    if exit.wait(Duration::from_secs(10)).await {
        return Ok(Ending::Terminated);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    if exit.wait(Duration::from_secs(10)).await {
        return Ok(Ending::Killed);
    }
    Err(StopError::Unkillable {
        name: name.to_owned(),
        pid,
    })
}

/// Presses the ACPI power button and waits up to `timeout` for QEMU to
/// exit: `Graceful` when the guest shut itself down (QEMU's `SHUTDOWN`
/// event says so before it exits), `Exited` when QEMU went away otherwise
/// (killed by someone else meanwhile), `None` when it still runs.
async fn power_down(
    node: &Node,
    name: &str,
    exit: &ProcessExit,
    timeout: Duration,
) -> Result<Option<Ending>, qmp_protocol::QmpError> {
    // The control monitor may be busy (a hotplug waiting for the guest):
    // waiting for it is part of the stop's own deadline.
    let qmp = connect(&node.run.socket(name, Socket::Qmp), timeout).await?;
    let mut shutdown = qmp.listen(EventFilter::new("SHUTDOWN"));
    match qmp.execute(qmp_protocol::SystemPowerdown).await {
        Ok(()) => {}
        // QEMU went away under us (killed meanwhile): it is exiting, and
        // not by the guest's hand.
        Err(qmp_protocol::QmpError::Disconnected { .. }) if exit.wait(timeout).await => {
            return Ok(Some(Ending::Exited));
        }
        Err(e) => return Err(e),
    }
    crate::instance::fault_point("powerdown", Some(exit.pid()));
    if !exit.wait(timeout).await {
        return Ok(None);
    }
    // QEMU sends SHUTDOWN before it exits; it is already here or never comes.
    let by_guest = matches!(
        shutdown.wait(Duration::from_millis(100)).await,
        Ok(ev) if ev.data.get("guest").and_then(Json::as_bool) == Some(true)
    );
    Ok(Some(if by_guest {
        Ending::Graceful
    } else {
        Ending::Exited
    }))
}

async fn deconfigure_nics(node: &Node, name: &str, r: &RuntimeRecord) {
    let nics: Vec<(NicConfig, TapName)> = r
        .nics
        .iter()
        .enumerate()
        .filter_map(|(i, n)| nic_config_of(name, n, i))
        .collect();
    let mut setup = crate::nicsetup::NicSetup::for_node(node);
    for (nic, tap) in nics {
        if let Err(e) = setup.down(&nic, &tap).await {
            tracing::warn!(instance = name, tap = %tap, error = %e, "NIC down configuration failed");
        }
    }
}

/// Removes every file of a stopped (or crashed) instance, taking down first
/// the NIC configuration (bridge ports, routes, rules) its record names, so
/// nothing of a killed QEMU lingers on the host; refuses a live one.
pub async fn cleanup(node: &Node, name: &str) -> Result<Vec<std::path::PathBuf>, StateError> {
    state::check_name(name)?;
    if let Liveness::Running { pid, .. } = state::liveness(&node.run, name) {
        return Err(StateError::StillRunning {
            instance: name.to_owned(),
            pid,
        });
    }
    if let Ok(Some(file)) = node.run.read_runtime(name) {
        deconfigure_nics(node, name, &file.record()).await;
    }
    crate::cgroup::remove(name);
    node.run.cleanup(name)
}
