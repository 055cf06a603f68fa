//! A running instance as operations see it: its lock, its runtime record and
//! a QMP session, plus the primitives every operation shares (connecting to
//! a monitor, waiting for a process to exit).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use qmp_protocol::{Client, Handshake, QmpError};

use crate::node::Node;
use crate::state::{self, InstanceLock, Liveness, LockWait, RuntimeRecord, Socket, StateError};
use crate::timing::StepClock;

/// Why a running instance cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The run directory, the name or the lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// Nothing is known of the instance: not running, no runtime record.
    #[error("instance {0} is not running and has no runtime record")]
    Unknown(String),
    /// QEMU is not running.
    #[error("instance {0} is not running")]
    NotRunning(String),
    /// The instance's start was interrupted; only stop or cleanup apply.
    #[error("instance {0} is incomplete (its start was interrupted): stop or clean it up first")]
    Incomplete(String),
    /// QEMU runs but there is no runtime record.
    #[error("instance {0} has no runtime record")]
    NoRecord(String),
    /// QEMU does not answer its monitor.
    #[error("instance {name} does not answer its monitor (it is probably going down)")]
    Monitor {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: Box<QmpError>,
    },
}

/// A running instance, locked, with its record and a QMP session.
pub struct Instance<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its name.
    pub name: String,
    /// Its runtime record, as read at open and changed since.
    pub record: RuntimeRecord,
    /// The QMP session on its control monitor.
    pub qmp: Client,
    /// QEMU's pid.
    pub pid: i32,
    _lock: InstanceLock,
}

/// The runtime record of running instance `name`, which must be complete
/// (its start finished).
pub(crate) fn complete_record(node: &Node, name: &str) -> Result<RuntimeRecord, OpenError> {
    let record = node
        .run
        .read_runtime(name)?
        .map(|f| f.record())
        .ok_or_else(|| OpenError::NoRecord(name.to_owned()))?;
    if record.incomplete {
        return Err(OpenError::Incomplete(name.to_owned()));
    }
    Ok(record)
}

impl<'a> Instance<'a> {
    /// Locks `name` (waiting up to `lock_wait`), reads its record and
    /// connects to its monitor (within `monitor_wait`).
    pub async fn open(
        node: &'a Node,
        name: &str,
        lock_wait: Duration,
        monitor_wait: Duration,
    ) -> Result<Instance<'a>, OpenError> {
        state::check_name(name)?;
        let mut clock = StepClock::start("open");
        let lock = node.run.lock(name, LockWait::Up(lock_wait))?;
        clock.lap("lock");
        let Liveness::Running { pid, .. } = state::liveness(&node.run, name) else {
            // A stale intent of a QEMU that is gone means nothing any more.
            node.run.clear_intent(name);
            if !node.run.runtime_file(name).exists() {
                // Nothing of the instance exists: not even its lock file
                // stays (removed while held; a waiter retries on a new one).
                let _ = std::fs::remove_file(lock.path());
                return Err(OpenError::Unknown(name.to_owned()));
            }
            return Err(OpenError::NotRunning(name.to_owned()));
        };
        let record = complete_record(node, name)?;
        clock.lap("record");
        let qmp = connect(&node.run.socket(name, Socket::Qmp), monitor_wait)
            .await
            .map_err(|source| OpenError::Monitor {
                name: name.to_owned(),
                source: Box::new(source),
            })?;
        clock.lap("connect");
        Ok(Instance {
            node,
            name: name.to_owned(),
            record,
            qmp,
            pid,
            _lock: lock,
        })
    }

    /// Writes the record back, in the node's format for its origin.
    pub fn save(&self) -> Result<(), StateError> {
        self.node.write_record(&self.name, &self.record)
    }
}

/// Connects to a monitor socket and negotiates, within `timeout`.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, QmpError> {
    match tokio::time::timeout(timeout, async {
        Handshake::connect(path).await?.negotiate().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(QmpError::Timeout {
            command: "qmp_capabilities".into(),
            timeout,
        }),
    }
}

/// Kills `pid` with `signal` and waits for it to exit, at most `limit`:
/// `None` when it does not exist, else whether it exited in time.
pub(crate) async fn kill_and_wait(
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
    pid: i32,
}

impl ProcessExit {
    /// Watches `pid`; `None` when it does not exist.
    pub fn watch(pid: i32) -> Option<ProcessExit> {
        let fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid)?,
            rustix::process::PidfdFlags::empty(),
        )
        .ok()?;
        // SAFETY: the descriptor is owned by the AsyncFd and closed only
        // when it is dropped, after deregistration.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
        .map(|fd| ProcessExit { fd, pid })
    }

    /// The pid watched.
    pub fn pid(&self) -> i32 {
        self.pid
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

/// Environment variable naming a step after which the process kills itself
/// with SIGKILL (a test hook for crash recovery), e.g. `spawn`; the same as
/// [`FAULT_ENV`] with `STEP:kill-cli`.
pub const CRASH_HOOK_ENV: &str = "KVM_HYPERVISOR_TEST_CRASH_AFTER";

/// Environment variable of the fault-injection hook: `STEP:FAULT`, where
/// FAULT is `kill-cli` (this process dies with SIGKILL), `kill-qemu`
/// (QEMU gets SIGKILL) or `stop-qemu` (QEMU gets SIGSTOP) right after STEP.
/// Steps: start `record`, `nic-up`, `spawn`, `monitor`, `cont`, `commit`;
/// stop `powerdown`; reboot `reboot-stopped`; hotplug `add-fd`,
/// `blockdev-add`, `device_add`, `netdev_add`, `device_del`.
pub const FAULT_ENV: &str = "KVM_HYPERVISOR_TEST_FAULT";

/// Injects the fault [`FAULT_ENV`] (or [`CRASH_HOOK_ENV`]) names for `step`;
/// `qemu` is QEMU's pid where one runs. Nothing happens without them.
pub(crate) fn fault_point(step: &str, qemu: Option<i32>) {
    use nix::sys::signal::{Signal, kill, raise};
    if std::env::var(CRASH_HOOK_ENV).is_ok_and(|s| s == step) {
        tracing::warn!(step, "test hook: killing this process");
        let _ = raise(Signal::SIGKILL);
    }
    let Ok(spec) = std::env::var(FAULT_ENV) else {
        return;
    };
    let Some((at, fault)) = spec.split_once(':') else {
        return;
    };
    if at != step {
        return;
    }
    tracing::warn!(step, fault, "test hook: injecting a fault");
    let qemu = qemu.map(nix::unistd::Pid::from_raw);
    match (fault, qemu) {
        ("kill-cli", _) => {
            let _ = raise(Signal::SIGKILL);
        }
        ("kill-qemu", Some(pid)) => {
            let _ = kill(pid, Signal::SIGKILL);
        }
        ("stop-qemu", Some(pid)) => {
            let _ = kill(pid, Signal::SIGSTOP);
        }
        _ => {}
    }
}

/// The hvparams of a running instance, from its record.
pub fn record_hvparams(record: &crate::state::RuntimeRecord) -> crate::hvparams::HvParams {
    crate::hvparams::HvParams::parse(&record.hvparams).0
}
