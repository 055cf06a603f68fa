//! Validating an instance spec against this host: the hvparams' node checks
//! plus the spec's own (disks exist, bridges exist, vhost-net is there).
//! Pure: the facts come from [`crate::host::gather`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::{NodeFacts, VHOST_NET_DEVICE};
use crate::hvparams::{MISSING_QEMU_CAPS, NicType, PathKind};
use crate::spec::{DiskSource, Generated, InstanceSpec, Loaded, NicMode};

/// One line of a report: a field and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The field, e.g. `disks[0].path` or `hvparams.kernel_path`.
    pub field: String,
    /// What was found.
    pub message: String,
}

/// The outcome of validating a spec on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Problems that would stop the instance from starting, in field order.
    pub problems: Vec<Finding>,
    /// Advisory warnings.
    pub warnings: Vec<Finding>,
    /// Checks that could not run, and what they lacked.
    pub unchecked: Vec<Finding>,
    /// Values the spec left out and that were generated.
    pub generated: Vec<Generated>,
    /// Whether this host was looked at (not for [`Depth::Syntax`], nor for
    /// a spec that does not parse).
    #[serde(skip)]
    pub host_checked: bool,
}

impl Report {
    /// Whether no problem was found.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Host-side problems with a spec's own fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostProblem {
    /// A kernelspace disk path that does not exist.
    #[error("{} does not exist on this host", .0.display())]
    DiskMissing(PathBuf),
    /// A kernelspace disk path that is a directory or a socket.
    #[error("{} is neither a block device nor a regular file", .0.display())]
    DiskNotUsable(PathBuf),
    /// A bridged NIC's link is not a bridge.
    #[error("bridge `{0}` does not exist on this host")]
    BridgeMissing(String),
    /// vhost_net is on, a paravirtual NIC exists, and /dev/vhost-net does not.
    #[error(
        "{VHOST_NET_DEVICE} is missing on this host (load the vhost_net module, or set vhost_net to false)"
    )]
    VhostNetMissing,
}

/// Validates `spec` against `facts`. `generated` comes from loading the spec.
pub fn validate_on_host(
    spec: &InstanceSpec,
    facts: &NodeFacts,
    generated: Vec<Generated>,
) -> Report {
    let hv = spec.hvparams();
    let v = hv.validate(&facts.hv);
    let mut problems: Vec<Finding> = v
        .problems
        .iter()
        .map(|p| Finding {
            field: format!("hvparams.{}", p.param()),
            message: p.kind().to_string(),
        })
        .collect();
    let mut unchecked: Vec<Finding> = v
        .unchecked
        .iter()
        .map(|u| {
            let why = match &facts.qemu_probe_error {
                Some(why) if u.missing == MISSING_QEMU_CAPS => format!(" ({why})"),
                _ => String::new(),
            };
            Finding {
                field: format!("hvparams.{}", u.param),
                message: format!("needs {}{why}", u.missing),
            }
        })
        .collect();
    problems.extend(sizing_problems(spec, facts));
    let paravirtual_nics = hv.nic_type() == NicType::Paravirtual && !spec.nics().is_empty();
    if hv.vhost_net() && paravirtual_nics && !facts.vhost_net {
        problems.push(finding("hvparams.vhost_net", HostProblem::VhostNetMissing));
    }
    for (i, d) in spec.disks().iter().enumerate() {
        let DiskSource::Path(p) = d.source() else {
            continue;
        };
        let field = format!("disks[{i}].path");
        match facts.disk_paths.get(p) {
            Some(PathKind::Missing) => {
                problems.push(finding(&field, HostProblem::DiskMissing(p.clone())))
            }
            Some(PathKind::Dir) => {
                problems.push(finding(&field, HostProblem::DiskNotUsable(p.clone())))
            }
            Some(PathKind::File | PathKind::Other) => {}
            None => unchecked.push(Finding {
                field,
                message: "needs the path's existence".into(),
            }),
        }
    }
    for (i, n) in spec.nics().iter().enumerate() {
        if n.mode() != NicMode::Bridged {
            continue;
        }
        if facts.bridges.get(n.link()) == Some(&false) {
            problems.push(finding(
                &format!("nics[{i}].link"),
                HostProblem::BridgeMissing(n.link().to_owned()),
            ));
        }
    }
    let warnings = hv
        .assess()
        .iter()
        .map(|w| Finding {
            field: format!("hvparams.{}", w.param()),
            message: w.kind().to_string(),
        })
        .collect();
    Report {
        problems,
        warnings,
        unchecked,
        generated,
        host_checked: true,
    }
}

fn finding(field: &str, p: HostProblem) -> Finding {
    Finding {
        field: field.to_owned(),
        message: p.to_string(),
    }
}

/// A `kvm_path` that exists (per `facts`) but could not be probed as a
/// QEMU (`probe_error`); a missing one is the hvparam check's to report.
fn unusable_qemu(
    kvm_path: &str,
    facts: &crate::hvparams::HostFacts,
    probe_error: Option<&str>,
) -> Option<Finding> {
    let exists = facts
        .paths
        .get(Path::new(kvm_path))
        .is_some_and(|k| *k != PathKind::Missing);
    Some(Finding {
        field: "hvparams.kvm_path".into(),
        message: format!(
            "{kvm_path} cannot be used as QEMU: {}",
            probe_error.filter(|_| exists)?
        ),
    })
}

/// What the host and its QEMU cannot give the instance: more memory than
/// the host has, more vCPUs than the machine type takes, a `kvm_path` that
/// exists but is not a QEMU that answers.
fn sizing_problems(spec: &InstanceSpec, facts: &NodeFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(unusable_qemu(
        spec.hvparams().kvm_path(),
        &facts.hv,
        facts.qemu_probe_error.as_deref(),
    ));
    if let Some(total) = facts.memory_total_mib
        && spec.memory() > total
    {
        out.push(Finding {
            field: "memory".into(),
            message: format!(
                "{} MiB is more than this host has ({total} MiB)",
                spec.memory()
            ),
        });
    }
    if let Some(qemu) = &facts.hv.qemu {
        let (a, b, c) = qemu.version;
        for driver in spec.hvparams().usb_device_drivers() {
            if !qemu.devices.contains(driver) {
                out.push(Finding {
                    field: "hvparams.usb_devices".into(),
                    message: format!("QEMU {a}.{b}.{c} has no device `{driver}`"),
                });
            }
        }
    }
    if let Some((machine, max)) = &facts.machine_cpu_max
        && spec.vcpus() > *max
    {
        out.push(Finding {
            field: "vcpus".into(),
            message: format!(
                "{} vCPUs are more than machine type {machine} takes ({max})",
                spec.vcpus()
            ),
        });
    }
    out
}

/// Validates a loaded spec on this host and against the QEMU of its
/// `kvm_path`, probed (or read from the cache in `cache_dir`): what
/// `validate` reports and `start` checks. A binary that cannot be probed
/// leaves its checks unchecked, with the reason.
pub async fn validate_spec(loaded: &Loaded, cache_dir: &Path) -> Report {
    let mut facts = crate::host::gather(&loaded.spec);
    let binary = PathBuf::from(loaded.spec.hvparams().kvm_path());
    match crate::caps::capabilities(&binary, cache_dir).await {
        Ok(p) => crate::host::add_qemu(&mut facts, &loaded.spec, &p.caps),
        Err(e) => facts.qemu_probe_error = Some(crate::error_chain(&e)),
    }
    validate_on_host(&loaded.spec, &facts, loaded.generated.clone())
}

/// How far [`validate_hvparams`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The values alone: types, allowed values, cross-parameter rules
    /// (Ganeti's `CheckParameterSyntax`).
    Syntax,
    /// Also this host and the QEMU of `kvm_path`: paths, users, interfaces,
    /// QEMU's machine types and devices (Ganeti's `ValidateParameters`).
    Host,
}

/// Checks a map of hvparams on its own, without an instance: what a
/// cluster manager checks before it stores them. Problems and warnings are
/// named `hvparams.NAME`, as in a spec's report.
pub async fn validate_hvparams(
    map: &serde_json::Map<String, serde_json::Value>,
    depth: Depth,
    cache_dir: &Path,
) -> Report {
    let (hv, syntax) = crate::hvparams::HvParams::parse_and_check(map);
    let named = |param: &str, message: String| Finding {
        field: format!("hvparams.{param}"),
        message,
    };
    let mut problems: Vec<Finding> = syntax
        .iter()
        .map(|p| named(p.param(), p.kind().to_string()))
        .collect();
    let mut unchecked = Vec::new();
    if depth == Depth::Host && problems.is_empty() {
        let mut facts = crate::host::hv_facts(&hv);
        let mut probe_error = None;
        match crate::caps::capabilities(Path::new(hv.kvm_path()), cache_dir).await {
            Ok(p) => facts.qemu = Some(crate::host::qemu_facts(&p.caps)),
            Err(e) => probe_error = Some(crate::error_chain(&e)),
        }
        let v = hv.validate(&facts);
        problems.extend(
            v.problems
                .iter()
                .map(|p| named(p.param(), p.kind().to_string())),
        );
        problems.extend(unusable_qemu(hv.kvm_path(), &facts, probe_error.as_deref()));
        unchecked.extend(
            v.unchecked
                .iter()
                .map(|u| named(u.param, format!("needs {}", u.missing))),
        );
    }
    let warnings = hv
        .assess()
        .iter()
        .map(|w| named(w.param(), w.kind().to_string()))
        .collect();
    Report {
        problems,
        warnings,
        unchecked,
        generated: Vec::new(),
        host_checked: depth == Depth::Host,
    }
}

/// The report of a spec that does not even parse: its problems, by field.
pub fn report_of_problems(problems: &crate::spec::SpecProblems) -> Report {
    Report {
        problems: problems
            .0
            .iter()
            .map(|p| Finding {
                field: p.field.clone(),
                message: p.reason.to_string(),
            })
            .collect(),
        warnings: Vec::new(),
        unchecked: Vec::new(),
        generated: Vec::new(),
        host_checked: false,
    }
}

/// The report of a spec that does not parse whole: its problems, and the
/// host problems of the parts that did parse (the hvparams' paths, users
/// and interfaces; the disks' paths), so one mistyped field does not hide
/// every host problem. Fields already reported are not reported twice.
pub fn partial_report(value: &serde_json::Value, problems: &crate::spec::SpecProblems) -> Report {
    let mut report = report_of_problems(problems);
    let reported: std::collections::BTreeSet<String> =
        problems.0.iter().map(|p| p.field.clone()).collect();
    let mut found = Vec::new();
    if let Some(serde_json::Value::Object(map)) = value.get("hvparams") {
        let (hv, _) = crate::hvparams::HvParams::parse(map);
        let facts = crate::host::hv_facts(&hv);
        for p in hv.validate(&facts).problems {
            found.push(Finding {
                field: format!("hvparams.{}", p.param()),
                message: p.kind().to_string(),
            });
        }
    }
    if let Some(serde_json::Value::Array(disks)) = value.get("disks") {
        for (i, d) in disks.iter().enumerate() {
            let Some(path) = d.get("path").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let path = PathBuf::from(path);
            let problem = match crate::host::path_kind(&path) {
                PathKind::Missing => HostProblem::DiskMissing(path),
                PathKind::Dir => HostProblem::DiskNotUsable(path),
                _ => continue,
            };
            found.push(finding(&format!("disks[{i}].path"), problem));
        }
    }
    report
        .problems
        .extend(found.into_iter().filter(|f| !reported.contains(&f.field)));
    report
}
