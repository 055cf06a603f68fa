//! Behaviour of every rule, one behaviour per test, with exact problems.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use hvparam_validation::*;
use serde_json::{Value, json};

fn from(v: Value) -> Result<HvParams, Problems> {
    HvParams::from_map(v.as_object().expect("an object"))
}

fn problems(v: Value) -> Vec<String> {
    match from(v) {
        Ok(_) => Vec::new(),
        Err(e) => e.as_slice().iter().map(ToString::to_string).collect(),
    }
}

fn params(v: Value) -> HvParams {
    from(v).expect("valid hvparams")
}

fn qemu_7_2() -> QemuFacts {
    QemuFacts {
        version: (7, 2, 0),
        machines: ["pc", "pc-i440fx-7.2", "q35", "pc-q35-7.2"]
            .map(String::from)
            .into(),
        devices: [
            "virtio-blk-pci",
            "virtio-net-pci",
            "e1000",
            "ide-hd",
            "scsi-hd",
            "lsi53c895a",
        ]
        .map(String::from)
        .into(),
        cpu_models: Some(
            ["qemu64", "host", "Skylake-Client"]
                .map(String::from)
                .into(),
        ),
        migration_capabilities: Some(["postcopy-ram", "xbzrle"].map(String::from).into()),
        spice: false,
    }
}

fn validation_problems(p: &HvParams, facts: &HostFacts) -> Vec<String> {
    p.validate(facts)
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

// ---- the table ----

#[test]
fn table_has_every_ganeti_kvm_hvparam_and_our_extension() {
    let ganeti = hvparam_validation::params()
        .iter()
        .filter(|p| p.is_ganeti())
        .count();
    assert_eq!((ganeti, hvparam_validation::params().len()), (65, 70));
    let ours: Vec<&str> = hvparam_validation::params()[65..]
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(ours, hvparam_validation::EXTENSIONS);
}

#[test]
fn table_starts_and_ends_in_ganeti_order() {
    let names: Vec<&str> = hvparam_validation::params()
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(&names[..3], ["kvm_path", "kernel_path", "initrd_path"]);
    assert_eq!(
        &names[62..],
        [
            "migration_caps",
            "kvm_pci_reservations",
            "vnet_hdr",
            "sandbox",
            "lean_machine",
            "migration_converge_passes",
            "migration_downtime_max",
            "migration_postcopy_switch"
        ]
    );
}

#[test]
fn defaults_are_ganetis() {
    let d = HvParams::default();
    assert_eq!(d.kvm_path(), "/usr/bin/kvm");
    assert_eq!(d.kernel_path(), "/boot/vmlinuz-3-kvmU");
    assert_eq!(d.root_path(), "/dev/vda1");
    assert_eq!(d.serial_speed(), 38400);
    assert_eq!(d.boot_order(), BootOrder::Disk);
    assert_eq!(d.disk_discard(), Some(DiskDiscard::Ignore));
    assert_eq!(d.disk_aio(), Some(DiskAio::Threads));
    assert_eq!(d.kvm_flag(), None);
    assert_eq!(d.cpu_mask(), "all");
    assert_eq!(d.spice_tls_ciphers(), "HIGH:-DES:-3DES:-EXPORT:-DH");
    assert_eq!(d.kvm_pci_reservations(), 12);
    assert!(d.acpi() && d.vhost_net() && d.vnet_hdr() && d.spice_use_vdagent());
}

#[test]
fn default_values_in_the_table_match_the_struct() {
    let d = HvParams::default();
    for def in hvparam_validation::params() {
        assert_eq!(
            Some(def.default_value()),
            d.get_json(def.name()),
            "{}",
            def.name()
        );
    }
}

#[test]
fn set_valued_param_lists_allowed_values_in_declared_order() {
    let def = lookup("disk_cache").expect("known");
    assert_eq!(
        def.allowed(),
        ["default", "none", "writeback", "writethrough"]
    );
    assert!(def.required());
}

#[test]
fn defaults_pass_check() {
    assert_eq!(HvParams::default().check(), Vec::new());
}

#[test]
fn round_trip_through_json_keeps_every_value() {
    let p = params(
        json!({"boot_order": "network", "cpu_mask": "0:1", "vnc_bind_address": "127.0.0.1"}),
    );
    let again: HvParams = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
    assert_eq!(again, p);
    assert_eq!(
        p.overrides(),
        json!({"vnc_bind_address": "127.0.0.1", "boot_order": "network", "cpu_mask": "0:1"})
            .as_object()
            .unwrap()
            .clone()
    );
}

// ---- parsing ----

#[test]
fn typo_is_rejected_with_closest_name() {
    assert_eq!(
        problems(json!({"boot_ordr": "disk"})),
        ["boot_ordr: unknown hvparam; did you mean `boot_order`?"]
    );
}

#[test]
fn hyphenated_name_suggests_the_underscore_spelling() {
    assert_eq!(
        problems(json!({"serial-console": true})),
        ["serial-console: unknown hvparam; did you mean `serial_console`?"]
    );
}

#[test]
fn unrelated_unknown_name_has_no_suggestion() {
    assert_eq!(
        problems(json!({"flux_capacitor": 1})),
        ["flux_capacitor: unknown hvparam"]
    );
}

#[test]
fn string_where_a_bool_belongs_is_rejected() {
    assert_eq!(
        problems(json!({"acpi": "yes"})),
        ["acpi: expected a boolean, found string \"yes\""]
    );
}

#[test]
fn fraction_where_an_int_belongs_is_rejected() {
    assert_eq!(
        problems(json!({"migration_port": 8102.5})),
        ["migration_port: expected an integer, found number 8102.5"]
    );
}

#[test]
fn value_outside_set_lists_members_in_declared_order() {
    assert_eq!(
        problems(json!({"boot_order": "usb"})),
        ["boot_order: `usb` is not one of: cdrom, disk, floppy, network"]
    );
}

#[test]
fn required_set_value_cannot_be_empty() {
    assert_eq!(
        problems(json!({"disk_cache": ""})),
        ["disk_cache: must be set"]
    );
}

#[test]
fn optional_set_value_may_be_empty() {
    assert_eq!(params(json!({"disk_discard": ""})).disk_discard(), None);
    // Ganeti 3.0's cluster default.
    assert_eq!(
        params(json!({"disk_discard": "default"})).disk_discard(),
        Some(DiskDiscard::Default)
    );
}

#[test]
fn null_means_default() {
    assert_eq!(
        params(json!({"kernel_path": null})).kernel_path(),
        "/boot/vmlinuz-3-kvmU"
    );
}

#[test]
fn problems_are_sorted_in_parameter_order() {
    let got = problems(json!({"vnet_hdr": 1, "zzz": 1, "kvm_path": "bin/kvm", "acpi": 0}));
    assert_eq!(
        got,
        [
            "kvm_path: `bin/kvm` is not a normalized absolute path",
            "acpi: expected a boolean, found number 0",
            "vnet_hdr: expected a boolean, found number 1",
            "zzz: unknown hvparam",
        ]
    );
}

// ---- syntax ----

#[test]
fn kvm_path_is_required() {
    assert_eq!(problems(json!({"kvm_path": ""})), ["kvm_path: must be set"]);
}

#[test]
fn non_normalized_path_is_rejected() {
    assert_eq!(
        problems(json!({"initrd_path": "/boot//initrd"})),
        ["initrd_path: `/boot//initrd` is not a normalized absolute path"]
    );
}

#[test]
fn cdrom_may_be_a_url() {
    assert_eq!(
        params(json!({"cdrom_image_path": "https://example.org/x.iso"})).cdrom_image_path(),
        "https://example.org/x.iso"
    );
}

#[test]
fn cdrom_relative_path_is_rejected() {
    assert_eq!(
        problems(json!({"cdrom_image_path": "x.iso"})),
        [
            "cdrom_image_path: `x.iso` is neither a normalized absolute path nor an http, https, ftp or ftps URL"
        ]
    );
}

#[test]
fn port_65535_is_a_port_unlike_in_ganeti() {
    assert_eq!(
        params(json!({"migration_port": 65535})).migration_port(),
        65535
    );
}

#[test]
fn port_zero_is_rejected() {
    assert_eq!(
        problems(json!({"migration_port": 0})),
        ["migration_port: 0 is out of range 1..=65535"]
    );
}

#[test]
fn negative_bandwidth_is_rejected() {
    assert_eq!(
        problems(json!({"migration_bandwidth": -1})),
        ["migration_bandwidth: -1 is negative"]
    );
}

#[test]
fn negative_downtime_is_rejected() {
    assert_eq!(
        problems(json!({"migration_downtime": -5})),
        ["migration_downtime: -5 is negative"]
    );
}

#[test]
fn virtio_net_queues_above_32_is_rejected() {
    assert_eq!(
        problems(json!({"virtio_net_queues": 33})),
        ["virtio_net_queues: 33 is out of range 1..=32"]
    );
}

#[test]
fn pci_reservations_above_32_is_rejected() {
    assert_eq!(
        problems(json!({"kvm_pci_reservations": 33})),
        ["kvm_pci_reservations: 33 is out of range 0..=32"]
    );
}

#[test]
fn cpu_mask_multi_form_is_accepted() {
    assert_eq!(
        params(json!({"cpu_mask": "0-2,4:all:1,3"}))
            .cpu_mask_parsed()
            .map(|m| m.max_cpu()),
        Some(Some(4))
    );
}

#[test]
fn cpu_mask_descending_range_is_rejected() {
    assert_eq!(
        problems(json!({"cpu_mask": "3-1"})),
        ["cpu_mask: `3-1` is not a CPU mask: range `3-1` is descending"]
    );
}

#[test]
fn spice_ip_version_must_be_0_4_or_6() {
    assert_eq!(
        problems(json!({"spice_bind": "eth0", "spice_ip_version": 5})),
        ["spice_ip_version: 5 is not one of: 0, 4, 6"]
    );
}

#[test]
fn vnc_bind_address_garbage_is_rejected() {
    assert_eq!(
        problems(json!({"vnc_bind_address": "not an address"})),
        [
            "vnc_bind_address: `not an address` is not an IP address, a network interface name or an absolute path"
        ]
    );
}

#[test]
fn kvm_extra_with_unbalanced_quote_is_rejected() {
    assert_eq!(
        problems(json!({"kvm_extra": "-device 'foo"})),
        [
            "kvm_extra: `-device 'foo` cannot be split into words: unbalanced quotes or a trailing backslash"
        ]
    );
}

#[test]
fn kvm_extra_splits_like_a_shell() {
    assert_eq!(
        params(json!({"kvm_extra": "-device 'virtio-rng-pci,id=rng 0' -S"})).kvm_extra_args(),
        Some(vec![
            "-device".to_owned(),
            "virtio-rng-pci,id=rng 0".to_owned(),
            "-S".to_owned()
        ])
    );
}

#[test]
fn migration_caps_with_empty_item_is_rejected() {
    assert_eq!(
        problems(json!({"migration_caps": "xbzrle::postcopy-ram"})),
        [
            "migration_caps: `` is not a migration capability name (lowercase letters, digits and `-`, separated by `:`)"
        ]
    );
}

#[test]
fn usb_devices_split_on_commas_and_spaces() {
    assert_eq!(
        params(json!({"usb_devices": "usb-kbd, usb-tablet usb-host"})).usb_device_list(),
        ["usb-kbd", "usb-tablet", "usb-host"]
    );
}

#[test]
fn disk_type_that_can_never_start_is_rejected() {
    assert_eq!(
        problems(json!({"disk_type": "pflash"})),
        ["disk_type: `pflash` can never start: QEMU has no disk device of that name"]
    );
}

#[test]
fn cdrom_disk_type_that_can_never_start_is_rejected() {
    assert_eq!(
        problems(json!({"cdrom_disk_type": "scsi-hd"})),
        [
            "cdrom_disk_type: `scsi-hd` can never start: a CD-ROM can only be ide, paravirtual or scsi-cd"
        ]
    );
}

#[test]
fn scsi_disk_type_implies_a_scsi_cdrom() {
    assert_eq!(
        DiskType::ScsiHd.implied_cdrom_type(),
        Some(DiskType::ScsiCd)
    );
}

// ---- cross-parameter rules ----

#[test]
fn cdrom_boot_needs_an_image() {
    assert_eq!(
        problems(json!({"kernel_path": "", "boot_order": "cdrom"})),
        ["boot_order: booting from `cdrom` needs cdrom_image_path to be set"]
    );
}

#[test]
fn floppy_boot_needs_an_image() {
    assert_eq!(
        problems(json!({"kernel_path": "", "boot_order": "floppy"})),
        ["boot_order: booting from `floppy` needs floppy_image_path to be set"]
    );
}

#[test]
fn kernel_needs_root_path() {
    assert_eq!(
        problems(json!({"root_path": ""})),
        ["root_path: must be set when kernel_path is set"]
    );
}

#[test]
fn user_security_model_needs_a_domain() {
    assert_eq!(
        problems(json!({"security_model": "user"})),
        ["security_domain: must be set when security_model is `user`"]
    );
}

#[test]
fn pool_security_model_forbids_a_domain() {
    assert_eq!(
        problems(json!({"security_model": "pool", "security_domain": "qemu"})),
        ["security_domain: must be empty when security_model is `none` or `pool`"]
    );
}

#[test]
fn serial_speed_must_be_standard_with_a_console() {
    assert_eq!(
        problems(json!({"serial_speed": 12345})),
        [
            "serial_speed: 12345 is not a serial speed; use one of: 75, 110, 300, 600, 1200, 1800, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200, 230400, 345600, 460800"
        ]
    );
}

#[test]
fn serial_speed_is_free_without_a_console() {
    assert_eq!(
        params(json!({"serial_console": false, "serial_speed": 12345})).serial_speed(),
        12345
    );
}

#[test]
fn x509_verify_needs_a_path() {
    assert_eq!(
        problems(json!({"vnc_x509_verify": true})),
        ["vnc_x509_path: must be set when vnc_x509_verify is true"]
    );
}

#[test]
fn spice_options_need_spice_bind() {
    assert_eq!(
        problems(json!({"spice_use_tls": true, "spice_streaming_video": "off"})),
        [
            "spice_streaming_video: must be empty when spice_bind is empty",
            "spice_use_tls: must be empty when spice_bind is empty",
        ]
    );
}

#[test]
fn spice_ipv4_address_with_version_6_is_rejected() {
    assert_eq!(
        problems(json!({"spice_bind": "192.0.2.1", "spice_ip_version": 6})),
        ["spice_ip_version: `192.0.2.1` is an IPv4 address but spice_ip_version is 6"]
    );
}

#[test]
fn vnc_and_spice_are_exclusive() {
    assert_eq!(
        problems(json!({"spice_bind": "127.0.0.1", "vnc_bind_address": "127.0.0.1"})),
        ["spice_bind: must be empty when vnc_bind_address is set (VNC and SPICE are exclusive)"]
    );
}

#[test]
fn native_aio_needs_cache_none() {
    assert_eq!(
        problems(json!({"disk_aio": "native", "disk_cache": "writeback"})),
        ["disk_cache: must be empty when disk_aio is `native`, which needs disk_cache `none`"]
    );
}

#[test]
fn five_mistakes_are_all_reported() {
    let got = problems(json!({
        "acpi": "yes",
        "boot_order": "usb",
        "migration_port": 70000,
        "cpu_mask": "0::1",
        "vnc_x509_verify": true,
    }));
    assert_eq!(
        got,
        [
            "acpi: expected a boolean, found string \"yes\"",
            "vnc_x509_path: must be set when vnc_x509_verify is true",
            "boot_order: `usb` is not one of: cdrom, disk, floppy, network",
            "migration_port: 70000 is out of range 1..=65535",
            "cpu_mask: `0::1` is not a CPU mask: empty entry",
        ]
    );
}

// ---- validation against host facts ----

#[test]
fn facts_wanted_lists_paths_and_users() {
    let p = params(
        json!({"initrd_path": "/boot/initrd", "security_model": "user", "security_domain": "qemu"}),
    );
    let wanted = p.facts_wanted();
    assert_eq!(
        wanted.paths,
        BTreeSet::from(["/usr/bin/kvm", "/boot/vmlinuz-3-kvmU", "/boot/initrd"].map(PathBuf::from))
    );
    assert_eq!(wanted.users, BTreeSet::from(["qemu".to_owned()]));
    assert!(!wanted.interfaces);
}

#[test]
fn missing_kernel_is_reported() {
    let facts = HostFacts {
        paths: BTreeMap::from([
            (PathBuf::from("/usr/bin/kvm"), PathKind::File),
            (PathBuf::from("/boot/vmlinuz-3-kvmU"), PathKind::Missing),
        ]),
        qemu: Some(qemu_7_2()),
        online_cpus: Some(2),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&HvParams::default(), &facts),
        ["kernel_path: /boot/vmlinuz-3-kvmU does not exist"]
    );
}

#[test]
fn directory_where_a_file_belongs_is_reported() {
    let p = params(json!({"kernel_path": "", "kvm_path": "/usr/bin"}));
    let facts = HostFacts {
        paths: BTreeMap::from([(PathBuf::from("/usr/bin"), PathKind::Dir)]),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["kvm_path: /usr/bin is not a regular file"]
    );
}

#[test]
fn missing_facts_are_reported_as_unchecked() {
    let v = HvParams::default().validate(&HostFacts::default());
    let unchecked: Vec<&str> = v.unchecked.iter().map(|u| u.param).collect();
    assert_eq!(
        unchecked,
        [
            "kvm_path",
            "kernel_path",
            "spice_bind",
            "nic_type",
            "disk_type",
            "disk_aio",
            "cpu_type",
            "machine_version",
            "migration_caps"
        ]
    );
    assert_eq!(v.problems, Vec::new());
}

#[test]
fn unknown_security_domain_user_is_reported() {
    let p = params(
        json!({"kernel_path": "", "security_model": "user", "security_domain": "nobody-here"}),
    );
    let facts = HostFacts {
        users: BTreeMap::from([("nobody-here".to_owned(), false)]),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["security_domain: user `nobody-here` does not exist on this host"]
    );
}

#[test]
fn vnc_interface_must_exist() {
    let p = params(json!({"kernel_path": "", "vnc_bind_address": "eth9"}));
    let facts = HostFacts {
        interfaces: Some(BTreeMap::new()),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["vnc_bind_address: network interface `eth9` does not exist on this host"]
    );
}

#[test]
fn vnc_interface_without_address_is_reported() {
    let p = params(json!({"kernel_path": "", "vnc_bind_address": "eth0"}));
    let facts = HostFacts {
        interfaces: Some(BTreeMap::from([("eth0".to_owned(), vec![])])),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["vnc_bind_address: network interface `eth0` has no IP address to listen on"]
    );
}

#[test]
fn spice_interface_needs_an_address_of_the_asked_family() {
    let p = params(json!({"kernel_path": "", "spice_bind": "eth0", "spice_ip_version": 6}));
    let facts = HostFacts {
        interfaces: Some(BTreeMap::from([(
            "eth0".to_owned(),
            vec!["192.0.2.7".parse().unwrap()],
        )])),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["spice_bind: network interface `eth0` has no IPv6 address to listen on"]
    );
}

#[test]
fn machine_version_is_matched_exactly_not_as_a_regex() {
    let p = params(json!({"kernel_path": "", "machine_version": "pc.*"}));
    let facts = HostFacts {
        qemu: Some(qemu_7_2()),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        [
            "machine_version: QEMU 7.2.0 has no machine type `pc.*` (see `qemu-system-x86_64 -machine help`)"
        ]
    );
}

#[test]
fn known_machine_version_passes() {
    let p = params(json!({"kernel_path": "", "machine_version": "pc-i440fx-7.2"}));
    let facts = HostFacts {
        qemu: Some(qemu_7_2()),
        ..HostFacts::default()
    };
    assert_eq!(validation_problems(&p, &facts), Vec::<String>::new());
}

#[test]
fn io_uring_needs_qemu_5_of_this_binary() {
    let p = params(json!({"kernel_path": "", "disk_aio": "io_uring"}));
    let old = QemuFacts {
        version: (4, 2, 1),
        ..qemu_7_2()
    };
    let facts = HostFacts {
        qemu: Some(old),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["disk_aio: io_uring (needs QEMU 5.0) is not supported by QEMU 4.2.1"]
    );
}

#[test]
fn spice_without_qemu_support_is_reported() {
    let p = params(json!({"kernel_path": "", "spice_bind": "127.0.0.1"}));
    let facts = HostFacts {
        qemu: Some(qemu_7_2()),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["spice_bind: SPICE is not supported by QEMU 7.2.0"]
    );
}

#[test]
fn scsi_controller_must_exist_when_scsi_is_used() {
    let p = params(
        json!({"kernel_path": "", "disk_type": "scsi-hd", "scsi_controller_type": "megasas"}),
    );
    let facts = HostFacts {
        qemu: Some(qemu_7_2()),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["scsi_controller_type: SCSI controller `megasas` is not supported by QEMU 7.2.0"]
    );
}

#[test]
fn unknown_cpu_model_is_reported_ignoring_flags() {
    let p = params(json!({"kernel_path": "", "cpu_type": "Skylake-Clint,+vmx"}));
    let facts = HostFacts {
        qemu: Some(qemu_7_2()),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        [
            "cpu_type: QEMU 7.2.0 has no CPU model `Skylake-Clint` (see `qemu-system-x86_64 -cpu help`)"
        ]
    );
}

#[test]
fn unknown_migration_capability_is_reported() {
    let p = params(json!({"kernel_path": "", "migration_caps": "xbzrle:multifd"}));
    let facts = HostFacts {
        qemu: Some(qemu_7_2()),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["migration_caps: QEMU 7.2.0 has no migration capability `multifd`"]
    );
}

#[test]
fn cpu_mask_beyond_host_cpus_is_reported() {
    let p = params(json!({"kernel_path": "", "cpu_mask": "0:3"}));
    let facts = HostFacts {
        online_cpus: Some(2),
        ..HostFacts::default()
    };
    assert_eq!(
        validation_problems(&p, &facts),
        ["cpu_mask: CPU 3 does not exist on this host (2 CPUs online)"]
    );
}

// ---- assessment ----

#[test]
fn defaults_give_ganetis_three_warnings() {
    let got: Vec<&str> = HvParams::default()
        .assess()
        .iter()
        .map(|w| w.param())
        .collect();
    assert_eq!(got, ["migration_bandwidth", "cpu_type", "machine_version"]);
}

#[test]
fn open_vnc_warns_about_tls_and_password() {
    let got: Vec<String> = params(json!({"vnc_bind_address": "0.0.0.0"}))
        .assess()
        .iter()
        .filter(|w| w.param() == "vnc_bind_address")
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "vnc_bind_address: VNC listens on `0.0.0.0` without TLS; consider vnc_tls",
            "vnc_bind_address: VNC listens on `0.0.0.0` without a password; anyone who can reach it controls the console",
        ]
    );
}

#[test]
fn pc_alias_warns_about_migration() {
    let got: Vec<WarningKind> = params(json!({"machine_version": "pc"}))
        .assess()
        .into_iter()
        .filter(|w| w.param() == "machine_version")
        .map(|w| w.kind().clone())
        .collect();
    assert_eq!(got, [WarningKind::MachineVersionAlias]);
}

#[test]
fn non_paravirtual_types_warn() {
    let got: Vec<WarningKind> =
        params(json!({"disk_type": "ide", "nic_type": "e1000", "vhost_net": false}))
            .assess()
            .into_iter()
            .filter(|w| ["disk_type", "nic_type", "vhost_net"].contains(&w.param()))
            .map(|w| w.kind().clone())
            .collect();
    assert_eq!(
        got,
        [
            WarningKind::NicTypeNotParavirtual(NicType::E1000),
            WarningKind::DiskTypeNotParavirtual(DiskType::Ide),
            WarningKind::VhostNetOff,
        ]
    );
}

#[test]
fn value_enums_parse_from_str_with_a_clear_error() {
    assert_eq!(
        "non-live".parse::<MigrationMode>(),
        Ok(MigrationMode::NonLive)
    );
    assert_eq!(
        "sideways".parse::<MigrationMode>().unwrap_err().to_string(),
        "`sideways` is not one of: live, non-live"
    );
}
