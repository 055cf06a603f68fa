//! Ganeti-compatible QEMU device ids.

use std::fmt;

use crate::SlotError;

/// What kind of device an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// A disk (`disk-…`, legacy `hotdisk-…`).
    Disk,
    /// A NIC (`nic-…`, legacy `hotnic-…`).
    Nic,
}

impl DeviceKind {
    fn prefix(self) -> &'static str {
        match self {
            DeviceKind::Disk => "disk",
            DeviceKind::Nic => "nic",
        }
    }
}

/// The longest QEMU device id accepted.
pub const MAX_ID_LEN: usize = 32;

/// A QEMU device id: a letter first, then letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Ganeti's id for a device: `disk-`/`nic-` and the UUID without its last
    /// two groups (`disk-7c079136-2573-4112`).
    pub fn for_device(kind: DeviceKind, uuid: &str) -> Result<DeviceId, SlotError> {
        let groups: Vec<&str> = uuid.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] || !uuid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()) {
            return Err(SlotError::BadUuid(uuid.to_owned()));
        }
        Ok(DeviceId(format!(
            "{}-{}",
            kind.prefix(),
            groups[..3].join("-")
        )))
    }

    /// Accepts any valid QEMU id, e.g. one read from a runtime file
    /// (including Ganeti's legacy `hotdisk-7c079136-pci-5`).
    pub fn parse(id: &str) -> Result<DeviceId, SlotError> {
        let ok = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id.starts_with(|c: char| c.is_ascii_alphabetic())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(DeviceId(id.to_owned()))
        } else {
            Err(SlotError::BadId(id.to_owned()))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind, from the prefix (new or legacy style).
    pub fn kind(&self) -> Option<DeviceKind> {
        let head = self.0.split('-').next().unwrap_or_default();
        match head {
            "disk" | "hotdisk" => Some(DeviceKind::Disk),
            "nic" | "hotnic" => Some(DeviceKind::Nic),
            _ => None,
        }
    }

    /// For a legacy `hot<kind>-<uuid group>-pci-<slot>` id, its PCI slot.
    pub fn legacy_slot(&self) -> Option<u8> {
        if !self.0.starts_with("hot") {
            return None;
        }
        let (_, slot) = self.0.rsplit_once("-pci-")?;
        slot.parse().ok()
    }

    /// An fd name for `getfd`, unique per hotplug attempt (`<id>-<tag>-<n>`).
    pub fn fd_name(&self, tag: &str, n: usize) -> String {
        format!("{}-{tag}-{n}", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
