//! End-to-end defined instances across a reboot of the node: two instances
//! defined and marked autostart, a third defined only; `node-start` brings
//! up the two (and only them); `node-stop` powers both off; the run
//! directory is forgotten (it lives in RAM, `/run`); `node-start` brings
//! them back with the same generated MAC.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::e2e::{Console, Lab, leftover_files};

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
    let mut console = Console::attach(&run.join("ctrl").join(format!("{name}.serial")))?;
    let log = run.join("log").join(format!("{name}.console"));
    if !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("GLAB-READY")
    {
        console.until("GLAB-READY")?;
    }
    Ok(console)
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
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left after node-stop"
    );
    std::fs::remove_dir_all(lab.dir.join("run"))?;

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
        std::fs::read_dir(&config)?.count() == 0,
        "files left in the config directory"
    );
    Ok(())
}
