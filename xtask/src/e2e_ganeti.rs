//! End-to-end: an instance that Ganeti's KVM layer started moves to a node
//! of ours and keeps Ganeti's guest machine. Node A runs the test guest's
//! QEMU exactly as Ganeti's `hv_kvm` starts it (the argv and runtime file
//! of `fixtures/ganeti-runtime/testguest.*`, in Ganeti's run-directory
//! layout); our binary reads Ganeti's runtime file there, B accepts it,
//! keeping Ganeti's guest part of the argv, and hands it on in Ganeti's
//! format again.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::e2e::{Console, Lab, NODE_B, leftover_files};
use crate::e2e_migration::ok_b;

fn step(what: &str) {
    eprintln!("e2e ganeti: {what}");
}

/// The fixture `file` with the lab's paths filled in.
fn fixture(lab: &Lab, file: &str, disk: &str) -> Result<String> {
    let text = std::fs::read_to_string(crate::root().join("fixtures/ganeti-runtime").join(file))?;
    let (kernel, initrd) = lab.guest_files();
    Ok(text
        .replace("@RUN@", &lab.dir.join("run").display().to_string())
        .replace("@LOG@", &lab.dir.join("ganeti-log").display().to_string())
        .replace("@KERNEL@", &kernel.display().to_string())
        .replace("@INITRD@", &initrd.display().to_string())
        .replace("@DISK@", disk))
}

fn as_args(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn scenarios(lab: &Lab) -> Result<()> {
    step(
        "a QEMU started as Ganeti's hv_kvm starts it migrates to B, which keeps Ganeti's guest part of the argv; the marker comes along; B hands it on in Ganeti's format",
    );
    let run = lab.dir.join("run");
    for sub in ["pid", "conf", "ctrl"] {
        std::fs::create_dir_all(run.join(sub))?;
    }
    std::fs::create_dir_all(lab.dir.join("ganeti-log"))?;
    let disk = lab.dir.join("mig9-disk0.img");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let disk = disk.display().to_string();
    let runtime = fixture(lab, "testguest.runtime", &disk)?;
    let phase_a = as_args(&serde_json::from_str::<Value>(&runtime)?[0]);
    let phase_b = as_args(&serde_json::from_str(&fixture(
        lab,
        "testguest.phase-b.json",
        &disk,
    )?)?);
    std::fs::write(run.join("conf/mig9.runtime"), &runtime)?;
    // Ganeti's start: phase A and B, daemonized, then `cont`.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .args(&phase_a)
        .args(&phase_b)
        .output()?;
    ensure!(
        out.status.success(),
        "Ganeti's QEMU did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serial = run.join("ctrl/mig9.serial");
    let mut console = Console::attach(&serial)?;
    let qmp = run.join("ctrl/mig9.qmp");
    lab.ok(&["qmp", "--socket", qmp.to_str().context("utf-8")?, "cont"])?;
    console.until("GLAB-READY")?;
    console.run("echo MARK-$((9*9))-ganeti > /tmp/mark")?;
    drop(console);

    let info = lab.ok(&["migration-info", "mig9"])?;
    ensure!(
        info.starts_with('['),
        "migration-info of Ganeti's instance is not Ganeti's format: {info}"
    );
    let info_file = lab.dir.join("mig9.migration-info");
    std::fs::write(&info_file, &info)?;
    let listen = format!("{NODE_B}:4454");
    ok_b(
        lab,
        &[
            "accept",
            info_file.to_str().context("utf-8")?,
            "--listen",
            &listen,
        ],
    )?;
    let record: Value = serde_json::from_str(&std::fs::read_to_string(
        lab.dir.join("run-b/conf/mig9.runtime"),
    )?)?;
    let argv = as_args(&record["argv"]);
    ensure!(
        as_args(&record["guest_argv"]) == phase_a,
        "B's record does not keep Ganeti's argv: {record}"
    );
    // Ganeti's guest part as it was, none of our machine's.
    let kept = ["-usb", "virtio-balloon", "pc-i440fx-7.2"];
    ensure!(
        kept.iter().all(|k| argv.iter().any(|a| a == k))
            && !argv.iter().any(|a| a == "-nodefaults" || a == "-daemonize"),
        "B's argv: {argv:?}"
    );
    lab.ok(&["migrate", "mig9", "--target", &listen, "--wait", "300"])?;
    // Ganeti's QEMU has no users' monitor: status takes its control one.
    let status: Value = serde_json::from_str(&lab.ok(&["migration-status", "mig9"])?)?;
    ensure!(
        status["status"] == "completed" && status["target"] == listen,
        "migration-status of Ganeti's QEMU: {status}"
    );
    ok_b(lab, &["finalize-target", "mig9", "--success"])?;
    lab.ok(&["finalize-source", "mig9", "--success"])?;
    let mut console = Console::attach(&lab.dir.join("run-b/ctrl/mig9.serial"))?;
    let mark = console.run("cat /tmp/mark")?;
    ensure!(mark == ["MARK-81-ganeti"], "the marker on B: {mark:?}");
    drop(console);
    let again: Value = serde_json::from_str(&ok_b(lab, &["migration-info", "mig9"])?)?;
    ensure!(
        as_args(&again[0]) == phase_a,
        "B hands on another argv than Ganeti's: {again}"
    );
    ok_b(lab, &["stop", "mig9", "--force"])?;
    let left: Vec<_> = leftover_files(&run)?;
    ensure!(left.is_empty(), "files left on A: {left:?}");
    let left = leftover_files(&lab.dir.join("run-b"))?;
    ensure!(left.is_empty(), "files left on B: {left:?}");
    Ok(())
}
