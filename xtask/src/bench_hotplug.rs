//! `cargo xtask bench hotplug`: `kvm-hypervisor hotplug add-disk` and
//! `hotplug del-disk` (one process each) against the raw QMP floor: a
//! minimal blocking client on the instance's monitor socket sending the
//! same commands the library sends and waiting for the same event.
//!
//! One TCG instance is started once; the guest's READY is awaited once.
//! Then pairs alternate floor and ours (the order flips every pair). The
//! guest's `GLAB uevent add/remove block` lines on the serial console (and
//! the listing its uevent agent prints after them) are awaited between the
//! steps, untimed: a removal never races the guest's probe of the disk just
//! added, and no timed step shares the host with a busy TCG vCPU. Nothing
//! sleeps: every wait is a blocking read on a socket with a deadline.
//!
//! The floor uses the PCI slot the library picked in the warm-up (the two
//! never hold it at the same time), its own image file and device ids.

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde_json::{Value, json};

use crate::timing::{Breakdown, RUST_LOG};

const BOOT_DEADLINE: Duration = Duration::from_secs(180);
const REPLY_DEADLINE: Duration = Duration::from_secs(10);
/// How long the guest gets to see a disk come or go (TCG on a shared host).
const GUEST_DEADLINE: Duration = Duration::from_secs(60);

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Lines from a stream, each read with what is left of a deadline.
pub(crate) struct Lines {
    reader: BufReader<UnixStream>,
    what: &'static str,
}

impl Lines {
    pub(crate) fn new(stream: &UnixStream, what: &'static str) -> Result<Lines> {
        Ok(Lines {
            reader: BufReader::new(stream.try_clone()?),
            what,
        })
    }

    pub(crate) fn next(&mut self, deadline: Instant) -> Result<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "{}: deadline passed", self.what);
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("{}: nothing in time", self.what))?;
        ensure!(n > 0, "{}: closed", self.what);
        Ok(line)
    }
}

/// The serial console: markers the test guest prints.
pub(crate) struct Console(pub(crate) Lines);

impl Console {
    pub(crate) fn wait_for(&mut self, marker: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while !self.0.next(deadline)?.contains(marker) {}
        Ok(())
    }

    /// Waits until the guest saw a block device come or go (`add`,
    /// `remove`), and its uevent agent finished with it: the `GLAB net:`
    /// line of the listing it prints last, so that the next timed step
    /// does not compete with a busy TCG vCPU.
    fn block_uevent(&mut self, action: &str) -> Result<()> {
        self.wait_for(&format!("GLAB uevent {action} block"), GUEST_DEADLINE)?;
        self.wait_for("GLAB net:", GUEST_DEADLINE)
    }
}

/// The floor: a minimal blocking QMP client, raw JSON lines, no ids.
/// Replies are told apart by their first key (QEMU writes `{"return": …}`,
/// `{"error": …}` and `{"timestamp": …, "event": …}`) and parsed only when
/// their content is needed, so this debug-built client stays a floor.
pub(crate) struct Qmp {
    stream: UnixStream,
    lines: Lines,
    /// Events read while waiting for a reply.
    events: Vec<String>,
}

impl Qmp {
    /// Connects, reads the greeting, leaves negotiation mode.
    pub(crate) fn connect(path: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        let mut lines = Lines::new(&stream, "QMP")?;
        let greeting: Value = serde_json::from_str(&lines.next(Instant::now() + REPLY_DEADLINE)?)?;
        ensure!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        let mut q = Qmp {
            stream,
            lines,
            events: Vec::new(),
        };
        q.execute(&json!({"execute": "qmp_capabilities"}), None)?;
        Ok(q)
    }

    fn send(&mut self, cmd: &Value, fd: Option<&OwnedFd>) -> Result<()> {
        let bytes = serde_json::to_vec(cmd)?;
        let sent = match fd {
            // The descriptor travels with the command's first bytes.
            Some(fd) => sendmsg::<()>(
                self.stream.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &[ControlMessage::ScmRights(&[fd.as_raw_fd()])],
                MsgFlags::empty(),
                None,
            )
            .context("sendmsg with SCM_RIGHTS")?,
            None => 0,
        };
        self.stream.write_all(&bytes[sent..])?;
        Ok(())
    }

    /// The next reply line, unparsed; events met on the way are kept.
    fn reply(&mut self, what: &str) -> Result<String> {
        let deadline = Instant::now() + REPLY_DEADLINE;
        loop {
            let line = self.lines.next(deadline)?;
            if line.starts_with("{\"return\"") {
                return Ok(line);
            }
            if line.starts_with("{\"timestamp\"") {
                self.events.push(line);
                continue;
            }
            bail!("{what}: {}", line.trim_end());
        }
    }

    /// Forgets the events read so far (older than the last reply).
    pub(crate) fn forget_events(&mut self) {
        self.events.clear();
    }

    /// Sends `cmd` without waiting for its reply (`quit`).
    pub(crate) fn send_only(&mut self, cmd: &Value) -> Result<()> {
        self.send(cmd, None)
    }

    /// Sends `cmd` and returns its reply line, unparsed.
    pub(crate) fn execute(&mut self, cmd: &Value, fd: Option<&OwnedFd>) -> Result<String> {
        self.send(cmd, fd)?;
        self.reply(cmd["execute"].as_str().unwrap_or("?"))
    }

    /// Reads until event `name` with `data.device == device`.
    fn event(&mut self, name: &str, device: &str, within: Duration) -> Result<()> {
        self.event_where(within, |v| {
            v["event"] == name && v["data"]["device"] == device
        })
    }

    /// Reads until an event for which `is_it` holds (kept ones first).
    pub(crate) fn event_where(
        &mut self,
        within: Duration,
        is_it: impl Fn(&Value) -> bool,
    ) -> Result<()> {
        let matches = |line: &str| serde_json::from_str::<Value>(line).is_ok_and(|v| is_it(&v));
        if let Some(i) = self.events.iter().position(|l| matches(l)) {
            self.events.remove(i);
            return Ok(());
        }
        let deadline = Instant::now() + within;
        while !matches(&self.lines.next(deadline)?) {}
        Ok(())
    }
}

/// Stops the instance (`stop --force`) and removes the run directory when
/// dropped, on success and on failure alike.
struct Instance {
    bin: PathBuf,
    run_dir: PathBuf,
    name: String,
}

impl Instance {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--run-dir").arg(&self.run_dir).args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> Result<Output> {
        let o = self.cmd(args).output()?;
        ensure!(
            o.status.success(),
            "kvm-hypervisor {} ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(o)
    }

    fn ctrl(&self, suffix: &str) -> PathBuf {
        self.run_dir
            .join("ctrl")
            .join(format!("{}{suffix}", self.name))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.run_dir.join("pid").join(&self.name)).ok();
        match self.cmd(&["stop", &self.name, "--force"]).output() {
            Ok(o) if o.status.success() => {}
            other => {
                eprintln!("bench hotplug: stop --force failed ({other:?}); killing QEMU by pid");
                if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// What the floor sends for one disk; the same arguments the library
/// sends for a `virtio-blk-pci` disk with the default hvparams
/// (disk_cache default, disk_aio threads, discard ignore).
struct FloorDisk<'a> {
    id: String,
    image: &'a Path,
    addr: &'a str,
}

struct Times {
    connect: Duration,
    planning: Duration,
    core: Duration,
}

/// The floor's add: connect, the library's planning reads (`qom-list` of
/// the peripherals for recovery, `query-pci` for the slot), then timed
/// from `add-fd` sent to `remove-fd` answered: add-fd (SCM_RIGHTS) →
/// blockdev-add → device_add → qom-get realized → query-pci → remove-fd.
fn floor_add(qmp_path: &Path, d: &FloorDisk<'_>) -> Result<Times> {
    let t0 = Instant::now();
    let mut q = Qmp::connect(qmp_path)?;
    let connect = t0.elapsed();
    let t1 = Instant::now();
    q.execute(
        &json!({"execute": "qom-list", "arguments": {"path": "/machine/peripheral"}}),
        None,
    )?;
    q.execute(&json!({"execute": "query-pci"}), None)?;
    let planning = t1.elapsed();
    // Opened before anything reaches QEMU, as the library does.
    let file: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(d.image)?
        .into();
    let id = d.id.as_str();
    let start = Instant::now();
    let added: Value = serde_json::from_str(&q.execute(
        &json!({"execute": "add-fd", "arguments": {"opaque": id}}),
        Some(&file),
    )?)?;
    drop(file);
    let set = added["return"]["fdset-id"]
        .as_i64()
        .context("add-fd: no fdset-id")?;
    q.execute(
        &json!({"execute": "blockdev-add", "arguments": {
            "node-name": id, "driver": "raw", "discard": "ignore",
            "cache": {"direct": false, "no-flush": false},
            "file": {"driver": "file", "filename": format!("/dev/fdset/{set}"), "aio": "threads"},
            "auto-read-only": false}}),
        None,
    )?;
    q.execute(
        &json!({"execute": "device_add", "arguments": {
            "driver": "virtio-blk-pci", "id": id, "bus": "pci.0", "addr": d.addr,
            "drive": id, "write-cache": "on"}}),
        None,
    )?;
    let realized = q.execute(
        &json!({"execute": "qom-get", "arguments": {
            "path": format!("/machine/peripheral/{id}"), "property": "realized"}}),
        None,
    )?;
    // The reply is read in full before the next command, as the library
    // does; it is parsed and checked once the timer stopped.
    ensure!(
        realized.starts_with(r#"{"return": true"#),
        "{id} not realized: {realized}"
    );
    let pci = q.execute(&json!({"execute": "query-pci"}), None)?;
    q.execute(
        &json!({"execute": "remove-fd", "arguments": {"fdset-id": set}}),
        None,
    )?;
    let core = start.elapsed();
    let pci: Value = serde_json::from_str(&pci)?;
    let pci = &pci["return"];
    let slot = u64::from_str_radix(d.addr.trim_start_matches("0x"), 16)?;
    let seen = pci
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["bus"] == 0)
        .flat_map(|b| b["devices"].as_array().into_iter().flatten())
        .any(|dev| dev["qdev_id"] == id && dev["slot"] == slot);
    ensure!(seen, "query-pci does not show {id} at {}", d.addr);
    Ok(Times {
        connect,
        planning,
        core,
    })
}

/// The floor's removal: connect, `qom-list` (the library's recovery
/// read), then timed from `device_del` sent to `blockdev-del` answered,
/// reading lines until `DEVICE_DELETED` with `data.device == id`.
fn floor_remove(qmp_path: &Path, id: &str) -> Result<Times> {
    let t0 = Instant::now();
    let mut q = Qmp::connect(qmp_path)?;
    let connect = t0.elapsed();
    let t1 = Instant::now();
    q.execute(
        &json!({"execute": "qom-list", "arguments": {"path": "/machine/peripheral"}}),
        None,
    )?;
    let planning = t1.elapsed();
    let start = Instant::now();
    q.execute(
        &json!({"execute": "device_del", "arguments": {"id": id}}),
        None,
    )?;
    q.event("DEVICE_DELETED", id, GUEST_DEADLINE)?;
    q.execute(
        &json!({"execute": "blockdev-del", "arguments": {"node-name": id}}),
        None,
    )?;
    Ok(Times {
        connect,
        planning,
        core: start.elapsed(),
    })
}

fn timed(inst: &Instance, args: &[&str]) -> Result<(Duration, Value)> {
    let start = Instant::now();
    let o = inst.cmd(args).output()?;
    let took = start.elapsed();
    ensure!(
        o.status.success(),
        "kvm-hypervisor {} ({}): {}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Ok((took, serde_json::from_slice(&o.stdout)?))
}

struct Ours {
    add: Duration,
    remove: Duration,
    addr: String,
}

/// Ours: `hotplug add-disk` then `hotplug del-disk`, one process each.
fn ours_pair(inst: &Instance, console: &mut Console, uuid: &str, image: &Path) -> Result<Ours> {
    let spec = json!({"uuid": uuid, "path": image, "size": 64}).to_string();
    let (add, added) = timed(inst, &["hotplug", "add-disk", &inst.name, &spec, "--json"])?;
    let addr = added["hvinfo"]["addr"]
        .as_str()
        .with_context(|| format!("no PCI address in {added}"))?
        .to_owned();
    console.block_uevent("add")?;
    let (remove, removed) = timed(
        inst,
        &[
            "hotplug",
            "del-disk",
            &inst.name,
            uuid,
            "--timeout",
            "60",
            "--json",
        ],
    )?;
    ensure!(removed["state"] == "removed", "del-disk: {removed}");
    console.block_uevent("remove")?;
    Ok(Ours { add, remove, addr })
}

/// The library's own per-step timings of `add-disk`, over `runs` extra
/// untimed pairs.
fn add_breakdown(
    inst: &Instance,
    console: &mut Console,
    image: &Path,
    runs: u32,
) -> Result<Breakdown> {
    let mut steps = Breakdown::default();
    for i in 0..runs {
        let uuid = format!("{:08x}-b0b0-4000-8000-000000000000", 0xfff0 + i);
        let spec = json!({"uuid": uuid, "path": image, "size": 64}).to_string();
        let o = inst
            .cmd(&["hotplug", "add-disk", &inst.name, &spec, "--json"])
            .env(RUST_LOG.0, RUST_LOG.1)
            .output()?;
        ensure!(
            o.status.success(),
            "add-disk: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        steps.add(&String::from_utf8_lossy(&o.stderr));
        console.block_uevent("add")?;
        inst.ok(&["hotplug", "del-disk", &inst.name, &uuid, "--timeout", "60"])?;
        console.block_uevent("remove")?;
    }
    Ok(steps)
}

fn floor_pair(qmp_path: &Path, console: &mut Console, d: &FloorDisk<'_>) -> Result<(Times, Times)> {
    let add = floor_add(qmp_path, d)?;
    console.block_uevent("add")?;
    let remove = floor_remove(qmp_path, &d.id)?;
    console.block_uevent("remove")?;
    Ok((add, remove))
}

fn image(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::File::create(&p)?.set_len(64 << 20)?;
    Ok(p)
}

pub(crate) fn bench_hotplug(
    bin: &Path,
    spec: &Path,
    dir: &Path,
    cache: &Path,
    pairs: usize,
) -> Result<()> {
    let spec_json: Value = serde_json::from_str(&std::fs::read_to_string(spec)?)?;
    let name = spec_json["name"].as_str().context("spec name")?.to_owned();
    let run_dir = dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let spec_s = spec.to_str().context("utf-8")?;
    let cache_s = cache.to_str().context("utf-8")?;
    let inst = Instance {
        bin: bin.to_owned(),
        run_dir,
        name,
    };
    inst.ok(&["start", spec_s, "--paused", "--cache-dir", cache_s])?;
    // Attached before the guest runs: READY cannot be missed.
    let serial = UnixStream::connect(inst.ctrl(".serial"))?;
    let mut console = Console(Lines::new(&serial, "serial console")?);
    inst.ok(&["qmp", "--instance", &inst.name, "cont"])?;
    console.wait_for("GLAB-READY", BOOT_DEADLINE)?;
    let qmp_path = inst.ctrl(".qmp");
    let (floor_img, ours_img) = (image(dir, "hp-floor.img")?, image(dir, "hp-ours.img")?);
    let ours_uuid = |i: usize| format!("{i:08x}-b0b0-4000-8000-000000000000");
    let floor_id = |i: usize| format!("disk-{i:08x}-f1f1-4000");

    // Warm-up (page cache, QEMU's first hotplug); it also tells the slot
    // the library picks, which the floor then uses (never at the same time).
    let warm = ours_pair(&inst, &mut console, &ours_uuid(0xffff), &ours_img)?;
    let addr = warm.addr;
    floor_pair(
        &qmp_path,
        &mut console,
        &FloorDisk {
            id: floor_id(0xffff),
            image: &floor_img,
            addr: &addr,
        },
    )?;

    let (mut f_add, mut f_del, mut o_add, mut o_del) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut r_add, mut r_del) = (Vec::new(), Vec::new());
    // Against a one-shot client's floor: connect and the library's reads too.
    let (mut r_add_once, mut r_del_once) = (Vec::new(), Vec::new());
    let (mut f_conn, mut f_plan_add, mut f_plan_del, mut exec) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let d = FloorDisk {
            id: floor_id(i),
            image: &floor_img,
            addr: &addr,
        };
        let (floor, ours) = if i % 2 == 0 {
            let f = floor_pair(&qmp_path, &mut console, &d)?;
            (f, ours_pair(&inst, &mut console, &ours_uuid(i), &ours_img)?)
        } else {
            let o = ours_pair(&inst, &mut console, &ours_uuid(i), &ours_img)?;
            (floor_pair(&qmp_path, &mut console, &d)?, o)
        };
        ensure!(ours.addr == addr, "the library moved to {}", ours.addr);
        let (fa, fd) = floor;
        r_add.push(ours.add.as_secs_f64() / fa.core.as_secs_f64());
        r_del.push(ours.remove.as_secs_f64() / fd.core.as_secs_f64());
        let once = |t: &Times| (t.connect + t.planning + t.core).as_secs_f64();
        r_add_once.push(ours.add.as_secs_f64() / once(&fa));
        r_del_once.push(ours.remove.as_secs_f64() / once(&fd));
        f_conn.extend([fa.connect, fd.connect]);
        f_plan_add.push(fa.planning);
        f_plan_del.push(fd.planning);
        f_add.push(fa.core);
        f_del.push(fd.core);
        o_add.push(ours.add);
        o_del.push(ours.remove);
        // The cost of a process of the binary that does nothing.
        let e = Instant::now();
        inst.ok(&["--version"])?;
        exec.push(e.elapsed());
    }
    let steps = add_breakdown(&inst, &mut console, &ours_img, 5)?;
    drop(inst);

    let (fa, fd, oa, od) = (median(f_add), median(f_del), median(o_add), median(o_del));
    let (ra, rd) = (median_f(r_add), median_f(r_del));
    let verdict = |r: f64| {
        if r <= 1.5 {
            "goal <= 1.5x met"
        } else {
            "goal <= 1.5x NOT met"
        }
    };
    println!(
        "hotplug of a 64 MiB virtio-blk disk at pci.0 {addr}, {pairs} interleaved pairs (one TCG guest):"
    );
    println!(
        "  add     floor (add-fd sent -> remove-fd answered)        median {:.2} ms",
        ms(fa)
    );
    println!(
        "          kvm-hypervisor hotplug add-disk (process)       median {:.2} ms",
        ms(oa)
    );
    println!(
        "          median of per-pair ratios                       {ra:.2}  ({})",
        verdict(ra)
    );
    println!(
        "  remove  floor (device_del sent -> blockdev-del answered) median {:.2} ms",
        ms(fd)
    );
    println!(
        "          kvm-hypervisor hotplug del-disk (process)       median {:.2} ms",
        ms(od)
    );
    println!(
        "          median of per-pair ratios                       {rd:.2}  ({})",
        verdict(rd)
    );
    println!("  outside the floor, paid by any one-shot client:");
    println!(
        "          connect + greeting + qmp_capabilities           median {:.2} ms",
        ms(median(f_conn))
    );
    println!(
        "          planning reads before an add (qom-list, query-pci) median {:.2} ms",
        ms(median(f_plan_add))
    );
    println!(
        "          recovery read before a removal (qom-list)       median {:.2} ms",
        ms(median(f_plan_del))
    );
    println!(
        "          kvm-hypervisor --version (process start)        median {:.2} ms",
        ms(median(exec))
    );
    println!(
        "  ours / (floor + connect + those reads), median of per-pair ratios: add {:.2}, remove {:.2}",
        median_f(r_add_once),
        median_f(r_del_once)
    );
    println!("  add-disk inside the process, per step (the library's timing events, median of 5):");
    steps.print("          ");
    Ok(())
}
