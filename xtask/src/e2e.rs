//! `cargo xtask e2e`: the real binary, a real guest, inside a network
//! namespace this run creates and deletes (also on failure).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::Guest;

/// Everything one run created; removed on drop, whatever happened.
pub(crate) struct Lab {
    /// Node A's network namespace (run directory `run`).
    pub(crate) ns: String,
    /// Node B's network namespace (run directory `run-b`), joined to A by
    /// a veth pair: [`NODE_A`]/[`NODE_B`], [`NODE_A6`]/[`NODE_B6`].
    pub(crate) ns_b: String,
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
    guest: Guest,
    accel: &'static str,
}

impl Drop for Lab {
    /// Stops what a failed scenario left running, on node A (`run`) and on
    /// the migration scenarios' node B (`run-b`), then removes the
    /// namespace and the directory.
    fn drop(&mut self) {
        for (ns, run) in [(&self.ns, "run"), (&self.ns_b, "run-b")] {
            let node = |args: &[&str]| {
                Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(&self.bin)
                    .arg("--run-dir")
                    .arg(self.dir.join(run))
                    .args(args)
                    .output()
            };
            let Ok(out) = node(&["list", "--json"]) else {
                continue;
            };
            let names: Vec<String> = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect();
            for n in names {
                let _ = node(&["stop", &n, "--force"]);
                let _ = node(&["cleanup", &n]);
            }
        }
        for ns in [&self.ns, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// The test guest's kernel and initramfs.
    pub(crate) fn guest_files(&self) -> (&Path, &Path) {
        (&self.guest.kernel, &self.guest.initrd)
    }

    pub(crate) fn kvmh(&self, args: &[&str]) -> Result<Output> {
        self.kvmh_env(args, &[])
    }

    /// [`Lab::kvmh`] with extra environment variables.
    pub(crate) fn kvmh_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        Ok(self.command(args).envs(env.iter().copied()).output()?)
    }

    /// The binary on node A with `args`, not started yet.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .args(args)
            // The node's uid pool: nobody's uid, which every Debian has.
            .env("KVM_HYPERVISOR_UID_POOL", "65534");
        c
    }

    /// A spec like [`Lab::spec`] with one routed NIC (table 100).
    pub(crate) fn routed_spec(&self, name: &str, ip: &str) -> Result<PathBuf> {
        let path = self.spec(name, false, json!({}))?;
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        v["nics"] = json!([{"mode": "routed", "link": "100", "ip": ip}]);
        std::fs::write(&path, serde_json::to_string_pretty(&v)?)?;
        Ok(path)
    }

    /// `ip rule` and `ip route show table 100` in the lab's namespace.
    pub(crate) fn routing(&self) -> Result<String> {
        let rules = self.in_ns(&["ip", "rule"])?;
        let routes = self.in_ns(&["ip", "route", "show", "table", "100"])?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&rules.stdout),
            String::from_utf8_lossy(&routes.stdout)
        ))
    }

    /// Runs the binary and demands success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kvmh(args)?;
        if !out.status.success() {
            bail!(
                "kvm-hypervisor {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn in_ns(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()?)
    }

    /// A command in node B's namespace.
    pub(crate) fn in_ns_b(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.ns_b])
            .args(args)
            .output()?)
    }

    pub(crate) fn spec(&self, name: &str, nic: bool, extra_hv: Value) -> Result<PathBuf> {
        let disk = self.dir.join(format!("{name}-disk0.img"));
        std::fs::File::create(&disk)?.set_len(64 << 20)?;
        let mut hv = json!({
            "kvm_path": "/usr/bin/qemu-system-x86_64",
            "kernel_path": self.guest.kernel, "initrd_path": self.guest.initrd,
            "root_path": "/dev/ram0", "kernel_args": "quiet panic=-1 glab.ip=192.0.2.2/24",
            "serial_speed": 115200, "kvm_flag": self.accel, "vhost_net": false,
            "machine_version": "pc-i440fx-7.2", "cpu_type": "qemu64"
        });
        if let (Some(hv), Some(extra)) = (hv.as_object_mut(), extra_hv.as_object()) {
            hv.extend(extra.clone());
        }
        let mut spec = json!({
            "name": name, "memory": 256, "vcpus": 1, "hvparams": hv,
            "disks": [{"path": disk, "size": 64}],
        });
        if nic {
            spec["nics"] = json!([{"mode": "bridged", "link": "kvmhvbr0", "ip": "192.0.2.2"}]);
        }
        let path = self.dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&spec)?)?;
        Ok(path)
    }

    pub(crate) fn start(&self, spec: &Path) -> Result<()> {
        self.ok(&[
            "start",
            spec.to_str().context("utf-8")?,
            "--paused",
            "--cache-dir",
            self.dir.join("cache").to_str().context("utf-8")?,
        ])?;
        Ok(())
    }

    /// Attaches to the serial console, lets the guest run, and waits for its ready marker.
    pub(crate) fn boot(&self, name: &str) -> Result<Console> {
        let stream = UnixStream::connect(self.dir.join("run/ctrl").join(format!("{name}.serial")))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut console = Console {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        self.ok(&["qmp", "--instance", name, "cont"])?;
        console.until("GLAB-READY")?;
        Ok(console)
    }
}

pub(crate) struct Console {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Console {
    /// The serial console at `socket`, attached without waiting for anything.
    pub(crate) fn attach(socket: &Path) -> Result<Console> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Console {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// The serial console at `socket` of a guest that was started running,
    /// once it is ready: attached first, then its console log `log` read
    /// (a start truncates it): READY is in it already, or comes on the
    /// console.
    pub(crate) fn ready(socket: &Path, log: &Path) -> Result<Console> {
        let mut console = Console::attach(socket)?;
        if !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("GLAB-READY")
        {
            console.until("GLAB-READY")?;
        }
        Ok(console)
    }

    /// Reads lines until one contains `marker` (120 s without output fails).
    pub(crate) fn until(&mut self, marker: &str) -> Result<Vec<String>> {
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .context("serial console silent for 120 s")?
                == 0
            {
                bail!("console closed before `{marker}`; saw {seen:?}");
            }
            let line = line.trim_end().to_owned();
            let done = line.contains(marker);
            seen.push(line);
            if done {
                return Ok(seen);
            }
        }
    }

    /// Sends `line` to the guest without waiting for anything.
    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    /// Reads until the console closes (QEMU exited), at most 120 s of
    /// silence.
    pub(crate) fn until_closed(&mut self) -> Result<()> {
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .context("serial console silent for 120 s")?
                == 0
            {
                return Ok(());
            }
        }
    }

    /// Runs `cmd` in the guest; returns its output lines.
    pub(crate) fn run(&mut self, cmd: &str) -> Result<Vec<String>> {
        self.writer.write_all(format!("{cmd}\n").as_bytes())?;
        self.until("GLAB cmd-begin")?;
        let mut out = self.until("GLAB cmd-end")?;
        let end = out.pop().unwrap_or_default();
        ensure!(
            end.ends_with("rc=0"),
            "`{cmd}` failed in the guest: {end}; output {out:?}"
        );
        // The guest's uevent agent prints `GLAB …` lines whenever it likes;
        // they are not the command's output.
        out.retain(|l| !l.starts_with("GLAB "));
        Ok(out)
    }
}

/// The last line of a JSON-lines output (`migrate --wait --json`), parsed.
pub(crate) fn last_json(out: &str) -> Result<Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("no JSON output")?;
    Ok(serde_json::from_str(line)?)
}

fn step(what: &str) {
    println!("e2e: {what}");
}

/// Node A's address on the link between the two nodes.
pub(crate) const NODE_A: &str = "192.0.2.129";
/// Node B's address on the link between the two nodes.
pub(crate) const NODE_B: &str = "192.0.2.130";
/// Node A's IPv6 address on the link between the two nodes.
pub(crate) const NODE_A6: &str = "2001:db8:1::1";
/// Node B's IPv6 address on the link between the two nodes.
pub(crate) const NODE_B6: &str = "2001:db8:1::2";

impl Lab {
    /// A lab named `kvmhv-TAG-PID`: two network namespaces as two nodes,
    /// A (`kvmhv-TAG-PID`) and B (`…-b`), each with its own bridge
    /// (`kvmhvbr0`, 192.0.2.1/24, the guests' side) and joined by a veth
    /// pair `kvmhvlink` (192.0.2.129/30 and .130, 2001:db8:1::1 and ::2),
    /// and a directory under `target/`; all removed when the lab is
    /// dropped.
    pub(crate) fn new(tag: &str, guest: Guest, bin: PathBuf, accel: &'static str) -> Result<Lab> {
        let ns = format!("kvmhv-{tag}-{}", std::process::id());
        let ns_b = format!("{ns}-b");
        let dir = crate::root().join(format!("target/{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let lab = Lab {
            ns: ns.clone(),
            ns_b: ns_b.clone(),
            dir,
            bin,
            guest,
            accel,
        };
        let sh = |args: &[&str]| -> Result<()> {
            let st = Command::new("ip").args(args).status()?;
            ensure!(st.success(), "ip {} failed", args.join(" "));
            Ok(())
        };
        for ns in [&ns, &ns_b] {
            sh(&["netns", "add", ns])?;
            sh(&["-n", ns, "link", "set", "lo", "up"])?;
            sh(&["-n", ns, "link", "add", "kvmhvbr0", "type", "bridge"])?;
            sh(&["-n", ns, "addr", "add", "192.0.2.1/24", "dev", "kvmhvbr0"])?;
            sh(&["-n", ns, "link", "set", "kvmhvbr0", "up"])?;
        }
        sh(&[
            "-n",
            &ns,
            "link",
            "add",
            "kvmhvlink",
            "type",
            "veth",
            "peer",
            "name",
            "kvmhvlink",
            "netns",
            &ns_b,
        ])?;
        for (ns, v4, v6) in [(&ns, NODE_A, NODE_A6), (&ns_b, NODE_B, NODE_B6)] {
            sh(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/30"),
                "dev",
                "kvmhvlink",
            ])?;
            sh(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "kvmhvlink",
                "nodad",
            ])?;
            sh(&["-n", ns, "link", "set", "kvmhvlink", "up"])?;
        }
        Ok(lab)
    }
}

pub(crate) fn e2e(guest: Guest, bin: PathBuf, accel: &'static str) -> Result<()> {
    let lab = Lab::new("e2e", guest, bin, accel)?;
    match std::env::var("KVMH_E2E_ONLY").as_deref() {
        Ok("migration") => {
            crate::e2e_migration::scenarios(&lab)?;
            crate::e2e_ssh::scenarios(&lab)?;
            return crate::e2e_ganeti::scenarios(&lab);
        }
        Ok("ssh") => return crate::e2e_ssh::scenarios(&lab),
        Ok("ganeti") => return crate::e2e_ganeti::scenarios(&lab),
        Ok("persist") => return crate::e2e_persist::scenarios(&lab),
        _ => {}
    }

    step("start with a disk and a bridged NIC, CPU pinned to CPU 0");
    let spec = lab.spec("e2e1", true, json!({"cpu_mask": "0"}))?;
    lab.start(&spec)?;
    let mut console = lab.boot("e2e1")?;

    step("info is correct");
    let info: Value = serde_json::from_str(&lab.ok(&["info", "e2e1", "--json"])?)?;
    ensure!(info["state"] == "running", "state {}", info["state"]);
    ensure!(
        info["vcpus"] == 1 && info["memory_mib"] == 256,
        "info {info}"
    );
    ensure!(
        info["devices"].as_array().map(Vec::len) == Some(2),
        "devices {}",
        info["devices"]
    );
    let pid = info["pid"].as_i64().context("pid")?;

    step("the guest answers ping from the bridge, and pings back");
    let ping = lab.in_ns(&["busybox", "ping", "-c", "3", "-W", "5", "192.0.2.2"])?;
    ensure!(
        ping.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    console.run("ping -c 1 -W 5 192.0.2.1")?;

    step("pinning is visible in /proc: every QEMU thread on CPU 0");
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        let allowed = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .unwrap_or_default();
        ensure!(
            allowed.split_whitespace().nth(1) == Some("0"),
            "thread not pinned: {allowed}"
        );
    }

    step("balloon to 128 MiB: BALLOON_CHANGE, the guest sees less memory");
    let before = mem_total_kib(&mut console)?;
    let events = lab.ok(&[
        "qmp",
        "--instance",
        "e2e1",
        "balloon",
        r#"{"value": 134217728}"#,
        "--events",
        "30",
        "--until",
        "BALLOON_CHANGE",
    ])?;
    ensure!(
        events.contains("BALLOON_CHANGE"),
        "no BALLOON_CHANGE: {events}"
    );
    let after = mem_total_kib(&mut console)?;
    ensure!(after < before, "MemTotal {before} kB -> {after} kB");

    step("starting it twice is a clear error");
    let twice = lab.kvmh(&["start", spec.to_str().context("utf-8")?])?;
    let err = String::from_utf8_lossy(&twice.stderr);
    ensure!(
        !twice.status.success() && err.contains("is already running"),
        "second start: {err}"
    );

    step("graceful stop: the guest powers itself off; nothing is left behind");
    let out = lab.ok(&["stop", "e2e1", "--timeout", "60"])?;
    ensure!(out.contains("powered off"), "stop said: {out}");
    console.until("GLAB powerbutton").ok();
    ensure!(
        lab.ok(&["list", "--json"])?.trim() == "[]",
        "instances left"
    );
    let links = String::from_utf8_lossy(&lab.in_ns(&["ip", "-o", "link"])?.stdout).into_owned();
    ensure!(!links.contains("tap"), "taps left: {links}");
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left: {:?}",
        leftover_files(&lab.dir.join("run"))?
    );

    step("kill -9 of QEMU: info says crashed, cleanup works");
    let spec2 = lab.spec("e2e2", false, json!({}))?;
    lab.start(&spec2)?;
    let info: Value = serde_json::from_str(&lab.ok(&["info", "e2e2", "--json"])?)?;
    let pid = info["pid"].as_i64().context("pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid")?),
        nix::sys::signal::Signal::SIGKILL,
    )
    .context("kill -9")?;
    wait_gone(pid)?;
    let info: Value = serde_json::from_str(&lab.ok(&["info", "e2e2", "--json"])?)?;
    ensure!(
        info["state"] == "crashed",
        "state after kill -9: {}",
        info["state"]
    );
    lab.ok(&["cleanup", "e2e2"])?;
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left after cleanup"
    );

    step(
        "a routed IP cannot be taken over by a second instance; kill -9 of a routed-NIC QEMU, then cleanup: its ip rule and route go too",
    );
    let routed = lab.routed_spec("rt1", "192.0.2.77")?;
    lab.start(&routed)?;
    ensure!(
        lab.routing()?.contains("lookup 100"),
        "no rule: {}",
        lab.routing()?
    );
    // Another instance may not take the routed IP over.
    let thief = lab.routed_spec("rt9", "192.0.2.77")?;
    let out = lab.kvmh(&["start", thief.to_str().context("utf-8")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1)
            && err.contains("nics[0].ip: 192.0.2.77 is routed to instance rt1 already"),
        "a second instance with the same routed IP: {err}"
    );
    let info: Value = serde_json::from_str(&lab.ok(&["info", "rt1", "--json"])?)?;
    let pid = info["pid"].as_i64().context("pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid")?),
        nix::sys::signal::Signal::SIGKILL,
    )
    .context("kill -9")?;
    wait_gone(pid)?;
    lab.ok(&["cleanup", "rt1"])?;
    let left = lab.routing()?;
    ensure!(
        !left.contains("lookup 100") && !left.contains("192.0.2.77"),
        "routing left after cleanup: {left}"
    );

    step(
        "an interrupted start (the CLI killed once QEMU is spawned): info says incomplete, hotplug refuses, stop finishes it off and leaves nothing",
    );
    let routed = lab.routed_spec("rt2", "192.0.2.78")?;
    let crash = [("KVM_HYPERVISOR_TEST_CRASH_AFTER", "spawn")];
    let out = lab.kvmh_env(
        &["start", routed.to_str().context("utf-8")?, "--paused"],
        &crash,
    )?;
    ensure!(!out.status.success(), "the hooked start succeeded");
    // The orphaned QEMU answers its monitor once it is up (and has written
    // its pid file): wait for that, not for a time.
    lab.ok(&["qmp", "--instance", "rt2", "query-status"])?;
    let info: Value = serde_json::from_str(&lab.ok(&["info", "rt2", "--json"])?)?;
    ensure!(
        info["state"] == "incomplete",
        "state after an interrupted start: {info}"
    );
    ensure!(
        info["pid"].is_i64(),
        "no QEMU after an interrupted start: {info}"
    );
    let check = lab.kvmh(&["hotplug", "check", "rt2"])?;
    ensure!(
        check.status.code() == Some(4),
        "hotplug on an incomplete instance: {check:?}"
    );
    let stopped = lab.ok(&["stop", "rt2", "--force"])?;
    ensure!(
        stopped.contains("killed"),
        "stop of an incomplete instance: {stopped}"
    );
    let left = lab.routing()?;
    ensure!(
        !left.contains("lookup 100"),
        "routing left after stop: {left}"
    );
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left after stopping an interrupted start"
    );

    step("a spec with a bad disk path: clear error, no process, tap or file left");
    let bad = lab.spec("e2e3", true, json!({}))?;
    let text = std::fs::read_to_string(&bad)?.replace("e2e3-disk0.img", "no-such-disk.img");
    std::fs::write(&bad, text)?;
    let out = lab.kvmh(&["start", bad.to_str().context("utf-8")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("does not exist on this host"),
        "bad disk start: {err}"
    );
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left after a failed start"
    );
    let links = String::from_utf8_lossy(&lab.in_ns(&["ip", "-o", "link"])?.stdout).into_owned();
    ensure!(!links.contains("tap"), "taps left: {links}");

    step(
        "security_model=pool: QEMU runs as the pool's uid, an exhausted pool is a clear error, stop releases the uid",
    );
    let pool = json!({"security_model": "pool", "use_chroot": true});
    let (spec5, spec6) = (
        lab.spec("pool1", false, pool.clone())?,
        lab.spec("pool2", false, pool)?,
    );
    lab.start(&spec5)?;
    let info: Value = serde_json::from_str(&lab.ok(&["info", "pool1", "--json"])?)?;
    let pid = info["pid"].as_i64().context("pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_owned();
    ensure!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "QEMU runs as {uid_line}"
    );
    let out = lab.kvmh(&["start", spec6.to_str().context("utf-8")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("every uid of the pool"),
        "exhausted pool: {err}"
    );
    lab.ok(&["stop", "pool1", "--force"])?;
    lab.start(&spec6)?;
    lab.ok(&["stop", "pool2", "--force"])?;
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left after the pool scenario"
    );

    step("the monitor tells a guest shutdown from a crash, for instances started after it too");
    let mut monitor = Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(&lab.bin)
        .arg("--run-dir")
        .arg(lab.dir.join("run"))
        .arg("monitor")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let verdicts = {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = monitor.stdout.take().context("monitor stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let result = (|| -> Result<()> {
        let spec4 = lab.spec("e2e4", false, json!({}))?;
        lab.start(&spec4)?;
        let mut console = lab.boot("e2e4")?;
        console.writer.write_all(b"poweroff -f\n")?;
        let verdict = verdicts
            .recv_timeout(Duration::from_secs(60))
            .context("no verdict from the monitor")?;
        ensure!(
            verdict.contains(r#""instance":"e2e4","by_guest":true"#),
            "verdict: {verdict}"
        );
        let info: Value = serde_json::from_str(&lab.ok(&["info", "e2e4", "--json"])?)?;
        ensure!(
            info["state"] == "shutdown-by-guest",
            "state: {}",
            info["state"]
        );
        lab.ok(&["cleanup", "e2e4"])?;
        Ok(())
    })();
    let _ = monitor.kill();
    let _ = monitor.wait();
    result?;

    step("5 instances started and stopped concurrently");
    let specs: Vec<PathBuf> = (0..5)
        .map(|i| lab.spec(&format!("par{i}"), false, json!({})))
        .collect::<Result<_>>()?;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = specs.iter().map(|p| s.spawn(|| lab.start(p))).collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("start thread panicked"))??;
        }
        Ok(())
    })?;
    let list: Value = serde_json::from_str(&lab.ok(&["list", "--json"])?)?;
    ensure!(list.as_array().map(Vec::len) == Some(5), "list: {list}");
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let lab = &lab;
                s.spawn(move || lab.ok(&["stop", &format!("par{i}"), "--force"]))
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("stop thread panicked"))??;
        }
        Ok(())
    })?;
    ensure!(
        lab.ok(&["list", "--json"])?.trim() == "[]",
        "instances left after parallel stop"
    );
    ensure!(
        leftover_files(&lab.dir.join("run"))?.is_empty(),
        "files left after parallel stop"
    );
    crate::e2e_persist::scenarios(&lab)?;
    crate::e2e_hotplug::scenarios(&lab)?;
    crate::e2e_migration::scenarios(&lab)?;
    crate::e2e_ssh::scenarios(&lab)?;
    crate::e2e_ganeti::scenarios(&lab)?;
    println!("e2e: all scenarios passed ({accel})");
    Ok(())
}

fn mem_total_kib(console: &mut Console) -> Result<u64> {
    let out = console.run("grep MemTotal /proc/meminfo")?;
    out.iter()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .context("no MemTotal")
}

/// Waits up to 30 s for `pid` to exit, through a pidfd: it signals the
/// exit even while the process lingers as a zombie nobody has reaped.
pub(crate) fn wait_gone(pid: i64) -> Result<()> {
    use std::os::fd::AsFd;
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        bail!("{pid} is no pid");
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        // No such process: already gone.
        return Ok(());
    };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16))?;
    ensure!(ready > 0, "pid {pid} still alive 30 s after SIGKILL");
    Ok(())
}

/// Files left in the run directory (directories themselves do not count).
pub(crate) fn leftover_files(run: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![run.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}
