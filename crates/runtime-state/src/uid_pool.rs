//! The node's uid pool for `security_model=pool` (Ganeti's `uid_pool`):
//! `uid/<name>` holds the uid an instance took; `uid/.pool.lock` serialises
//! takers and is removed while held, so the pool leaves no file behind.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::{FILE_MODE, InstanceLock, LockWait, RunDir, StateError, write_atomic};

/// Inclusive uid ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidPool(Vec<(u32, u32)>);

/// Why a uid pool cannot be parsed, or no uid can be taken from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UidPoolError {
    /// Not a uid or range.
    #[error("`{0}` is not a uid or uid range")]
    NotARange(String),
    /// A range whose end is below its start.
    #[error("range `{0}` is descending")]
    Descending(String),
    /// The pool is empty.
    #[error("security_model is `pool` but this node has no uid pool (--uid-pool)")]
    Empty,
    /// Every uid with a user is taken.
    #[error("every uid of the pool that has a user is taken")]
    Exhausted,
    /// The run directory.
    #[error(transparent)]
    State(#[from] StateError),
}

impl UidPool {
    /// Parses `2000-2099,3000` (Ganeti's `uid_pool` syntax).
    pub fn parse(text: &str) -> Result<UidPool, UidPoolError> {
        let ranges = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|r| {
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                let n = |s: &str| {
                    s.trim()
                        .parse::<u32>()
                        .map_err(|_| UidPoolError::NotARange(r.to_owned()))
                };
                let (lo, hi) = (n(lo)?, n(hi)?);
                if lo > hi {
                    return Err(UidPoolError::Descending(r.to_owned()));
                }
                Ok((lo, hi))
            })
            .collect::<Result<_, _>>()?;
        Ok(UidPool(ranges))
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// Whether the pool has no uid.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl RunDir {
    /// Takes the lowest free uid of `pool` that `user_of` names a user for,
    /// records it in `uid/<name>` and returns it with the user's name.
    /// Released by [`RunDir::cleanup`], so a reboot cannot leak it as
    /// Ganeti's does (reference §11.2.7).
    pub fn take_uid(
        &self,
        name: &str,
        pool: &UidPool,
        user_of: impl Fn(u32) -> Option<String>,
    ) -> Result<(u32, String), UidPoolError> {
        if pool.is_empty() {
            return Err(UidPoolError::Empty);
        }
        let dir = self.root().join("uid");
        let lock = InstanceLock::acquire(
            &dir.join(".pool.lock"),
            "uid pool",
            LockWait::Up(Duration::from_secs(10)),
        )?;
        let taken = self.take_free(name, pool, &dir, user_of);
        let _ = std::fs::remove_file(lock.path());
        drop(lock);
        taken
    }

    fn take_free(
        &self,
        name: &str,
        pool: &UidPool,
        dir: &std::path::Path,
        user_of: impl Fn(u32) -> Option<String>,
    ) -> Result<(u32, String), UidPoolError> {
        let used: BTreeSet<u32> = std::fs::read_dir(dir)
            .map_err(crate::error::io("listing", dir))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            .collect();
        let free = pool
            .0
            .iter()
            .flat_map(|&(lo, hi)| lo..=hi)
            .filter(|uid| !used.contains(uid))
            .find_map(|uid| Some((uid, user_of(uid)?)));
        let Some((uid, user)) = free else {
            return Err(UidPoolError::Exhausted);
        };
        write_atomic(
            &self.uid_file(name),
            format!("{uid}\n").as_bytes(),
            FILE_MODE,
        )?;
        Ok((uid, user))
    }
}
