//! The table of every KVM hvparam and the typed [`HvParams`] built from it.

use serde_json::{Map, Value as Json};

use crate::enums::*;
use crate::problem::{Problem, ProblemKind, Problems};
use crate::value::{ParamType, ParseFailure, Required};

/// Ganeti's default `kvm_path` (`--with-kvm-path`).
pub const DEFAULT_KVM_PATH: &str = "/usr/bin/kvm";
/// Ganeti's default `kernel_path` (`--with-kvm-kernel`).
pub const DEFAULT_KERNEL_PATH: &str = "/boot/vmlinuz-3-kvmU";

/// What the syntax check of a parameter is, beyond its type and value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// No check beyond the type.
    None,
    /// A normalized absolute path to a file that must exist on the node.
    File,
    /// A normalized absolute path to a directory that must exist on the node.
    Dir,
    /// A file as for [`Rule::File`], or an `http`, `https`, `ftp` or `ftps` URL.
    FileOrUrl,
    /// A TCP port, 1 to 65535.
    Port,
    /// An integer of at least 0.
    NonNegative,
    /// An integer in `min..=max`.
    Range {
        /// Lowest accepted value.
        min: i64,
        /// Highest accepted value.
        max: i64,
    },
    /// One of a few integers.
    IntIn(&'static [i64]),
    /// A (multi-)CPU mask such as `0-2,4:all:1,3`.
    CpuMask,
    /// An IP address, a network interface name or an absolute path.
    VncBind,
    /// An IP address or a network interface name.
    SpiceBind,
    /// Words split as by a POSIX shell (quotes must balance).
    ShellWords,
    /// `:`-separated QEMU migration capability names.
    MigrationCaps,
}

/// Where a parameter's value comes from, as Ganeti distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Scope {
    /// Per instance; the start-time value is kept for the instance's life.
    Instance,
    /// Per instance, but always read from the current configuration
    /// (Ganeti's `conf_hvp`), e.g. password files.
    Current,
    /// Cluster-wide (Ganeti's `hvcGlobals`): cannot be overridden per instance.
    Cluster,
}

/// The definition of one hvparam.
#[derive(Debug)]
pub struct ParamDef {
    name: &'static str,
    kind: crate::Kind,
    required: bool,
    allowed: &'static [&'static str],
    default: fn() -> Json,
    rule: Rule,
    scope: Scope,
    doc: &'static str,
}

impl ParamDef {
    /// The parameter's name, as in Ganeti.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// Its value type.
    pub fn kind(&self) -> crate::Kind {
        self.kind
    }
    /// Whether `""` is refused.
    pub fn required(&self) -> bool {
        self.required
    }
    /// The allowed values of a set-valued parameter (empty when unrestricted).
    pub fn allowed(&self) -> &'static [&'static str] {
        self.allowed
    }
    /// Ganeti's default value.
    pub fn default_value(&self) -> Json {
        (self.default)()
    }
    /// The syntax rule.
    pub fn rule(&self) -> Rule {
        self.rule
    }
    /// Where the value comes from.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// Whether Ganeti has this parameter (false for our extensions).
    pub fn is_ganeti(&self) -> bool {
        !EXTENSIONS.contains(&self.name)
    }
    /// One line saying what the parameter does.
    pub fn doc(&self) -> &'static str {
        self.doc.trim()
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

macro_rules! hvparams {
    ($( #[doc = $doc:literal] $name:ident : $ty:ty => $out:ty = $default:expr, $required:literal, $rule:expr, $scope:ident; )+) => {
        /// A complete, typed set of KVM hvparams: every parameter has a value,
        /// Ganeti's default where none was given.
        ///
        /// Build one with [`HvParams::default`] or [`HvParams::from_map`]; the
        /// latter reports every problem at once.
        #[derive(Debug, Clone, PartialEq)]
        pub struct HvParams {
            $( $name: $ty, )+
        }

        impl Default for HvParams {
            fn default() -> Self {
                HvParams { $( $name: $default, )+ }
            }
        }

        impl HvParams {
            $(
                #[doc = $doc]
                pub fn $name(&self) -> $out {
                    ParamType::get(&self.$name)
                }
            )+

            fn set_json(&mut self, name: &str, value: &Json) -> Result<(), ParseFailure> {
                match name {
                    $( stringify!($name) => {
                        self.$name = <$ty as ParamType>::from_json(value)?;
                    } )+
                    _ => {}
                }
                Ok(())
            }

            /// The value of the parameter called `name`, as JSON.
            pub fn get_json(&self, name: &str) -> Option<Json> {
                match name {
                    $( stringify!($name) => Some(ParamType::to_json(&self.$name)), )+
                    _ => None,
                }
            }
        }

        static PARAMS: &[ParamDef] = &[
            $( ParamDef {
                name: stringify!($name),
                kind: <$ty as ParamType>::KIND,
                required: $required || !<$ty as ParamType>::EMPTY_OK,
                allowed: <$ty as ParamType>::ALLOWED,
                default: || { let v: $ty = $default; ParamType::to_json(&v) },
                rule: $rule,
                scope: Scope::$scope,
                doc: $doc,
            }, )+
        ];
    };
}

hvparams! {
    /// The QEMU binary.
    kvm_path: String => &str = s(DEFAULT_KVM_PATH), true, Rule::File, Instance;
    /// A kernel to boot directly (`-kernel`); empty boots from the configured device.
    kernel_path: String => &str = s(DEFAULT_KERNEL_PATH), false, Rule::File, Instance;
    /// An initial ramdisk for the direct kernel boot (`-initrd`).
    initrd_path: String => &str = s(""), false, Rule::File, Instance;
    /// The kernel's `root=` argument; required with a kernel.
    root_path: String => &str = s("/dev/vda1"), false, Rule::None, Instance;
    /// Further kernel command-line arguments.
    kernel_args: String => &str = s("ro"), false, Rule::None, Instance;
    /// Whether the guest has ACPI; also decides whether a stop is an ACPI power-down.
    acpi: bool => bool = true, false, Rule::None, Instance;
    /// Whether the first serial port is a console reachable through a socket.
    serial_console: bool => bool = true, false, Rule::None, Instance;
    /// The serial console's speed, passed to the kernel as `console=ttyS0,<speed>`.
    serial_speed: i64 => i64 = 38400, false, Rule::None, Instance;
    /// Where VNC listens: an IP address, an interface name or a Unix socket directory.
    vnc_bind_address: String => &str = s(""), false, Rule::VncBind, Instance;
    /// Whether VNC uses TLS.
    vnc_tls: bool => bool = false, false, Rule::None, Instance;
    /// Directory with the VNC x509 certificates.
    vnc_x509_path: String => &str = s(""), false, Rule::Dir, Instance;
    /// Whether VNC verifies client certificates.
    vnc_x509_verify: bool => bool = false, false, Rule::None, Instance;
    /// File whose first line is the VNC password.
    vnc_password_file: String => &str = s(""), false, Rule::File, Current;
    /// Where SPICE listens: an IP address or an interface name.
    spice_bind: String => &str = s(""), false, Rule::SpiceBind, Instance;
    /// The IP version to use when `spice_bind` is an interface (0: any).
    spice_ip_version: i64 => i64 = 0, false, Rule::IntIn(&[0, 4, 6]), Instance;
    /// File whose first line is the SPICE password.
    spice_password_file: String => &str = s(""), false, Rule::File, Current;
    /// SPICE image compression.
    spice_image_compression: Option<SpiceImageCompression> => Option<SpiceImageCompression> = None, false, Rule::None, Instance;
    /// SPICE JPEG compression over WAN links.
    spice_jpeg_wan_compression: Option<SpiceWanCompression> => Option<SpiceWanCompression> = None, false, Rule::None, Instance;
    /// SPICE zlib-glz compression over WAN links.
    spice_zlib_glz_wan_compression: Option<SpiceWanCompression> => Option<SpiceWanCompression> = None, false, Rule::None, Instance;
    /// SPICE video streaming detection.
    spice_streaming_video: Option<SpiceStreamingVideo> => Option<SpiceStreamingVideo> = None, false, Rule::None, Instance;
    /// Whether SPICE compresses audio playback.
    spice_playback_compression: bool => bool = true, false, Rule::None, Instance;
    /// Whether SPICE uses TLS.
    spice_use_tls: bool => bool = false, false, Rule::None, Instance;
    /// OpenSSL cipher list for SPICE TLS.
    spice_tls_ciphers: String => &str = s("HIGH:-DES:-3DES:-EXPORT:-DH"), false, Rule::None, Instance;
    /// Whether the SPICE guest agent channel is present.
    spice_use_vdagent: bool => bool = true, false, Rule::None, Instance;
    /// A floppy image.
    floppy_image_path: String => &str = s(""), false, Rule::File, Instance;
    /// The first CD-ROM image, a file or an http(s)/ftp(s) URL.
    cdrom_image_path: String => &str = s(""), false, Rule::FileOrUrl, Instance;
    /// The second CD-ROM image (never bootable).
    cdrom2_image_path: String => &str = s(""), false, Rule::FileOrUrl, Instance;
    /// The first boot device; ignored with a kernel.
    boot_order: Required<BootOrder> => BootOrder = Required(BootOrder::Disk), true, Rule::None, Instance;
    /// The NIC model.
    nic_type: Required<NicType> => NicType = Required(NicType::Paravirtual), true, Rule::None, Instance;
    /// The disk interface.
    disk_type: Required<DiskType> => DiskType = Required(DiskType::Paravirtual), true, Rule::None, Instance;
    /// The SCSI controller model, used when a disk or CD-ROM type is SCSI.
    scsi_controller_type: Required<ScsiControllerType> => ScsiControllerType = Required(ScsiControllerType::Lsi), true, Rule::None, Instance;
    /// Whether guest discard requests reach the disk.
    disk_discard: Option<DiskDiscard> => Option<DiskDiscard> = Some(DiskDiscard::Ignore), false, Rule::None, Instance;
    /// The CD-ROM interface; empty follows `disk_type`.
    cdrom_disk_type: Option<DiskType> => Option<DiskType> = None, false, Rule::None, Instance;
    /// A USB pointing device.
    usb_mouse: Option<UsbMouse> => Option<UsbMouse> = None, false, Rule::None, Instance;
    /// The VNC keyboard layout (`-k`).
    keymap: String => &str = s(""), false, Rule::None, Current;
    /// The TCP port incoming migrations listen on.
    migration_port: i64 => i64 = 8102, false, Rule::Port, Cluster;
    /// Migration bandwidth limit in MiB/s.
    migration_bandwidth: i64 => i64 = 32, false, Rule::NonNegative, Cluster;
    /// Longest tolerated pause at the end of a live migration, in ms.
    migration_downtime: i64 => i64 = 30, false, Rule::NonNegative, Instance;
    /// Live or non-live migration.
    migration_mode: Required<MigrationMode> => MigrationMode = Required(MigrationMode::Live), true, Rule::None, Cluster;
    /// Whether the QEMU guest agent channel is present.
    use_guest_agent: bool => bool = false, false, Rule::None, Instance;
    /// Whether the guest clock runs in the host's local time.
    use_localtime: bool => bool = false, false, Rule::None, Instance;
    /// Host page-cache use for disks.
    disk_cache: Required<DiskCache> => DiskCache = Required(DiskCache::Default), true, Rule::None, Instance;
    /// The asynchronous I/O engine of kernelspace disks.
    disk_aio: Option<DiskAio> => Option<DiskAio> = Some(DiskAio::Threads), false, Rule::None, Instance;
    /// Which user QEMU runs as.
    security_model: Required<SecurityModel> => SecurityModel = Required(SecurityModel::None), true, Rule::None, Current;
    /// The user QEMU runs as with `security_model=user`.
    security_domain: String => &str = s(""), false, Rule::None, Current;
    /// Hardware acceleration: enabled, disabled, or empty for "KVM when usable".
    kvm_flag: Option<KvmFlag> => Option<KvmFlag> = None, false, Rule::None, Instance;
    /// Whether paravirtual NICs use vhost-net.
    vhost_net: bool => bool = true, false, Rule::None, Instance;
    /// The number of queues of paravirtual NICs (1 to 32).
    virtio_net_queues: i64 => i64 = 1, false, Rule::Range { min: 1, max: 32 }, Instance;
    /// Whether QEMU runs chrooted into an empty per-instance directory.
    use_chroot: bool => bool = false, false, Rule::None, Current;
    /// Whether a guest-initiated power-off is recorded as a user shutdown.
    user_shutdown: bool => bool = false, false, Rule::None, Instance;
    /// A hugetlbfs mount to back guest memory with.
    mem_path: String => &str = s(""), false, Rule::Dir, Instance;
    /// What a guest reboot does: reboot, or exit QEMU.
    reboot_behavior: Required<RebootBehavior> => RebootBehavior = Required(RebootBehavior::Reboot), true, Rule::None, Instance;
    /// CPU pinning: one mask for the whole VM, or one per vCPU separated by `:`.
    cpu_mask: String => &str = s("all"), false, Rule::CpuMask, Instance;
    /// The guest CPU model (`-cpu`); empty leaves QEMU's default.
    cpu_type: String => &str = s(""), false, Rule::None, Instance;
    /// Cores per socket (0: QEMU decides).
    cpu_cores: i64 => i64 = 0, false, Rule::NonNegative, Instance;
    /// Threads per core (0: QEMU decides).
    cpu_threads: i64 => i64 = 0, false, Rule::NonNegative, Instance;
    /// Sockets (0: QEMU decides).
    cpu_sockets: i64 => i64 = 0, false, Rule::NonNegative, Instance;
    /// An emulated sound card model.
    soundhw: String => &str = s(""), false, Rule::None, Instance;
    /// USB devices, separated by commas (or spaces, as Ganeti's man page says).
    usb_devices: String => &str = s(""), false, Rule::None, Instance;
    /// The emulated graphics card.
    vga: String => &str = s(""), false, Rule::None, Instance;
    /// Extra QEMU arguments, split as by a shell.
    kvm_extra: String => &str = s(""), false, Rule::ShellWords, Instance;
    /// The QEMU machine type; empty uses QEMU's default.
    machine_version: String => &str = s(""), false, Rule::None, Instance;
    /// `:`-separated migration capabilities to enable.
    migration_caps: String => &str = s(""), false, Rule::MigrationCaps, Instance;
    /// PCI slots left to QEMU before the first one this manager assigns.
    kvm_pci_reservations: i64 => i64 = 12, false, Rule::Range { min: 0, max: 32 }, Instance;
    /// Whether paravirtual taps get IFF_VNET_HDR.
    vnet_hdr: bool => bool = true, false, Rule::None, Instance;
    /// Our extension, not Ganeti's: confine QEMU with seccomp (`-sandbox on`, denying obsolete calls, privilege elevation, spawning and resource control) when QEMU has it.
    sandbox: bool => bool = true, false, Rule::None, Instance;
    /// Our extension, not Ganeti's: a lean machine without the legacy devices every Ganeti guest has (the empty floppy drive, the parallel port, the empty IDE CD-ROM, and the UHCI unless USB devices are asked for). Guest-visible: such an instance cannot move to Ganeti's KVM layer unnoticed.
    lean_machine: bool => bool = false, false, Rule::None, Instance;
    /// Our extension, not Ganeti's: passes over RAM in a row without progress before a live migration's convergence policy acts (raises the downtime limit; at its ceiling, switches to postcopy or gives up); 0 turns the policy off.
    migration_converge_passes: i64 => i64 = 3, false, Rule::NonNegative, Instance;
    /// Our extension, not Ganeti's: the highest downtime limit, in ms, the convergence policy raises `migration_downtime` to (QEMU's own default limit).
    migration_downtime_max: i64 => i64 = 300, false, Rule::NonNegative, Instance;
    /// Our extension, not Ganeti's: when a migration allowed postcopy (`postcopy-ram` in `migration_caps`, or `--postcopy`) switches: `first-pass` once the first full pass over RAM is done (Ganeti's), `stalled` only when the convergence policy cannot make precopy converge.
    migration_postcopy_switch: Required<PostcopySwitch> => PostcopySwitch = Required(PostcopySwitch::FirstPass), true, Rule::None, Instance;
}

/// Parameters of ours, not Ganeti's (at the end of the table).
pub const EXTENSIONS: &[&str] = &[
    "sandbox",
    "lean_machine",
    "migration_converge_passes",
    "migration_downtime_max",
    "migration_postcopy_switch",
];

/// Every KVM hvparam, in Ganeti's order, then our extensions.
pub fn params() -> &'static [ParamDef] {
    PARAMS
}

/// The definition of the hvparam called `name`.
pub fn lookup(name: &str) -> Option<&'static ParamDef> {
    PARAMS.iter().find(|p| p.name == name)
}

/// The position of `name` in Ganeti's order, used to sort problems.
pub(crate) fn position(name: &str) -> Option<usize> {
    PARAMS.iter().position(|p| p.name == name)
}

/// The known name closest to `unknown`, when one is close enough to be a typo.
pub(crate) fn closest(unknown: &str) -> Option<&'static str> {
    let lowered = unknown.to_ascii_lowercase().replace('-', "_");
    PARAMS
        .iter()
        .map(|p| {
            (
                strsim::normalized_damerau_levenshtein(&lowered, p.name),
                p.name,
            )
        })
        .filter(|(similarity, _)| *similarity >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

impl HvParams {
    /// Builds the parameters from a JSON object of overrides: missing names
    /// take Ganeti's defaults and `null` means "the default".
    ///
    /// Unknown names, wrong types, values outside a parameter's set and every
    /// [`check`](HvParams::check) problem are reported together.
    pub fn from_map(overrides: &Map<String, Json>) -> Result<HvParams, Problems> {
        let (params, problems) = HvParams::parse_and_check(overrides);
        Problems::sorted(problems).into_result(params)
    }

    /// [`HvParams::parse`] then [`HvParams::check`], every problem of both
    /// sorted in parameter order; for callers that report problems alongside
    /// their own (an instance spec) and still want the parameters.
    pub fn parse_and_check(overrides: &Map<String, Json>) -> (HvParams, Vec<Problem>) {
        let (params, mut problems) = HvParams::parse(overrides);
        problems.extend(params.check());
        (params, Problems::sorted(problems).into_vec())
    }

    /// Types the overrides without running [`check`](HvParams::check): the
    /// returned parameters hold the default wherever a value was refused.
    pub fn parse(overrides: &Map<String, Json>) -> (HvParams, Vec<Problem>) {
        let mut params = HvParams::default();
        let mut problems = Vec::new();
        for (name, value) in overrides {
            let Some(def) = lookup(name) else {
                problems.push(Problem::new(
                    name,
                    ProblemKind::Unknown {
                        suggestion: closest(name),
                    },
                ));
                continue;
            };
            if value.is_null() {
                continue;
            }
            if let Err(failure) = params.set_json(name, value) {
                let kind = match failure {
                    ParseFailure::WrongType { expected, found } => {
                        ProblemKind::WrongType { expected, found }
                    }
                    ParseFailure::NotInSet { value } => ProblemKind::NotInSet {
                        value,
                        allowed: def.allowed,
                    },
                    ParseFailure::Required => ProblemKind::Required,
                };
                problems.push(Problem::new(name, kind));
            }
        }
        (params, problems)
    }

    /// Every parameter with its value, in Ganeti's order.
    pub fn to_map(&self) -> Map<String, Json> {
        PARAMS
            .iter()
            .filter_map(|p| Some((p.name.to_owned(), self.get_json(p.name)?)))
            .collect()
    }

    /// The parameters that differ from Ganeti's defaults.
    pub fn overrides(&self) -> Map<String, Json> {
        let defaults = HvParams::default();
        self.to_map()
            .into_iter()
            .filter(|(k, v)| defaults.get_json(k).as_ref() != Some(v))
            .collect()
    }
}

impl serde::Serialize for HvParams {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for HvParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Json>::deserialize(deserializer)?;
        HvParams::from_map(&map).map_err(serde::de::Error::custom)
    }
}
