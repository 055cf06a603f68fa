//! `assess`: advisory warnings (Ganeti's `AssessParameters`), plus a few of
//! our own about open consoles.

use std::fmt;

use crate::enums::*;
use crate::params::HvParams;

/// An advisory warning about one hvparam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    param: &'static str,
    kind: WarningKind,
}

impl Warning {
    /// The hvparam concerned.
    pub fn param(&self) -> &'static str {
        self.param
    }
    /// What the warning is about.
    pub fn kind(&self) -> &WarningKind {
        &self.kind
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.kind)
    }
}

/// The advisory warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarningKind {
    /// `cpu_type` is empty.
    #[error(
        "unset, so QEMU's default `qemu64` model is used: it hides CPU features from the guest (security mitigations and performance)"
    )]
    CpuTypeUnset,
    /// `cpu_type` is a generic model.
    #[error("`{0}` hides CPU features from the guest (security mitigations and performance)")]
    CpuTypeGeneric(String),
    /// `cpu_type` is `host`.
    #[error("`host` needs the same CPU on every node an instance may migrate to")]
    CpuTypeHost,
    /// `vhost_net` is off.
    #[error("off; vhost-net improves paravirtual NIC latency and throughput")]
    VhostNetOff,
    /// `migration_bandwidth` is Ganeti's default.
    #[error("still the default 32 MiB/s; today's networks allow much more")]
    MigrationBandwidthDefault,
    /// `disk_type` is not paravirtual.
    #[error("`{0}` is slower than `paravirtual` (virtio) disks")]
    DiskTypeNotParavirtual(DiskType),
    /// `nic_type` is not paravirtual.
    #[error("`{0}` is slower than `paravirtual` (virtio) networking")]
    NicTypeNotParavirtual(NicType),
    /// VNC listens beyond localhost without TLS.
    #[error("VNC listens on `{0}` without TLS; consider vnc_tls")]
    VncWithoutTls(String),
    /// VNC listens beyond localhost without a password.
    #[error(
        "VNC listens on `{0}` without a password; anyone who can reach it controls the console"
    )]
    VncWithoutPassword(String),
    /// SPICE listens beyond localhost without TLS.
    #[error("SPICE listens on `{0}` without TLS; consider spice_use_tls")]
    SpiceWithoutTls(String),
    /// SPICE without a password disables ticketing.
    #[error(
        "SPICE on `{0}` has no password file, so ticketing is disabled and the console is open"
    )]
    SpiceWithoutPassword(String),
    /// `machine_version` is empty.
    #[error(
        "unset, so QEMU's default machine type is used; pin it to keep the guest ABI across QEMU upgrades"
    )]
    MachineVersionUnset,
    /// `machine_version` is the `pc` alias.
    #[error(
        "`pc` is an alias whose meaning changes with the QEMU version, which can break live migration"
    )]
    MachineVersionAlias,
    /// `machine_version` is a machine type Ganeti does not support.
    #[error("`{0}` is not a machine type for full guests")]
    MachineVersionUnsupported(String),
}

fn listens_beyond_localhost(bind: &str) -> bool {
    !bind.is_empty() && bind != "127.0.0.1" && bind != "::1" && !bind.starts_with('/')
}

impl HvParams {
    /// Advisory warnings, in parameter order. With every default, these are
    /// `cpu_type`, `migration_bandwidth` and `machine_version`, as in Ganeti.
    pub fn assess(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        let mut warn = |param, kind| out.push(Warning { param, kind });
        let vnc = self.vnc_bind_address();
        if listens_beyond_localhost(vnc) {
            if !self.vnc_tls() {
                warn(
                    "vnc_bind_address",
                    WarningKind::VncWithoutTls(vnc.to_owned()),
                );
            }
            if self.vnc_password_file().is_empty() {
                warn(
                    "vnc_bind_address",
                    WarningKind::VncWithoutPassword(vnc.to_owned()),
                );
            }
        }
        let spice = self.spice_bind();
        if listens_beyond_localhost(spice) && !self.spice_use_tls() {
            warn("spice_bind", WarningKind::SpiceWithoutTls(spice.to_owned()));
        }
        if !spice.is_empty() && self.spice_password_file().is_empty() {
            warn(
                "spice_bind",
                WarningKind::SpiceWithoutPassword(spice.to_owned()),
            );
        }
        if self.nic_type() != NicType::Paravirtual {
            warn(
                "nic_type",
                WarningKind::NicTypeNotParavirtual(self.nic_type()),
            );
        }
        if self.disk_type() != DiskType::Paravirtual {
            warn(
                "disk_type",
                WarningKind::DiskTypeNotParavirtual(self.disk_type()),
            );
        }
        if self.migration_bandwidth() == 32 {
            warn(
                "migration_bandwidth",
                WarningKind::MigrationBandwidthDefault,
            );
        }
        if !self.vhost_net() {
            warn("vhost_net", WarningKind::VhostNetOff);
        }
        match self.cpu_type() {
            "" => warn("cpu_type", WarningKind::CpuTypeUnset),
            "qemu32" | "qemu64" | "kvm32" | "kvm64" => warn(
                "cpu_type",
                WarningKind::CpuTypeGeneric(self.cpu_type().to_owned()),
            ),
            "host" => warn("cpu_type", WarningKind::CpuTypeHost),
            _ => {}
        }
        match self.machine_version() {
            "" => warn("machine_version", WarningKind::MachineVersionUnset),
            "pc" => warn("machine_version", WarningKind::MachineVersionAlias),
            m @ ("none" | "microvm" | "isapc" | "x-remote") => warn(
                "machine_version",
                WarningKind::MachineVersionUnsupported(m.to_owned()),
            ),
            _ => {}
        }
        out.sort_by_key(|w| crate::params::position(w.param).unwrap_or(usize::MAX));
        out
    }
}
