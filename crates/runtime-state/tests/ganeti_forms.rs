//! Every legacy Ganeti runtime form, upgraded and converted to our record.

use std::path::{Path, PathBuf};

use runtime_state::{Format, GanetiRuntime, RuntimeFile, RuntimeRecord, render, to_ganeti};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/ganeti-runtime")
        .join(name)
}

/// Upgrades with deterministic UUIDs for NICs that lack one.
fn upgraded(name: &str) -> GanetiRuntime {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    let value: Value = serde_json::from_str(&text).expect("JSON");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("00000000-0000-4000-8000-{n:012}")
    };
    GanetiRuntime::upgrade(&value, &mut next).expect("a Ganeti runtime")
}

fn record(name: &str) -> RuntimeRecord {
    upgraded(name).to_record()
}

#[test]
fn current_form_keeps_hvinfo_and_extra_keys() {
    let g = upgraded("current.runtime");
    assert_eq!(g.upgrades, Vec::<&str>::new());
    insta::assert_json_snapshot!("current", g.to_record());
}

#[test]
fn three_element_form_gets_no_disks() {
    let g = upgraded("three-element.runtime");
    assert_eq!(
        g.upgrades,
        ["3-element runtime: no disks element (pre-2.10)"]
    );
    assert_eq!(g.disks.len(), 0);
    insta::assert_json_snapshot!("three-element", g.to_record());
}

#[test]
fn pci_slots_become_legacy_hvinfo() {
    let g = upgraded("pci-slots.runtime");
    assert_eq!(
        g.upgrades,
        [
            "NIC without uuid: uuid generated (pre-2.8)",
            "NIC `pci` slot: hvinfo derived",
            "NIC `pci` slot: hvinfo derived",
            "disk `pci` slot: hvinfo derived",
        ]
    );
    insta::assert_json_snapshot!("pci-slots", g.to_record());
}

#[test]
fn balloon_becomes_a_device_keeping_its_arguments() {
    let r = record("balloon.runtime");
    assert_eq!(&r.argv[7..], ["-device", "virtio-balloon,addr=0x3"]);
}

#[test]
fn localtime_becomes_rtc() {
    let r = record("localtime.runtime");
    assert_eq!(&r.argv[7..], ["-rtc", "base=localtime"]);
}

#[test]
fn old_vnc_tls_becomes_a_tls_creds_object() {
    let r = record("vnc-tls.runtime");
    assert_eq!(
        &r.argv[7..],
        [
            "-object",
            "tls-creds-x509,id=vnctls0,endpoint=server,dir=/etc/pki/vnc,verify-peer=yes",
            "-vnc",
            "0.0.0.0:10,tls-creds=vnctls0,password",
        ]
    );
}

#[test]
fn x509_without_tls_creates_no_dangling_object() {
    let g = upgraded("vnc-x509-no-tls.runtime");
    assert_eq!(
        g.upgrades,
        ["old -vnc x509 without tls: dropped (it never took effect)"]
    );
    assert_eq!(&g.to_record().argv[7..], ["-vnc", "unix:/tmp/x.vnc"]);
}

#[test]
fn chroot_and_disk_discard_are_upgraded_without_vnc_unlike_ganeti() {
    let g = upgraded("chroot-no-vnc.runtime");
    assert_eq!(
        g.upgrades,
        [
            "3-element runtime: no disks element (pre-2.10)",
            "disk_discard not ignore/unmap: set to ignore",
            "-chroot removed (chroot is re-rendered at start)",
        ]
    );
    let r = g.to_record();
    assert_eq!(&r.argv[7..], ["-display", "none"]);
    assert_eq!(r.hvparams["disk_discard"], "ignore");
}

#[test]
fn record_facts_come_from_the_argv() {
    let r = record("current.runtime");
    assert_eq!(r.instance["name"], "inst1.example.com");
    assert_eq!(r.instance["memory"], 1024);
    assert_eq!(r.instance["vcpus"], 2);
    assert_eq!(r.instance["uuid"], "4f1e2d3c-0000-4000-8000-123456789abc");
    assert_eq!(r.machine.as_deref(), Some("pc-i440fx-7.2"));
}

#[test]
fn ganeti_form_round_trips_through_our_record() {
    let text = std::fs::read_to_string(fixture("current.runtime")).expect("fixture");
    let original: Value = serde_json::from_str(&text).expect("JSON");
    let back = to_ganeti(&record("current.runtime"));
    assert_eq!(back, original);
}

#[test]
fn ganeti_rendering_is_one_line_with_pythons_separators() {
    let text = std::fs::read_to_string(fixture("balloon.runtime")).expect("fixture");
    let rendered = render(&record("balloon.runtime"), Format::Ganeti);
    assert_eq!(
        rendered,
        text.replace(
            "\"-balloon\", \"virtio,addr=0x3\"",
            "\"-device\", \"virtio-balloon,addr=0x3\""
        )
    );
}

#[test]
fn our_rendering_parses_back_to_the_same_record() {
    let r = record("current.runtime");
    let text = render(&r, Format::Ours);
    let again = RuntimeFile::parse(Path::new("x.runtime"), &text).expect("parses");
    assert_eq!(again, RuntimeFile::Ours(r));
}

#[test]
fn garbage_is_not_a_runtime_file() {
    let err = RuntimeFile::parse(Path::new("/r/x.runtime"), "[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/r/x.runtime: not a runtime file: an array of 2 elements (expected 3 or more)"
    );
}

#[test]
fn newer_record_version_is_refused() {
    let err = RuntimeFile::parse(Path::new("/r/x.runtime"), r#"{"version": 99}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/r/x.runtime: runtime record version 99 is newer than this program's 1"
    );
}

#[test]
fn shared_form_is_ganetis_array_for_ganeti_and_our_record_for_us() {
    let mut ours = record("current.runtime");
    ours.origin = runtime_state::Origin::Ours;
    ours.argv = vec!["/usr/bin/qemu-system-x86_64".into(), "-S".into()];
    let ganeti_argv = vec![
        "/usr/bin/qemu-system-x86_64".to_owned(),
        "-name".to_owned(),
        "web1".to_owned(),
        "-m".to_owned(),
        "512".to_owned(),
    ];
    let text = runtime_state::render_shared(&ours, &ganeti_argv);
    let value: Value = serde_json::from_str(&text).expect("JSON");
    // What Ganeti's loader takes: the first four elements, Ganeti's own
    // rendering of the record with the Ganeti command line (`-m` an integer).
    let mut view = ours.clone();
    view.argv = ganeti_argv;
    let first_four: Vec<Value> = value.as_array().expect("array")[..4].to_vec();
    assert_eq!(Value::Array(first_four), to_ganeti(&view));
    assert_eq!(value[0][4], 512);
    assert_eq!(value.as_array().map(Vec::len), Some(5));
    // What we take: our record, whole.
    let back = RuntimeFile::parse(Path::new("web1.runtime"), &text).expect("parses");
    assert_eq!(back, RuntimeFile::Ours(ours));
    // A fifth element that is not ours leaves the array Ganeti's.
    let mut foreign = value.clone();
    foreign[4] = serde_json::json!({"other": 1});
    let parsed = RuntimeFile::parse(Path::new("web1.runtime"), &foreign.to_string());
    assert!(matches!(parsed, Ok(RuntimeFile::Ganeti(_))), "{parsed:?}");
}
