//! The offline parsers against this machine's recorded QEMU 7.2 outputs
//! (`cargo xtask capture-fixtures`).

use std::path::Path;

use qemu_cmdline::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/qemu/7.2")
            .join(name),
    )
    .expect("fixture")
}

fn caps() -> QemuCaps {
    QemuCaps::from_help(
        &fixture("help.txt"),
        Some(&fixture("machine-help.txt")),
        Some(&fixture("device-help.txt")),
    )
    .expect("parses")
}

#[test]
fn version_and_package_are_parsed() {
    let c = caps();
    assert_eq!((c.version.major, c.version.minor), (7, 2));
    assert!(c.package.starts_with("Debian 1:7.2"), "{}", c.package);
}

#[test]
fn default_machine_is_i440fx_7_2_with_pc_alias() {
    let c = caps();
    let m = c.default_machine().expect("a default");
    assert_eq!(
        (m.name.as_str(), m.alias.as_deref()),
        ("pc-i440fx-7.2", Some("pc"))
    );
    assert_eq!(
        c.resolve_machine("q35").map(|m| m.name.as_str()),
        Some("pc-q35-7.2")
    );
}

#[test]
fn devices_include_what_plans_use() {
    let c = caps();
    for d in [
        "virtio-blk-pci",
        "virtio-net-pci",
        "virtio-scsi-pci",
        "scsi-hd",
        "ide-hd",
        "e1000",
        "pcie-root-port",
        "virtio-balloon-pci",
    ] {
        assert!(c.has_device(d), "{d}");
    }
    assert!(!c.has_device("pflash"));
}

#[test]
fn features_of_qemu_7_2() {
    let f = caps().features();
    assert_eq!(
        f,
        Features {
            run_with: false,
            runas: true,
            chroot_option: true,
            audio_option: true,
            soundhw_option: false,
            no_acpi_option: true,
            machine_acpi_property: true,
            sandbox: true,
            debug_threads: true,
            json_device: true,
            spice: true,
        }
    );
}

#[test]
fn garbage_help_is_an_error() {
    assert_eq!(
        QemuCaps::from_help("usage: something else", None, None),
        Err(CmdlineError::BadCaps(
            "no `QEMU emulator version X.Y.Z` line".into()
        ))
    );
}
