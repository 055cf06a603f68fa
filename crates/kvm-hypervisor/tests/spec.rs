//! The instance spec contract: what parses, what is refused and how.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvm_hypervisor::host::NodeFacts;
use kvm_hypervisor::hvparams::{BootOrder, PathKind};
use kvm_hypervisor::spec::*;
use kvm_hypervisor::validate::validate_on_host;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/specs")
        .join(name)
}

fn problems(v: Value) -> Vec<String> {
    match InstanceSpec::from_value(&v) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn minimal() -> Value {
    json!({"name": "web1", "memory": 512, "vcpus": 1})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

#[test]
fn issue_example_loads_from_json() {
    let loaded = InstanceSpec::load(&fixture("web1.json")).expect("valid");
    let s = &loaded.spec;
    assert_eq!(s.name().as_str(), "web1");
    assert_eq!(
        (s.memory(), s.min_memory(), s.vcpus(), s.network_port()),
        (1024, 512, 2, Some(11000))
    );
    assert_eq!(s.hvparams().kernel_path(), "");
    assert_eq!(s.hvparams().boot_order(), BootOrder::Disk);
    assert_eq!(
        s.disks()[0].source(),
        &DiskSource::Path("/dev/vg/web1-disk0".into())
    );
    assert_eq!(
        s.disks()[1].source(),
        &DiskSource::Uri("rbd:pool/image".into())
    );
    assert_eq!(s.nics()[0].mac().to_string(), "aa:00:00:11:22:33");
    assert_eq!(loaded.generated, Vec::new());
}

#[test]
fn toml_and_json_forms_are_the_same_spec() {
    let json = InstanceSpec::load(&fixture("web1.json")).expect("valid json");
    let toml = InstanceSpec::load(&fixture("web1.toml")).expect("valid toml");
    assert_eq!(json, toml);
}

#[test]
fn unknown_extension_is_refused() {
    let err = InstanceSpec::load(Path::new("/tmp/web1.yaml")).unwrap_err();
    assert!(matches!(err, SpecError::UnknownFormat { .. }), "{err:?}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = InstanceSpec::load(Path::new("/nonexistent/web1.json")).unwrap_err();
    assert_eq!(err.to_string(), "cannot read /nonexistent/web1.json");
}

#[test]
fn min_memory_defaults_to_memory() {
    assert_eq!(
        InstanceSpec::from_value(&minimal())
            .unwrap()
            .spec
            .min_memory(),
        512
    );
}

#[test]
fn missing_uuids_and_macs_are_generated_and_reported() {
    let v = with(minimal(), "nics", json!([{"link": "br0"}]));
    let loaded = InstanceSpec::from_value(&v).expect("valid");
    let fields: Vec<&str> = loaded.generated.iter().map(|g| g.field.as_str()).collect();
    assert_eq!(fields, ["uuid", "nics[0].uuid", "nics[0].mac"]);
    let mac = loaded.spec.nics()[0].mac().to_string();
    assert_eq!(&mac[..9], "aa:00:00:");
    assert_eq!(loaded.generated[2].value, mac);
}

#[test]
fn instance_name_with_path_is_refused() {
    assert_eq!(
        problems(with(minimal(), "name", json!("../etc"))),
        ["name: `../etc` is not a usable instance name: it contains `/`"]
    );
}

#[test]
fn instance_name_dotdot_is_refused() {
    assert_eq!(
        problems(with(minimal(), "name", json!(".."))),
        ["name: `..` is not a usable instance name: it contains `..`"]
    );
}

#[test]
fn instance_name_longer_than_a_host_name_is_refused() {
    assert_eq!(
        problems(with(minimal(), "name", json!("a".repeat(65)))),
        [format!(
            "name: `{}` is not a usable instance name: it is longer than a host name (64 bytes)",
            "a".repeat(65)
        )]
    );
}

#[test]
fn instance_name_with_nul_is_refused() {
    assert_eq!(
        problems(with(minimal(), "name", json!("a\u{0}b"))),
        ["name: `a\u{0}b` is not a usable instance name: it contains NUL"]
    );
}

#[test]
fn unknown_top_level_field_is_refused_with_suggestion() {
    assert_eq!(
        problems(with(minimal(), "memroy", json!(1))),
        ["memroy: unknown field; did you mean `memory`?"]
    );
}

#[test]
fn unknown_disk_field_names_its_path() {
    assert_eq!(
        problems(with(
            minimal(),
            "disks",
            json!([{"path": "/srv/a.img", "sise": 10}])
        )),
        ["disks[0].sise: unknown field; did you mean `size`?"]
    );
}

#[test]
fn bad_uuid_is_refused() {
    assert_eq!(
        problems(with(minimal(), "uuid", json!("4f1e2d3c-0000-4000-8000"))),
        ["uuid: `4f1e2d3c-0000-4000-8000` is not a UUID"]
    );
}

#[test]
fn duplicate_uuid_names_both_fields() {
    let u = "7c079136-2573-4112-82d0-0d3d2aa90d8f";
    let v = with(
        minimal(),
        "disks",
        json!([{"uuid": u, "path": "/srv/a"}, {"uuid": u, "path": "/srv/b"}]),
    );
    assert_eq!(
        problems(v),
        [format!(
            "disks[1].uuid: duplicate UUID {u}, also used by disks[0].uuid"
        )]
    );
}

#[test]
fn disks_whose_qemu_ids_collide_are_refused() {
    let v = with(
        minimal(),
        "disks",
        json!([
            {"uuid": "11111111-2222-4333-8444-555555555555", "path": "/srv/a"},
            {"uuid": "11111111-2222-4333-8444-666666666666", "path": "/srv/b"},
        ]),
    );
    assert_eq!(
        problems(v),
        [
            "disks[1].uuid: its QEMU id disk-11111111-2222-4333 is also disks[0].uuid's (QEMU ids keep only the first three groups of a UUID)"
        ]
    );
}

#[test]
fn a_disk_and_a_nic_may_share_uuid_prefixes() {
    let v = with(
        with(
            minimal(),
            "disks",
            json!([{"uuid": "11111111-2222-4333-8444-555555555555", "path": "/srv/a"}]),
        ),
        "nics",
        json!([{"uuid": "11111111-2222-4333-8444-666666666666", "mac": "aa:00:00:00:00:01", "link": "br0"}]),
    );
    assert_eq!(problems(v), Vec::<String>::new());
}

#[test]
fn bad_mac_is_refused() {
    assert_eq!(
        problems(with(
            minimal(),
            "nics",
            json!([{"mac": "aa:00:00:11:22", "link": "br0"}])
        )),
        [
            "nics[0].mac: `aa:00:00:11:22` is not a usable MAC address: expected six hex pairs separated by `:`"
        ]
    );
}

#[test]
fn multicast_mac_is_refused() {
    assert_eq!(
        problems(with(
            minimal(),
            "nics",
            json!([{"mac": "01:00:5e:00:00:01", "link": "br0"}])
        )),
        [
            "nics[0].mac: `01:00:5e:00:00:01` is not a usable MAC address: a multicast address cannot be a NIC's address"
        ]
    );
}

#[test]
fn duplicate_mac_is_refused() {
    let v = with(
        minimal(),
        "nics",
        json!([{"mac": "aa:00:00:11:22:33", "link": "br0"}, {"mac": "AA:00:00:11:22:33", "link": "br0"}]),
    );
    assert_eq!(
        problems(v),
        ["nics[1].mac: duplicate MAC address `aa:00:00:11:22:33`, also used by nics[0].mac"]
    );
}

#[test]
fn disk_with_both_path_and_uri_is_refused() {
    assert_eq!(
        problems(with(
            minimal(),
            "disks",
            json!([{"path": "/srv/a.img", "uri": "rbd:p/a"}])
        )),
        ["disks[0]: a disk needs exactly one of `path` (kernelspace) and `uri` (userspace)"]
    );
}

#[test]
fn disk_with_neither_path_nor_uri_is_refused() {
    assert_eq!(
        problems(with(minimal(), "disks", json!([{"size": 10}]))),
        ["disks[0]: a disk needs exactly one of `path` (kernelspace) and `uri` (userspace)"]
    );
}

#[test]
fn userspace_access_with_a_path_is_refused() {
    assert_eq!(
        problems(with(
            minimal(),
            "disks",
            json!([{"path": "/srv/a.img", "access": "userspace"}])
        )),
        ["disks[0].access: `userspace` access needs `uri`"]
    );
}

#[test]
fn relative_disk_path_is_refused() {
    assert_eq!(
        problems(with(minimal(), "disks", json!([{"path": "a.img"}]))),
        ["disks[0].path: `a.img` is not a normalized absolute path"]
    );
}

#[test]
fn min_memory_above_memory_is_refused() {
    assert_eq!(
        problems(with(minimal(), "min_memory", json!(1024))),
        ["min_memory: 1024 MiB is more than memory (512 MiB)"]
    );
}

#[test]
fn zero_vcpus_is_refused() {
    assert_eq!(
        problems(with(minimal(), "vcpus", json!(0))),
        ["vcpus: 0 is out of range 1..=1024"]
    );
}

#[test]
fn missing_memory_is_refused() {
    assert_eq!(
        problems(json!({"name": "web1", "vcpus": 1})),
        ["memory: is required"]
    );
}

#[test]
fn string_memory_is_refused() {
    assert_eq!(
        problems(with(minimal(), "memory", json!("1G"))),
        ["memory: expected an integer, found string \"1G\""]
    );
}

#[test]
fn bridged_nic_needs_a_link() {
    assert_eq!(
        problems(with(minimal(), "nics", json!([{"mode": "bridged"}]))),
        ["nics[0].link: is required when mode is `bridged`"]
    );
}

#[test]
fn routed_nic_needs_an_ip() {
    assert_eq!(
        problems(with(minimal(), "nics", json!([{"mode": "routed"}]))),
        ["nics[0].ip: is required when mode is `routed`"]
    );
}

#[test]
fn bad_nic_ip_is_refused() {
    assert_eq!(
        problems(with(
            minimal(),
            "nics",
            json!([{"link": "br0", "ip": "192.0.2.300"}])
        )),
        ["nics[0].ip: `192.0.2.300` is not an IP address"]
    );
}

#[test]
fn vnc_needs_a_network_port_above_5900() {
    let v = json!({"name": "w", "memory": 1, "vcpus": 1, "network_port": 5900,
                   "hvparams": {"vnc_bind_address": "127.0.0.1"}});
    assert_eq!(
        problems(v),
        ["network_port: 5900 gives no VNC display: VNC ports start above 5900"]
    );
}

#[test]
fn per_vcpu_cpu_mask_must_match_vcpus() {
    let v = with(minimal(), "hvparams", json!({"cpu_mask": "0:1"}));
    assert_eq!(
        problems(v),
        ["hvparams.cpu_mask: has 2 per-vCPU entries but the instance has 1 vCPUs"]
    );
}

#[test]
fn network_boot_needs_a_nic() {
    let v = with(
        minimal(),
        "hvparams",
        json!({"kernel_path": "", "boot_order": "network"}),
    );
    assert_eq!(
        problems(v),
        ["hvparams.boot_order: booting from `network` needs a NIC"]
    );
}

#[test]
fn five_mistakes_are_all_reported_each_naming_its_field() {
    let err = InstanceSpec::load(&fixture("five-mistakes.json")).unwrap_err();
    let SpecError::Invalid(p) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    let got: Vec<String> = p.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "name: `../etc` is not a usable instance name: it contains `/`",
            "hvparams.acpi: expected a boolean, found string \"yes\"",
            "hvparams.boot_ordr: unknown hvparam; did you mean `boot_order`?",
            "disks[0]: a disk needs exactly one of `path` (kernelspace) and `uri` (userspace)",
            "nics[0].mac: `aa:00:00:11:22` is not a usable MAC address: expected six hex pairs separated by `:`",
        ]
    );
}

// ---- validation against host facts ----

fn facts_for(spec: &InstanceSpec) -> NodeFacts {
    let mut f = NodeFacts {
        vhost_net: true,
        ..NodeFacts::default()
    };
    f.hv.online_cpus = Some(2);
    for d in spec.disks() {
        if let DiskSource::Path(p) = d.source() {
            f.disk_paths.insert(p.clone(), PathKind::File);
        }
    }
    f
}

#[test]
fn missing_disk_on_host_is_reported() {
    let spec = InstanceSpec::load(&fixture("web1.json")).unwrap().spec;
    let mut facts = facts_for(&spec);
    facts.disk_paths = BTreeMap::from([(PathBuf::from("/dev/vg/web1-disk0"), PathKind::Missing)]);
    facts.bridges = BTreeMap::from([("br0".to_owned(), true)]);
    let report = validate_on_host(&spec, &facts, Vec::new());
    let got: Vec<String> = report
        .problems
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect();
    assert_eq!(
        got,
        ["disks[0].path: /dev/vg/web1-disk0 does not exist on this host"]
    );
}

#[test]
fn missing_bridge_and_vhost_net_are_reported() {
    let spec = InstanceSpec::load(&fixture("web1.json")).unwrap().spec;
    let mut facts = facts_for(&spec);
    facts.vhost_net = false;
    facts.bridges = BTreeMap::from([("br0".to_owned(), false)]);
    let report = validate_on_host(&spec, &facts, Vec::new());
    let got: Vec<String> = report
        .problems
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect();
    assert_eq!(
        got,
        [
            "hvparams.vhost_net: /dev/vhost-net is missing on this host (load the vhost_net module, or set vhost_net to false)",
            "nics[0].link: bridge `br0` does not exist on this host",
        ]
    );
}

#[test]
fn without_qemu_facts_the_qemu_checks_are_unchecked() {
    let spec = InstanceSpec::from_value(&minimal()).unwrap().spec;
    let report = validate_on_host(&spec, &facts_for(&spec), Vec::new());
    assert!(report.is_valid());
    assert!(
        report.unchecked.iter().any(
            |f| f.field == "hvparams.machine_version" && f.message == "needs QEMU capabilities"
        ),
        "{:?}",
        report.unchecked
    );
}

#[test]
fn one_ip_on_two_nics_is_refused() {
    let v = with(
        minimal(),
        "nics",
        json!([
            {"mode": "routed", "link": "100", "ip": "192.0.2.5", "mac": "aa:00:00:00:00:01"},
            {"mode": "routed", "link": "100", "ip": "192.0.2.5", "mac": "aa:00:00:00:00:02"},
        ]),
    );
    assert_eq!(
        problems(v),
        ["nics[1].ip: duplicate IP address `192.0.2.5`, also used by nics[0].ip"]
    );
}
