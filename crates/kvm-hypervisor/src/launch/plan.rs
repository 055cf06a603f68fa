//! Planning a start: spec + QEMU capabilities + host facts → a [`LaunchPlan`]
//! (plain data: the argv, the sockets to bind, the taps to open, each
//! device, the steps to run once QEMU answers). Pure: no I/O, so plans are
//! what snapshot tests see.
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

use device_slots::{DeviceKind, PciAllocator, PciSlot, PcieLayout, Placement, ScsiAllocator};
use qemu_cmdline::{
    Accel, Audio, Blockdev, Display, Invocation, KernelBoot, Opts, QemuCaps, RunWith, Smp,
};
use qmp_protocol::DisplayProtocol;
use serde::Serialize;
use serde_json::json;

use super::display::{spice_opts, vnc_opts};
use crate::devices::{
    DeviceError, DiskDevice, NicDevice, Plug, device_id, disk_driver, placement_props,
};
use crate::hvparams::{
    BootOrder, DiskType, HvParams, KvmFlag, RebootBehavior, SecurityModel, UsbMouse,
};
use crate::spec::InstanceSpec;
use crate::state::{RunDir, Socket};

/// The first file descriptor number handed to QEMU (after stdin, stdout, stderr).
pub const FIRST_PASSED_FD: i32 = 3;

/// How QEMU starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMode {
    /// A fresh boot: the guest runs once the post-start steps are done.
    #[default]
    Fresh,
    /// A fresh boot left paused (no `cont`).
    Paused,
    /// The target of a live migration: QEMU waits (`-incoming defer`) and
    /// listens on `uri` (`tcp:ADDR:PORT`) once set up; the guest runs when
    /// the migration completes.
    Incoming {
        /// Where to listen.
        uri: String,
        /// Whether the source may switch to postcopy (`postcopy-ram`).
        postcopy: bool,
        /// Accept over TLS only, with the `tls-creds-x509` files here.
        tls_creds: Option<std::path::PathBuf>,
    },
}

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
    /// Memory the node has available, MiB (`MemAvailable`); `None`: unknown,
    /// the guest gets all of its memory.
    pub available_memory_mib: Option<u64>,
    /// How QEMU starts.
    pub mode: StartMode,
    /// Placements to keep, by disk or NIC UUID: an incoming migration
    /// rebuilds each device (hot-plugged ones included) where the source
    /// has it.
    pub placements: BTreeMap<String, Placement>,
    /// NICs that were hot-plugged (by UUID): rebuilt as such (without an
    /// option ROM under chroot), as the source has them.
    pub hot_plugged_nics: std::collections::BTreeSet<String>,
    /// Ganeti's own KVM layer shares the run directory: `-name` and `-smp`
    /// in Ganeti's forms, which its liveness check reads.
    pub ganeti_forms: bool,
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

/// A step run over QMP once QEMU answers, before the runtime record is
/// written; a failed step undoes the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PostStartStep {
    /// `set_password` from the first line of `file`.
    SetPassword {
        /// VNC or SPICE.
        protocol: DisplayProtocol,
        /// The password file (read at execution; never in the plan).
        file: PathBuf,
    },
    /// Pin QEMU's threads by Ganeti's `cpu_mask`.
    PinCpus {
        /// The mask.
        mask: String,
    },
    /// Set the balloon target (Ganeti's start-up memory).
    Balloon {
        /// The target, MiB.
        mib: u64,
    },
    /// Let the guest run.
    Cont,
    /// Turn `caps` on and listen for the incoming migration.
    MigrateIncoming {
        /// Where to listen.
        uri: String,
        /// The capabilities, as the source sets them: `events`, Ganeti's
        /// `migration_caps`, and `postcopy-ram` when allowed.
        caps: Vec<String>,
        /// TLS credentials (the server's) to accept with.
        tls_creds: Option<std::path::PathBuf>,
    },
}

impl PostStartStep {
    /// The step's name, as in errors and timings.
    pub fn name(&self) -> &'static str {
        match self {
            PostStartStep::SetPassword { .. } => "password",
            PostStartStep::PinCpus { .. } => "pinning",
            PostStartStep::Balloon { .. } => "balloon",
            PostStartStep::Cont => "cont",
            PostStartStep::MigrateIncoming { .. } => "migrate-incoming",
        }
    }
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
    /// How QEMU starts.
    pub mode: StartMode,
    /// Monitor sockets to bind before QEMU starts (ours, the monitor
    /// daemon's, the users').
    pub listen_sockets: Vec<ListenSocket>,
    /// Taps to open, in NIC order.
    pub taps: Vec<TapPlan>,
    /// Disks, in order.
    pub disks: Vec<DiskDevice>,
    /// NICs, in order.
    pub nics: Vec<NicDevice>,
    /// The steps to run once QEMU answers, in order.
    pub post_start: Vec<PostStartStep>,
    /// Things the user should know (e.g. TCG chosen because KVM is unusable).
    pub warnings: Vec<String>,
    /// Ganeti's recorded argv whose guest part `argv` keeps (an instance
    /// Ganeti's KVM layer started, arriving by migration).
    pub guest_argv: Option<Vec<String>>,
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
    /// A disk or NIC cannot be built.
    #[error(transparent)]
    Device(#[from] DeviceError),
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

/// Slot allocation for the bus in use: `pci.0` on i440fx, root ports on q35.
enum Slots {
    Pci(PciAllocator),
    Pcie(PcieLayout),
}

fn no_slot(what: &str) -> impl FnOnce(device_slots::SlotError) -> PlanError + '_ {
    move |source| PlanError::NoSlot {
        what: what.to_owned(),
        source,
    }
}

impl Slots {
    fn new(q35: bool) -> Result<Slots, PlanError> {
        if q35 {
            let mut layout = PcieLayout::new(1).map_err(no_slot("root ports"))?;
            // 0x1f holds the ICH9 LPC/SATA/SMBus functions on q35.
            if let Some(s) = PciSlot::new(0x1f) {
                layout.mark_used(s);
            }
            return Ok(Slots::Pcie(layout));
        }
        let mut pci = PciAllocator::new("pci.0", 0).map_err(no_slot("pci.0"))?;
        // Slots 0-2: host bridge, PIIX3 (ISA/IDE/USB/PM functions), VGA.
        for s in (0..3).filter_map(PciSlot::new) {
            pci.mark_used(s);
        }
        Ok(Slots::Pci(pci))
    }

    /// A placement for one hot-pluggable PCI device, plus the root port
    /// device to add first on q35.
    fn hotpluggable(&mut self, what: &str) -> Result<(Placement, Option<Opts>), PlanError> {
        match self {
            Slots::Pci(pci) => {
                let slot = pci.take().map_err(no_slot(what))?;
                let bus = pci.bus().to_owned();
                Ok((Placement::Pci { bus, slot }, None))
            }
            Slots::Pcie(layout) => {
                let port = layout.add_port().map_err(no_slot(what))?;
                let zero = PciSlot::parse_hex("0x0").map_err(no_slot(what))?;
                let placement = Placement::Pci {
                    bus: port.id(),
                    slot: zero,
                };
                Ok((placement, Some(port_device(&port))))
            }
        }
    }

    /// A slot on the root bus for a device that is never hot-plugged.
    fn fixed(&mut self, what: &str) -> Result<(String, PciSlot), PlanError> {
        match self {
            Slots::Pci(pci) => Ok((pci.bus().to_owned(), pci.take().map_err(no_slot(what))?)),
            Slots::Pcie(layout) => Ok((
                device_slots::PCIE_ROOT_BUS.to_owned(),
                layout.take_root_slot().map_err(no_slot(what))?,
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

fn scsi_placement(scsi: &mut ScsiAllocator, what: &str) -> Result<Placement, PlanError> {
    let target = scsi.take().map_err(no_slot(what))?;
    Ok(Placement::Scsi {
        bus: "scsi.0".into(),
        channel: 0,
        target,
        lun: 0,
    })
}

/// Plans the start of `spec` on a QEMU with `caps`.
pub fn plan_start(
    spec: &InstanceSpec,
    caps: &QemuCaps,
    run: &RunDir,
    env: &PlanEnv,
) -> Result<LaunchPlan, PlanError> {
    let mut p = Planner::new(spec, caps, run, env)?;
    p.base()?;
    p.monitors();
    p.serial_console()?;
    p.kernel();
    p.fixed_devices()?;
    p.consoles()?;
    p.usb();
    p.removable_media()?;
    p.disks()?;
    p.nics()?;
    p.spare_ports()?;
    p.check_unique_ids()?;
    p.finish()
}

/// The state of one plan as it is built, step by step, in argv order.
struct Planner<'a> {
    spec: &'a InstanceSpec,
    hv: &'a HvParams,
    caps: &'a QemuCaps,
    run: &'a RunDir,
    env: &'a PlanEnv,
    name: &'a str,
    machine: String,
    accel: Accel,
    inv: Invocation,
    slots: Slots,
    scsi: ScsiAllocator,
    next_fd: i32,
    listen_sockets: Vec<ListenSocket>,
    taps: Vec<TapPlan>,
    disks: Vec<DiskDevice>,
    nics: Vec<NicDevice>,
    /// `-global` settings.
    globals: Vec<String>,
    /// Slots taken for virtio-blk CD-ROMs, in Ganeti's order.
    cdrom_slots: Vec<(String, PciSlot)>,
    warnings: Vec<String>,
}

impl<'a> Planner<'a> {
    /// The machine type (aliases resolved, so the record names a concrete
    /// type) and the accelerator.
    fn new(
        spec: &'a InstanceSpec,
        caps: &'a QemuCaps,
        run: &'a RunDir,
        env: &'a PlanEnv,
    ) -> Result<Planner<'a>, PlanError> {
        let hv = spec.hvparams();
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
                    version: caps.version.to_string(),
                })?,
        };
        let mut warnings = Vec::new();
        let accel = match hv.kvm_flag() {
            Some(KvmFlag::Enabled) => Accel::Kvm,
            Some(KvmFlag::Disabled) => Accel::Tcg,
            _ if env.kvm_usable => Accel::Kvm,
            _ => {
                warnings.push("KVM is not usable on this host: the guest runs under TCG emulation (set kvm_flag to choose)".to_owned());
                Accel::Tcg
            }
        };
        let name = spec.name().as_str();
        Ok(Planner {
            spec,
            hv,
            caps,
            run,
            env,
            name,
            slots: Slots::new(machine.contains("q35"))?,
            inv: Invocation {
                ganeti_forms: env.ganeti_forms,
                ..Invocation::new(hv.kvm_path(), name, &machine)
            },
            machine,
            accel,
            scsi: ScsiAllocator::new("scsi.0", device_slots::DEFAULT_SCSI_TARGETS),
            next_fd: FIRST_PASSED_FD,
            listen_sockets: Vec::new(),
            taps: Vec::new(),
            disks: Vec::new(),
            nics: Vec::new(),
            globals: Vec::new(),
            cdrom_slots: Vec::new(),
            warnings,
        })
    }

    fn need(&self, driver: &str, what: &str) -> Result<(), PlanError> {
        if self.caps.has_device(driver) {
            return Ok(());
        }
        Err(PlanError::MissingDevice {
            driver: driver.to_owned(),
            what: what.to_owned(),
            version: self.caps.version.to_string(),
        })
    }

    /// Whether the guest boots from `order` (no kernel given).
    fn boots_from(&self, order: BootOrder) -> bool {
        self.hv.kernel_path().is_empty() && self.hv.boot_order() == order
    }

    fn socket(&self, id: &str, which: Socket) -> Opts {
        let path = self.run.socket(self.name, which);
        Opts::new("socket")
            .set("id", id)
            .set("path", path.display().to_string())
            .set("server", true)
            .set("wait", false)
    }

    /// Identity, CPU, memory, pid file, ACPI, sandbox and privileges.
    fn base(&mut self) -> Result<(), PlanError> {
        let (hv, inv) = (self.hv, &mut self.inv);
        inv.uuid = Some(self.spec.uuid().to_string());
        inv.accel = self.accel;
        inv.cpu = (!hv.cpu_type().is_empty()).then(|| hv.cpu_type().to_owned());
        let n = |v: i64| u32::try_from(v).unwrap_or(0);
        inv.smp = Smp {
            cpus: self.spec.vcpus(),
            sockets: n(hv.cpu_sockets()),
            cores: n(hv.cpu_cores()),
            threads: n(hv.cpu_threads()),
        };
        inv.memory_mib = self.spec.memory();
        inv.mem_path = (!hv.mem_path().is_empty()).then(|| PathBuf::from(hv.mem_path()));
        inv.pidfile = Some(self.run.pid_file(self.name));
        // An incoming QEMU runs the guest once the migration completes.
        let incoming = matches!(self.env.mode, StartMode::Incoming { .. });
        inv.paused = !incoming;
        inv.incoming = incoming.then(|| "defer".to_owned());
        inv.acpi = hv.acpi();
        inv.no_reboot = hv.reboot_behavior() == RebootBehavior::Exit;
        inv.sandbox = hv.sandbox();
        let user = match hv.security_model() {
            SecurityModel::User => Some(hv.security_domain().to_owned()),
            SecurityModel::Pool => Some(self.env.pool_user.clone().ok_or(PlanError::NoPoolUser)?),
            _ => None,
        };
        inv.run_with = RunWith {
            user,
            chroot: hv.use_chroot().then(|| self.run.chroot_dir(self.name)),
        };
        Ok(())
    }

    /// Ours (QMP), the monitor daemon's (second QMP, Ganeti's `.kvmd`) and
    /// the users' (third QMP, so a user's session never blocks ours) on
    /// sockets we bind and pass; HMP for Ganeti's console wrapper.
    fn monitors(&mut self) {
        let qmps = [
            ("qmp", Socket::Qmp),
            ("kvmd", Socket::Kvmd),
            ("qmpuser", Socket::UserQmp),
        ];
        for (id, which) in qmps {
            self.inv.chardevs.push(
                Opts::new("socket")
                    .set("id", id)
                    .set("fd", self.next_fd)
                    .set("server", true)
                    .set("wait", false),
            );
            self.inv.monitors.push((id.into(), true));
            self.listen_sockets.push(ListenSocket {
                path: self.run.socket(self.name, which),
                fd: self.next_fd,
            });
            self.next_fd += 1;
        }
        let hmp = self.socket("hmp", Socket::Monitor);
        self.inv.chardevs.push(hmp);
        self.inv.monitors.push(("hmp".into(), false));
    }

    fn serial_console(&mut self) -> Result<(), PlanError> {
        if !self.hv.serial_console() {
            return Ok(());
        }
        let log = self.run.console_log(self.name);
        let chardev = self
            .socket("serial0", Socket::Serial)
            .set("logfile", log.display().to_string())
            // Appending: the monitor caps the log by cutting it in place,
            // and an appending writer then goes on at the new end. The
            // start truncates it, so each boot's log is its own.
            .set("logappend", true);
        self.inv.chardevs.push(chardev);
        self.inv.serials.push("chardev:serial0".into());
        self.need("isa-serial", "serial_console")
    }

    fn kernel(&mut self) {
        let hv = self.hv;
        if hv.kernel_path().is_empty() {
            return;
        }
        let mut append: Vec<String> = vec![format!("root={}", hv.root_path())];
        if !hv.kernel_args().is_empty() {
            append.push(hv.kernel_args().to_owned());
        }
        if hv.serial_console() {
            append.push(format!("console=ttyS0,{}", hv.serial_speed()));
        }
        self.inv.kernel = Some(KernelBoot {
            kernel: hv.kernel_path().into(),
            initrd: (!hv.initrd_path().is_empty()).then(|| hv.initrd_path().into()),
            append: append.join(" "),
        });
    }

    /// The CD-ROM device type: `cdrom_disk_type`, else what `disk_type` implies.
    fn cdrom_type(&self) -> DiskType {
        self.hv
            .cdrom_disk_type()
            .or_else(|| self.hv.disk_type().implied_cdrom_type())
            .unwrap_or(DiskType::Ide)
    }

    /// Ganeti's `-usbdevice tablet`: with VNC and no `usb_mouse`.
    fn wants_tablet(&self) -> bool {
        let hv = self.hv;
        hv.usb_mouse().is_none() && !hv.vnc_bind_address().is_empty()
    }

    fn spice_agent(&self) -> bool {
        !self.hv.spice_bind().is_empty() && self.hv.spice_use_vdagent()
    }

    /// Devices that are never hot-plugged, where Ganeti's machine has them.
    ///
    /// On i440fx, as Ganeti's argv gives them on the same QEMU: the PIIX3
    /// UHCI at 01.2 (Ganeti's `-usb`), the VGA at 02.0 (`-vga`, created with
    /// the machine, as QEMU's default VGA is), then in Ganeti's creation
    /// order the sound card (QEMU makes it before any `-device`), the SCSI
    /// controller, the balloon, the SPICE agent's and the guest agent's
    /// virtio-serial controllers. q35, which Ganeti's argv cannot start,
    /// keeps the VGA and a qemu-xhci on root slots.
    fn fixed_devices(&mut self) -> Result<(), PlanError> {
        let hv = self.hv;
        let q35 = matches!(self.slots, Slots::Pcie(_));
        if !q35 {
            if !hv.lean_machine() || self.needs_usb() {
                self.need("piix3-usb-uhci", "Ganeti's USB controller")?;
                let uhci = Opts::new("piix3-usb-uhci")
                    .set("id", "usb")
                    .set("bus", "pci.0")
                    .set("addr", "0x1.0x2");
                self.inv.devices.push(uhci);
            }
            self.inv.vga = self.vga_option().map(str::to_owned);
            if sound_is_pci(hv.soundhw()) {
                // QEMU places the card itself, on the lowest free slot.
                self.slots.fixed("the sound card")?;
            }
        }
        let mut fixed: Vec<(&str, &str)> = Vec::new();
        let has_cdrom = !hv.cdrom_image_path().is_empty() || !hv.cdrom2_image_path().is_empty();
        let scsi_disks = hv.disk_type().is_scsi() && !self.spec.disks().is_empty();
        if scsi_disks || (has_cdrom && self.cdrom_type().is_scsi()) {
            let ctrl = hv.scsi_controller_type().qemu_driver();
            self.need(ctrl, "scsi_controller_type")?;
            fixed.push((ctrl, "scsi"));
        }
        self.need("virtio-balloon-pci", "the balloon")?;
        fixed.push(("virtio-balloon-pci", "balloon0"));
        // Ganeti's virtio-blk CD-ROMs come next: QEMU places them as it
        // meets them, after the balloon and before the virtio-serials.
        let virtio_cdroms = if q35 || self.cdrom_type() != DiskType::Paravirtual {
            0
        } else {
            [hv.cdrom_image_path(), hv.cdrom2_image_path()]
                .iter()
                .filter(|p| !p.is_empty())
                .count()
        };
        if q35 && self.needs_usb() {
            self.need("qemu-xhci", "USB devices")?;
            fixed.push(("qemu-xhci", "usb"));
        }
        if self.spice_agent() {
            fixed.push(("virtio-serial-pci", "spice"));
        }
        if hv.use_guest_agent() {
            fixed.push(("virtio-serial-pci", "qga0"));
        }
        if q35 && let Some(vga) = self.vga() {
            self.need(vga, "vga")?;
            fixed.push((vga, "video0"));
        }
        let cdroms_after = fixed.len();
        for (i, (driver, id)) in fixed.into_iter().enumerate() {
            if i == cdroms_after
                - usize::from(self.spice_agent())
                - usize::from(hv.use_guest_agent())
            {
                self.take_cdrom_slots(virtio_cdroms)?;
            }
            let (bus, slot) = self.slots.fixed(id)?;
            let dev = Opts::new(driver)
                .set("id", id)
                .set("bus", bus)
                .set("addr", slot.hex());
            self.inv.devices.push(dev);
        }
        if self.cdrom_slots.len() < virtio_cdroms {
            self.take_cdrom_slots(virtio_cdroms)?;
        }
        Ok(())
    }

    /// The slots of `n` virtio-blk CD-ROMs, taken once.
    fn take_cdrom_slots(&mut self, n: usize) -> Result<(), PlanError> {
        while self.cdrom_slots.len() < n {
            let taken = self.slots.fixed("a CD-ROM")?;
            self.cdrom_slots.push(taken);
        }
        Ok(())
    }

    /// Whether a USB device is asked for (the mouse, the VNC tablet,
    /// `usb_devices`).
    fn needs_usb(&self) -> bool {
        let hv = self.hv;
        hv.usb_mouse().is_some() || self.wants_tablet() || !hv.usb_device_list().is_empty()
    }

    /// The VGA device on q35 (a `-device`).
    fn vga(&self) -> Option<&'a str> {
        let hv = self.hv;
        let (vnc, spice) = (hv.vnc_bind_address(), hv.spice_bind());
        match (hv.vga(), vnc.is_empty(), spice.is_empty()) {
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
        }
    }

    /// The `-vga` of Ganeti's machine on i440fx: `vga` as given, else `qxl`
    /// with SPICE, else QEMU's default (`std`), which every Ganeti guest has.
    fn vga_option(&self) -> Option<&'a str> {
        let hv = self.hv;
        match hv.vga() {
            "" if !hv.spice_bind().is_empty() => Some("qxl"),
            "" => Some("std"),
            "none" => None,
            other => Some(other),
        }
    }

    /// VNC or SPICE, the SPICE agent channel, the guest agent, keymap,
    /// clock and sound.
    fn consoles(&mut self) -> Result<(), PlanError> {
        let hv = self.hv;
        if !hv.vnc_bind_address().is_empty() {
            self.inv.display = Display::Vnc(vnc_opts(self.spec, self.env, &mut self.inv.objects)?);
        } else if !hv.spice_bind().is_empty() {
            self.inv.display = Display::Spice(spice_opts(self.spec, self.env)?);
        }
        if self.spice_agent() {
            self.inv.chardevs.push(
                Opts::new("spicevmc")
                    .set("id", "spicechannel0")
                    .set("name", "vdagent"),
            );
            self.inv.devices.push(serial_port(
                "spice.0",
                "spicechannel0",
                "com.redhat.spice.0",
            ));
        }
        if hv.use_guest_agent() {
            let qga = self.socket("qga0", Socket::GuestAgent);
            self.inv.chardevs.push(qga);
            self.inv
                .devices
                .push(serial_port("qga0.0", "qga0", "org.qemu.guest_agent.0"));
        }
        Ok(())
    }

    /// USB pointing devices and `usb_devices`, then keymap, clock and sound
    /// (argv order).
    fn usb(&mut self) {
        let hv = self.hv;
        let usb = |driver: &str, id: String| Opts::new(driver).set("id", id).set("bus", "usb.0");
        match hv.usb_mouse() {
            Some(UsbMouse::Mouse) => self.inv.devices.push(usb("usb-mouse", "usbmouse".into())),
            Some(UsbMouse::Tablet) => self.inv.devices.push(usb("usb-tablet", "usbtablet".into())),
            _ if self.wants_tablet() => {
                self.inv.devices.push(usb("usb-tablet", "usbtablet".into()));
            }
            _ => {}
        }
        for (i, driver) in hv.usb_device_drivers().into_iter().enumerate() {
            self.inv.devices.push(usb(driver, format!("usb{i}")));
        }
        if !hv.keymap().is_empty() {
            self.inv.keymap = Some(hv.keymap().to_owned());
        }
        if hv.use_localtime() {
            self.inv.rtc = Some(Opts::pairs().set("base", "localtime"));
        }
        if !hv.soundhw().is_empty() {
            let spice = !hv.spice_bind().is_empty();
            self.inv.audio = Some(Audio {
                model: hv.soundhw().to_owned(),
                driver: if spice { "spice" } else { "none" }.into(),
            });
        }
    }

    /// Whether QEMU would add its default CD-ROM to Ganeti's argv: only
    /// when that has no `ide-hd`, `ide-cd`, `scsi-hd` or `scsi-cd` device.
    fn default_cdrom(&self) -> bool {
        let hv = self.hv;
        let cdroms = !hv.cdrom_image_path().is_empty() || !hv.cdrom2_image_path().is_empty();
        let cdrom_blocks = cdroms && self.cdrom_type() != DiskType::Paravirtual;
        let disk_blocks = !self.spec.disks().is_empty()
            && matches!(
                hv.disk_type(),
                DiskType::Ide | DiskType::ScsiHd | DiskType::ScsiCd
            );
        !cdrom_blocks && !disk_blocks
    }

    /// CD-ROMs and the floppy, and QEMU's default legacy devices.
    fn removable_media(&mut self) -> Result<(), PlanError> {
        let hv = self.hv;
        let cdroms = [
            (
                "cdrom1",
                hv.cdrom_image_path(),
                self.boots_from(BootOrder::Cdrom),
            ),
            ("cdrom2", hv.cdrom2_image_path(), false),
        ];
        for (node, path, bootable) in cdroms {
            if !path.is_empty() {
                self.cdrom(node, path, bootable)?;
            }
        }
        let q35 = matches!(self.slots, Slots::Pcie(_));
        let legacy = !q35 && !hv.lean_machine();
        if !hv.floppy_image_path().is_empty() {
            self.need("floppy", "floppy_image_path")?;
            let node = json!({"driver": "raw", "node-name": "floppy1", "file": {"driver": "file", "filename": hv.floppy_image_path()}});
            self.inv.blockdevs.push(blockdev(node, "floppy1")?);
            self.inv
                .devices
                .push(Opts::new("floppy").set("drive", "floppy1"));
        } else if legacy {
            // QEMU's default empty floppy drive, as every Ganeti guest has.
            self.inv
                .devices
                .push(Opts::new("floppy").set("id", "floppy0").set("unit", 0u8));
        }
        if self.boots_from(BootOrder::Floppy) && !hv.floppy_image_path().is_empty() {
            // QEMU 7.2 refuses a bootindex on the floppy device itself.
            self.globals.push("isa-fdc.bootindexA=1".into());
        }
        if legacy && self.default_cdrom() {
            // QEMU's default empty CD-ROM (ide1-cd0): Ganeti's guest has it
            // unless its argv has an IDE or SCSI disk or CD-ROM device.
            self.inv.devices.push(
                Opts::new("ide-cd")
                    .set("id", "ide1-cd0")
                    .set("bus", "ide.1")
                    .set("unit", 0u8),
            );
        }
        if legacy {
            // QEMU's default parallel port.
            self.inv
                .chardevs
                .push(Opts::new("null").set("id", "parallel0"));
            self.inv
                .devices
                .push(Opts::new("isa-parallel").set("chardev", "parallel0"));
        }
        Ok(())
    }

    fn cdrom(&mut self, node: &str, path: &str, bootable: bool) -> Result<(), PlanError> {
        let file = if path.contains("://") {
            qemu_cmdline::storage_uri(path).map_err(|source| DeviceError::StorageUri {
                uuid: node.into(),
                source,
            })?
        } else {
            json!({"driver": "file", "filename": path})
        };
        let node_json = json!({"driver": "raw", "node-name": node, "read-only": true, "cache": {"direct": false, "no-flush": true}, "file": file});
        self.inv.blockdevs.push(blockdev(node_json, node)?);
        let mut dev = match self.cdrom_type() {
            DiskType::Paravirtual if !self.cdrom_slots.is_empty() => {
                let (bus, slot) = self.cdrom_slots.remove(0);
                let p = Placement::Pci { bus, slot };
                placed(Opts::new("virtio-blk-pci").set("id", node), &p)
            }
            DiskType::Paravirtual => {
                let (p, port) = self.slots.hotpluggable(node)?;
                self.inv.devices.extend(port);
                placed(Opts::new("virtio-blk-pci").set("id", node), &p)
            }
            t if t.is_scsi() => {
                let p = scsi_placement(&mut self.scsi, node)?;
                placed(Opts::new("scsi-cd").set("id", node), &p)
            }
            _ => Opts::new("ide-cd").set("id", node),
        };
        dev.push("drive", node);
        if bootable {
            dev.push("bootindex", 1u8);
        }
        self.inv.devices.push(dev);
        Ok(())
    }

    /// Disks, after `kvm_pci_reservations` (as in Ganeti).
    fn disks(&mut self) -> Result<(), PlanError> {
        let hv = self.hv;
        let reserved = u8::try_from(hv.kvm_pci_reservations())
            .unwrap_or(device_slots::DEFAULT_PCI_RESERVATIONS);
        if let Slots::Pci(pci) = &mut self.slots {
            for s in (0..reserved).filter_map(PciSlot::new) {
                pci.mark_used(s);
            }
        }
        // Slots kept from a source are taken before any is handed out.
        for p in self.env.placements.values() {
            match (p, &mut self.slots) {
                (Placement::Pci { bus, slot }, Slots::Pci(pci)) if bus == pci.bus() => {
                    pci.mark_used(*slot);
                }
                (Placement::Scsi { target, .. }, _) => self.scsi.mark_used(*target),
                _ => {}
            }
        }
        let disk_type = hv.disk_type();
        if !self.spec.disks().is_empty() {
            self.need(disk_driver(disk_type), "disk_type")?;
        }
        for (i, d) in self.spec.disks().iter().enumerate() {
            let uuid = d.uuid().to_string();
            let what = format!("disk {i} ({uuid})");
            let id = device_id(DeviceKind::Disk, &uuid, &what)?;
            let placement = if let Some(p) = self.pinned(&uuid) {
                p
            } else if disk_type.is_scsi() {
                scsi_placement(&mut self.scsi, &what)?
            } else if disk_type == DiskType::Ide {
                // Ganeti allocates a PCI slot to an IDE disk too (and then
                // leaves it empty): later disks and NICs sit where its do.
                if let Slots::Pci(pci) = &mut self.slots {
                    pci.take().map_err(no_slot(&what))?;
                }
                Placement::Auto
            } else {
                self.hotpluggable(&what)?
            };
            let cache = crate::devices::effective_cache(d, hv);
            if cache != hv.disk_cache() {
                self.warnings.push(format!(
                    "disks[{i}]: disk_cache {} overridden with none on {} storage, to prevent shared storage corruption on migration (as Ganeti)",
                    hv.disk_cache().as_str(),
                    d.dev_type()
                ));
            }
            let boot = i == 0 && self.boots_from(BootOrder::Disk);
            let disk = DiskDevice::new(d, hv, id, placement, &self.env.block_devices, boot)?;
            self.inv.blockdevs.push(disk.blockdev()?);
            self.inv.devices.push(disk.device().to_opts());
            self.disks.push(disk);
        }
        Ok(())
    }

    /// The placement a source gave this device, to keep.
    fn pinned(&self, uuid: &str) -> Option<Placement> {
        self.env.placements.get(uuid).cloned()
    }

    /// A hot-pluggable placement; on q35 its root port joins the argv first.
    fn hotpluggable(&mut self, what: &str) -> Result<Placement, PlanError> {
        let (placement, port) = self.slots.hotpluggable(what)?;
        self.inv.devices.extend(port);
        Ok(placement)
    }

    /// The next `n` descriptor numbers in QEMU's process.
    fn fds(&mut self, n: usize) -> Vec<i32> {
        let v: Vec<i32> = (self.next_fd..).take(n).collect();
        self.next_fd += i32::try_from(n).unwrap_or(0);
        v
    }

    fn nics(&mut self) -> Result<(), PlanError> {
        let hv = self.hv;
        let nic_type = hv.nic_type();
        if !self.spec.nics().is_empty() {
            self.need(nic_type.qemu_driver(), "nic_type")?;
        }
        for (i, n) in self.spec.nics().iter().enumerate() {
            let uuid = n.uuid().to_string();
            let what = format!("NIC {i} ({uuid})");
            let id = device_id(DeviceKind::Nic, &uuid, &what)?;
            let placement = if let Some(p) = self.pinned(&uuid) {
                p
            } else if nic_type.is_pci() {
                self.hotpluggable(&what)?
            } else {
                Placement::Auto
            };
            let boot = i == 0 && self.boots_from(BootOrder::Network);
            let vhost = self.env.vhost_net;
            let plug = if self.env.hot_plugged_nics.contains(&uuid) {
                Plug::Hot
            } else {
                Plug::Cold
            };
            let nic = NicDevice::new(self.name, i, n, hv, id, placement, vhost, plug, boot)?;
            let fds = self.fds(nic.queues());
            let vhost_fds = if nic.tap().vhost {
                self.fds(nic.queues())
            } else {
                Vec::new()
            };
            self.inv.netdevs.push(nic.netdev_opts(&fds, &vhost_fds));
            self.inv.devices.push(nic.device().to_opts());
            self.taps.push(TapPlan {
                nic_uuid: uuid,
                id: nic.device().id().to_string(),
                vnet_hdr: nic.tap().vnet_hdr,
                fds,
                vhost_fds,
            });
            self.nics.push(nic);
        }
        Ok(())
    }

    /// Spare root ports for hotplug on q35.
    fn spare_ports(&mut self) -> Result<(), PlanError> {
        if let Slots::Pcie(layout) = &mut self.slots {
            let spares = layout
                .add_spares(self.env.spare_root_ports)
                .map_err(no_slot("spare root ports"))?;
            self.inv.devices.extend(spares.iter().map(port_device));
        }
        Ok(())
    }

    fn check_unique_ids(&self) -> Result<(), PlanError> {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let disks = self
            .disks
            .iter()
            .map(|d| ("disk", &d.record().uuid, d.device()));
        let nics = self
            .nics
            .iter()
            .map(|n| ("NIC", &n.record().uuid, n.device()));
        for (kind, uuid, dev) in disks.chain(nics) {
            let label = format!("{kind} {uuid}");
            if let Some(first) = seen.insert(dev.id().to_string(), label.clone()) {
                return Err(PlanError::DuplicateDeviceId {
                    id: dev.id().to_string(),
                    first,
                    second: label,
                });
            }
        }
        Ok(())
    }

    /// What runs once QEMU answers: passwords, pinning, balloon, `cont`.
    fn post_start(&self) -> Vec<PostStartStep> {
        let hv = self.hv;
        let mut steps = Vec::new();
        for (file, protocol) in [
            (hv.vnc_password_file(), DisplayProtocol::Vnc),
            (hv.spice_password_file(), DisplayProtocol::Spice),
        ] {
            if !file.is_empty() {
                steps.push(PostStartStep::SetPassword {
                    protocol,
                    file: file.into(),
                });
            }
        }
        if !matches!(hv.cpu_mask(), "" | "all") {
            steps.push(PostStartStep::PinCpus {
                mask: hv.cpu_mask().to_owned(),
            });
        }
        let memory = (self.spec.memory(), self.spec.min_memory());
        if let Some(mib) = startup_memory(memory.0, memory.1, self.env.available_memory_mib) {
            steps.push(PostStartStep::Balloon { mib });
        }
        match &self.env.mode {
            StartMode::Fresh => steps.push(PostStartStep::Cont),
            StartMode::Incoming {
                uri,
                postcopy,
                tls_creds,
            } => {
                // The source's memory comes as it is: no start-up balloon.
                steps.retain(|s| !matches!(s, PostStartStep::Balloon { .. }));
                let caps = crate::migration::capabilities(self.hv.migration_cap_list(), *postcopy);
                steps.push(PostStartStep::MigrateIncoming {
                    uri: uri.clone(),
                    caps,
                    tls_creds: tls_creds.clone(),
                });
            }
            _ => {}
        }
        steps
    }

    fn finish(mut self) -> Result<LaunchPlan, PlanError> {
        let kvm_extra = self.hv.kvm_extra_args().ok_or(PlanError::KvmExtra)?;
        let globals = self
            .globals
            .iter()
            .flat_map(|g| ["-global".to_owned(), g.clone()]);
        self.inv.extra = globals.chain(kvm_extra).collect();
        let argv = self.inv.render(&self.caps.features());
        let post_start = self.post_start();
        Ok(LaunchPlan {
            argv,
            invocation: self.inv,
            machine: self.machine,
            accel: self.accel,
            mode: self.env.mode.clone(),
            listen_sockets: self.listen_sockets,
            taps: self.taps,
            disks: self.disks,
            nics: self.nics,
            post_start,
            warnings: self.warnings,
            guest_argv: None,
        })
    }
}

/// Whether `soundhw` names a PCI sound card (ISA ones take no slot).
fn sound_is_pci(soundhw: &str) -> bool {
    matches!(
        soundhw,
        "hda" | "intel-hda" | "ac97" | "AC97" | "es1370" | "ES1370"
    )
}

fn serial_port(bus: &str, chardev: &str, name: &str) -> Opts {
    Opts::new("virtserialport")
        .set("bus", bus)
        .set("chardev", chardev)
        .set("name", name)
}

fn blockdev(node: serde_json::Value, name: &str) -> Result<Blockdev, PlanError> {
    Blockdev::new(node).map_err(|source| {
        PlanError::Device(DeviceError::StorageUri {
            uuid: name.into(),
            source,
        })
    })
}

fn placed(mut o: Opts, p: &Placement) -> Opts {
    for (k, v) in placement_props(p) {
        o.push(k, v);
    }
    o
}

/// Ganeti's start-up memory: all of `memory` when the node has it
/// available, else what is available but at least `min_memory`. `None`: no
/// balloon needed (the target is all of `memory`, or the available memory
/// is unknown).
fn startup_memory(memory: u64, min_memory: u64, available: Option<u64>) -> Option<u64> {
    let target = available?.max(min_memory);
    (target < memory).then_some(target)
}
