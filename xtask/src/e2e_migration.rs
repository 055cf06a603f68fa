//! End-to-end live migration between the lab's two nodes: two network
//! namespaces joined by a veth pair, each with its own bridge and run
//! directory, the guest's disk on storage both see (a file both open, as
//! Ganeti's `sharedfile`). The guest keeps
//! a marker in RAM; after the migration it is read back over the serial
//! console on the new node, and a disk hot-added before sits at the same
//! PCI address there.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::e2e::{Console, Lab, NODE_A, NODE_B, NODE_B6, last_json, leftover_files};

fn step(what: &str) {
    eprintln!("e2e migration: {what}");
}

/// The binary on node B (its own namespace and run directory).
fn on_b(lab: &Lab, args: &[&str]) -> Result<Output> {
    Ok(Command::new("ip")
        .args(["netns", "exec", &lab.ns_b])
        .arg(&lab.bin)
        .arg("--run-dir")
        .arg(lab.dir.join("run-b"))
        .args(args)
        .output()?)
}

pub(crate) fn ok_b(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = on_b(lab, args)?;
    ensure!(
        out.status.success(),
        "(node B) kvm-hypervisor {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The guest's uptime, seconds.
pub(crate) fn uptime(c: &mut Console) -> Result<f64> {
    let out = c.run("cut -d' ' -f1 /proc/uptime")?;
    Ok(out.first().context("no uptime")?.parse()?)
}

fn placement_of(info: &Value, kind: &str, uuid: &str) -> Option<String> {
    info["devices"]
        .as_array()?
        .iter()
        .find(|d| d["kind"] == kind && d["uuid"] == uuid)
        .and_then(|d| d["placement"].as_str().map(str::to_owned))
}

pub(crate) fn scenarios(lab: &Lab) -> Result<()> {
    step(
        "precopy A -> B over IPv6 of a running guest with a hot-added disk and NIC: the RAM marker, both PCI addresses come along, the NIC answers ping from B's bridge, A is left empty",
    );
    // An idle guest: on this machine's QEMU 7.2 under TCG, a guest that
    // writes its memory during a live migration arrives corrupted in about
    // a third of the migrations, bare QEMU and raw QMP alike (ARCHITECTURE.md,
    // "Known limits"), so the guests whose state is checked after a live
    // migration stay idle.
    let spec = lab.spec("mig1", false, json!({}))?;
    lab.start(&spec)?;
    let mut console = lab.boot("mig1")?;
    console.run("echo MARK-$((6*7))-ram > /tmp/mark")?;
    let hot = lab.dir.join("mig1-hot.img");
    std::fs::File::create(&hot)?.set_len(16 << 20)?;
    let hot_uuid = "0a1b0000-0000-4000-8000-000000000001";
    let disk = json!({"uuid": hot_uuid, "path": hot}).to_string();
    lab.ok(&["hotplug", "add-disk", "mig1", &disk])?;
    let nic_uuid = "0a1b0000-0000-4000-8000-000000000002";
    let nic = json!({"uuid": nic_uuid, "mode": "bridged", "link": "kvmhvbr0", "ip": "192.0.2.2"});
    lab.ok(&["hotplug", "add-nic", "mig1", &nic.to_string()])?;
    console.until("GLAB ip eth0")?;
    let info_a: Value = serde_json::from_str(&lab.ok(&["info", "mig1", "--json"])?)?;
    let hot_at = placement_of(&info_a, "disk", hot_uuid).context("hot disk on A")?;
    let nic_at = placement_of(&info_a, "nic", nic_uuid).context("hot NIC on A")?;
    drop(console);

    let record = lab.ok(&["migration-info", "mig1"])?;
    let info_file = lab.dir.join("mig1.migration-info");
    std::fs::write(&info_file, record)?;
    ok_b(
        lab,
        &[
            "accept",
            info_file.to_str().context("utf-8")?,
            "--listen",
            &format!("[{NODE_B6}]:4444"),
        ],
    )?;
    let incoming: Value = serde_json::from_str(&ok_b(lab, &["info", "mig1", "--json"])?)?;
    ensure!(
        incoming["state"] == "migrating",
        "the target before the migration: {incoming}"
    );
    let out = lab.ok(&[
        "migrate",
        "mig1",
        "--target",
        &format!("[{NODE_B6}]:4444"),
        "--wait",
        "300",
        "--json",
    ])?;
    let done = last_json(&out)?;
    ensure!(done["status"] == "completed", "migration: {done}");
    eprintln!(
        "e2e migration:   {} passes, {} ms, downtime {} ms, decisions {}",
        done["passes"], done["total_time_ms"], done["downtime_ms"], done["decisions"]
    );
    // Progress came first, a JSON line per pass or status change.
    let lines: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        lines.len() >= 2
            && lines[..lines.len() - 1]
                .iter()
                .all(|l| l["status"].is_string() && l["passes"].is_u64() || l["status"] == "setup"),
        "progress lines: {out}"
    );
    lab.ok(&["finalize-source", "mig1", "--success"])?;
    ok_b(lab, &["finalize-target", "mig1", "--success"])?;

    let on_b_info: Value = serde_json::from_str(&ok_b(lab, &["info", "mig1", "--json"])?)?;
    ensure!(
        on_b_info["state"] == "running",
        "the guest on B: {on_b_info}"
    );
    ensure!(
        placement_of(&on_b_info, "disk", hot_uuid).as_deref() == Some(hot_at.as_str()),
        "the hot-added disk moved: A had it at {hot_at}, B has {on_b_info}"
    );
    ensure!(
        placement_of(&on_b_info, "nic", nic_uuid).as_deref() == Some(nic_at.as_str()),
        "the hot-added NIC moved: A had it at {nic_at}, B has {on_b_info}"
    );
    let ping = lab.in_ns_b(&["busybox", "ping", "-c", "3", "-W", "5", "192.0.2.2"])?;
    ensure!(
        ping.status.success(),
        "the guest does not answer ping from B's bridge: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let mut console = Console::attach(&lab.dir.join("run-b/ctrl/mig1.serial"))?;
    let mark = console.run("cat /tmp/mark")?;
    ensure!(mark == ["MARK-42-ram"], "the marker on B: {mark:?}");
    let left = leftover_files(&lab.dir.join("run"))?;
    ensure!(left.is_empty(), "files left on A: {left:?}");

    step(
        "postcopy B -> A: the switch is made after the first pass, the new marker, uptime and hot-added devices come along, which then hot-remove on A",
    );
    console.run("echo MARK-$((6*8))-post > /tmp/mark")?;
    // An idle guest: the switch comes after the first full pass whatever
    // the guest does. With a dirtying loop (dd of 16 MiB in a loop) the
    // guest's console on A went silent for 120 s once in four runs, on CI;
    // not understood yet, so that case is not part of the suite.
    let up_b = uptime(&mut console)?;
    drop(console);
    std::fs::write(&info_file, ok_b(lab, &["migration-info", "mig1"])?)?;
    let info_path = info_file.to_str().context("utf-8")?;
    lab.ok(&[
        "accept",
        info_path,
        "--listen",
        &format!("{NODE_A}:4447"),
        "--postcopy",
    ])?;
    let done: Value = last_json(&ok_b(
        lab,
        &[
            "migrate",
            "mig1",
            "--target",
            &format!("{NODE_A}:4447"),
            "--postcopy",
            "--wait",
            "300",
            "--json",
        ],
    )?)?;
    ensure!(
        done["status"] == "completed" && done["switched_to_postcopy"] == true,
        "postcopy migration: {done}"
    );
    lab.ok(&["finalize-target", "mig1", "--success"])?;
    ok_b(lab, &["finalize-source", "mig1", "--success"])?;
    let left: Vec<PathBuf> = leftover_files(&lab.dir.join("run-b"))?;
    ensure!(left.is_empty(), "files left on B: {left:?}");
    let back: Value = serde_json::from_str(&lab.ok(&["info", "mig1", "--json"])?)?;
    ensure!(back["state"] == "running", "the guest back on A: {back}");
    ensure!(
        placement_of(&back, "disk", hot_uuid).as_deref() == Some(hot_at.as_str())
            && placement_of(&back, "nic", nic_uuid).as_deref() == Some(nic_at.as_str()),
        "the hot-added devices moved: A had {hot_at} and {nic_at}, now {back}"
    );
    let mut console = Console::attach(&lab.dir.join("run/ctrl/mig1.serial"))?;
    let mark = console.run("cat /tmp/mark")?;
    ensure!(mark == ["MARK-48-post"], "the marker back on A: {mark:?}");
    let up_a = uptime(&mut console)?;
    ensure!(up_a > up_b, "the guest's uptime went from {up_b} to {up_a}");
    lab.ok(&["hotplug", "del-disk", "mig1", hot_uuid])?;
    lab.ok(&["hotplug", "del-nic", "mig1", nic_uuid])?;
    let after: Value = serde_json::from_str(&lab.ok(&["info", "mig1", "--json"])?)?;
    ensure!(
        placement_of(&after, "disk", hot_uuid).is_none()
            && placement_of(&after, "nic", nic_uuid).is_none(),
        "hot-removed on A, still there: {after}"
    );
    drop(console);
    lab.ok(&["stop", "mig1", "--force"])?;
    let left = leftover_files(&lab.dir.join("run"))?;
    ensure!(left.is_empty(), "files left on A: {left:?}");

    step(
        "TLS A -> B with certificates made by openssl: a source whose certificate another CA signed is refused and goes on; with the right one the marker comes along",
    );
    let tls = make_tls(&lab.dir.join("tls"))?;
    let rogue = make_tls(&lab.dir.join("tls-rogue"))?;
    let (tls_s, rogue_s) = (
        tls.to_str().context("utf-8")?,
        rogue.to_str().context("utf-8")?,
    );
    let spec = lab.spec("mig4", false, json!({}))?;
    // A routed NIC: its host route must stay with A until B has the guest.
    let mut with_nic: Value = serde_json::from_str(&std::fs::read_to_string(&spec)?)?;
    with_nic["nics"] = json!([{"mode": "routed", "ip": "192.0.2.3"}]);
    std::fs::write(&spec, with_nic.to_string())?;
    let route_in = |out: Output| String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let route = || -> Result<String> {
        Ok(route_in(lab.in_ns(&[
            "ip",
            "-o",
            "route",
            "show",
            "192.0.2.3",
        ])?))
    };
    let route_b = || -> Result<String> {
        Ok(route_in(lab.in_ns_b(&[
            "ip",
            "-o",
            "route",
            "show",
            "192.0.2.3",
        ])?))
    };
    lab.start(&spec)?;
    let via_a = route()?;
    ensure!(
        via_a.contains("dev "),
        "no route to the routed NIC on A: {via_a:?}"
    );
    let mut console = lab.boot("mig4")?;
    console.run("echo MARK-$((6*9))-tls > /tmp/mark")?;
    let info_file = lab.dir.join("mig4.migration-info");
    std::fs::write(&info_file, lab.ok(&["migration-info", "mig4"])?)?;
    let info_path = info_file.to_str().context("utf-8")?;
    let accept = [
        "accept",
        info_path,
        "--listen",
        &format!("{NODE_B}:4448"),
        "--tls-creds",
        tls_s,
    ];
    ok_b(lab, &accept)?;
    ensure!(
        route()? == via_a && route_b()?.is_empty(),
        "accept routed the IP on B before the migration: {:?}",
        route_b()?
    );
    let migrate = |creds: &str| {
        lab.kvmh(&[
            "migrate",
            "mig4",
            "--target",
            &format!("{NODE_B}:4448"),
            "--tls-creds",
            creds,
            "--wait",
            "300",
            "--json",
        ])
    };
    let refused = migrate(rogue_s)?;
    let why = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        refused.status.code() == Some(5) && why.contains("the migration of mig4 ended failed"),
        "a client certificate of another CA: {refused:?}"
    );
    eprintln!("e2e migration:   refused: {}", why.trim());
    lab.ok(&["finalize-source", "mig4", "--failure"])?;
    ok_b(lab, &["finalize-target", "mig4", "--failure"])?;
    let alive = console.run("cat /tmp/mark")?;
    ensure!(
        alive == ["MARK-54-tls"],
        "the guest on A after the refusal: {alive:?}"
    );
    drop(console);
    ensure!(
        leftover_files(&lab.dir.join("run-b"))?.is_empty(),
        "files left on B after the refusal"
    );
    ok_b(lab, &accept)?;
    let done: Value = last_json(&String::from_utf8_lossy(&migrate(tls_s)?.stdout))?;
    ensure!(done["status"] == "completed", "TLS migration: {done}");
    ensure!(
        route()? == via_a && route_b()?.is_empty(),
        "the route moved before finalize-target"
    );
    ok_b(lab, &["finalize-target", "mig4", "--success"])?;
    let via_b = route_b()?;
    ensure!(
        via_b.contains("dev "),
        "no route on B after finalize-target: {via_b:?}"
    );
    lab.ok(&["finalize-source", "mig4", "--success"])?;
    ensure!(
        route()?.is_empty() && route_b()? == via_b,
        "after finalize-source: A routes {:?}, B {:?}",
        route()?,
        route_b()?
    );
    let mut console = Console::attach(&lab.dir.join("run-b/ctrl/mig4.serial"))?;
    let mark = console.run("cat /tmp/mark")?;
    ensure!(mark == ["MARK-54-tls"], "the marker on B: {mark:?}");
    drop(console);
    ok_b(lab, &["stop", "mig4", "--force"])?;
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty()
            && leftover_files(&lab.dir.join("run-b"))?.is_empty(),
        "files left after the TLS migration"
    );

    step(
        "offline (--offline): the guest is paused on A for the copy and runs on B after finalize-target, its marker and uptime carried over",
    );
    let spec = lab.spec("mig5", false, json!({}))?;
    lab.start(&spec)?;
    let mut console = lab.boot("mig5")?;
    console.run("echo MARK-$((7*8))-offline > /tmp/mark")?;
    let up_a = uptime(&mut console)?;
    drop(console);
    let info_file = lab.dir.join("mig5.migration-info");
    std::fs::write(&info_file, lab.ok(&["migration-info", "mig5"])?)?;
    let info_path = info_file.to_str().context("utf-8")?;
    ok_b(
        lab,
        &["accept", info_path, "--listen", &format!("{NODE_B}:4449")],
    )?;
    let done: Value = last_json(&lab.ok(&[
        "migrate",
        "mig5",
        "--target",
        &format!("{NODE_B}:4449"),
        "--offline",
        "--wait",
        "300",
        "--json",
    ])?)?;
    ensure!(done["status"] == "completed", "offline migration: {done}");
    let paused: Value = serde_json::from_str(&ok_b(lab, &["info", "mig5", "--json"])?)?;
    ensure!(
        paused["state"] == "paused",
        "B before finalize-target: {paused}"
    );
    ok_b(lab, &["finalize-target", "mig5", "--success"])?;
    lab.ok(&["finalize-source", "mig5", "--success"])?;
    let mut console = Console::attach(&lab.dir.join("run-b/ctrl/mig5.serial"))?;
    let mark = console.run("cat /tmp/mark")?;
    ensure!(mark == ["MARK-56-offline"], "the marker on B: {mark:?}");
    let up_b = uptime(&mut console)?;
    ensure!(up_b > up_a, "the guest's uptime went from {up_a} to {up_b}");
    drop(console);
    ok_b(lab, &["stop", "mig5", "--force"])?;
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty()
            && leftover_files(&lab.dir.join("run-b"))?.is_empty(),
        "files left after the offline migration"
    );

    step(
        "a guest that rewrites its RAM faster than the link: the convergence policy raises the downtime limit, then cancels, with the figures, and the guest goes on on A; then, allowed postcopy when stalled, the policy switches and it moves, its decisions visible to migration-status",
    );
    let spec = lab.spec(
        "mig6",
        false,
        json!({"kernel_args": "quiet panic=-1 glab.dirty=12"}),
    )?;
    lab.start(&spec)?;
    drop(lab.boot("mig6")?);
    let info_file = lab.dir.join("mig6.migration-info");
    std::fs::write(&info_file, lab.ok(&["migration-info", "mig6"])?)?;
    let info_path = info_file.to_str().context("utf-8")?;
    ok_b(
        lab,
        &["accept", info_path, "--listen", &format!("{NODE_B}:4450")],
    )?;
    let out = lab.kvmh(&[
        "migrate",
        "mig6",
        "--target",
        &format!("{NODE_B}:4450"),
        "--wait",
        "300",
        "--converge-passes",
        "2",
        "--downtime-max",
        "60",
    ])?;
    let why = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(5)
            && why.contains("the migration of mig6 is not converging:")
            && why.contains("downtime limit raised to 60 ms; cancelled, the guest runs here"),
        "a migration that cannot converge: {out:?}"
    );
    eprintln!("e2e migration:   {}", why.trim());
    lab.ok(&["finalize-source", "mig6", "--failure"])?;
    ok_b(lab, &["finalize-target", "mig6", "--failure"])?;
    let a: Value = serde_json::from_str(&lab.ok(&["info", "mig6", "--json"])?)?;
    ensure!(a["state"] == "running", "the guest on A: {a}");
    ensure!(
        leftover_files(&lab.dir.join("run-b"))?.is_empty(),
        "files left on B after the cancelled migration"
    );
    // The same guest, still rewriting its RAM, moves in postcopy.
    std::fs::write(&info_file, lab.ok(&["migration-info", "mig6"])?)?;
    ok_b(
        lab,
        &[
            "accept",
            info_path,
            "--listen",
            &format!("{NODE_B}:4451"),
            "--postcopy",
        ],
    )?;
    let done: Value = last_json(&lab.ok(&[
        "migrate",
        "mig6",
        "--target",
        &format!("{NODE_B}:4451"),
        "--postcopy",
        "--postcopy-switch",
        "stalled",
        "--converge-passes",
        "2",
        "--downtime-max",
        "60",
        "--wait",
        "300",
        "--json",
    ])?)?;
    let kinds: Vec<&str> = done["decisions"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["decision"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        done["status"] == "completed"
            && done["switched_to_postcopy"] == true
            && kinds == ["raise-downtime", "switch-to-postcopy"]
            && done["decisions"][1]["downtime_ms"] == 60,
        "postcopy of the rewriting guest when stalled: {done}"
    );
    eprintln!("e2e migration:   decisions {}", done["decisions"]);
    // Another process sees the same: the target and the decisions.
    let status: Value = serde_json::from_str(&lab.ok(&["migration-status", "mig6"])?)?;
    ensure!(
        status["status"] == "completed"
            && status["decisions"] == done["decisions"]
            && status["target"] == format!("{NODE_B}:4451")
            && status["switched_to_postcopy"] == true,
        "migration-status on A after the migration: {status}"
    );
    ok_b(lab, &["finalize-target", "mig6", "--success"])?;
    lab.ok(&["finalize-source", "mig6", "--success"])?;
    // Its QEMU runs on B; the guest's own health is not checked: a guest
    // that writes its memory while it moves arrives corrupted now and then
    // under TCG on QEMU 7.2 (ARCHITECTURE.md, "Known limits").
    let b: Value = serde_json::from_str(&ok_b(lab, &["info", "mig6", "--json"])?)?;
    ensure!(b["state"] == "running", "the rewriting guest on B: {b}");
    ok_b(lab, &["stop", "mig6", "--force"])?;
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty()
            && leftover_files(&lab.dir.join("run-b"))?.is_empty(),
        "files left after the postcopy of the rewriting guest"
    );

    nic_scripts(lab)?;

    step("a migration cancelled halfway: the guest goes on on A, B is left empty");
    failed_migration(lab, "mig2", 4445, |lab| {
        lab.ok(&["migrate-cancel", "mig2"])?;
        Ok(())
    })?;

    step(
        "the target QEMU killed halfway: finalize-source --failure lets the guest go on on A, B is left empty",
    );
    failed_migration(lab, "mig3", 4446, |lab| {
        let b: Value = serde_json::from_str(&ok_b(lab, &["info", "mig3", "--json"])?)?;
        let pid = b["pid"].as_i64().context("B's QEMU")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        crate::e2e::wait_gone(pid)?;
        Ok(())
    })?;
    Ok(())
}

/// A NIC script with Ganeti's contract for node `node`: logs `ACTION MODE
/// INTERFACE MIGRATION_PHASE` and, on `up`, puts the tap on the node's
/// bridge.
fn nic_script(lab: &Lab, node: &str) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let (script, log) = (
        lab.dir.join(format!("nic-script-{node}")),
        lab.dir.join(format!("nic-script-{node}.log")),
    );
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$ACTION $MODE $INTERFACE ${{MIGRATION_PHASE:-none}}\" >> {}\n\
             [ \"$ACTION\" = up ] || exit 0\nip link set \"$INTERFACE\" up\n\
             ip link set \"$INTERFACE\" master kvmhvbr0\n",
            log.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok((script, log))
}

/// The calls a NIC script logged, the tap name left out.
fn script_calls(log: &std::path::Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("{} {} {}", f[0], f[1], f.get(3).unwrap_or(&"?"))
        })
        .collect())
}

fn nic_scripts(lab: &Lab) -> Result<()> {
    step(
        "an ext NIC set up by NIC scripts (Ganeti's contract) on both nodes: MIGRATION_PHASE=pre at accept and post at finalize-target on B, down on A at finalize-source; the guest answers ping from B's bridge",
    );
    let (script_a, log_a) = nic_script(lab, "a")?;
    let (script_b, log_b) = nic_script(lab, "b")?;
    let (sa, sb) = (
        script_a.to_str().context("utf-8")?,
        script_b.to_str().context("utf-8")?,
    );
    let spec = lab.spec("mig10", false, json!({}))?;
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&spec)?)?;
    v["nics"] = json!([{"mode": "ext", "link": "kvmhvbr0", "ip": "192.0.2.2"}]);
    std::fs::write(&spec, v.to_string())?;
    let cache = lab.dir.join("cache");
    lab.ok(&[
        "--nic-script",
        sa,
        "start",
        spec.to_str().context("utf-8")?,
        "--paused",
        "--cache-dir",
        cache.to_str().context("utf-8")?,
    ])?;
    let mut console = lab.boot("mig10")?;
    console.run("echo MARK-$((10*10))-ext > /tmp/mark")?;
    drop(console);
    let info_file = lab.dir.join("mig10.migration-info");
    std::fs::write(&info_file, lab.ok(&["migration-info", "mig10"])?)?;
    let listen = format!("{NODE_B}:4455");
    let info_path = info_file.to_str().context("utf-8")?;
    ok_b(
        lab,
        &["--nic-script", sb, "accept", info_path, "--listen", &listen],
    )?;
    ensure!(
        script_calls(&log_b)? == ["up ext pre"],
        "B's NIC script after accept: {:?}",
        script_calls(&log_b)?
    );
    lab.ok(&["migrate", "mig10", "--target", &listen, "--wait", "300"])?;
    ok_b(
        lab,
        &["--nic-script", sb, "finalize-target", "mig10", "--success"],
    )?;
    lab.ok(&["--nic-script", sa, "finalize-source", "mig10", "--success"])?;
    let ping = lab.in_ns_b(&["busybox", "ping", "-c", "3", "-W", "5", "192.0.2.2"])?;
    ensure!(
        ping.status.success(),
        "the ext NIC does not answer ping from B's bridge: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    ok_b(lab, &["--nic-script", sb, "stop", "mig10", "--force"])?;
    let (a, b) = (script_calls(&log_a)?, script_calls(&log_b)?);
    ensure!(
        a == ["up ext none", "down ext none"]
            && b == ["up ext pre", "up ext post", "down ext none"],
        "NIC script calls: A {a:?}, B {b:?}"
    );
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty()
            && leftover_files(&lab.dir.join("run-b"))?.is_empty(),
        "files left after the ext NIC's migration"
    );
    Ok(())
}

/// Starts migrating `name` slowly (1 MiB/s) from A to B, breaks it with
/// `fault`, finalizes both parties as failed, and checks that the guest
/// answers on A and that B has nothing left.
fn failed_migration(
    lab: &Lab,
    name: &str,
    port: u16,
    fault: impl FnOnce(&Lab) -> Result<()>,
) -> Result<()> {
    let spec = lab.spec(name, false, json!({"migration_bandwidth": 1}))?;
    lab.start(&spec)?;
    let mut console = lab.boot(name)?;
    let info_file = lab.dir.join(format!("{name}.migration-info"));
    std::fs::write(&info_file, lab.ok(&["migration-info", name])?)?;
    let listen = format!("{NODE_B}:{port}");
    ok_b(
        lab,
        &[
            "accept",
            info_file.to_str().context("utf-8")?,
            "--listen",
            &listen,
        ],
    )?;
    let started: Value =
        serde_json::from_str(&lab.ok(&["migrate", name, "--target", &listen, "--json"])?)?;
    ensure!(
        matches!(started["status"].as_str(), Some("setup" | "active")),
        "the migration did not start: {started}"
    );
    fault(lab)?;
    lab.ok(&["finalize-source", name, "--failure"])?;
    ok_b(lab, &["finalize-target", name, "--failure"])?;
    let a: Value = serde_json::from_str(&lab.ok(&["info", name, "--json"])?)?;
    ensure!(a["state"] == "running", "the guest on A: {a}");
    let alive = console.run("echo still-$((40+2))")?;
    ensure!(alive == ["still-42"], "the guest on A answers: {alive:?}");
    drop(console);
    let left = leftover_files(&lab.dir.join("run-b"))?;
    ensure!(left.is_empty(), "files left on B: {left:?}");
    lab.ok(&["stop", name, "--force"])?;
    Ok(())
}

/// A CA and a server and a client certificate signed by it, in `dir`, as
/// QEMU's `tls-creds-x509` reads them (the server's names are both nodes'
/// addresses and localhost).
fn make_tls(dir: &std::path::Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kvmh e2e CA",
    ])?;
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:192.0.2.129,IP:192.0.2.130,IP:2001:db8:1::1,IP:2001:db8:1::2,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let ext_file = format!("{who}.ext");
        std::fs::write(
            dir.join(&ext_file),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n{ext}"),
        )?;
        let (key, csr, cert) = (
            format!("{who}-key.pem"),
            format!("{who}.csr"),
            format!("{who}-cert.pem"),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN=kvmh e2e {who}"),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ])?;
    }
    Ok(dir.to_owned())
}
