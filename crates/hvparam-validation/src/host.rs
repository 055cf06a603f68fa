//! `validate`: the parameters against facts about this host, passed in as
//! data (Ganeti's `ValidateParameters`). Nothing here touches the system.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use crate::enums::*;
use crate::params::{HvParams, Rule, params};
use crate::problem::{Problem, ProblemKind, Problems};
use crate::{CpuMask, Kind};

/// What a path on the host turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing is there.
    Missing,
    /// A regular file (after following symlinks).
    File,
    /// A directory (after following symlinks).
    Dir,
    /// Something else: a device node, a socket, a FIFO.
    Other,
}

/// What a QEMU binary reported about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuFacts {
    /// `major.minor.micro`.
    pub version: (u32, u32, u32),
    /// Machine type names and their aliases (`pc`, `pc-i440fx-7.2`, `q35`, …).
    pub machines: BTreeSet<String>,
    /// Device driver names (`virtio-blk-pci`, `e1000`, …).
    pub devices: BTreeSet<String>,
    /// CPU model names, when known.
    pub cpu_models: Option<BTreeSet<String>>,
    /// Migration capability names, when known.
    pub migration_capabilities: Option<BTreeSet<String>>,
    /// Whether SPICE is compiled in.
    pub spice: bool,
}

impl QemuFacts {
    fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }
}

/// Facts about the host that validation needs. Gather what
/// [`HvParams::facts_wanted`] asks for; anything left out is reported as
/// not checked rather than guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// What the QEMU binary named by `kvm_path` reports; `None` when it was not probed.
    pub qemu: Option<QemuFacts>,
    /// Network interfaces and their addresses; `None` when not gathered.
    pub interfaces: Option<BTreeMap<String, Vec<IpAddr>>>,
    /// What each wanted path is.
    pub paths: BTreeMap<PathBuf, PathKind>,
    /// Each wanted user name and whether it exists.
    pub users: BTreeMap<String, bool>,
    /// The number of online CPUs; `None` when not gathered.
    pub online_cpus: Option<u32>,
}

/// What facts validation of some parameters needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactsWanted {
    /// Paths to look at.
    pub paths: BTreeSet<PathBuf>,
    /// User names to look up.
    pub users: BTreeSet<String>,
    /// Whether interface names are involved.
    pub interfaces: bool,
}

/// [`Unchecked::missing`] of checks that need the QEMU binary's
/// capabilities ([`HostFacts::qemu`]).
pub const MISSING_QEMU_CAPS: &str = "QEMU capabilities";

/// A check that could not run for want of a fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    /// The parameter.
    pub param: &'static str,
    /// What was missing.
    pub missing: &'static str,
}

/// The outcome of [`HvParams::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Problems found, sorted.
    pub problems: Vec<Problem>,
    /// Checks skipped for want of facts, in parameter order.
    pub unchecked: Vec<Unchecked>,
}

impl Validation {
    /// `Ok` when no problem was found (some checks may still be unchecked).
    pub fn into_result(self) -> Result<Vec<Unchecked>, Problems> {
        Problems::sorted(self.problems).into_result(self.unchecked)
    }
}

impl HvParams {
    /// The facts [`HvParams::validate`] needs for these parameters.
    pub fn facts_wanted(&self) -> FactsWanted {
        let mut wanted = FactsWanted::default();
        for def in params() {
            if !matches!(def.rule(), Rule::File | Rule::Dir | Rule::FileOrUrl) {
                continue;
            }
            let Some(value) = self.get_json(def.name()) else {
                continue;
            };
            let s = value.as_str().unwrap_or_default();
            if !s.is_empty() && crate::check::is_norm_abs_path(s) {
                wanted.paths.insert(PathBuf::from(s));
            }
        }
        if self.security_model() == SecurityModel::User && !self.security_domain().is_empty() {
            wanted.users.insert(self.security_domain().to_owned());
        }
        wanted.interfaces = [self.vnc_bind_address(), self.spice_bind()]
            .iter()
            .any(|s| bind_interface(s).is_some());
        wanted
    }

    /// Validates against host facts: files and directories exist, users and
    /// interfaces exist, QEMU offers the machine type, devices and features
    /// asked for. Syntax problems are [`HvParams::check`]'s business and are
    /// not repeated here.
    pub fn validate(&self, facts: &HostFacts) -> Validation {
        let mut v = Validation {
            problems: Vec::new(),
            unchecked: Vec::new(),
        };
        self.validate_paths(facts, &mut v);
        self.validate_users(facts, &mut v);
        self.validate_binds(facts, &mut v);
        self.validate_cpus(facts, &mut v);
        match &facts.qemu {
            Some(qemu) => self.validate_qemu(qemu, &mut v.problems),
            None => {
                for param in [
                    "spice_bind",
                    "disk_type",
                    "nic_type",
                    "disk_aio",
                    "cpu_type",
                    "machine_version",
                    "migration_caps",
                ] {
                    v.unchecked.push(Unchecked {
                        param,
                        missing: MISSING_QEMU_CAPS,
                    });
                }
            }
        }
        v.problems = Problems::sorted(v.problems).into_vec();
        v.unchecked
            .sort_by_key(|u| crate::params::position(u.param).unwrap_or(usize::MAX));
        v
    }

    fn validate_paths(&self, facts: &HostFacts, v: &mut Validation) {
        for def in params() {
            let want_dir = match def.rule() {
                Rule::File | Rule::FileOrUrl => false,
                Rule::Dir => true,
                _ => continue,
            };
            if def.kind() != Kind::String {
                continue;
            }
            let value = self.get_json(def.name()).unwrap_or_default();
            let s = value.as_str().unwrap_or_default();
            if s.is_empty() || !crate::check::is_norm_abs_path(s) {
                continue;
            }
            let path = PathBuf::from(s);
            let kind = match facts.paths.get(&path) {
                Some(kind) => *kind,
                None => {
                    v.unchecked.push(Unchecked {
                        param: def.name(),
                        missing: "the path's existence",
                    });
                    continue;
                }
            };
            let problem = match (kind, want_dir) {
                (PathKind::Missing, _) => Some(ProblemKind::PathMissing { path }),
                (PathKind::File, false) | (PathKind::Dir, true) => None,
                (_, false) => Some(ProblemKind::NotAFile { path }),
                (_, true) => Some(ProblemKind::NotADirectory { path }),
            };
            if let Some(kind) = problem {
                v.problems.push(Problem::new(def.name(), kind));
            }
        }
    }

    fn validate_users(&self, facts: &HostFacts, v: &mut Validation) {
        if self.security_model() != SecurityModel::User || self.security_domain().is_empty() {
            return;
        }
        match facts.users.get(self.security_domain()) {
            Some(true) => {}
            Some(false) => v.problems.push(Problem::new(
                "security_domain",
                ProblemKind::UnknownUser {
                    user: self.security_domain().to_owned(),
                },
            )),
            None => v.unchecked.push(Unchecked {
                param: "security_domain",
                missing: "the user database",
            }),
        }
    }

    fn validate_binds(&self, facts: &HostFacts, v: &mut Validation) {
        let spice_family = match self.spice_ip_version() {
            4 => Some(4),
            6 => Some(6),
            _ => None,
        };
        let binds = [
            ("vnc_bind_address", self.vnc_bind_address(), None),
            ("spice_bind", self.spice_bind(), spice_family),
        ];
        for (param, value, family) in binds {
            let Some(name) = bind_interface(value) else {
                continue;
            };
            let Some(interfaces) = &facts.interfaces else {
                v.unchecked.push(Unchecked {
                    param,
                    missing: "the network interfaces",
                });
                continue;
            };
            let Some(addrs) = interfaces.get(name) else {
                v.problems.push(Problem::new(
                    param,
                    ProblemKind::UnknownInterface {
                        interface: name.to_owned(),
                    },
                ));
                continue;
            };
            // Ganeti renders an interface without IPv4 as a relative Unix
            // socket path (reference §11.5.7); we refuse it instead.
            let usable = addrs.iter().any(|a| match family {
                Some(4) => a.is_ipv4(),
                Some(_) => a.is_ipv6(),
                None => true,
            });
            if !usable {
                v.problems.push(Problem::new(
                    param,
                    ProblemKind::InterfaceWithoutAddress {
                        interface: name.to_owned(),
                        family: match family {
                            Some(4) => "IPv4",
                            Some(_) => "IPv6",
                            None => "IP",
                        },
                    },
                ));
            }
        }
    }

    fn validate_cpus(&self, facts: &HostFacts, v: &mut Validation) {
        let Some(max) = CpuMask::parse(self.cpu_mask())
            .ok()
            .and_then(|m| m.max_cpu())
        else {
            return;
        };
        match facts.online_cpus {
            Some(online) if max >= online => v.problems.push(Problem::new(
                "cpu_mask",
                ProblemKind::CpuNotOnHost { cpu: max, online },
            )),
            Some(_) => {}
            None => v.unchecked.push(Unchecked {
                param: "cpu_mask",
                missing: "the number of online CPUs",
            }),
        }
    }

    fn validate_qemu(&self, qemu: &QemuFacts, out: &mut Vec<Problem>) {
        let version = qemu.version_string();
        let lacks = |feature: &str| ProblemKind::QemuLacks {
            feature: feature.to_owned(),
            version: version.clone(),
        };
        if !self.spice_bind().is_empty() && !qemu.spice {
            out.push(Problem::new("spice_bind", lacks("SPICE")));
        }
        if let Some(driver) = self.disk_type().qemu_driver()
            && !qemu.devices.contains(driver)
        {
            out.push(Problem::new(
                "disk_type",
                lacks(&format!("disk device `{driver}`")),
            ));
        }
        let nic = self.nic_type().qemu_driver();
        if !qemu.devices.contains(nic) {
            out.push(Problem::new(
                "nic_type",
                lacks(&format!("NIC device `{nic}`")),
            ));
        }
        let scsi_used =
            self.disk_type().is_scsi() || self.cdrom_disk_type().is_some_and(DiskType::is_scsi);
        let controller = self.scsi_controller_type().qemu_driver();
        if scsi_used && !qemu.devices.contains(controller) {
            out.push(Problem::new(
                "scsi_controller_type",
                lacks(&format!("SCSI controller `{controller}`")),
            ));
        }
        // Ganeti checked this against the QEMU at its compile-time KVM_PATH,
        // not the instance's kvm_path (reference §11.5.11).
        if self.disk_aio() == Some(DiskAio::IoUring) && qemu.version.0 < 5 {
            out.push(Problem::new("disk_aio", lacks("io_uring (needs QEMU 5.0)")));
        }
        if let Some(models) = &qemu.cpu_models {
            let model = self.cpu_type().split(',').next().unwrap_or_default();
            if !model.is_empty() && !models.contains(model) {
                out.push(Problem::new(
                    "cpu_type",
                    ProblemKind::UnknownCpuModel {
                        value: model.to_owned(),
                        version: version.clone(),
                    },
                ));
            }
        }
        // An exact name, not Ganeti's unescaped regex where `pc.*` passes
        // (reference §11.5.10).
        let machine = self.machine_version();
        if !machine.is_empty() && !qemu.machines.contains(machine) {
            out.push(Problem::new(
                "machine_version",
                ProblemKind::UnknownMachine {
                    value: machine.to_owned(),
                    version: version.clone(),
                },
            ));
        }
        if let Some(caps) = &qemu.migration_capabilities {
            for cap in self.migration_cap_list() {
                if !caps.contains(cap) {
                    out.push(Problem::new(
                        "migration_caps",
                        ProblemKind::UnknownMigrationCap {
                            value: cap.to_owned(),
                            version: version.clone(),
                        },
                    ));
                }
            }
        }
    }
}

/// The interface name a bind address denotes, if it is one.
fn bind_interface(value: &str) -> Option<&str> {
    let is_ip = value.parse::<IpAddr>().is_ok();
    (!value.is_empty()
        && !is_ip
        && !value.starts_with('/')
        && crate::check::is_interface_name(value))
    .then_some(value)
}
