//! Plan generation for the largest fixture: 16 disks, 4 multiqueue NICs.

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use kvm_hypervisor::cmdline::QemuCaps;
use kvm_hypervisor::spec::InstanceSpec;
use kvm_hypervisor::state::RunDir;
use kvm_hypervisor::{PlanEnv, plan_start};
use serde_json::json;

fn caps() -> QemuCaps {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/qemu/7.2");
    let f = |n: &str| std::fs::read_to_string(dir.join(n)).expect("fixture");
    QemuCaps::from_help(
        &f("help.txt"),
        Some(&f("machine-help.txt")),
        Some(&f("device-help.txt")),
    )
    .expect("caps")
}

fn largest() -> InstanceSpec {
    let disks: Vec<_> = (0..16)
        .map(|i| json!({"uuid": format!("2{i:07x}-cccc-4ccc-8ccc-cccccccccccc"), "path": format!("/srv/disks/big-{i}.img")}))
        .collect();
    let nics: Vec<_> = (0..4)
        .map(|i| json!({"uuid": format!("3{i:07x}-dddd-4ddd-8ddd-dddddddddddd"), "mac": format!("aa:00:00:00:0f:0{i}"), "link": "br0"}))
        .collect();
    let spec = json!({"name": "big1", "memory": 4096, "vcpus": 4,
        "hvparams": {"kvm_path": "/usr/bin/qemu-system-x86_64", "kernel_path": "", "virtio_net_queues": 4, "vhost_net": false,
                     "vnc_bind_address": "127.0.0.1", "vnc_tls": true, "cdrom_image_path": "/srv/iso/x.iso"},
        "network_port": 11000, "disks": disks, "nics": nics});
    InstanceSpec::from_value(&spec).expect("valid").spec
}

fn bench(c: &mut Criterion) {
    let caps = caps();
    let spec = largest();
    let run = RunDir::at("/run/kvm-hypervisor");
    let env = PlanEnv {
        interfaces: BTreeMap::new(),
        spare_root_ports: 4,
        ..PlanEnv::default()
    };
    c.bench_function("plan_start 16 disks 4 mq NICs", |b| {
        b.iter(|| plan_start(std::hint::black_box(&spec), &caps, &run, &env).expect("plans"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
