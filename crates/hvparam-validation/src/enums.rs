//! The closed value sets of set-valued hvparams, in Ganeti's spelling.

use crate::value::str_enum;

str_enum! {
    /// `boot_order`: what the guest boots from first.
    BootOrder { Cdrom = "cdrom", Disk = "disk", Floppy = "floppy", Network = "network" }
}

str_enum! {
    /// `nic_type`: the emulated NIC model.
    NicType {
        E1000 = "e1000",
        I82551 = "i82551",
        I82559er = "i82559er",
        I82557b = "i82557b",
        Ne2kIsa = "ne2k_isa",
        Ne2kPci = "ne2k_pci",
        /// virtio-net
        Paravirtual = "paravirtual",
        Pcnet = "pcnet",
        Rtl8139 = "rtl8139",
    }
}

impl NicType {
    /// The QEMU device driver for this NIC model.
    pub fn qemu_driver(self) -> &'static str {
        match self {
            NicType::Paravirtual => "virtio-net-pci",
            other => other.as_str(),
        }
    }

    /// Whether the device sits on PCI (and can be hot-plugged there).
    pub fn is_pci(self) -> bool {
        self != NicType::Ne2kIsa
    }
}

str_enum! {
    /// `disk_type` and `cdrom_disk_type`: the emulated disk interface.
    DiskType {
        Ide = "ide",
        Mtd = "mtd",
        /// virtio-blk
        Paravirtual = "paravirtual",
        Pflash = "pflash",
        Scsi = "scsi",
        Sd = "sd",
        ScsiGeneric = "scsi-generic",
        ScsiBlock = "scsi-block",
        ScsiHd = "scsi-hd",
        ScsiCd = "scsi-cd",
    }
}

impl DiskType {
    /// The QEMU device driver for a disk of this type, or `None` for the
    /// values Ganeti accepts but that name no QEMU device (`mtd`, `pflash`,
    /// `scsi`, `sd`): an instance using them could never start.
    pub fn qemu_driver(self) -> Option<&'static str> {
        match self {
            DiskType::Ide => Some("ide-hd"),
            DiskType::Paravirtual => Some("virtio-blk-pci"),
            DiskType::ScsiGeneric => Some("scsi-generic"),
            DiskType::ScsiBlock => Some("scsi-block"),
            DiskType::ScsiHd => Some("scsi-hd"),
            DiskType::ScsiCd => Some("scsi-cd"),
            DiskType::Mtd | DiskType::Pflash | DiskType::Scsi | DiskType::Sd => None,
        }
    }

    /// Whether disks of this type sit on a SCSI controller.
    pub fn is_scsi(self) -> bool {
        matches!(
            self,
            DiskType::ScsiGeneric | DiskType::ScsiBlock | DiskType::ScsiHd | DiskType::ScsiCd
        )
    }

    /// The CD-ROM type a disk type implies when `cdrom_disk_type` is empty.
    /// Ganeti reuses `disk_type` verbatim, so `scsi-hd` yields a CD-ROM that
    /// fails to start (reference §11.5.5); SCSI disk types map to `scsi-cd`.
    pub fn implied_cdrom_type(self) -> Option<DiskType> {
        match self {
            DiskType::Ide => Some(DiskType::Ide),
            DiskType::Paravirtual => Some(DiskType::Paravirtual),
            t if t.is_scsi() => Some(DiskType::ScsiCd),
            _ => None,
        }
    }
}

str_enum! {
    /// `scsi_controller_type`: the SCSI host adapter model.
    ScsiControllerType { Lsi = "lsi", VirtioScsiPci = "virtio-scsi-pci", Megasas = "megasas", Dc390 = "dc390" }
}

impl ScsiControllerType {
    /// The QEMU device driver.
    pub fn qemu_driver(self) -> &'static str {
        match self {
            ScsiControllerType::Lsi => "lsi53c895a",
            ScsiControllerType::VirtioScsiPci => "virtio-scsi-pci",
            ScsiControllerType::Megasas => "megasas",
            ScsiControllerType::Dc390 => "dc390",
        }
    }
}

str_enum! {
    /// `disk_discard`: whether guest discards reach the backing store.
    DiskDiscard {
        /// discards are dropped
        Ignore = "ignore",
        /// discards reach the backing store
        Unmap = "unmap",
        /// QEMU's default (`ignore`): Ganeti 3.0's default value, which
        /// Ganeti's later releases turn into `ignore`
        Default = "default",
    }
}

str_enum! {
    /// `disk_cache`: host page-cache use for disks.
    DiskCache { Default = "default", None = "none", Writeback = "writeback", Writethrough = "writethrough" }
}

str_enum! {
    /// `disk_aio`: the asynchronous I/O engine of kernelspace disks.
    DiskAio { Threads = "threads", Native = "native", IoUring = "io_uring" }
}

str_enum! {
    /// `usb_mouse`: the emulated USB pointing device.
    UsbMouse { Mouse = "mouse", Tablet = "tablet" }
}

str_enum! {
    /// `migration_mode`: live or stop-and-copy migration.
    MigrationMode { Live = "live", NonLive = "non-live" }
}

str_enum! {
    /// `migration_postcopy_switch` (ours): when a migration allowed
    /// postcopy switches to it.
    PostcopySwitch {
        /// once the first full pass over RAM is done (Ganeti's)
        FirstPass = "first-pass",
        /// only when precopy cannot converge
        Stalled = "stalled",
    }
}

str_enum! {
    /// `security_model`: which user QEMU runs as.
    SecurityModel {
        /// as the caller (root)
        None = "none",
        /// a uid from the node's pool
        Pool = "pool",
        /// the user named by `security_domain`
        User = "user",
    }
}

str_enum! {
    /// `kvm_flag`: hardware acceleration. Empty means "KVM when usable".
    KvmFlag { Enabled = "enabled", Disabled = "disabled" }
}

str_enum! {
    /// `reboot_behavior`: what a guest reboot does.
    RebootBehavior { Reboot = "reboot", Exit = "exit" }
}

str_enum! {
    /// `spice_image_compression`.
    SpiceImageCompression { AutoGlz = "auto_glz", AutoLz = "auto_lz", Glz = "glz", Lz = "lz", Off = "off", Quic = "quic" }
}

str_enum! {
    /// `spice_jpeg_wan_compression` and `spice_zlib_glz_wan_compression`.
    SpiceWanCompression { Always = "always", Auto = "auto", Never = "never" }
}

str_enum! {
    /// `spice_streaming_video`.
    SpiceStreamingVideo { All = "all", Filter = "filter", Off = "off" }
}
