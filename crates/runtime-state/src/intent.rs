//! The hotplug intent journal: `conf/<name>.intent`, written before the
//! first QMP step of a device change, so the next operation can finish or
//! undo a change whose process died midway.

use serde::{Deserialize, Serialize};

use crate::{DiskRecord, NicRecord, RunDir, StateError, write_atomic};

/// What the interrupted operation was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentAction {
    /// Adding a device.
    Add,
    /// Removing a device.
    Remove,
}

/// The kind of device an intent is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentDevice {
    /// A disk.
    Disk,
    /// A NIC.
    Nic,
}

/// One device change in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Add or remove.
    pub action: IntentAction,
    /// Disk or NIC.
    pub kind: IntentDevice,
    /// The device's UUID.
    pub uuid: String,
    /// The QEMU id.
    pub id: String,
    /// The record entry to commit when an add of a disk is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskRecord>,
    /// The record entry to commit when an add of a NIC is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicRecord>,
    /// `getfd` names that QEMU may still hold.
    #[serde(default)]
    pub fd_names: Vec<String>,
}

impl RunDir {
    /// `conf/<name>.intent`.
    pub fn intent_file(&self, name: &str) -> std::path::PathBuf {
        self.root().join("conf").join(format!("{name}.intent"))
    }

    /// Records `intent` for `name`, atomically.
    pub fn write_intent(&self, name: &str, intent: &Intent) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(intent).unwrap_or_default();
        write_atomic(&self.intent_file(name), &text, crate::FILE_MODE)
    }

    /// The recorded intent of `name`; `None` when there is none (or it is
    /// unreadable: a torn intent is impossible, writes are atomic).
    pub fn read_intent(&self, name: &str) -> Option<Intent> {
        let bytes = std::fs::read(self.intent_file(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the intent of `name`.
    pub fn clear_intent(&self, name: &str) {
        let _ = std::fs::remove_file(self.intent_file(name));
    }
}
