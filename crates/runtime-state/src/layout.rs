//! The run directory and where each per-instance file lives in it.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{StateError, io};
use crate::lock::{InstanceLock, LockWait};

/// The sub-directories, as Ganeti has them.
pub const SUBDIRS: &[&str] = &[
    "pid",
    "uid",
    "ctrl",
    "conf",
    "nic",
    "chroot",
    "chroot-quarantine",
];

/// Sub-directories of our own: `log` (QEMU's stderr, console logs).
pub const OUR_SUBDIRS: &[&str] = &["log"];

/// A per-instance Unix socket in `ctrl/` (Ganeti's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Socket {
    /// `<name>.qmp`: the control QMP monitor.
    Qmp,
    /// `<name>.kvmd`: the monitor daemon's QMP monitor.
    Kvmd,
    /// `<name>.qmp-user`: a QMP monitor for users (`kvm-hypervisor qmp`,
    /// event streams), so they never hold the control monitor (ours).
    UserQmp,
    /// `<name>.monitor`: the human monitor (HMP).
    Monitor,
    /// `<name>.serial`: the serial console.
    Serial,
    /// `<name>.qga`: the QEMU guest agent.
    GuestAgent,
    /// `<name>.vnc`: a VNC server on a Unix socket.
    Vnc,
}

impl Socket {
    /// Every socket, in the order files are cleaned up.
    pub const ALL: [Socket; 7] = [
        Socket::Qmp,
        Socket::Kvmd,
        Socket::UserQmp,
        Socket::Monitor,
        Socket::Serial,
        Socket::GuestAgent,
        Socket::Vnc,
    ];

    /// The file name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Socket::Qmp => ".qmp",
            Socket::Kvmd => ".kvmd",
            Socket::UserQmp => ".qmp-user",
            Socket::Monitor => ".monitor",
            Socket::Serial => ".serial",
            Socket::GuestAgent => ".qga",
            Socket::Vnc => ".vnc",
        }
    }
}

/// The suffix of `ctrl/<name>.shutdown`, Ganeti's user-shutdown flag.
const SHUTDOWN_SUFFIX: &str = ".shutdown";

/// Per-instance files in `ctrl/`, by suffix.
pub const CTRL_SUFFIXES: &[&str] = &[
    ".qmp",
    ".kvmd",
    ".qmp-user",
    ".monitor",
    ".serial",
    ".qga",
    SHUTDOWN_SUFFIX,
    ".vnc",
];

/// The longest instance name accepted (a host name).
pub const MAX_NAME_LEN: usize = 64;

/// Mode of directories we create: no access for others (Ganeti uses 0775).
const DIR_MODE: u32 = 0o750;
/// Mode of `ctrl/`: its sockets give full control of the VMs.
const CTRL_MODE: u32 = 0o700;
/// Mode of runtime files.
pub const FILE_MODE: u32 = 0o600;

/// Why `name` cannot be an instance name, if it cannot: the one rule for
/// instance names (a host name: letters, digits, `.`, `-` and `_`, starting
/// with a letter or digit, no `..`, at most [`MAX_NAME_LEN`] bytes), so it is
/// safe as a file name and in QEMU's argv.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than a host name (64 bytes)")
    } else if name.contains('/') {
        Some("contains `/`")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.contains("..") {
        Some("contains `..`")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must start with a letter or digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        Some("may only contain letters, digits, `.`, `-` and `_`")
    } else {
        None
    }
}

/// Checks that `name` is a usable instance name ([`name_problem`]).
pub fn check_name(name: &str) -> Result<(), StateError> {
    match name_problem(name) {
        Some(why) => Err(StateError::BadName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Removes `path` if it exists, recording it in `done`.
fn remove_file(done: &mut Vec<PathBuf>, path: PathBuf) -> Result<(), StateError> {
    match std::fs::remove_file(&path) {
        Ok(()) => {
            done.push(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// A node's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The default location: `/run/kvm-hypervisor` for root,
    /// `$XDG_RUNTIME_DIR/kvm-hypervisor` otherwise (falling back to the
    /// temporary directory when that variable is unset).
    pub fn default_path() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            PathBuf::from("/run/kvm-hypervisor")
        } else {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join("kvm-hypervisor")
        }
    }

    /// Opens the run directory at `root`, creating it and its
    /// sub-directories when missing. An existing tree (for example Ganeti's
    /// `/var/run/ganeti/kvm-hypervisor`) is used as it is; a `ctrl/` that
    /// others can enter is logged as a warning, not changed.
    pub fn open(root: impl Into<PathBuf>) -> Result<RunDir, StateError> {
        let root = root.into();
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&root)
            .map_err(io("creating", &root))?;
        for sub in SUBDIRS.iter().chain(OUR_SUBDIRS) {
            let path = root.join(sub);
            let mode = if *sub == "ctrl" || *sub == "chroot" {
                CTRL_MODE
            } else {
                DIR_MODE
            };
            if !path.is_dir() {
                DirBuilder::new()
                    .mode(mode)
                    .create(&path)
                    .map_err(io("creating", &path))?;
            }
        }
        let ctrl = root.join("ctrl");
        if let Ok(meta) = std::fs::metadata(&ctrl)
            && meta.permissions().mode() & 0o007 != 0
        {
            tracing::warn!(path = %ctrl.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "control directory is accessible to others: its sockets give full control of the VMs");
        }
        Ok(RunDir { root })
    }

    /// The run directory at `root` for reading only: nothing is created,
    /// and a missing directory is an error.
    pub fn existing(root: impl Into<PathBuf>) -> Result<RunDir, StateError> {
        let root = root.into();
        std::fs::metadata(root.join("conf")).map_err(io("opening run directory", &root))?;
        Ok(RunDir { root })
    }

    /// The run directory at `root` without touching the file system, for
    /// computing paths (plans, tests); use [`RunDir::open`] before writing.
    pub fn at(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `pid/<name>`: QEMU's pid file.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.root.join("pid").join(name)
    }
    /// `uid/<name>`: the uid taken from the pool.
    pub fn uid_file(&self, name: &str) -> PathBuf {
        self.root.join("uid").join(name)
    }
    /// `conf/<name>.runtime`: the runtime record (ours or Ganeti's).
    pub fn runtime_file(&self, name: &str) -> PathBuf {
        self.root.join("conf").join(format!("{name}.runtime"))
    }
    /// `conf/<name>.migration`: the source's outgoing migration (target,
    /// policy, decisions), for `migration-status` and `migrate-cancel` from
    /// another process (our addition).
    pub fn migration_file(&self, name: &str) -> PathBuf {
        self.root.join("conf").join(format!("{name}.migration"))
    }
    /// `conf/<name>.lock`: the per-instance lock (our addition).
    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.root.join("conf").join(format!("{name}.lock"))
    }
    /// `ctrl/<name><suffix>`, e.g. `.qmp`, `.serial`.
    fn ctrl(&self, name: &str, suffix: &str) -> PathBuf {
        self.root.join("ctrl").join(format!("{name}{suffix}"))
    }
    /// The instance's socket `which` in `ctrl/`, e.g. `ctrl/<name>.qmp`.
    pub fn socket(&self, name: &str, which: Socket) -> PathBuf {
        self.ctrl(name, which.suffix())
    }
    /// `ctrl/<name>.shutdown`: the flag of a shutdown the guest asked for
    /// (written by the monitor daemon, read by Ganeti).
    pub fn shutdown_flag(&self, name: &str) -> PathBuf {
        self.ctrl(name, SHUTDOWN_SUFFIX)
    }
    /// `nic/<name>/`: one file per NIC, named by the NIC's UUID, holding the tap name.
    pub fn nic_dir(&self, name: &str) -> PathBuf {
        self.root.join("nic").join(name)
    }
    /// `nic/<name>/<nic uuid>`. Ganeti keys these by position, which drifts
    /// after a hot-remove (reference §11.3.5); a UUID does not.
    pub fn nic_file(&self, name: &str, nic_uuid: &str) -> PathBuf {
        self.nic_dir(name).join(nic_uuid)
    }
    /// `log/<name>.log`: QEMU's stderr (our addition; Ganeti's `-D` log
    /// lives elsewhere and misses what QEMU prints after daemonizing).
    pub fn qemu_log(&self, name: &str) -> PathBuf {
        self.root.join("log").join(format!("{name}.log"))
    }
    /// `log/<name>.console`: everything the guest wrote on its serial
    /// console, kept even while no console client is connected.
    pub fn console_log(&self, name: &str) -> PathBuf {
        self.root.join("log").join(format!("{name}.console"))
    }
    /// `chroot/<name>`: the empty directory QEMU is chrooted into.
    pub fn chroot_dir(&self, name: &str) -> PathBuf {
        self.root.join("chroot").join(name)
    }

    /// Takes the instance's exclusive lock.
    pub fn lock(&self, name: &str, wait: LockWait) -> Result<InstanceLock, StateError> {
        check_name(name)?;
        InstanceLock::acquire(&self.lock_file(name), name, wait)
    }

    /// Names of instances with a pid file or a runtime file, sorted.
    pub fn instances(&self) -> Result<Vec<String>, StateError> {
        let mut names = std::collections::BTreeSet::new();
        for (dir, suffix) in [("pid", ""), ("conf", ".runtime")] {
            let path = self.root.join(dir);
            let entries = std::fs::read_dir(&path).map_err(io("listing", &path))?;
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if crate::atomic::is_temp_name(&file) {
                    continue;
                }
                if let Some(name) = file.strip_suffix(suffix).filter(|n| !n.is_empty())
                    && (suffix.is_empty() || file.ends_with(suffix))
                    && check_name(name).is_ok()
                {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Removes every file of a stopped instance: pid, uid, runtime, control
    /// sockets and flags, NIC files, the lock; an empty chroot is removed, a
    /// non-empty one moved to `chroot-quarantine/<name>-<UTC time>-<random>`.
    /// Refuses while the instance's QEMU is alive. Returns what was removed or moved.
    pub fn cleanup(&self, name: &str) -> Result<Vec<PathBuf>, StateError> {
        check_name(name)?;
        if !self.has_files(name) {
            return Err(StateError::NoSuchInstance {
                instance: name.to_owned(),
            });
        }
        let lock = self.lock(name, LockWait::No)?;
        self.cleanup_locked(name, lock)
    }

    /// [`RunDir::cleanup`] for a caller that already holds the instance's
    /// lock (a stop); the lock is consumed, its file removed last.
    pub fn cleanup_locked(
        &self,
        name: &str,
        lock: InstanceLock,
    ) -> Result<Vec<PathBuf>, StateError> {
        self.cleanup_impl(name, lock, false, false)
    }

    /// [`RunDir::cleanup_locked`] that keeps the serial console log, for
    /// an instance that lives on after its stop (a defined one): the log
    /// stays readable until its next start truncates it.
    pub fn cleanup_keeping_console_log(
        &self,
        name: &str,
        lock: InstanceLock,
    ) -> Result<Vec<PathBuf>, StateError> {
        self.cleanup_impl(name, lock, false, true)
    }

    /// [`RunDir::cleanup_locked`] that keeps the runtime record: a reboot's
    /// stop, whose record must survive until the new QEMU runs.
    pub fn cleanup_keeping_record(
        &self,
        name: &str,
        lock: InstanceLock,
    ) -> Result<Vec<PathBuf>, StateError> {
        self.cleanup_impl(name, lock, true, false)
    }

    /// Whether the run directory holds any file of `name`.
    pub fn has_files(&self, name: &str) -> bool {
        let files = [
            self.pid_file(name),
            self.uid_file(name),
            self.runtime_file(name),
            self.lock_file(name),
            self.intent_file(name),
            self.migration_file(name),
            self.qemu_log(name),
            self.console_log(name),
            self.shutdown_flag(name),
            self.nic_dir(name),
            self.chroot_dir(name),
        ];
        let sockets = Socket::ALL.map(|s| self.socket(name, s));
        files
            .iter()
            .chain(&sockets)
            .any(|p| p.symlink_metadata().is_ok())
    }

    fn cleanup_impl(
        &self,
        name: &str,
        lock: InstanceLock,
        keep_record: bool,
        keep_console_log: bool,
    ) -> Result<Vec<PathBuf>, StateError> {
        check_name(name)?;
        if let crate::Liveness::Running { pid, .. } = crate::liveness(self, name) {
            return Err(StateError::StillRunning {
                instance: name.to_owned(),
                pid,
            });
        }
        let mut done = Vec::new();
        remove_file(&mut done, self.pid_file(name))?;
        remove_file(&mut done, self.uid_file(name))?;
        if !keep_record {
            remove_file(&mut done, self.runtime_file(name))?;
        }
        remove_file(&mut done, self.intent_file(name))?;
        remove_file(&mut done, self.migration_file(name))?;
        remove_file(&mut done, self.qemu_log(name))?;
        if !keep_console_log {
            remove_file(&mut done, self.console_log(name))?;
        }
        for suffix in CTRL_SUFFIXES {
            remove_file(&mut done, self.ctrl(name, suffix))?;
        }
        let nic_dir = self.nic_dir(name);
        if nic_dir.is_dir() {
            for entry in std::fs::read_dir(&nic_dir)
                .map_err(io("listing", &nic_dir))?
                .flatten()
            {
                remove_file(&mut done, entry.path())?;
            }
            std::fs::remove_dir(&nic_dir).map_err(io("removing", &nic_dir))?;
            done.push(nic_dir);
        }
        let chroot = self.chroot_dir(name);
        if chroot.is_dir() {
            match std::fs::remove_dir(&chroot) {
                Ok(()) => done.push(chroot),
                Err(_) => {
                    let random = uuid::Uuid::new_v4().simple().to_string();
                    let target = self.root.join("chroot-quarantine").join(format!(
                        "{name}-{}-{}",
                        crate::time::utc_stamp(std::time::SystemTime::now()),
                        &random[..8]
                    ));
                    std::fs::rename(&chroot, &target).map_err(io("quarantining", &chroot))?;
                    tracing::warn!(from = %chroot.display(), to = %target.display(), "chroot was not empty; quarantined");
                    done.push(target);
                }
            }
        }
        // Last: remove the lock file while holding it; waiters notice the
        // inode change and retry on a fresh file.
        remove_file(&mut done, lock.path().to_owned())?;
        drop(lock);
        Ok(done)
    }
}
