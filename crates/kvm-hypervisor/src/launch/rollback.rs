//! Undoing what an operation did, in reverse order: one helper for start,
//! hotplug and (later) migration.

use std::path::PathBuf;
use std::time::Duration;

use qmp_protocol::{BlockdevDel, Client, CloseFd, DeviceDel, NetdevDel, RemoveFd};

use crate::instance::kill_and_wait;
use crate::net::{Netlink, NicConfig, TapName};

/// One thing to undo if a later step fails.
#[derive(Debug)]
#[non_exhaustive]
pub enum Undo {
    /// Remove a file we created.
    RemoveFile(PathBuf),
    /// Remove an (empty) directory we created.
    RemoveDir(PathBuf),
    /// Put a file back as it was: its old contents, or none.
    RestoreFile {
        /// The file.
        path: PathBuf,
        /// What it held before; `None`: it did not exist.
        contents: Option<Vec<u8>>,
    },
    /// Take a NIC's host network configuration down.
    NicDown(Box<(NicConfig, TapName, Option<std::path::PathBuf>)>),
    /// Kill a QEMU we spawned (SIGKILL, awaited).
    Kill(i32),
    /// `blockdev-del` a node we added.
    BlockdevDel(String),
    /// `remove-fd` a set we added.
    RemoveFd(i64),
    /// `closefd` a descriptor we passed with `getfd`.
    CloseFd(String),
    /// `netdev_del` a backend we added.
    NetdevDel(String),
    /// `device_del` a device we added.
    DeviceDel(String),
}

/// The undo steps of one operation, run in reverse on failure.
#[derive(Debug, Default)]
pub struct Rollback {
    steps: Vec<Undo>,
}

impl Rollback {
    /// Records a step to undo.
    pub fn push(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Forgets undo steps that no longer apply (e.g. `closefd` after
    /// `netdev_add` consumed the descriptors).
    pub fn retain(&mut self, keep: impl Fn(&Undo) -> bool) {
        self.steps.retain(keep);
    }

    /// Undoes every step in reverse order. QMP steps need `qmp`; a step
    /// that fails is logged and the rest still run.
    pub async fn run(self, qmp: Option<&Client>) {
        let mut netlink: Option<Netlink> = None;
        for step in self.steps.into_iter().rev() {
            if let Err(e) = undo(step, qmp, &mut netlink).await {
                tracing::warn!(error = %e, "undoing a step failed");
            }
        }
    }
}

async fn undo(
    step: Undo,
    qmp: Option<&Client>,
    netlink: &mut Option<Netlink>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match step {
        Undo::RemoveFile(p) => {
            let _ = std::fs::remove_file(p);
        }
        Undo::RemoveDir(p) => {
            let _ = std::fs::remove_dir(p);
        }
        Undo::RestoreFile { path, contents } => match contents {
            Some(bytes) => crate::state::write_atomic(&path, &bytes, crate::state::FILE_MODE)?,
            None => {
                let _ = std::fs::remove_file(path);
            }
        },
        Undo::NicDown(boxed) => {
            let (nic, tap, script) = *boxed;
            match script {
                Some(script) => {
                    crate::nicsetup::NicSetup::new(Some(&script))
                        .down(&nic, &tap)
                        .await?;
                }
                None => {
                    if netlink.is_none() {
                        *netlink = Some(Netlink::new()?);
                    }
                    if let Some(nl) = netlink {
                        crate::net::deconfigure_native(nl, &nic, &tap).await?;
                    }
                }
            }
        }
        Undo::Kill(pid) => {
            let signal = nix::sys::signal::Signal::SIGKILL;
            kill_and_wait(pid, signal, Duration::from_secs(10)).await;
        }
        Undo::BlockdevDel(id) => qmp_step(qmp)?.execute(BlockdevDel::new(id)).await?,
        Undo::RemoveFd(set) => qmp_step(qmp)?.execute(RemoveFd::set(set)).await?,
        Undo::CloseFd(n) => qmp_step(qmp)?.execute(CloseFd::new(n)).await?,
        Undo::NetdevDel(id) => qmp_step(qmp)?.execute(NetdevDel::new(id)).await?,
        Undo::DeviceDel(id) => qmp_step(qmp)?.execute(DeviceDel::new(id)).await?,
    }
    Ok(())
}

fn qmp_step(qmp: Option<&Client>) -> Result<&Client, &'static str> {
    qmp.ok_or("no monitor to undo a QMP step with")
}
