//! `cargo xtask faults`: fault injection at the step boundaries of start,
//! stop, reboot and hotplug, with the real binary and QEMU in a network
//! namespace of its own. The library's hook (`KVM_HYPERVISOR_TEST_FAULT=
//! STEP:FAULT`) kills the CLI, kills QEMU or stops QEMU right after a step;
//! one case fills the run directory. After each fault: `info` must tell the
//! truth, the next command must complete or undo the operation, and nothing
//! may be left: no QEMU, tap, `ip rule`, route, lock or file. Prints a
//! table of operation × fault × outcome.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::Guest;
use crate::e2e::{Lab, leftover_files};

/// What `info` must say after the fault: a state, or no such instance.
#[derive(Clone, Copy)]
enum Truth {
    State(&'static str),
    Gone,
}

/// One fault: where, what, what `info` must then say, and the commands
/// that complete or undo the operation.
struct Case {
    op: &'static str,
    step: &'static str,
    fault: &'static str,
    truth: Truth,
    next: &'static [&'static [&'static str]],
    /// Disks the record must have after the first next command (a hotplug
    /// recovery finishes an add QEMU completed, undoes one it did not).
    disks: Option<usize>,
}

const STOP: &[&str] = &["stop", "NAME", "--force"];
const CLEANUP: &[&str] = &["cleanup", "NAME"];
const RECOVER: &[&str] = &["hotplug", "recover", "NAME"];
const START: &[&str] = &["start", "SPEC", "--paused"];

fn cases() -> Vec<Case> {
    let case = |op, step, fault, truth, next| Case {
        op,
        step,
        fault,
        truth,
        next,
        disks: None,
    };
    let recovered = |step, disks| Case {
        disks: Some(disks),
        ..case(
            "add-disk",
            step,
            "kill-cli",
            Truth::State("paused"),
            &[RECOVER, STOP],
        )
    };
    use Truth::{Gone, State};
    vec![
        case(
            "start",
            "record",
            "kill-cli",
            State("incomplete"),
            &[CLEANUP],
        ),
        case(
            "start",
            "nic-up",
            "kill-cli",
            State("incomplete"),
            &[CLEANUP],
        ),
        case("start", "spawn", "kill-cli", State("incomplete"), &[STOP]),
        case("start", "monitor", "kill-cli", State("incomplete"), &[STOP]),
        case("start", "commit", "kill-cli", State("paused"), &[STOP]),
        case("start", "spawn", "kill-qemu", Gone, &[]),
        // QEMU dies once the paused start has nothing left to ask it: the
        // start succeeds, and what is left is a crashed instance.
        case(
            "start",
            "monitor",
            "kill-qemu",
            State("crashed"),
            &[CLEANUP],
        ),
        case("start", "spawn", "stop-qemu", Gone, &[]),
        case("stop", "powerdown", "kill-cli", State("paused"), &[STOP]),
        case("stop", "powerdown", "kill-qemu", Gone, &[]),
        case(
            "reboot",
            "reboot-stopped",
            "kill-cli",
            State("crashed"),
            &[START, STOP],
        ),
        recovered("add-fd", 1),
        recovered("blockdev-add", 1),
        recovered("device_add", 2),
        case(
            "add-disk",
            "blockdev-add",
            "kill-qemu",
            State("crashed"),
            &[CLEANUP],
        ),
    ]
}

pub(crate) fn faults(guest: Guest, bin: PathBuf, accel: &'static str) -> Result<()> {
    let lab = Lab::new("faults", guest, bin, accel)?;
    let mut rows = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let name = format!("f{i}");
        let outcome = run_case(&lab, case, &name, i).unwrap_or_else(|e| {
            // Leave the next case a clean lab.
            let _ = lab.kvmh(&["stop", &name, "--force"]);
            let _ = lab.kvmh(&["cleanup", &name]);
            format!("FAILED: {e:#}")
        });
        rows.push((
            case.op,
            format!("{} after `{}`", case.fault, case.step),
            outcome,
        ));
    }
    rows.push((
        "start",
        "run directory full".to_owned(),
        full_run_dir(&lab).unwrap_or_else(|e| format!("FAILED: {e:#}")),
    ));
    println!("{:<9} {:<32} outcome", "operation", "fault");
    for (op, fault, outcome) in &rows {
        println!("{op:<9} {fault:<32} {outcome}");
    }
    let failed = rows.iter().filter(|r| r.2.starts_with("FAILED")).count();
    println!("faults: {} passed, {failed} failed", rows.len() - failed);
    ensure!(failed == 0, "{failed} fault cases failed");
    Ok(())
}

fn run_case(lab: &Lab, case: &Case, name: &str, i: usize) -> Result<String> {
    let ip = format!("192.0.2.{}", 100 + i);
    let spec = lab.routed_spec(name, &ip)?;
    let spec_s = spec.to_str().context("utf-8")?;
    let fault = format!("{}:{}", case.step, case.fault);
    let mut env = vec![("KVM_HYPERVISOR_TEST_FAULT", fault.as_str())];
    // A stopped QEMU never answers: the start gives up after 3 s, not 30.
    env.push(("KVM_HYPERVISOR_MONITOR_TIMEOUT", "3"));
    let disk = lab.dir.join(format!("{name}-hot.img"));
    std::fs::File::create(&disk)?.set_len(16 << 20)?;
    let hot = json!({"uuid": "0fa17000-0000-4000-8000-000000000000", "path": disk}).to_string();
    let args: Vec<&str> = match case.op {
        "start" => vec!["start", spec_s, "--paused"],
        "stop" => vec!["stop", name, "--timeout", "30"],
        "reboot" => vec!["reboot", name, "--force"],
        "add-disk" => vec!["hotplug", "add-disk", name, &hot],
        other => bail!("unknown operation {other}"),
    };
    if case.op != "start" {
        lab.start(&spec)?;
    }
    let out = lab.kvmh_env(&args, &env)?;
    let killed = out.status.code().is_none();
    // An orphaned QEMU answers its monitor once up; wait for that, not a time.
    if killed && case.op == "start" && case.step != "record" && case.step != "nic-up" {
        let _ = lab.kvmh(&["qmp", "--instance", name, "query-status"]);
    }
    // A killed QEMU dies a moment after the signal: wait for that (on a
    // pidfd), not for a time, before asking `info`.
    if case.fault == "kill-qemu"
        && let Ok(pid) = std::fs::read_to_string(lab.dir.join("run/pid").join(name))
        && let Ok(pid) = pid.trim().parse::<i64>()
    {
        crate::e2e::wait_gone(pid)?;
    }
    let said = truth_of(lab, name)?;
    match (case.truth, said.as_deref()) {
        (Truth::State(want), Some(got)) if want == got => {}
        (Truth::Gone, None) => {}
        (_, got) => bail!(
            "info said {} (the operation exited {:?}: {})",
            got.unwrap_or("no such instance"),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
    for (k, cmd) in case.next.iter().enumerate() {
        let argv: Vec<&str> = cmd
            .iter()
            .map(|a| match *a {
                "NAME" => name,
                "SPEC" => spec_s,
                other => other,
            })
            .collect();
        lab.ok(&argv)?;
        if let (0, Some(want)) = (k, case.disks) {
            let info: Value = serde_json::from_str(&lab.ok(&["info", name, "--json"])?)?;
            let disks = info["devices"]
                .as_array()
                .map_or(0, |d| d.iter().filter(|d| d["kind"] == "disk").count());
            ensure!(disks == want, "{disks} disks after recovery, not {want}");
        }
    }
    nothing_left(lab, name)?;
    let next: Vec<String> = case.next.iter().map(|c| c[0].to_owned()).collect();
    let disks = case
        .disks
        .map(|d| format!("{d} disk(s) after recovery; "))
        .unwrap_or_default();
    Ok(format!(
        "info: {}; {disks}{}nothing left",
        said.as_deref().unwrap_or("no such instance"),
        if next.is_empty() {
            "undone by itself; ".to_owned()
        } else {
            format!("{} completed; ", next.join(" + "))
        }
    ))
}

/// The state `info` reports, or `None` for "no such instance" (exit 3).
fn truth_of(lab: &Lab, name: &str) -> Result<Option<String>> {
    let out = lab.kvmh(&["info", name, "--json"])?;
    if out.status.code() == Some(3) {
        return Ok(None);
    }
    ensure!(
        out.status.success(),
        "info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["state"].as_str().map(str::to_owned))
}

/// No QEMU of `name`, no tap, rule or route, no file in the run directory.
fn nothing_left(lab: &Lab, name: &str) -> Result<()> {
    let files = leftover_files(&lab.dir.join("run"))?;
    ensure!(files.is_empty(), "files left: {files:?}");
    let qemus = qemus_named(name);
    ensure!(qemus.is_empty(), "QEMU left: pids {qemus:?}");
    let links = lab.in_ns(&["ip", "-o", "link"])?;
    let links = String::from_utf8_lossy(&links.stdout);
    ensure!(!links.contains("tap"), "taps left: {links}");
    let routing = lab.routing()?;
    ensure!(!routing.contains("lookup 100"), "routing left: {routing}");
    Ok(())
}

/// Live processes whose argv has `-name NAME`.
fn qemus_named(name: &str) -> Vec<i32> {
    let needle = format!("\0-name\0{name}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// A start on a run directory whose file system is full: a clear failure,
/// no QEMU, no tap, nothing left but what filled it.
fn full_run_dir(lab: &Lab) -> Result<String> {
    let mnt = lab.dir.join("full");
    std::fs::create_dir_all(&mnt)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()?;
    ensure!(mounted.success(), "mounting a tmpfs failed");
    let result = (|| -> Result<String> {
        let run = mnt.join("run");
        // Lay the run directory out, then fill what is left.
        let list = Command::new("ip")
            .args(["netns", "exec", &lab.ns])
            .arg(&lab.bin)
            .arg("--run-dir")
            .arg(&run)
            .arg("list")
            .output()?;
        ensure!(list.status.success(), "list on the small run dir failed");
        fill(&mnt.join("filler"));
        let spec = lab.routed_spec("full1", "192.0.2.99")?;
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.ns])
            .arg(&lab.bin)
            .arg("--run-dir")
            .arg(&run)
            .args(["start", spec.to_str().context("utf-8")?, "--paused"])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        ensure!(
            out.status.code() == Some(5),
            "start on a full run dir: {:?} {err}",
            out.status
        );
        ensure!(
            err.contains("No space left on device"),
            "the error does not say why: {err}"
        );
        let files = leftover_files(&run)?;
        ensure!(files.is_empty(), "files left: {files:?}");
        ensure!(qemus_named("full1").is_empty(), "QEMU left");
        let links = lab.in_ns(&["ip", "-o", "link"])?;
        ensure!(
            !String::from_utf8_lossy(&links.stdout).contains("tap"),
            "tap left"
        );
        Ok(format!("exit 5 ({}); nothing left", first_line(&err)))
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    result
}

/// The `Error:` line of the CLI's stderr.
fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_default()
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::File::create(path) {
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
}
