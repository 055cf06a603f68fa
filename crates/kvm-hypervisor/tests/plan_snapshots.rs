//! Plans of the fixture instances under `fixtures/plans/`, one argument per
//! line, against this machine's recorded QEMU 7.2 capabilities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvm_hypervisor::cmdline::QemuCaps;
use kvm_hypervisor::devices::DeviceError;
use kvm_hypervisor::spec::InstanceSpec;
use kvm_hypervisor::state::RunDir;
use kvm_hypervisor::{LaunchPlan, PlanEnv, PlanError, PostStartStep, StartMode, plan_start};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn caps() -> QemuCaps {
    let f = |n: &str| {
        std::fs::read_to_string(root().join("fixtures/qemu/7.2").join(n)).expect("fixture")
    };
    QemuCaps::from_help(
        &f("help.txt"),
        Some(&f("machine-help.txt")),
        Some(&f("device-help.txt")),
    )
    .expect("caps")
}

fn env() -> PlanEnv {
    PlanEnv {
        kvm_usable: false,
        vhost_net: false,
        interfaces: BTreeMap::from([(
            "eth0".to_owned(),
            vec!["198.51.100.7".parse().expect("ip")],
        )]),
        block_devices: Vec::new(),
        pool_user: Some("nobody".into()),
        spare_root_ports: 2,
        spice_cert_dir: None,
        ..PlanEnv::default()
    }
}

fn plan(fixture: &str) -> Result<LaunchPlan, PlanError> {
    let spec = InstanceSpec::load(&root().join("fixtures/plans").join(fixture))
        .expect("valid spec")
        .spec;
    plan_start(&spec, &caps(), &RunDir::at("/run/kvm-hypervisor"), &env())
}

fn argv(fixture: &str) -> String {
    plan(fixture).expect("plans").argv.join("\n")
}

#[test]
fn defaults() {
    insta::assert_snapshot!(argv("defaults.json"));
}

#[test]
fn kernel_boot_with_serial_console() {
    insta::assert_snapshot!(argv("kernel-serial.json"));
}

#[test]
fn cdrom_boot() {
    insta::assert_snapshot!(argv("cdrom-boot.json"));
}

#[test]
fn scsi_disks() {
    insta::assert_snapshot!(argv("scsi.json"));
}

#[test]
fn ide() {
    insta::assert_snapshot!(argv("ide.json"));
}

#[test]
fn many_nics_with_multiqueue() {
    insta::assert_snapshot!(argv("multiqueue.json"));
}

#[test]
fn vnc_with_tls_and_password() {
    insta::assert_snapshot!(argv("vnc-tls.json"));
}

#[test]
fn spice() {
    insta::assert_snapshot!(argv("spice.json"));
}

#[test]
fn security_user_with_chroot() {
    insta::assert_snapshot!(argv("security-user-chroot.json"));
}

#[test]
fn security_pool_with_chroot() {
    insta::assert_snapshot!(argv("security-pool.json"));
}

#[test]
fn q35() {
    insta::assert_snapshot!(argv("q35.json"));
}

#[test]
fn more_disks_than_slots_is_an_error_naming_the_disk_and_bus() {
    let err = plan("too-many-disks.json").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no room for disk 20 (2cccc020-cccc-4ccc-8ccc-000000000020)"
    );
    assert_eq!(
        std::error::Error::source(&err).map(ToString::to_string),
        Some("no free slot on bus pci.0".to_owned())
    );
}

#[test]
fn empty_kvm_flag_without_usable_kvm_falls_back_to_tcg_with_a_warning() {
    let p = plan("defaults.json").expect("plans");
    assert_eq!(p.accel, kvm_hypervisor::cmdline::Accel::Tcg);
    assert_eq!(
        p.warnings,
        [
            "KVM is not usable on this host: the guest runs under TCG emulation (set kvm_flag to choose)"
        ]
    );
}

#[test]
fn pc_alias_resolves_to_a_concrete_machine() {
    let p = plan("defaults.json").expect("plans");
    assert_eq!(p.machine, "pc-i440fx-7.2");
}

#[test]
fn passed_fds_are_the_monitors_then_one_per_tap_queue() {
    let p = plan("multiqueue.json").expect("plans");
    let sockets: Vec<i32> = p.listen_sockets.iter().map(|s| s.fd).collect();
    assert_eq!(sockets, [3, 4, 5]);
    let paths: Vec<PathBuf> = p.listen_sockets.iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        [
            PathBuf::from("/run/kvm-hypervisor/ctrl/mq1.qmp"),
            PathBuf::from("/run/kvm-hypervisor/ctrl/mq1.kvmd"),
            PathBuf::from("/run/kvm-hypervisor/ctrl/mq1.qmp-user"),
        ]
    );
    let fds: Vec<Vec<i32>> = p.taps.iter().map(|t| t.fds.clone()).collect();
    assert_eq!(
        fds,
        [
            vec![6, 7, 8, 9],
            vec![10, 11, 12, 13],
            vec![14, 15, 16, 17],
            vec![18, 19, 20, 21]
        ]
    );
}

#[test]
fn disk_hvinfo_uses_ganetis_first_slot() {
    let p = plan("defaults.json").expect("plans");
    assert_eq!(
        p.disks[0].device().hvinfo().device_args(),
        "virtio-blk-pci,id=disk-21111111-1111-4111,bus=pci.0,addr=0xc"
    );
    assert_eq!(
        p.nics[0].device().hvinfo().device_args(),
        "virtio-net-pci,id=nic-31111111-1111-4111,bus=pci.0,addr=0xd"
    );
}

#[test]
fn vhost_without_dev_vhost_net_is_a_clear_error() {
    let spec_text =
        std::fs::read_to_string(root().join("fixtures/plans/defaults.json")).expect("fixture");
    let spec_json: serde_json::Value =
        serde_json::from_str(&spec_text.replace("\"vhost_net\": false", "\"vhost_net\": true"))
            .expect("json");
    let spec = InstanceSpec::from_value(&spec_json).expect("valid").spec;
    let err = plan_start(&spec, &caps(), &RunDir::at("/run/kvm-hypervisor"), &env()).unwrap_err();
    assert!(
        matches!(err, PlanError::Device(DeviceError::VhostNetMissing)),
        "{err:?}"
    );
}

#[test]
fn devices_whose_uuids_share_three_groups_are_refused_by_the_spec() {
    let err = InstanceSpec::from_value(&serde_json::json!({
        "name": "dup1", "memory": 64, "vcpus": 1, "hvparams": {"vhost_net": false},
        "nics": [{"uuid": "36666666-6666-4666-8666-666666666661", "link": "br0"},
                 {"uuid": "36666666-6666-4666-8666-666666666662", "link": "br0"}]}))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "nics[1].uuid: its QEMU id nic-36666666-6666-4666 is also nics[0].uuid's (QEMU ids keep only the first three groups of a UUID)"
    );
}

fn plan_with(fixture: &str, env: PlanEnv) -> LaunchPlan {
    let spec = InstanceSpec::load(&root().join("fixtures/plans").join(fixture))
        .expect("valid spec")
        .spec;
    plan_start(&spec, &caps(), &RunDir::at("/run/kvm-hypervisor"), &env).expect("plans")
}

#[test]
fn post_start_steps_are_password_then_cont() {
    let p = plan_with("vnc-tls.json", env());
    assert_eq!(
        p.post_start,
        [
            PostStartStep::SetPassword {
                protocol: kvm_hypervisor::qmp::DisplayProtocol::Vnc,
                file: "/etc/ganeti/vnc-password".into(),
            },
            PostStartStep::Cont,
        ]
    );
}

#[test]
fn a_paused_start_never_continues_and_min_memory_bounds_the_balloon() {
    let p = plan_with(
        "defaults.json",
        PlanEnv {
            available_memory_mib: Some(100),
            mode: StartMode::Paused,
            ..env()
        },
    );
    // min_memory defaults to memory (128): no balloon below it.
    assert_eq!(p.post_start, []);
}

#[test]
fn a_node_with_enough_memory_needs_no_balloon() {
    let p = plan_with(
        "defaults.json",
        PlanEnv {
            available_memory_mib: Some(128),
            ..env()
        },
    );
    assert_eq!(p.post_start, [PostStartStep::Cont]);
}

#[test]
fn a_lean_machine_has_none_of_the_legacy_devices() {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/plans/defaults.json")).expect("fixture"),
    )
    .expect("json");
    v["hvparams"]["lean_machine"] = serde_json::json!(true);
    let spec = InstanceSpec::from_value(&v).expect("valid").spec;
    let p = plan_start(&spec, &caps(), &RunDir::at("/run/kvm-hypervisor"), &env()).expect("plans");
    let devices: Vec<&str> = p
        .argv
        .windows(2)
        .filter(|w| w[0] == "-device")
        .map(|w| w[1].split(',').next().unwrap_or_default())
        .collect();
    assert_eq!(
        devices,
        ["virtio-balloon-pci", "virtio-blk-pci", "virtio-net-pci"]
    );
}

#[test]
fn shared_storage_gets_cache_none_whatever_disk_cache_says() {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/plans/defaults.json")).expect("fixture"),
    )
    .expect("json");
    v["hvparams"]["disk_cache"] = serde_json::json!("writeback");
    v["disks"][0]["dev_type"] = serde_json::json!("sharedfile");
    let spec = InstanceSpec::from_value(&v).expect("valid").spec;
    let p = plan_start(&spec, &caps(), &RunDir::at("/run/kvm-hypervisor"), &env()).expect("plans");
    let blockdev = p
        .argv
        .windows(2)
        .find(|w| w[0] == "-blockdev" && w[1].contains("node-name=disk-"))
        .map(|w| w[1].clone())
        .expect("disk blockdev");
    assert!(
        blockdev.contains(",cache.direct=on,cache.no-flush=off,"),
        "{blockdev}"
    );
    assert!(p.warnings.contains(&"disks[0]: disk_cache writeback overridden with none on sharedfile storage, to prevent shared storage corruption on migration (as Ganeti)".to_owned()), "{:?}", p.warnings);
    assert_eq!(
        p.disks[0].record().extra.get("dev_type"),
        Some(&serde_json::json!("sharedfile"))
    );
}

#[test]
fn an_unknown_dev_type_is_refused() {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/plans/defaults.json")).expect("fixture"),
    )
    .expect("json");
    v["disks"][0]["dev_type"] = serde_json::json!("floppy");
    let err = InstanceSpec::from_value(&v).unwrap_err();
    assert!(err.to_string().starts_with("disks[0].dev_type: "), "{err}");
}
