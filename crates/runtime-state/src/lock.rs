//! Per-instance exclusive locks (`flock` through std's `File::lock`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{StateError, io};

/// How to behave when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once with [`StateError::Busy`].
    No,
    /// Wait at most this long, then fail with [`StateError::LockTimeout`].
    Up(Duration),
}

/// An exclusive lock on one instance; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock file at `path` for `instance`.
    ///
    /// A lock file removed by a cleanup while we waited is detected (its inode
    /// is no longer the one at `path`) and the lock is taken again on the new
    /// file, so cleanup may delete lock files safely.
    pub fn acquire(
        path: &Path,
        instance: &str,
        wait: LockWait,
    ) -> Result<InstanceLock, StateError> {
        let start = Instant::now();
        loop {
            let file = open(path)?;
            let file = match wait {
                LockWait::No => match file.try_lock() {
                    Ok(()) => file,
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(StateError::Busy {
                            instance: instance.to_owned(),
                        });
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", path)(e)),
                },
                LockWait::Up(limit) => {
                    let left = limit.saturating_sub(start.elapsed());
                    wait_for_lock(file, left).map_err(|e| match e {
                        WaitError::Timeout => StateError::LockTimeout {
                            instance: instance.to_owned(),
                            waited_ms: limit.as_millis(),
                        },
                        WaitError::Io(e) => io("locking", path)(e),
                    })?
                }
            };
            let same = match (file.metadata(), std::fs::metadata(path)) {
                (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
                _ => false,
            };
            if same {
                return Ok(InstanceLock {
                    _file: file,
                    path: path.to_owned(),
                });
            }
            tracing::debug!(path = %path.display(), "lock file replaced while waiting; retrying");
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io("opening lock file", path))
}

enum WaitError {
    Timeout,
    Io(std::io::Error),
}

/// Blocks in a helper thread so the wait can have a deadline without
/// polling. If the deadline passes, the thread's eventual lock is dropped
/// (and so released) as soon as it is taken, because nobody receives it.
fn wait_for_lock(file: File, limit: Duration) -> Result<File, WaitError> {
    if file.try_lock().is_ok() {
        return Ok(file);
    }
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let result = file.lock().map(|()| file);
        let _ = tx.send(result);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(WaitError::Io(e)),
        Err(_) => Err(WaitError::Timeout),
    }
}
