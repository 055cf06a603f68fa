//! What a QEMU binary can do: built from its QMP replies (preferred) or
//! from its `--help` / `-machine help` / `-device help` text (offline
//! fallback and old recorded outputs). Parsing only; the probing (spawning
//! QEMU) is the caller's.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::CmdlineError;

/// A QEMU version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QemuVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl QemuVersion {
    /// Whether this is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// One machine type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineType {
    /// Its name (`pc-i440fx-7.2`).
    pub name: String,
    /// An alias that resolves to it (`pc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Whether it is QEMU's default.
    #[serde(default)]
    pub is_default: bool,
    /// Whether QEMU marks it deprecated.
    #[serde(default)]
    pub deprecated: bool,
    /// The maximum number of vCPUs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<u32>,
}

/// Where the capabilities came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapsSource {
    /// QMP queries of the binary.
    Qmp,
    /// Parsed help text.
    Help,
}

/// What a QEMU binary can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuCaps {
    /// How these were obtained.
    pub source: CapsSource,
    /// The version.
    pub version: QemuVersion,
    /// The package string (`Debian 1:7.2+dfsg-7+deb12u18+b3`), if any.
    #[serde(default)]
    pub package: String,
    /// Machine types.
    pub machines: Vec<MachineType>,
    /// Device types (`virtio-blk-pci`, `e1000`, …).
    pub devices: BTreeSet<String>,
    /// Command-line options, without the dash (`run-with`, `audio`, `sandbox`, …).
    pub options: BTreeSet<String>,
    /// CPU model names, when known.
    #[serde(default)]
    pub cpu_models: BTreeSet<String>,
    /// Migration capabilities, when known.
    #[serde(default)]
    pub migration_capabilities: BTreeSet<String>,
    /// QMP commands, when known.
    #[serde(default)]
    pub commands: BTreeSet<String>,
    /// Whether KVM is usable by this binary on this host, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<bool>,
}

impl QemuCaps {
    /// The default machine type.
    pub fn default_machine(&self) -> Option<&MachineType> {
        self.machines.iter().find(|m| m.is_default)
    }

    /// The machine type `name` refers to, resolving aliases (`pc` → `pc-i440fx-7.2`).
    pub fn resolve_machine(&self, name: &str) -> Option<&MachineType> {
        self.machines.iter().find(|m| m.name == name).or_else(|| {
            self.machines
                .iter()
                .find(|m| m.alias.as_deref() == Some(name))
        })
    }

    /// Whether the binary has device type `name`.
    pub fn has_device(&self, name: &str) -> bool {
        self.devices.contains(name)
    }

    /// Whether the binary has command-line option `-name`.
    pub fn has_option(&self, name: &str) -> bool {
        self.options.contains(name)
    }

    /// The rendering choices these capabilities imply.
    pub fn features(&self) -> Features {
        let v = self.version;
        Features {
            run_with: self.has_option("run-with"),
            runas: self.has_option("runas"),
            chroot_option: self.has_option("chroot"),
            audio_option: self.has_option("audio") && v.at_least(7, 1),
            soundhw_option: self.has_option("soundhw"),
            no_acpi_option: self.has_option("no-acpi"),
            machine_acpi_property: v.at_least(5, 0),
            sandbox: self.has_option("sandbox"),
            debug_threads: v.major < 11,
            json_device: v.at_least(6, 2),
            spice: self.has_option("spice"),
        }
    }

    /// Builds the capabilities from the replies of a probe QEMU: `query-version`,
    /// `query-machines`, `qom-list-types`, `query-command-line-options`, and
    /// optionally `query-cpu-definitions`, `query-migrate-capabilities`,
    /// `query-commands`, `query-kvm` (pass `Json::Null` for those not asked).
    #[allow(clippy::too_many_arguments)]
    pub fn from_qmp(
        version: &Json,
        machines: &Json,
        types: &Json,
        options: &Json,
        cpu_definitions: &Json,
        migrate_capabilities: &Json,
        commands: &Json,
        kvm: &Json,
    ) -> Result<QemuCaps, CmdlineError> {
        let bad = |what: &str, v: &Json| CmdlineError::BadCaps(format!("{what}: {}", truncate(v)));
        let q = &version["qemu"];
        let num = |k: &str| q[k].as_u64().and_then(|n| u32::try_from(n).ok());
        let version_ = match (num("major"), num("minor"), num("micro")) {
            (Some(major), Some(minor), Some(micro)) => QemuVersion {
                major,
                minor,
                micro,
            },
            _ => return Err(bad("query-version", version)),
        };
        let list = |v: &Json, what: &str| v.as_array().cloned().ok_or_else(|| bad(what, v));
        let mut machine_list: Vec<MachineType> = list(machines, "query-machines")?
            .iter()
            .filter_map(|m| {
                Some(MachineType {
                    name: m["name"].as_str()?.to_owned(),
                    alias: m["alias"].as_str().map(str::to_owned),
                    is_default: m["is-default"].as_bool().unwrap_or(false),
                    deprecated: m["deprecated"].as_bool().unwrap_or(false),
                    cpu_max: m["cpu-max"].as_u64().and_then(|n| u32::try_from(n).ok()),
                })
            })
            .collect();
        machine_list.sort_by(|a, b| a.name.cmp(&b.name));
        let devices = list(types, "qom-list-types")?
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        let options = list(options, "query-command-line-options")?
            .iter()
            .filter_map(|o| o["option"].as_str().map(str::to_owned))
            .collect();
        let names = |v: &Json, key: &str| -> BTreeSet<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e[key].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(QemuCaps {
            source: CapsSource::Qmp,
            version: version_,
            package: version["package"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            machines: machine_list,
            devices,
            options,
            cpu_models: names(cpu_definitions, "name"),
            migration_capabilities: names(migrate_capabilities, "capability"),
            commands: names(commands, "name"),
            kvm: kvm["enabled"]
                .as_bool()
                .zip(kvm["present"].as_bool())
                .map(|(e, p)| e && p),
        })
    }

    /// Builds the capabilities from `--help` text, and optionally
    /// `-machine help` and `-device help` text.
    pub fn from_help(
        help: &str,
        machine_help: Option<&str>,
        device_help: Option<&str>,
    ) -> Result<QemuCaps, CmdlineError> {
        let (version, package) = parse_version(help)?;
        Ok(QemuCaps {
            source: CapsSource::Help,
            version,
            package,
            machines: machine_help.map(parse_machine_help).unwrap_or_default(),
            devices: device_help.map(parse_device_help).unwrap_or_default(),
            options: parse_help_options(help),
            cpu_models: BTreeSet::new(),
            migration_capabilities: BTreeSet::new(),
            commands: BTreeSet::new(),
            kvm: None,
        })
    }
}

fn truncate(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}…", &s[..s.floor_char_boundary(120)])
    } else {
        s
    }
}

/// Rendering choices derived from [`QemuCaps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Features {
    /// `-run-with user=,chroot=` (QEMU ≥ 9.0).
    pub run_with: bool,
    /// `-runas` (removed in later QEMUs).
    pub runas: bool,
    /// `-chroot` (removed in later QEMUs).
    pub chroot_option: bool,
    /// `-audio driver=,model=` (QEMU ≥ 7.1).
    pub audio_option: bool,
    /// `-soundhw` (removed in QEMU 7.1).
    pub soundhw_option: bool,
    /// `-no-acpi` (deprecated).
    pub no_acpi_option: bool,
    /// `-machine …,acpi=off`.
    pub machine_acpi_property: bool,
    /// `-sandbox` (seccomp) is compiled in.
    pub sandbox: bool,
    /// `-name …,debug-threads=on` (gone in QEMU 11).
    pub debug_threads: bool,
    /// `-device` accepts JSON (QEMU ≥ 6.2).
    pub json_device: bool,
    /// SPICE is compiled in.
    pub spice: bool,
}

/// Parses `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`.
pub fn parse_version(text: &str) -> Result<(QemuVersion, String), CmdlineError> {
    let bad = || CmdlineError::BadCaps("no `QEMU emulator version X.Y.Z` line".into());
    let line = text
        .lines()
        .find(|l| l.contains("emulator version "))
        .ok_or_else(bad)?;
    let rest = line.split("emulator version ").nth(1).ok_or_else(bad)?;
    let (ver, package) = match rest.split_once(' ') {
        Some((v, p)) => (
            v,
            p.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_owned(),
        ),
        None => (rest, String::new()),
    };
    let mut nums = ver.split('.').map(|n| n.parse::<u32>());
    let mut next = || nums.next().and_then(Result::ok);
    let major = next().ok_or_else(bad)?;
    let minor = next().ok_or_else(bad)?;
    let micro = next().unwrap_or(0);
    Ok((
        QemuVersion {
            major,
            minor,
            micro,
        },
        package,
    ))
}

/// The options `--help` lists (lines starting with `-name`).
pub fn parse_help_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| l.strip_prefix('-'))
        .filter_map(|l| l.split([' ', '\t']).next())
        .map(|o| o.trim_end_matches(',').to_owned())
        .filter(|o| {
            !o.is_empty()
                && o.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .collect()
}

/// Parses `-machine help`: `name  description [(alias of X)] [(default)] [(deprecated)]`.
pub fn parse_machine_help(text: &str) -> Vec<MachineType> {
    let mut out: Vec<MachineType> = Vec::new();
    let mut aliases: Vec<(String, String)> = Vec::new();
    for line in text
        .lines()
        .skip_while(|l| !l.starts_with("Supported machines"))
        .skip(1)
    {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(target) = line
            .split("(alias of ")
            .nth(1)
            .and_then(|r| r.split(')').next())
        {
            aliases.push((name.to_owned(), target.to_owned()));
            continue;
        }
        out.push(MachineType {
            name: name.to_owned(),
            alias: None,
            is_default: line.contains("(default)"),
            deprecated: line.contains("(deprecated)"),
            cpu_max: None,
        });
    }
    for (alias, target) in aliases {
        if let Some(m) = out.iter_mut().find(|m| m.name == target) {
            m.alias = Some(alias);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Parses `-device help`: `name "virtio-blk-pci", bus PCI, …`.
pub fn parse_device_help(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("name \""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_owned)
        .collect()
}
