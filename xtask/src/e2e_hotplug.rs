//! End-to-end hotplug scenarios, in the e2e lab's network namespace: disk
//! add → resize → remove seen by the guest, a bridged NIC added and removed,
//! a crash between `blockdev-add` and `device_add` recovered, PCI bus
//! exhaustion, and a SCSI disk on virtio-scsi-pci.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::e2e::{Console, Lab};

fn step(what: &str) {
    println!("e2e hotplug: {what}");
}

fn uuid(n: u32) -> String {
    format!("{n:08x}-4a4a-4b4b-8c8c-000000000000")
}

fn image(lab: &Lab, name: &str, mib: u64) -> Result<String> {
    let p = lab.dir.join(name);
    std::fs::File::create(&p)?.set_len(mib << 20)?;
    Ok(p.to_str().context("utf-8")?.to_owned())
}

fn disk_spec(lab: &Lab, n: u32, mib: u64) -> Result<String> {
    let path = image(lab, &format!("hot{n}.img"), mib)?;
    Ok(json!({"uuid": uuid(n), "path": path, "size": mib}).to_string())
}

fn qmp(lab: &Lab, name: &str, cmd: &str) -> Result<Value> {
    Ok(serde_json::from_str(&lab.ok(&[
        "qmp",
        "--instance",
        name,
        cmd,
    ])?)?)
}

fn block_nodes(lab: &Lab, name: &str) -> Result<Vec<String>> {
    Ok(qmp(lab, name, "query-named-block-nodes")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node-name"].as_str().map(str::to_owned))
        .collect())
}

fn fds_held(lab: &Lab, name: &str) -> Result<usize> {
    Ok(qmp(lab, name, "query-fdsets")?
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["fds"].as_array().map_or(0, Vec::len))
        .sum())
}

/// The size of a guest block device in 512-byte sectors (agent lines that
/// interleave with the command's output are skipped).
fn sectors(console: &mut Console, dev: &str) -> Result<u64> {
    let out = console.run(&format!("cat /sys/block/{dev}/size"))?;
    out.iter()
        .find_map(|l| l.trim().parse().ok())
        .with_context(|| format!("no size in {out:?}"))
}

/// The hotplug scenarios; called at the end of `e2e::e2e` with its lab.
pub(crate) fn scenarios(lab: &Lab) -> Result<()> {
    step("boot a guest with one disk and no NIC");
    let spec = lab.spec("hp1", false, json!({}))?;
    lab.start(&spec)?;
    let mut console = lab.boot("hp1")?;

    step("hot-add a 64 MiB virtio-blk disk: the guest lists it");
    let added: Value = serde_json::from_str(&lab.ok(&[
        "hotplug",
        "add-disk",
        "hp1",
        &disk_spec(lab, 1, 64)?,
        "--json",
    ])?)?;
    ensure!(
        added["hvinfo"]["addr"] == "0xd",
        "added {added} (expected slot 0xd)"
    );
    console.until("GLAB blk: vda vdb")?;
    let size = sectors(&mut console, "vdb")?;
    ensure!(size == 131072, "size after add: {size} sectors");

    step("resize it to 128 MiB: the guest sees the new size");
    lab.ok(&["resize-disk", "hp1", &uuid(1), "128"])?;
    let size = sectors(&mut console, "vdb")?;
    ensure!(size == 262144, "size after resize: {size} sectors");

    step("remove it: DEVICE_DELETED arrived, the guest no longer lists it");
    let removed: Value =
        serde_json::from_str(&lab.ok(&["hotplug", "del-disk", "hp1", &uuid(1), "--json"])?)?;
    ensure!(removed["state"] == "removed", "removal: {removed}");
    console.until("GLAB uevent remove block vdb")?;
    let nodes = block_nodes(lab, "hp1")?;
    ensure!(
        !nodes.iter().any(|n| n.starts_with("disk-00000001")),
        "block node left: {nodes:?}"
    );

    step("hot-add a bridged NIC: the guest gets eth0 and answers ping on it");
    let nic = json!({"uuid": uuid(2), "mode": "bridged", "link": "kvmhvbr0", "ip": "192.0.2.2"});
    let added: Value = serde_json::from_str(&lab.ok(&[
        "hotplug",
        "add-nic",
        "hp1",
        &nic.to_string(),
        "--json",
    ])?)?;
    let tap = added["tap"].as_str().context("tap")?.to_owned();
    console.until("GLAB ip eth0")?;
    let ping = lab.in_ns(&["busybox", "ping", "-c", "3", "-W", "5", "192.0.2.2"])?;
    ensure!(
        ping.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    step("remove the NIC: the tap is gone");
    let removed: Value =
        serde_json::from_str(&lab.ok(&["hotplug", "del-nic", "hp1", &uuid(2), "--json"])?)?;
    ensure!(removed["state"] == "removed", "removal: {removed}");
    console.until("GLAB uevent remove net eth0")?;
    let links = String::from_utf8_lossy(&lab.in_ns(&["ip", "-o", "link"])?.stdout).into_owned();
    ensure!(!links.contains(&tap), "tap {tap} left: {links}");

    step("kill -9 between blockdev-add and device_add: the next operation undoes it");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(&lab.bin)
        .arg("--run-dir")
        .arg(lab.dir.join("run"))
        .args(["hotplug", "add-disk", "hp1", &disk_spec(lab, 3, 8)?])
        .env("KVM_HYPERVISOR_TEST_CRASH_AFTER", "blockdev-add")
        .output()?;
    ensure!(
        std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(9),
        "the crash hook did not fire: {:?}",
        out.status
    );
    ensure!(
        block_nodes(lab, "hp1")?
            .iter()
            .any(|n| n.starts_with("disk-00000003")),
        "no block node left by the crash"
    );
    let recovered = lab.ok(&["hotplug", "recover", "hp1", "--json"])?;
    ensure!(recovered.contains("undid-add"), "recovery: {recovered}");
    ensure!(
        !block_nodes(lab, "hp1")?
            .iter()
            .any(|n| n.starts_with("disk-00000003")),
        "block node survived recovery"
    );
    ensure!(fds_held(lab, "hp1")? == 0, "fd set left after recovery");

    step("add disks until the PCI bus is exhausted: a clear error, no leftovers");
    let mut added_count = 0;
    let mut last_err = String::new();
    for n in 10..30 {
        let out = lab.kvmh(&["hotplug", "add-disk", "hp1", &disk_spec(lab, n, 1)?])?;
        if out.status.success() {
            added_count += 1;
        } else {
            last_err = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
    }
    // Slots 0xd..=0x1f are free after the boot disk at 0xc.
    ensure!(
        added_count == 19,
        "added {added_count} disks before: {last_err}"
    );
    ensure!(
        last_err.contains("no free slot") && last_err.contains("pci.0"),
        "exhaustion error: {last_err}"
    );
    ensure!(
        !block_nodes(lab, "hp1")?
            .iter()
            .any(|n| n.starts_with(&format!("disk-{:08x}", 10 + 19))),
        "the failed add left a block node"
    );
    ensure!(fds_held(lab, "hp1")? == 0, "fd sets left");
    let record: Value = serde_json::from_str(&lab.ok(&["runtime", "show", "hp1", "--json"])?)?;
    ensure!(
        record["disks"].as_array().map(Vec::len) == Some(20),
        "record disks: {}",
        record["disks"]
    );
    lab.ok(&["stop", "hp1", "--force"])?;

    step("SCSI: a scsi-hd disk on virtio-scsi-pci is added and removed");
    let spec = lab.spec(
        "hp2",
        false,
        json!({"disk_type": "scsi-hd", "scsi_controller_type": "virtio-scsi-pci"}),
    )?;
    lab.start(&spec)?;
    let mut console = lab.boot("hp2")?;
    let added: Value = serde_json::from_str(&lab.ok(&[
        "hotplug",
        "add-disk",
        "hp2",
        &disk_spec(lab, 40, 64)?,
        "--json",
    ])?)?;
    ensure!(added["hvinfo"]["scsi-id"] == 1, "added {added}");
    console.until("GLAB uevent add block sdb")?;
    let removed: Value =
        serde_json::from_str(&lab.ok(&["hotplug", "del-disk", "hp2", &uuid(40), "--json"])?)?;
    ensure!(removed["state"] == "removed", "SCSI removal: {removed}");
    console.until("GLAB uevent remove block sdb")?;
    lab.ok(&["stop", "hp2", "--force"])?;
    println!("e2e hotplug: all scenarios passed");
    Ok(())
}
