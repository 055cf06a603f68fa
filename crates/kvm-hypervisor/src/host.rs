//! Gathering facts about this host. This is where validation's I/O happens,
//! so that [`crate::validate`] and the hvparam checks stay pure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::hvparams::{HostFacts, PathKind};
use crate::spec::{DiskSource, InstanceSpec, NicMode};

/// The character device vhost-net descriptors come from.
pub const VHOST_NET_DEVICE: &str = "/dev/vhost-net";

/// Facts about this host for one instance spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Facts the hvparams need.
    pub hv: HostFacts,
    /// What each kernelspace disk path is.
    pub disk_paths: BTreeMap<PathBuf, PathKind>,
    /// Which of the links bridged NICs name are bridges here.
    pub bridges: BTreeMap<String, bool>,
    /// Whether /dev/vhost-net exists.
    pub vhost_net: bool,
    /// Why the QEMU binary could not be probed, when it could not (`hv.qemu`
    /// is then `None` and its checks are reported unchecked with this reason).
    pub qemu_probe_error: Option<String>,
    /// The host's memory, MiB.
    pub memory_total_mib: Option<u64>,
    /// The instance's machine type (aliases resolved) and its vCPU maximum,
    /// when QEMU says.
    pub machine_cpu_max: Option<(String, u32)>,
}

/// Adds what `caps` tells about QEMU to `facts` for `spec`.
pub fn add_qemu(facts: &mut NodeFacts, spec: &InstanceSpec, caps: &qemu_cmdline::QemuCaps) {
    facts.hv.qemu = Some(qemu_facts(caps));
    let machine = match spec.hvparams().machine_version() {
        "" => caps.default_machine(),
        asked => caps.resolve_machine(asked),
    };
    facts.machine_cpu_max = machine.and_then(|m| Some((m.name.clone(), m.cpu_max?)));
}

/// Looks at the host for everything validating `spec` needs. QEMU is not
/// probed here (`hv.qemu` stays `None`); the caller adds its capabilities.
pub fn gather(spec: &InstanceSpec) -> NodeFacts {
    let hv = hv_facts(spec.hvparams());
    build_node_facts(spec, hv)
}

/// The host facts the hvparams `hv` need (QEMU not probed).
pub fn hv_facts(hv: &crate::hvparams::HvParams) -> HostFacts {
    let wanted = hv.facts_wanted();
    HostFacts {
        qemu: None,
        interfaces: wanted.interfaces.then(interfaces),
        paths: wanted
            .paths
            .iter()
            .map(|p| (p.clone(), path_kind(p)))
            .collect(),
        users: wanted
            .users
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    matches!(nix::unistd::User::from_name(u), Ok(Some(_))),
                )
            })
            .collect(),
        online_cpus: online_cpus(),
    }
}

fn build_node_facts(spec: &InstanceSpec, hv: HostFacts) -> NodeFacts {
    let disk_paths = spec
        .disks()
        .iter()
        .filter_map(|d| match d.source() {
            DiskSource::Path(p) => Some((p.clone(), path_kind(p))),
            DiskSource::Uri(_) => None,
        })
        .collect();
    let bridges = spec
        .nics()
        .iter()
        .filter(|n| n.mode() == NicMode::Bridged && !n.link().is_empty())
        .map(|n| {
            let is_bridge = !n.link().contains('/')
                && Path::new("/sys/class/net")
                    .join(n.link())
                    .join("bridge")
                    .is_dir();
            (n.link().to_owned(), is_bridge)
        })
        .collect();
    NodeFacts {
        hv,
        disk_paths,
        bridges,
        vhost_net: Path::new(VHOST_NET_DEVICE).exists(),
        qemu_probe_error: None,
        memory_total_mib: crate::node::meminfo("MemTotal"),
        machine_cpu_max: None,
    }
}

/// What `path` is, following symlinks.
pub fn path_kind(path: &Path) -> PathKind {
    match std::fs::metadata(path) {
        Err(_) => PathKind::Missing,
        Ok(m) if m.is_file() => PathKind::File,
        Ok(m) if m.is_dir() => PathKind::Dir,
        Ok(_) => PathKind::Other,
    }
}

/// Whether `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

fn interfaces() -> BTreeMap<String, Vec<IpAddr>> {
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let entry = out.entry(a.interface_name.clone()).or_default();
        let Some(addr) = a.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            entry.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            entry.push(IpAddr::V6(v6.ip()));
        }
    }
    out
}

fn online_cpus() -> Option<u32> {
    let n = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN).ok()??;
    u32::try_from(n).ok()
}

/// The host facts a plan needs, for `spec` on a QEMU with `caps`.
pub fn plan_env(
    spec: &InstanceSpec,
    caps: &qemu_cmdline::QemuCaps,
) -> crate::launch::plan::PlanEnv {
    let hv = spec.hvparams();
    let binds = [hv.vnc_bind_address(), hv.spice_bind()];
    let wants_interfaces = binds
        .iter()
        .any(|b| !b.is_empty() && b.parse::<IpAddr>().is_err() && !b.starts_with('/'));
    crate::launch::plan::PlanEnv {
        kvm_usable: caps.kvm.unwrap_or(false),
        vhost_net: Path::new(VHOST_NET_DEVICE).exists(),
        interfaces: if wants_interfaces {
            interfaces()
        } else {
            BTreeMap::new()
        },
        block_devices: spec
            .disks()
            .iter()
            .filter_map(|d| match d.source() {
                DiskSource::Path(p) if is_block_device(p) => Some(p.clone()),
                _ => None,
            })
            .collect(),
        pool_user: None,
        spare_root_ports: 4,
        spice_cert_dir: None,
        available_memory_mib: crate::node::meminfo("MemAvailable"),
        mode: crate::launch::plan::StartMode::Fresh,
        placements: BTreeMap::new(),
        hot_plugged_nics: Default::default(),
        ganeti_forms: false,
    }
}

/// The facts hvparam validation needs from QEMU's capabilities.
pub fn qemu_facts(caps: &qemu_cmdline::QemuCaps) -> crate::hvparams::QemuFacts {
    let v = caps.version;
    crate::hvparams::QemuFacts {
        version: (v.major, v.minor, v.micro),
        machines: caps
            .machines
            .iter()
            .flat_map(|m| std::iter::once(m.name.clone()).chain(m.alias.clone()))
            .collect(),
        devices: caps.devices.clone(),
        cpu_models: (!caps.cpu_models.is_empty()).then(|| caps.cpu_models.clone()),
        migration_capabilities: (!caps.migration_capabilities.is_empty())
            .then(|| caps.migration_capabilities.clone()),
        spice: caps.features().spice,
    }
}
