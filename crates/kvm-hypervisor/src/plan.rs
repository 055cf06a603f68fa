//! Planning a start: spec + QEMU capabilities + host facts → a [`LaunchPlan`]
//! (plain data: the argv, the taps to open, each device's hvinfo). Pure: no
//! I/O, so plans are what snapshot tests see.
//!
//! Differences from Ganeti's command line, on purpose (reference §11.5):
//! `-nodefaults` with every device explicit and addressed; long-form booleans
//! and escaped commas; a concrete machine type (an alias such as `pc` is
//! resolved and recorded, so the guest ABI survives QEMU upgrades);
//! `kvm_flag=disabled` really selects TCG; IDE disks and ISA NICs take no
//! PCI slot; a SCSI `disk_type` gives a `scsi-cd` CD-ROM; multiqueue works
//! without vhost; `ftp://` CD-ROMs use the ftp driver; node-local values
//! (interface addresses) are resolved at each start, not stored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use device_slots::{
    DeviceId, DeviceKind, HvInfo, PciAllocator, PciSlot, PcieLayout, Placement, ScsiAllocator,
};
use qemu_cmdline::{
    Accel, Audio, Blockdev, Display, Invocation, KernelBoot, Opts, QemuCaps, RunWith, Smp,
    host_port,
};
use serde::Serialize;
use serde_json::json;

use crate::hvparams::{
    BootOrder, DiskAio, DiskCache, DiskType, KvmFlag, NicType, RebootBehavior, SecurityModel,
    UsbMouse,
};
use crate::spec::{DiskMode, DiskSource, InstanceSpec};
use crate::state::RunDir;

/// The first file descriptor number handed to QEMU (after stdin, stdout, stderr).
pub const FIRST_PASSED_FD: i32 = 3;

/// What the host is, for planning; gathered by the caller.
#[derive(Debug, Clone, Default)]
pub struct PlanEnv {
    /// Whether KVM can run guests here (decides an empty `kvm_flag`).
    pub kvm_usable: bool,
    /// Whether /dev/vhost-net exists.
    pub vhost_net: bool,
    /// Network interfaces and their addresses (VNC/SPICE bind to interfaces).
    pub interfaces: BTreeMap<String, Vec<IpAddr>>,
    /// Kernelspace disk paths that are block devices (others are files).
    pub block_devices: Vec<PathBuf>,
    /// The pool user for `security_model=pool`.
    pub pool_user: Option<String>,
    /// Spare PCIe root ports for hotplug on q35.
    pub spare_root_ports: usize,
    /// Where SPICE's TLS certificates are.
    pub spice_cert_dir: Option<PathBuf>,
}

/// A Unix socket we bind and listen on before QEMU starts, passed as `fd`:
/// a client can connect the moment QEMU is spawned, with no wait for QEMU
/// to create the socket (its greeting comes once QEMU accepts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenSocket {
    /// Where to bind it.
    pub path: PathBuf,
    /// Its fd number in QEMU's process.
    pub fd: i32,
}

/// One tap to open before QEMU starts, and the fd numbers QEMU will see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapPlan {
    /// The NIC's UUID.
    pub nic_uuid: String,
    /// The QEMU netdev/device id.
    pub id: String,
    /// IFF_VNET_HDR wanted.
    pub vnet_hdr: bool,
    /// Queue fds, as numbered in QEMU's process.
    pub fds: Vec<i32>,
    /// vhost-net fds, as numbered in QEMU's process.
    pub vhost_fds: Vec<i32>,
}

/// A device and where the plan put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDevice {
    /// The disk's or NIC's UUID.
    pub uuid: String,
    /// Where it sits.
    pub hvinfo: HvInfo,
}

/// Everything needed to start an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlan {
    /// The model.
    pub invocation: Invocation,
    /// The argv it renders to for this QEMU.
    pub argv: Vec<String>,
    /// The concrete machine type.
    pub machine: String,
    /// The accelerator chosen.
    pub accel: Accel,
    /// Monitor sockets to bind before QEMU starts (ours, then the monitor daemon's).
    pub listen_sockets: Vec<ListenSocket>,
    /// Taps to open, in NIC order.
    pub taps: Vec<TapPlan>,
    /// Disks, in order.
    pub disks: Vec<PlannedDevice>,
    /// NICs, in order.
    pub nics: Vec<PlannedDevice>,
    /// Things the user should know (e.g. TCG chosen because KVM is unusable).
    pub warnings: Vec<String>,
}

/// Why an instance cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The machine type is not offered by this QEMU.
    #[error("QEMU {version} has no machine type `{machine}`")]
    UnknownMachine {
        /// Asked for.
        machine: String,
        /// The QEMU version.
        version: String,
    },
    /// QEMU has no default machine and none was asked for.
    #[error("QEMU reports no default machine type; set machine_version")]
    NoDefaultMachine,
    /// A device driver this QEMU lacks.
    #[error("QEMU {version} has no device `{driver}` (needed for {what})")]
    MissingDevice {
        /// The driver.
        driver: String,
        /// What needs it.
        what: String,
        /// The QEMU version.
        version: String,
    },
    /// Two devices would get the same QEMU id (their UUIDs share the first
    /// three groups, which is all Ganeti's id scheme keeps).
    #[error(
        "{first} and {second} would both get QEMU id {id}: their UUIDs share the first three groups"
    )]
    DuplicateDeviceId {
        /// The id.
        id: String,
        /// The first device.
        first: String,
        /// The second device.
        second: String,
    },
    /// No free slot for a device.
    #[error("no room for {what}")]
    NoSlot {
        /// The device.
        what: String,
        /// The allocator's error (names the bus).
        #[source]
        source: device_slots::SlotError,
    },
    /// A device id could not be derived.
    #[error("{what}")]
    DeviceId {
        /// The device.
        what: String,
        /// The cause.
        #[source]
        source: device_slots::SlotError,
    },
    /// A userspace disk URI QEMU cannot use.
    #[error("disk {uuid}")]
    StorageUri {
        /// The disk.
        uuid: String,
        /// The cause.
        #[source]
        source: qemu_cmdline::CmdlineError,
    },
    /// vhost-net asked for but missing.
    #[error(
        "vhost_net is on but {} is missing on this host (load the vhost_net module, or set vhost_net to false)",
        crate::host::VHOST_NET_DEVICE
    )]
    VhostNetMissing,
    /// A bind interface without an address.
    #[error("{param}: network interface `{interface}` has no usable address")]
    NoBindAddress {
        /// The hvparam.
        param: &'static str,
        /// The interface.
        interface: String,
    },
    /// VNC/SPICE on a network address without a port.
    #[error("{0} needs network_port")]
    NoNetworkPort(&'static str),
    /// `kvm_extra` cannot be split.
    #[error("kvm_extra cannot be split into arguments")]
    KvmExtra,
    /// The security model needs a user the plan does not have.
    #[error("security_model=pool needs a uid from the pool")]
    NoPoolUser,
}

fn cache_settings(cache: DiskCache) -> (bool, bool, bool) {
    // (device write-cache, cache.direct, cache.no-flush)
    match cache {
        DiskCache::None => (true, true, false),
        DiskCache::Writethrough => (false, false, false),
        _ => (true, false, false),
    }
}

/// Slot allocation for the bus in use: `pci.0` on i440fx, root ports on q35.
enum Slots {
    Pci(PciAllocator),
    Pcie { layout: PcieLayout },
}

impl Slots {
    /// A placement for one hot-pluggable PCI device, plus the root port
    /// device to add first on q35.
    fn hotpluggable(&mut self, what: &str) -> Result<(Placement, Option<Opts>), PlanError> {
        let no_slot = |source| PlanError::NoSlot {
            what: what.to_owned(),
            source,
        };
        match self {
            Slots::Pci(pci) => {
                let slot = pci.take().map_err(no_slot)?;
                Ok((
                    Placement::Pci {
                        bus: pci.bus().to_owned(),
                        slot,
                    },
                    None,
                ))
            }
            Slots::Pcie { layout, .. } => {
                let port = layout.add_port().map_err(no_slot)?;
                let zero = PciSlot::parse_hex("0x0").map_err(no_slot)?;
                Ok((
                    Placement::Pci {
                        bus: port.id(),
                        slot: zero,
                    },
                    Some(port_device(&port)),
                ))
            }
        }
    }

    /// A slot on the root bus for a device that is never hot-plugged.
    fn fixed(&mut self, what: &str) -> Result<(String, PciSlot), PlanError> {
        let no_slot = |source| PlanError::NoSlot {
            what: what.to_owned(),
            source,
        };
        match self {
            Slots::Pci(pci) => Ok((pci.bus().to_owned(), pci.take().map_err(no_slot)?)),
            Slots::Pcie { layout } => Ok((
                device_slots::PCIE_ROOT_BUS.to_owned(),
                layout.take_root_slot().map_err(no_slot)?,
            )),
        }
    }
}

fn port_device(port: &device_slots::RootPort) -> Opts {
    Opts::new("pcie-root-port")
        .set("id", port.id())
        .set("bus", device_slots::PCIE_ROOT_BUS)
        .set("addr", port.slot.hex())
        .set("chassis", port.chassis())
        .set("slot", port.slot.get())
}

fn placement_opts(mut o: Opts, p: &Placement) -> Opts {
    match p {
        Placement::Pci { bus, slot } => {
            o.push("bus", bus.as_str());
            o.push("addr", slot.hex());
        }
        Placement::Scsi {
            bus,
            channel,
            target,
            lun,
        } => {
            o.push("bus", bus.as_str());
            o.push("channel", *channel);
            o.push("scsi-id", target.get());
            o.push("lun", *lun);
        }
        Placement::Auto => {}
    }
    o
}

/// Plans the start of `spec` on a QEMU with `caps`.
pub fn plan_start(
    spec: &InstanceSpec,
    caps: &QemuCaps,
    run: &RunDir,
    env: &PlanEnv,
) -> Result<LaunchPlan, PlanError> {
    let hv = spec.hvparams();
    let name = spec.name().as_str();
    let version = caps.version.to_string();
    let features = caps.features();
    let mut warnings = Vec::new();
    let need = |driver: &str, what: &str| -> Result<(), PlanError> {
        if caps.has_device(driver) {
            Ok(())
        } else {
            Err(PlanError::MissingDevice {
                driver: driver.to_owned(),
                what: what.to_owned(),
                version: version.clone(),
            })
        }
    };

    // Machine: resolve aliases so the runtime record names a concrete type.
    let machine = match hv.machine_version() {
        "" => caps
            .default_machine()
            .map(|m| m.name.clone())
            .ok_or(PlanError::NoDefaultMachine)?,
        asked => caps
            .resolve_machine(asked)
            .map(|m| m.name.clone())
            .ok_or_else(|| PlanError::UnknownMachine {
                machine: asked.to_owned(),
                version: version.clone(),
            })?,
    };
    let q35 = machine.contains("q35");
    let accel = match hv.kvm_flag() {
        Some(KvmFlag::Enabled) => Accel::Kvm,
        Some(KvmFlag::Disabled) => Accel::Tcg,
        _ if env.kvm_usable => Accel::Kvm,
        _ => {
            warnings.push("KVM is not usable on this host: the guest runs under TCG emulation (set kvm_flag to choose)".to_owned());
            Accel::Tcg
        }
    };

    let reserved =
        u8::try_from(hv.kvm_pci_reservations()).unwrap_or(device_slots::DEFAULT_PCI_RESERVATIONS);
    let mut slots = if q35 {
        let mut layout = PcieLayout::new(1).map_err(|source| PlanError::NoSlot {
            what: "root ports".into(),
            source,
        })?;
        // 0x1f holds the ICH9 LPC/SATA/SMBus functions on q35.
        if let Some(s) = PciSlot::new(0x1f) {
            layout.mark_used(s);
        }
        Slots::Pcie { layout }
    } else {
        let mut pci = PciAllocator::new("pci.0", 0).map_err(|source| PlanError::NoSlot {
            what: "pci.0".into(),
            source,
        })?;
        // Slots 0-2: host bridge, PIIX3 (ISA/IDE/USB/PM functions), VGA.
        for s in 0..3 {
            if let Some(s) = PciSlot::new(s) {
                pci.mark_used(s);
            }
        }
        Slots::Pci(pci)
    };
    // Fixed devices take the lowest slots; our disks and NICs start at the
    // first slot after kvm_pci_reservations, as in Ganeti.
    let mut fixed_devices: Vec<Opts> = Vec::new();
    let mut fixed = |driver: &str, id: &str, slots: &mut Slots| -> Result<(), PlanError> {
        let (bus, slot) = slots.fixed(id)?;
        fixed_devices.push(
            Opts::new(driver)
                .set("id", id)
                .set("bus", bus)
                .set("addr", slot.hex()),
        );
        Ok(())
    };

    let mut inv = Invocation::new(hv.kvm_path(), name, &machine);
    inv.uuid = Some(spec.uuid().to_string());
    inv.accel = accel;
    inv.cpu = (!hv.cpu_type().is_empty()).then(|| hv.cpu_type().to_owned());
    let n = |v: i64| u32::try_from(v).unwrap_or(0);
    inv.smp = Smp {
        cpus: spec.vcpus(),
        sockets: n(hv.cpu_sockets()),
        cores: n(hv.cpu_cores()),
        threads: n(hv.cpu_threads()),
    };
    inv.memory_mib = spec.memory();
    inv.mem_path = (!hv.mem_path().is_empty()).then(|| PathBuf::from(hv.mem_path()));
    inv.pidfile = Some(run.pid_file(name));
    inv.paused = true;
    inv.acpi = hv.acpi();
    inv.no_reboot = hv.reboot_behavior() == RebootBehavior::Exit;
    inv.sandbox = hv.sandbox();
    inv.run_with = RunWith {
        user: match hv.security_model() {
            SecurityModel::User => Some(hv.security_domain().to_owned()),
            SecurityModel::Pool => Some(env.pool_user.clone().ok_or(PlanError::NoPoolUser)?),
            _ => None,
        },
        chroot: hv.use_chroot().then(|| run.chroot_dir(name)),
    };

    // Monitors: ours (QMP) and the monitor daemon's (second QMP, Ganeti's
    // .kvmd) on sockets we bind and pass; HMP for Ganeti's console wrapper.
    let mut next_fd = FIRST_PASSED_FD;
    let mut listen_sockets = Vec::new();
    for (id, suffix) in [("qmp", ".qmp"), ("kvmd", ".kvmd")] {
        inv.chardevs.push(
            Opts::new("socket")
                .set("id", id)
                .set("fd", next_fd)
                .set("server", true)
                .set("wait", false),
        );
        inv.monitors.push((id.into(), true));
        listen_sockets.push(ListenSocket {
            path: run.ctrl(name, suffix),
            fd: next_fd,
        });
        next_fd += 1;
    }
    let socket = |id: &str, path: PathBuf| {
        Opts::new("socket")
            .set("id", id)
            .set("path", path.display().to_string())
            .set("server", true)
            .set("wait", false)
    };
    inv.chardevs.push(socket("hmp", run.ctrl(name, ".monitor")));
    inv.monitors.push(("hmp".into(), false));
    if hv.serial_console() {
        inv.chardevs.push(
            socket("serial0", run.ctrl(name, ".serial"))
                .set("logfile", run.console_log(name).display().to_string())
                .set("logappend", false),
        );
        inv.serials.push("chardev:serial0".into());
        need("isa-serial", "serial_console")?;
    }

    // Boot.
    let no_kernel = hv.kernel_path().is_empty();
    if !no_kernel {
        let mut append: Vec<String> = vec![format!("root={}", hv.root_path())];
        if !hv.kernel_args().is_empty() {
            append.push(hv.kernel_args().to_owned());
        }
        if hv.serial_console() {
            append.push(format!("console=ttyS0,{}", hv.serial_speed()));
        }
        inv.kernel = Some(KernelBoot {
            kernel: hv.kernel_path().into(),
            initrd: (!hv.initrd_path().is_empty()).then(|| hv.initrd_path().into()),
            append: append.join(" "),
        });
    }
    let boot = |order: BootOrder| no_kernel && hv.boot_order() == order;

    // Fixed devices, in a stable order.
    need("virtio-balloon-pci", "the balloon")?;
    fixed("virtio-balloon-pci", "balloon0", &mut slots)?;
    let cdrom_type = hv
        .cdrom_disk_type()
        .or_else(|| hv.disk_type().implied_cdrom_type())
        .unwrap_or(DiskType::Ide);
    let has_cdrom = !hv.cdrom_image_path().is_empty() || !hv.cdrom2_image_path().is_empty();
    let scsi =
        hv.disk_type().is_scsi() && !spec.disks().is_empty() || (has_cdrom && cdrom_type.is_scsi());
    if scsi {
        let ctrl = hv.scsi_controller_type().qemu_driver();
        need(ctrl, "scsi_controller_type")?;
        fixed(ctrl, "scsi", &mut slots)?;
    }
    let vnc = hv.vnc_bind_address();
    let spice = hv.spice_bind();
    let usb_items = hv.usb_device_list();
    let wants_tablet = hv.usb_mouse().is_none() && (!vnc.is_empty() || !spice.is_empty());
    if hv.usb_mouse().is_some() || wants_tablet || !usb_items.is_empty() {
        need("qemu-xhci", "USB devices")?;
        fixed("qemu-xhci", "usb", &mut slots)?;
    }
    let spice_agent = !spice.is_empty() && hv.spice_use_vdagent();
    if spice_agent || hv.use_guest_agent() {
        fixed("virtio-serial-pci", "vserial0", &mut slots)?;
    }
    let vga = match (hv.vga(), vnc.is_empty(), spice.is_empty()) {
        ("", true, true) => None,
        ("", _, false) => Some("qxl-vga"),
        ("", false, true) => Some("VGA"),
        ("std", _, _) => Some("VGA"),
        ("qxl", _, _) => Some("qxl-vga"),
        ("virtio", _, _) => Some("virtio-vga"),
        ("cirrus", _, _) => Some("cirrus-vga"),
        ("vmware", _, _) => Some("vmware-svga"),
        ("none", _, _) => None,
        (other, _, _) => Some(other),
    };
    if let Some(v) = vga {
        need(v, "vga")?;
        fixed(v, "video0", &mut slots)?;
    }
    inv.devices.extend(fixed_devices);

    // Consoles.
    if !vnc.is_empty() {
        inv.display = Display::Vnc(vnc_opts(spec, env, &mut inv.objects)?);
    } else if !spice.is_empty() {
        inv.display = Display::Spice(spice_opts(spec, env)?);
    }
    if spice_agent {
        inv.chardevs.push(
            Opts::new("spicevmc")
                .set("id", "spicechannel0")
                .set("name", "vdagent"),
        );
        inv.devices.push(
            Opts::new("virtserialport")
                .set("bus", "vserial0.0")
                .set("chardev", "spicechannel0")
                .set("name", "com.redhat.spice.0"),
        );
    }
    if hv.use_guest_agent() {
        inv.chardevs.push(socket("qga0", run.ctrl(name, ".qga")));
        inv.devices.push(
            Opts::new("virtserialport")
                .set("bus", "vserial0.0")
                .set("chardev", "qga0")
                .set("name", "org.qemu.guest_agent.0"),
        );
    }
    match hv.usb_mouse() {
        Some(UsbMouse::Mouse) => inv.devices.push(
            Opts::new("usb-mouse")
                .set("id", "usbmouse")
                .set("bus", "usb.0"),
        ),
        Some(UsbMouse::Tablet) => inv.devices.push(
            Opts::new("usb-tablet")
                .set("id", "usbtablet")
                .set("bus", "usb.0"),
        ),
        _ if wants_tablet => inv.devices.push(
            Opts::new("usb-tablet")
                .set("id", "usbtablet")
                .set("bus", "usb.0"),
        ),
        _ => {}
    }
    for (i, item) in usb_items.iter().enumerate() {
        let driver = match *item {
            "tablet" => "usb-tablet",
            "mouse" => "usb-mouse",
            "keyboard" => "usb-kbd",
            other => other,
        };
        inv.devices.push(
            Opts::new(driver)
                .set("id", format!("usb{i}"))
                .set("bus", "usb.0"),
        );
    }
    if !hv.keymap().is_empty() {
        inv.keymap = Some(hv.keymap().to_owned());
    }
    if hv.use_localtime() {
        inv.rtc = Some(Opts::pairs().set("base", "localtime"));
    }
    if !hv.soundhw().is_empty() {
        inv.audio = Some(Audio {
            model: hv.soundhw().to_owned(),
            driver: if spice.is_empty() { "none" } else { "spice" }.into(),
        });
    }

    let mut scsi_targets = ScsiAllocator::new("scsi.0", device_slots::DEFAULT_SCSI_TARGETS);

    // Removable media.
    for (node, path, bootable) in [
        ("cdrom1", hv.cdrom_image_path(), boot(BootOrder::Cdrom)),
        ("cdrom2", hv.cdrom2_image_path(), false),
    ] {
        if path.is_empty() {
            continue;
        }
        let file = if path.contains("://") {
            qemu_cmdline::storage_uri(path).map_err(|source| PlanError::StorageUri {
                uuid: node.into(),
                source,
            })?
        } else {
            json!({"driver": "file", "filename": path})
        };
        let node_json = json!({"driver": "raw", "node-name": node, "read-only": true, "cache": {"direct": false, "no-flush": true}, "file": file});
        inv.blockdevs.push(
            Blockdev::new(node_json).map_err(|source| PlanError::StorageUri {
                uuid: node.into(),
                source,
            })?,
        );
        let mut dev = match cdrom_type {
            DiskType::Paravirtual => {
                let (p, port) = slots.hotpluggable(node)?;
                inv.devices.extend(port);
                placement_opts(Opts::new("virtio-blk-pci").set("id", node), &p)
            }
            t if t.is_scsi() => {
                let target = scsi_targets.take().map_err(|source| PlanError::NoSlot {
                    what: node.into(),
                    source,
                })?;
                let p = Placement::Scsi {
                    bus: "scsi.0".into(),
                    channel: 0,
                    target,
                    lun: 0,
                };
                placement_opts(Opts::new("scsi-cd").set("id", node), &p)
            }
            _ => Opts::new("ide-cd").set("id", node),
        };
        dev.push("drive", node);
        if bootable {
            dev.push("bootindex", 1u8);
        }
        inv.devices.push(dev);
    }
    if !hv.floppy_image_path().is_empty() {
        need("floppy", "floppy_image_path")?;
        let node = json!({"driver": "raw", "node-name": "floppy1", "file": {"driver": "file", "filename": hv.floppy_image_path()}});
        inv.blockdevs
            .push(Blockdev::new(node).map_err(|source| PlanError::StorageUri {
                uuid: "floppy1".into(),
                source,
            })?);
        let mut dev = Opts::new("floppy").set("drive", "floppy1");
        if boot(BootOrder::Floppy) {
            dev.push("bootindex", 1u8);
        }
        inv.devices.push(dev);
    }

    // Our devices start after the reserved range, as in Ganeti.
    if let Slots::Pci(pci) = &mut slots {
        for s in 0..reserved {
            if let Some(s) = PciSlot::new(s) {
                pci.mark_used(s);
            }
        }
    }

    // Disks.
    let mut disks = Vec::new();
    let disk_type = hv.disk_type();
    let driver = disk_type.qemu_driver().unwrap_or("virtio-blk-pci");
    if !spec.disks().is_empty() {
        need(driver, "disk_type")?;
    }
    let (write_cache, direct, no_flush) = cache_settings(hv.disk_cache());
    for (i, d) in spec.disks().iter().enumerate() {
        let uuid = d.uuid().to_string();
        let what = format!("disk {i} ({uuid})");
        let id = DeviceId::for_device(DeviceKind::Disk, &uuid).map_err(|source| {
            PlanError::DeviceId {
                what: what.clone(),
                source,
            }
        })?;
        let placement = if disk_type.is_scsi() {
            let target = scsi_targets.take().map_err(|source| PlanError::NoSlot {
                what: what.clone(),
                source,
            })?;
            Placement::Scsi {
                bus: "scsi.0".into(),
                channel: 0,
                target,
                lun: 0,
            }
        } else if disk_type == DiskType::Ide {
            Placement::Auto
        } else {
            let (p, port) = slots.hotpluggable(&what)?;
            inv.devices.extend(port);
            p
        };
        let hvinfo = HvInfo {
            driver: driver.to_owned(),
            id: id.clone(),
            placement,
        };
        let file = match d.source() {
            DiskSource::Path(p) => {
                let kind = if env.block_devices.contains(p) {
                    "host_device"
                } else {
                    "file"
                };
                let mut f = json!({"driver": kind, "filename": p.display().to_string()});
                if let Some(aio) = hv.disk_aio() {
                    f["aio"] = json!(aio.as_str());
                    if aio == DiskAio::Native {
                        f["cache"] = json!({"direct": true});
                    }
                }
                f
            }
            DiskSource::Uri(u) => {
                qemu_cmdline::storage_uri(u).map_err(|source| PlanError::StorageUri {
                    uuid: uuid.clone(),
                    source,
                })?
            }
        };
        let mut node = json!({
            "driver": "raw",
            "node-name": id.as_str(),
            "discard": hv.disk_discard().map_or("ignore", |d| d.as_str()),
            "cache": {"direct": direct, "no-flush": no_flush},
            "file": file,
        });
        if d.mode() == DiskMode::Ro {
            node["read-only"] = json!(true);
        }
        node["auto-read-only"] = json!(false);
        inv.blockdevs
            .push(Blockdev::new(node).map_err(|source| PlanError::StorageUri {
                uuid: uuid.clone(),
                source,
            })?);
        let head = if disk_type == DiskType::Ide {
            "ide-hd"
        } else {
            driver
        };
        let mut dev = placement_opts(Opts::new(head).set("id", id.as_str()), &hvinfo.placement);
        dev.push("drive", id.as_str());
        dev.push("write-cache", write_cache);
        if i == 0 && boot(BootOrder::Disk) {
            dev.push("bootindex", 1u8);
        }
        inv.devices.push(dev);
        disks.push(PlannedDevice { uuid, hvinfo });
    }

    // NICs.
    let nic_type = hv.nic_type();
    let nic_driver = nic_type.qemu_driver();
    if !spec.nics().is_empty() {
        need(nic_driver, "nic_type")?;
    }
    let paravirtual = nic_type == NicType::Paravirtual;
    let vhost = paravirtual && hv.vhost_net();
    if vhost && !spec.nics().is_empty() && !env.vhost_net {
        return Err(PlanError::VhostNetMissing);
    }
    let queues = if paravirtual {
        usize::try_from(hv.virtio_net_queues()).unwrap_or(1).max(1)
    } else {
        1
    };
    let mut fd_block = |n: usize| -> Vec<i32> {
        let v: Vec<i32> = (0..n).map(|k| next_fd + k as i32).collect();
        next_fd += n as i32;
        v
    };
    let mut taps = Vec::new();
    let mut nics = Vec::new();
    for (i, nic) in spec.nics().iter().enumerate() {
        let uuid = nic.uuid().to_string();
        let what = format!("NIC {i} ({uuid})");
        let id =
            DeviceId::for_device(DeviceKind::Nic, &uuid).map_err(|source| PlanError::DeviceId {
                what: what.clone(),
                source,
            })?;
        let placement = if nic_type.is_pci() {
            let (p, port) = slots.hotpluggable(&what)?;
            inv.devices.extend(port);
            p
        } else {
            Placement::Auto
        };
        let fds = fd_block(queues);
        let vhost_fds = if vhost { fd_block(queues) } else { Vec::new() };
        let join = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(":");
        let mut netdev = Opts::new("tap").set("id", id.as_str());
        if queues == 1 {
            netdev.push("fd", join(&fds));
        } else {
            netdev.push("fds", join(&fds));
        }
        if vhost {
            netdev.push("vhost", true);
            netdev.push(
                if queues == 1 { "vhostfd" } else { "vhostfds" },
                join(&vhost_fds),
            );
        }
        inv.netdevs.push(netdev);
        let mut dev = placement_opts(Opts::new(nic_driver).set("id", id.as_str()), &placement);
        dev.push("netdev", id.as_str());
        dev.push("mac", nic.mac().to_string());
        if queues > 1 {
            dev.push("mq", true);
            dev.push("vectors", u32::try_from(2 * queues + 2).unwrap_or(u32::MAX));
        }
        if i == 0 && boot(BootOrder::Network) {
            dev.push("bootindex", 1u8);
        }
        inv.devices.push(dev);
        taps.push(TapPlan {
            nic_uuid: uuid.clone(),
            id: id.to_string(),
            vnet_hdr: paravirtual && hv.vnet_hdr(),
            fds,
            vhost_fds,
        });
        nics.push(PlannedDevice {
            uuid,
            hvinfo: HvInfo {
                driver: nic_driver.to_owned(),
                id,
                placement,
            },
        });
    }

    // Spare root ports for hotplug on q35.
    if let Slots::Pcie { layout } = &mut slots {
        for port in layout
            .add_spares(env.spare_root_ports)
            .map_err(|source| PlanError::NoSlot {
                what: "spare root ports".into(),
                source,
            })?
        {
            inv.devices.push(port_device(&port));
        }
    }

    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    let all = disks
        .iter()
        .map(|d| ("disk", d))
        .chain(nics.iter().map(|n| ("NIC", n)));
    for (kind, d) in all {
        let label = format!("{kind} {}", d.uuid);
        if let Some(first) = seen.insert(d.hvinfo.id.as_str(), label.clone()) {
            return Err(PlanError::DuplicateDeviceId {
                id: d.hvinfo.id.to_string(),
                first,
                second: label,
            });
        }
    }

    inv.extra = hv.kvm_extra_args().ok_or(PlanError::KvmExtra)?;
    let argv = inv.render(&features);
    Ok(LaunchPlan {
        listen_sockets,
        invocation: inv,
        argv,
        machine,
        accel,
        taps,
        disks,
        nics,
        warnings,
    })
}

fn resolve_bind(
    param: &'static str,
    value: &str,
    family: Option<u8>,
    env: &PlanEnv,
) -> Result<String, PlanError> {
    if value.parse::<IpAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let addrs = env.interfaces.get(value).cloned().unwrap_or_default();
    let pick = |v4: bool| {
        addrs
            .iter()
            .find(|a| a.is_ipv4() == v4)
            .map(IpAddr::to_string)
    };
    match family {
        Some(4) => pick(true),
        Some(6) => pick(false),
        _ => pick(true).or_else(|| pick(false)),
    }
    .ok_or_else(|| PlanError::NoBindAddress {
        param,
        interface: value.to_owned(),
    })
}

fn vnc_opts(
    spec: &InstanceSpec,
    env: &PlanEnv,
    objects: &mut Vec<Opts>,
) -> Result<Opts, PlanError> {
    let hv = spec.hvparams();
    let bind = hv.vnc_bind_address();
    if bind.starts_with('/') {
        let path = PathBuf::from(bind).join(format!("{}.vnc", spec.name()));
        return Ok(Opts::new(&format!("unix:{}", path.display())));
    }
    let addr = resolve_bind("vnc_bind_address", bind, None, env)?;
    let port = spec
        .network_port()
        .ok_or(PlanError::NoNetworkPort("vnc_bind_address"))?;
    let display = i64::from(port) - 5900;
    let mut o = Opts::new(&host_port(&addr, display));
    if hv.vnc_tls() {
        let obj = if hv.vnc_x509_path().is_empty() {
            Opts::new("tls-creds-anon")
                .set("id", "vnctls0")
                .set("endpoint", "server")
        } else {
            Opts::new("tls-creds-x509")
                .set("id", "vnctls0")
                .set("endpoint", "server")
                .set("dir", hv.vnc_x509_path())
                .set("verify-peer", hv.vnc_x509_verify())
        };
        objects.push(obj);
        o.push("tls-creds", "vnctls0");
    }
    if !hv.vnc_password_file().is_empty() {
        o.push("password", true);
    }
    Ok(o)
}

fn spice_opts(spec: &InstanceSpec, env: &PlanEnv) -> Result<Opts, PlanError> {
    let hv = spec.hvparams();
    let bind = hv.spice_bind();
    let is_interface = bind.parse::<IpAddr>().is_err();
    let family = match hv.spice_ip_version() {
        4 => Some(4),
        6 => Some(6),
        _ => None,
    };
    let addr = resolve_bind("spice_bind", bind, family, env)?;
    let port = spec
        .network_port()
        .ok_or(PlanError::NoNetworkPort("spice_bind"))?;
    let mut o = Opts::pairs().set("addr", addr.as_str());
    if hv.spice_use_tls() {
        let dir = env
            .spice_cert_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/ganeti"));
        o.push("tls-port", port);
        o.push(
            "x509-cacert-file",
            dir.join("spice-ca.pem").display().to_string(),
        );
        o.push("x509-key-file", dir.join("spice.pem").display().to_string());
        o.push(
            "x509-cert-file",
            dir.join("spice.pem").display().to_string(),
        );
        if !hv.spice_tls_ciphers().is_empty() {
            o.push("tls-ciphers", hv.spice_tls_ciphers());
        }
    } else {
        o.push("port", port);
    }
    if hv.spice_password_file().is_empty() {
        o.push("disable-ticketing", true);
    }
    if is_interface {
        let v6 = addr.contains(':');
        o.push(if v6 { "ipv6" } else { "ipv4" }, true);
    }
    if let Some(c) = hv.spice_image_compression() {
        o.push("image-compression", c.as_str());
    }
    if let Some(c) = hv.spice_jpeg_wan_compression() {
        o.push("jpeg-wan-compression", c.as_str());
    }
    if let Some(c) = hv.spice_zlib_glz_wan_compression() {
        o.push("zlib-glz-wan-compression", c.as_str());
    }
    if let Some(c) = hv.spice_streaming_video() {
        o.push("streaming-video", c.as_str());
    }
    if !hv.spice_playback_compression() {
        o.push("playback-compression", false);
    }
    if !hv.spice_use_vdagent() {
        o.push("agent-mouse", false);
    }
    Ok(o)
}
