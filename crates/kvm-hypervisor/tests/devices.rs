//! One device model for cold start and hotplug: for every fixture disk and
//! NIC, the `-device`/`-blockdev`/`-netdev` options of the start plan and the
//! `device_add`/`blockdev-add`/`netdev_add` arguments that hotplug would send
//! for the same spec entry describe the same device (driver, id, placement,
//! properties), property for property and in the same order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvm_hypervisor::cmdline::{Blockdev, QemuCaps};
use kvm_hypervisor::hotplug::{HotplugError, plan_hot_add_disk, plan_hot_add_nic};
use kvm_hypervisor::qmp::{BlockdevAdd, DeviceAdd, NetdevAdd};
use kvm_hypervisor::spec::InstanceSpec;
use kvm_hypervisor::state::{self, RunDir, RuntimeRecord};
use kvm_hypervisor::{LaunchPlan, PlanEnv, plan_start};
use serde_json::{Map, Value as Json, json};

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
        interfaces: BTreeMap::from([(
            "eth0".to_owned(),
            vec!["198.51.100.7".parse().expect("ip")],
        )]),
        pool_user: Some("nobody".into()),
        spare_root_ports: 2,
        ..PlanEnv::default()
    }
}

fn load(fixture: &str) -> (InstanceSpec, LaunchPlan) {
    load_with(fixture, json!({}))
}

/// The fixture with `hvparams` laid over its own.
fn load_with(fixture: &str, hvparams: Json) -> (InstanceSpec, LaunchPlan) {
    let text =
        std::fs::read_to_string(root().join("fixtures/plans").join(fixture)).expect("fixture");
    let mut value: Json = serde_json::from_str(&text).expect("json");
    for (k, v) in hvparams.as_object().cloned().unwrap_or_default() {
        value["hvparams"][k] = v;
    }
    let spec = InstanceSpec::from_value(&value).expect("valid spec").spec;
    let plan =
        plan_start(&spec, &caps(), &RunDir::at("/run/kvm-hypervisor"), &env()).expect("plans");
    (spec, plan)
}

/// The runtime record of `plan` without disk `skip_disk` / NIC `skip_nic`:
/// the instance just before that device is hot-added.
fn record_without(
    spec: &InstanceSpec,
    plan: &LaunchPlan,
    skip_disk: Option<usize>,
    skip_nic: Option<usize>,
) -> RuntimeRecord {
    RuntimeRecord {
        version: state::RECORD_VERSION,
        origin: state::Origin::Ours,
        instance: json!({"name": spec.name()})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        hvparams: spec.hvparams().to_map(),
        machine: Some(plan.machine.clone()),
        qemu: None,
        argv: Vec::new(),
        disks: plan
            .disks
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip_disk)
            .map(|(_, d)| d.record().clone())
            .collect(),
        nics: plan
            .nics
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip_nic)
            .map(|(_, n)| n.record().clone())
            .collect(),
        guest_argv: None,
        incomplete: false,
    }
}

/// The argument following `option` whose `id=`/`node-name=` is `id`.
fn argv_entry(plan: &LaunchPlan, option: &str, key: &str, id: &str) -> String {
    let wanted = format!("{key}={id}");
    plan.argv
        .windows(2)
        .find(|w| w[0] == option && w[1].split(',').any(|p| p == wanted))
        .map(|w| w[1].clone())
        .unwrap_or_else(|| panic!("no {option} with {wanted} in the plan"))
}

/// `device_add` arguments in `-device` notation, `bootindex` (cold start
/// only) left out.
fn device_as_argv(d: &DeviceAdd) -> String {
    let mut parts = vec![d.driver.clone(), format!("id={}", d.id)];
    if let Some(bus) = &d.bus {
        parts.push(format!("bus={bus}"));
    }
    parts.extend(
        d.properties
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v))),
    );
    parts.join(",")
}

fn netdev_as_argv(n: &NetdevAdd) -> String {
    let mut parts = vec![n.kind.clone(), format!("id={}", n.id)];
    parts.extend(
        n.properties
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v))),
    );
    parts.join(",")
}

fn blockdev_as_argv(b: &BlockdevAdd) -> String {
    let mut m = Map::new();
    m.insert("driver".into(), json!(b.driver));
    m.insert("node-name".into(), json!(b.node_name));
    m.extend(b.properties.clone());
    Blockdev::new(Json::Object(m))
        .expect("blockdev")
        .to_keyval()
}

fn scalar(v: &Json) -> String {
    match v {
        Json::Bool(true) => "on".into(),
        Json::Bool(false) => "off".into(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn without_bootindex(arg: &str) -> String {
    arg.split(',')
        .filter(|p| !p.starts_with("bootindex="))
        .collect::<Vec<_>>()
        .join(",")
}

/// Hot-adds disk `i` of `fixture` onto the instance without it and returns
/// (cold-start `-device`, hot-add `-device`, cold `-blockdev`, hot `-blockdev`).
/// `scsi_observed`: the SCSI targets QEMU reports besides the record's disks
/// (a SCSI CD-ROM's).
fn disk_both_ways(
    fixture: &str,
    i: usize,
    scsi_observed: &[u8],
) -> Result<[String; 4], HotplugError> {
    let (spec, plan) = load(fixture);
    let record = record_without(&spec, &plan, Some(i), None);
    let hot = plan_hot_add_disk(
        &record,
        &spec.disks()[i],
        &[],
        scsi_observed,
        &PlanEnv::default(),
    )?;
    let id = plan.disks[i].device().id().to_string();
    Ok([
        without_bootindex(&argv_entry(&plan, "-device", "id", &id)),
        device_as_argv(&hot.device),
        argv_entry(&plan, "-blockdev", "node-name", &id),
        blockdev_as_argv(&hot.blockdev),
    ])
}

/// As [`disk_both_ways`] for NIC `i`: (`-device` both ways, `-netdev` both
/// ways with the descriptors named `FD`).
fn nic_both_ways(fixture: &str, i: usize, hvparams: Json) -> Result<[String; 4], HotplugError> {
    let (spec, plan) = load_with(fixture, hvparams);
    let record = record_without(&spec, &plan, None, Some(i));
    let hot = plan_hot_add_nic(
        &record,
        &spec.nics()[i],
        &[],
        &PlanEnv::default(),
        "x",
        None,
    )?;
    let id = plan.nics[i].device().id().to_string();
    let tap = &plan.taps[i];
    let fds: Vec<String> = tap.fds.iter().map(|_| "FD".to_owned()).collect();
    let hot_netdev = plan.nics[i].netdev_add(&fds, &[]);
    let cold_netdev = argv_entry(&plan, "-netdev", "id", &id);
    let numbers = tap
        .fds
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(":");
    Ok([
        without_bootindex(&argv_entry(&plan, "-device", "id", &id)),
        device_as_argv(&hot.device),
        cold_netdev.replace(&numbers, &fds.join(":")),
        netdev_as_argv(&hot_netdev),
    ])
}

#[test]
fn virtio_disk_is_the_same_device_at_start_and_hot_added() {
    let [cold, hot, cold_node, hot_node] =
        disk_both_ways("defaults.json", 0, &[]).expect("hot-pluggable");
    assert_eq!(
        cold,
        "virtio-blk-pci,id=disk-21111111-1111-4111,bus=pci.0,addr=0xc,drive=disk-21111111-1111-4111,write-cache=on"
    );
    assert_eq!(hot, cold);
    assert_eq!(hot_node, cold_node);
}

#[test]
fn scsi_disk_is_the_same_device_at_start_and_hot_added() {
    let (spec, _) = load("scsi.json");
    let last = spec.disks().len() - 1;
    let [cold, hot, cold_node, hot_node] =
        disk_both_ways("scsi.json", last, &[0]).expect("hot-pluggable");
    assert!(cold.starts_with("scsi-hd,id=disk-"), "{cold}");
    assert_eq!(hot, cold);
    assert_eq!(hot_node, cold_node);
}

#[test]
fn every_multiqueue_nic_is_the_same_device_at_start_and_hot_added() {
    let (spec, _) = load("multiqueue.json");
    let last = spec.nics().len() - 1;
    let [cold, hot, cold_netdev, hot_netdev] =
        nic_both_ways("multiqueue.json", last, json!({})).expect("hot-pluggable");
    assert!(cold.contains(",mq=on,vectors="), "{cold}");
    assert_eq!(hot, cold);
    assert_eq!(hot_netdev, cold_netdev);
}

#[test]
fn default_nic_is_the_same_device_at_start_and_hot_added() {
    let [cold, hot, cold_netdev, hot_netdev] =
        nic_both_ways("defaults.json", 0, json!({})).expect("hot-pluggable");
    assert_eq!(
        cold,
        "virtio-net-pci,id=nic-31111111-1111-4111,bus=pci.0,addr=0xd,netdev=nic-31111111-1111-4111,mac=aa:00:00:00:01:01"
    );
    assert_eq!(hot, cold);
    assert_eq!(hot_netdev, "tap,id=nic-31111111-1111-4111,fd=FD");
    assert_eq!(hot_netdev, cold_netdev);
}

#[test]
fn nic_hot_added_under_chroot_differs_only_by_its_option_rom() {
    let [cold, hot, cold_netdev, hot_netdev] =
        nic_both_ways("defaults.json", 0, json!({"use_chroot": true})).expect("hot-pluggable");
    assert_eq!(hot, format!("{cold},romfile="));
    assert_eq!(hot_netdev, cold_netdev);
}

#[test]
fn nic_hot_added_under_chroot_records_its_missing_option_rom() {
    let (spec, plan) = load_with("defaults.json", json!({"use_chroot": true}));
    let record = record_without(&spec, &plan, None, Some(0));
    let hot = plan_hot_add_nic(
        &record,
        &spec.nics()[0],
        &[],
        &PlanEnv::default(),
        "x",
        None,
    )
    .expect("hot-pluggable");
    assert_eq!(hot.record.extra.get("romfile"), Some(&json!("")));
    assert_eq!(plan.nics[0].record().extra.get("romfile"), None);
}

#[test]
fn ide_disks_are_refused_for_hotplug_not_built_differently() {
    let err = disk_both_ways("ide.json", 0, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hotplug is not supported for ide1: disk_type ide cannot be hot-plugged"
    );
}
