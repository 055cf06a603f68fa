//! End-to-end defined instances across a reboot of the node: two instances
//! defined and marked autostart, a third defined only; `node-start` brings
//! up the two (and only them); `node-stop` powers both off; the run
//! directory is forgotten (it lives in RAM, `/run`); `node-start` brings
//! them back with the same generated MAC. Then the serial console as a
//! user meets it: held by another client it is refused, a paused VM is not
//! resumed unless asked, `console --info --json` gives a command that
//! works, and a guest powering off ends the session.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use crate::e2e::{Console, Lab, leftover_files, wait_gone};

fn step(what: &str) {
    eprintln!("e2e persist: {what}");
}

/// `kvm-hypervisor --config-dir … ARGS` on node A, demanding success.
fn ok(lab: &Lab, args: &[&str]) -> Result<String> {
    let config = lab.dir.join("instances");
    let mut all = vec!["--config-dir", config.to_str().context("utf-8")?];
    all.extend_from_slice(args);
    lab.ok(&all)
}

/// The serial console of `name`, started running (not paused): attached
/// first, then READY looked up in its console log, or awaited.
fn console(lab: &Lab, name: &str) -> Result<Console> {
    let run = lab.dir.join("run");
    Console::ready(
        &run.join("ctrl").join(format!("{name}.serial")),
        &run.join("log").join(format!("{name}.console")),
    )
}

fn states(lab: &Lab) -> Result<Vec<(String, String, Value)>> {
    let rows: Value = serde_json::from_str(&ok(lab, &["list", "--all", "--json"])?)?;
    Ok(rows
        .as_array()
        .context("list --all")?
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["state"].as_str().unwrap_or_default().to_owned(),
                r["autostart"].clone(),
            )
        })
        .collect())
}

fn mac_in_guest(lab: &Lab, name: &str) -> Result<String> {
    let mut c = console(lab, name)?;
    let out = c.run("cat /sys/class/net/eth0/address")?;
    out.first().cloned().context("no MAC")
}

pub(crate) fn scenarios(lab: &Lab) -> Result<()> {
    step("define three instances (one with a NIC, no MAC given), two of them autostart");
    for (name, nic) in [("pers1", true), ("pers2", false), ("pers3", false)] {
        let spec = lab.spec(name, nic, json!({}))?;
        ok(lab, &["define", spec.to_str().context("utf-8")?])?;
    }
    ok(lab, &["autostart", "pers1", "on", "--order", "2"])?;
    ok(lab, &["autostart", "pers2", "on", "--order", "1"])?;
    let out = ok(lab, &["node-start", "--json"])?;
    let started: Value = serde_json::from_str(&out)?;
    let order: Vec<&str> = started
        .as_array()
        .context("node-start")?
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    ensure!(order == ["pers2", "pers1"], "node-start: {out}");
    let running = |name: &str, autostart: Value| (name.to_owned(), "running".to_owned(), autostart);
    ensure!(
        states(lab)?
            == [
                running("pers1", json!(2)),
                running("pers2", json!(1)),
                ("pers3".into(), "stopped".into(), Value::Null),
            ],
        "list --all after node-start"
    );
    let mac = mac_in_guest(lab, "pers1")?;
    drop(console(lab, "pers2")?);
    step("node-start again: nothing to do; undefine of a running instance is refused (exit 4)");
    let again: Value = serde_json::from_str(&ok(lab, &["node-start", "--json"])?)?;
    ensure!(
        again
            .as_array()
            .is_some_and(|a| a.iter().all(|o| o["result"] == "running")),
        "second node-start: {again}"
    );
    let config = lab.dir.join("instances");
    let refused = lab.kvmh(&[
        "--config-dir",
        config.to_str().context("utf-8")?,
        "undefine",
        "pers1",
    ])?;
    ensure!(
        refused.status.code() == Some(4)
            && String::from_utf8_lossy(&refused.stderr)
                == "Error: pers1 is running; stop it first\n",
        "undefine of a running instance: {refused:?}"
    );

    step("node-stop powers both off with one deadline; the run directory is forgotten (a reboot)");
    let stopped: Value =
        serde_json::from_str(&ok(lab, &["node-stop", "--timeout", "60", "--json"])?)?;
    ensure!(
        stopped
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|o| o["result"] == "powered off")),
        "node-stop: {stopped}"
    );
    // Defined instances keep their console logs until their next start.
    let run = lab.dir.join("run");
    let mut left: Vec<PathBuf> = leftover_files(&run)?;
    left.sort();
    ensure!(
        left == [run.join("log/pers1.console"), run.join("log/pers2.console")],
        "files left after node-stop: {left:?}"
    );
    ensure!(
        std::fs::read_to_string(run.join("log/pers1.console"))?.contains("GLAB-READY"),
        "pers1's console log after its stop"
    );
    std::fs::remove_dir_all(&run)?;

    step("node-start after the reboot: both come back, pers1 with the same MAC");
    ok(lab, &["node-start"])?;
    let after = mac_in_guest(lab, "pers1")?;
    ensure!(after == mac, "pers1's MAC was {mac}, is {after}");
    drop(console(lab, "pers2")?);
    ok(lab, &["node-stop", "--timeout", "60"])?;
    for name in ["pers1", "pers2", "pers3"] {
        ok(lab, &["undefine", name])?;
    }
    ensure!(
        leftover_files(&run)?.is_empty(),
        "files left after undefine (console logs are the definitions')"
    );
    ensure!(
        std::fs::read_dir(&config)?.count() == 0,
        "files left in the config directory"
    );
    console_scenarios(lab)
}

/// `kvm-hypervisor console` with `input` on its stdin (then closed): its
/// exit status, stdout and stderr.
fn console_with(lab: &Lab, args: &[&str], input: &str) -> Result<(Option<i32>, String, String)> {
    let mut child = lab
        .command(&[&["console"], args].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn console_scenarios(lab: &Lab) -> Result<()> {
    step("console: a paused VM stays paused unless --resume; a held console is refused");
    let spec = lab.spec("cons1", false, json!({}))?;
    lab.start(&spec)?;
    let (code, _, err) = console_with(lab, &["cons1"], "")?;
    ensure!(
        code == Some(0) && err.contains("cons1 is paused: `kvm-hypervisor console --resume cons1`"),
        "console of a paused VM: {code:?} {err}"
    );
    let state = |lab: &Lab| -> Result<String> {
        let info: Value = serde_json::from_str(&lab.ok(&["info", "cons1", "--json"])?)?;
        Ok(info["state"].as_str().unwrap_or_default().to_owned())
    };
    ensure!(state(lab)? == "paused", "attaching resumed the VM");
    let held = Console::attach(&lab.dir.join("run/ctrl/cons1.serial"))?;
    let (code, _, err) = console_with(lab, &["cons1"], "")?;
    ensure!(
        code == Some(4) && err == "Error: cons1's serial console is in use by another client\n",
        "a second console: {code:?} {err}"
    );
    drop(held);

    step("console --info --json: its command works as given (with --run-dir)");
    let info: Value = serde_json::from_str(&lab.ok(&["console", "cons1", "--info", "--json"])?)?;
    let command = info["consoles"][0]["command"].as_str().context("command")?;
    let run = lab.dir.join("run");
    ensure!(
        command == format!("kvm-hypervisor --run-dir {} console cons1", run.display()),
        "console command: {command}"
    );
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    #[allow(clippy::disallowed_methods)] // a test driver runs the binary under test
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(&lab.bin)
        .args(&words)
        .arg("--resume")
        .stdin(Stdio::null())
        .output()?;
    ensure!(out.status.success(), "the given console command: {out:?}");
    ensure!(state(lab)? == "running", "--resume left it paused");

    step(
        "stop --no-wait presses the power button and returns; the guest powering off ends the console session",
    );
    let pid = serde_json::from_str::<Value>(&lab.ok(&["info", "cons1", "--json"])?)?["pid"]
        .as_i64()
        .context("pid")?;
    drop(console(lab, "cons1")?);
    let mut child = lab
        .command(&["console", "cons1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The input stays open: only QEMU's end can end the session.
    let input = child.stdin.take().context("stdin")?;
    let pressed = lab.ok(&["stop", "cons1", "--no-wait"])?;
    ensure!(
        pressed == "cons1: power button pressed; the guest powers off in its own time\n",
        "stop --no-wait: {pressed}"
    );
    wait_gone(pid)?;
    let out = child.wait_with_output()?;
    drop(input);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.contains("cons1's console closed: QEMU exited"),
        "console after the guest's power-off: {out:?}"
    );
    lab.ok(&["cleanup", "cons1"])?;
    Ok(())
}
