//! The errors of this crate.

use std::path::PathBuf;

/// What can go wrong with the run directory and runtime files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// An instance name that cannot be a file name.
    #[error("`{name}` is not a usable instance name: it {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why not.
        why: &'static str,
    },
    /// A file-system operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("creating", "reading", …).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another operation holds the instance's lock.
    #[error("instance {instance} is busy: another operation holds its lock")]
    Busy {
        /// The instance.
        instance: String,
    },
    /// The lock was not released before the deadline.
    #[error("instance {instance} is busy: its lock was not released within {waited_ms} ms")]
    LockTimeout {
        /// The instance.
        instance: String,
        /// How long we waited.
        waited_ms: u128,
    },
    /// A runtime file that is neither our record nor any Ganeti form.
    #[error("{}: not a runtime file: {reason}", path.display())]
    BadRuntime {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record written by a newer version of this program.
    #[error("{}: runtime record version {found} is newer than this program's {supported}", path.display())]
    NewerRecord {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version understood.
        supported: u32,
    },
    /// The run directory has no file of this instance.
    #[error("instance {instance} has no files in the run directory")]
    NoSuchInstance {
        /// The instance.
        instance: String,
    },
    /// A live instance cannot be cleaned up.
    #[error("instance {instance} is running (pid {pid}); stop it before cleaning up")]
    StillRunning {
        /// The instance.
        instance: String,
        /// Its QEMU pid.
        pid: i32,
    },
}

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.into();
    move |source| StateError::Io { op, path, source }
}
