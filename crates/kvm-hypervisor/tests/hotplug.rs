//! Hotplug against a real QEMU started through the library, with the test
//! guest (`cargo xtask guest`) under TCG. Needs root and
//! qemu-system-x86_64; fails loudly without the guest image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kvm_hypervisor::hotplug::{self, Added, HotplugError, Removal};
use kvm_hypervisor::qmp::{Client, Cont, QomGet, QueryFdsets, QueryPci};
use kvm_hypervisor::spec::InstanceSpec;
use kvm_hypervisor::{self as lifecycle, Node, StartOptions, StopOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
        .to_owned()
}

/// One instance and its directory; QEMU killed and files removed on drop.
struct Vm {
    dir: PathBuf,
    node: Node,
    name: String,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.node.run.pid_file(&self.name))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let exit = rustix::process::Pid::from_raw(pid).and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
            });
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // Its cgroup can go once it has exited.
            if let Some(fd) = exit {
                use std::os::fd::AsFd;
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16));
            }
            kvm_hypervisor::cgroup::remove(&self.name);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .expect("image")
        .set_len(mib << 20)
        .expect("size");
    p
}

/// Starts instance `name` paused with one 16 MiB disk; `hv` overrides hvparams.
async fn start(name: &str, hv: Value) -> Vm {
    let guest = root().join("target/guest");
    assert!(
        guest.join("vmlinuz").exists() && guest.join("initrd.gz").exists(),
        "the test guest is missing: run `cargo xtask guest` first"
    );
    let dir = root().join(format!("target/hptest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let node = Node::open(dir.join("run"), root().join("target/hptest-caps")).expect("node");
    let vm = Vm {
        dir: dir.clone(),
        node,
        name: name.to_owned(),
    };
    let disk = image(&dir, "disk0.img", 16);
    let mut hvparams = json!({
        "kvm_path": "/usr/bin/qemu-system-x86_64",
        "kernel_path": guest.join("vmlinuz"), "initrd_path": guest.join("initrd.gz"),
        "root_path": "/dev/ram0", "kernel_args": "quiet panic=-1",
        "serial_speed": 115200, "kvm_flag": "disabled", "vhost_net": false,
        "machine_version": "pc-i440fx-7.2", "cpu_type": "qemu64"
    });
    if let (Some(h), Some(extra)) = (hvparams.as_object_mut(), hv.as_object()) {
        h.extend(extra.clone());
    }
    let spec = InstanceSpec::from_value(&json!({
        "name": name, "memory": 256, "vcpus": 1, "hvparams": hvparams,
        "disks": [{"uuid": "0d15c000-0000-4000-8000-000000000000", "path": disk, "size": 16}],
    }))
    .expect("spec")
    .spec;
    lifecycle::start(&vm.node, &spec, StartOptions { paused: true })
        .await
        .expect("start");
    vm
}

struct Console {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Console {
    async fn until(&mut self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let wait = async {
            while let Some(line) = self.lines.next_line().await.expect("serial") {
                let done = line.contains(marker);
                seen.push(line);
                if done {
                    return;
                }
            }
        };
        let found = tokio::time::timeout(Duration::from_secs(120), wait).await;
        assert!(found.is_ok(), "no `{marker}` on the console; saw {seen:?}");
        seen
    }

    async fn run(&mut self, cmd: &str) -> Vec<String> {
        use tokio::io::AsyncWriteExt;
        self.writer
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write");
        self.until("GLAB cmd-begin").await;
        let mut out = self.until("GLAB cmd-end").await;
        let end = out.pop().unwrap_or_default();
        assert!(end.ends_with("rc=0"), "`{cmd}`: {end} {out:?}");
        // The guest's uevent agent prints `GLAB …` lines whenever it likes;
        // they are not the command's output.
        out.retain(|l| !l.starts_with("GLAB "));
        out
    }
}

async fn qmp(vm: &Vm) -> Client {
    lifecycle::connect(
        &vm.node
            .run
            .socket(&vm.name, kvm_hypervisor::state::Socket::Qmp),
        Duration::from_secs(5),
    )
    .await
    .expect("qmp")
}

/// Attaches to the serial console, continues the VM, waits for GLAB-READY.
async fn boot(vm: &Vm) -> Console {
    let stream = UnixStream::connect(
        vm.node
            .run
            .socket(&vm.name, kvm_hypervisor::state::Socket::Serial),
    )
    .await
    .expect("serial");
    let (read, writer) = stream.into_split();
    let mut console = Console {
        lines: BufReader::new(read).lines(),
        writer,
    };
    qmp(vm).await.execute(Cont).await.expect("cont");
    console.until("GLAB-READY").await;
    console
}

async fn stop(vm: &Vm) {
    lifecycle::stop(
        &vm.node,
        &vm.name,
        StopOptions {
            timeout: Duration::from_secs(1),
            force: true,
        },
    )
    .await
    .expect("stop");
}

fn disk_spec(uuid: &str, path: &Path) -> kvm_hypervisor::spec::DiskSpec {
    hotplug::parse_disk_spec(&json!({"uuid": uuid, "path": path, "size": 64})).expect("disk spec")
}

fn record(vm: &Vm) -> kvm_hypervisor::state::RuntimeRecord {
    vm.node
        .run
        .read_runtime(&vm.name)
        .expect("read")
        .expect("record")
        .record()
}

async fn block_nodes(c: &Client) -> Vec<String> {
    let v = c
        .execute_raw("query-named-block-nodes", json!({}))
        .await
        .expect("nodes");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node-name"].as_str().map(str::to_owned))
        .collect()
}

/// Descriptors QEMU still holds in fd sets.
async fn fds_held(c: &Client) -> usize {
    let sets = c.execute(QueryFdsets).await.expect("fdsets");
    sets.iter().map(|s| s.fds.len()).sum()
}

const HOT: &str = "4070c000-1111-4222-8333-444444444444";

#[tokio::test(flavor = "current_thread")]
async fn disk_add_resize_remove_seen_by_the_guest() {
    let vm = start("hpdisk", json!({})).await;
    let mut console = boot(&vm).await;
    let img = image(&vm.dir, "hot.img", 64);

    let added = hotplug::add_disk(&vm.node, &vm.name, &disk_spec(HOT, &img))
        .await
        .expect("add");
    assert_eq!(
        added,
        Added {
            kind: "disk",
            uuid: HOT.into(),
            id: "disk-4070c000-1111-4222".into(),
            hvinfo: json!({"driver": "virtio-blk-pci", "id": "disk-4070c000-1111-4222", "bus": "pci.0", "addr": "0xd"}),
            tap: None,
        }
    );
    console.until("GLAB uevent add block vdb").await;
    let c = qmp(&vm).await;
    let pci = c.execute(QueryPci).await.expect("pci");
    let slot = pci[0]
        .devices
        .iter()
        .find(|d| d.qdev_id == "disk-4070c000-1111-4222")
        .map(|d| d.slot);
    assert_eq!(slot, Some(0xd));
    assert_eq!(record(&vm).disks.len(), 2);
    assert_eq!(
        fds_held(&c).await,
        0,
        "the fd set is emptied once the node holds the file"
    );
    // QMP takes one client at a time: the library connects next.
    drop(c);

    let resized = hotplug::resize_disk(
        &vm.node,
        &vm.name,
        HOT,
        hotplug::DiskSize::To(128 << 20),
        false,
    )
    .await
    .expect("resize");
    assert_eq!(resized.bytes, 128 << 20);
    assert_eq!(resized.previous_bytes, Some(64 << 20));
    assert_eq!(
        console.run("cat /sys/block/vdb/size").await,
        ["262144"],
        "the guest sees 128 MiB"
    );
    assert_eq!(record(&vm).disks[1].size, Some(128));

    // Shrinking discards data: refused without allow_shrink, nothing changed.
    let err = hotplug::resize_disk(
        &vm.node,
        &vm.name,
        HOT,
        hotplug::DiskSize::To(16 << 20),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "disk-4070c000-1111-4222 is 134217728 bytes: resizing it to 16777216 bytes would discard its last 117440512 bytes; shrinking needs --allow-shrink"
    );
    assert_eq!(std::fs::metadata(&img).expect("image").len(), 128 << 20);
    assert_eq!(record(&vm).disks[1].size, Some(128));

    // Grown by 16 MiB, the disk named by its index.
    let disk = hotplug::device_uuid(&vm.node, &vm.name, "disk", "1").expect("disk 1");
    assert_eq!(disk, HOT);
    let grown = hotplug::resize_disk(
        &vm.node,
        &vm.name,
        &disk,
        hotplug::parse_disk_size("+16M").expect("size"),
        false,
    )
    .await
    .expect("grow");
    assert_eq!(grown.bytes, 144 << 20);
    assert_eq!(record(&vm).disks[1].size, Some(144));

    let removed = hotplug::remove_disk(&vm.node, &vm.name, HOT, Duration::from_secs(30))
        .await
        .expect("remove");
    assert_eq!(
        removed,
        Removal::Removed {
            id: "disk-4070c000-1111-4222".into()
        }
    );
    console.until("GLAB uevent remove block vdb").await;
    let c = qmp(&vm).await;
    assert!(
        !block_nodes(&c)
            .await
            .contains(&"disk-4070c000-1111-4222".to_owned())
    );
    assert_eq!(record(&vm).disks.len(), 1);
    stop(&vm).await;
}

/// Not in `cargo xtask e2e`: `ip netns exec` remounts /sys, which hides
/// the cgroup hierarchies from the binary it runs.
#[tokio::test(flavor = "current_thread")]
async fn qemu_runs_in_a_cgroup_of_its_own_until_it_stops() {
    let vm = start("cgrp1", json!({})).await;
    let pid = std::fs::read_to_string(vm.node.run.pid_file(&vm.name)).expect("pid");
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).expect("cgroup");
    // No systemd as PID 1 here: a cgroup v2 directory of ours.
    assert!(
        own.lines().any(|l| l == "0::/kvm-hypervisor/cgrp1"),
        "QEMU's cgroups: {own}"
    );
    drop(boot(&vm).await);
    let info = kvm_hypervisor::info(&vm.node, &vm.name)
        .await
        .expect("info");
    let dir = info.cgroup.clone().expect("a cgroup in info");
    assert!(dir.ends_with("kvm-hypervisor/cgrp1"), "{}", dir.display());
    assert!(
        info.usage.is_some_and(|u| u.cpu_usec > 0),
        "{:?}",
        info.usage
    );
    stop(&vm).await;
    assert!(!dir.exists(), "{} outlived the instance", dir.display());
}

#[tokio::test(flavor = "current_thread")]
async fn failed_device_add_rolls_back_blockdev_and_fdset() {
    let vm = start("hproll", json!({})).await;
    // QEMU closes removed fd-set members only while the VM runs.
    qmp(&vm).await.execute(Cont).await.expect("cont");
    let before = record(&vm);
    // The boot disk's image again: blockdev-add succeeds, device_add fails
    // on the image's write lock.
    let busy = vm.dir.join("disk0.img");

    let err = hotplug::add_disk(&vm.node, &vm.name, &disk_spec(HOT, &busy))
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            HotplugError::Step {
                step: "device_add",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(record(&vm), before);
    let c = qmp(&vm).await;
    assert!(
        !block_nodes(&c)
            .await
            .contains(&"disk-4070c000-1111-4222".to_owned())
    );
    assert_eq!(fds_held(&c).await, 0);
    assert!(!vm.node.run.intent_file(&vm.name).exists());
    stop(&vm).await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_path_fails_before_qemu_is_touched() {
    let vm = start("hpbad", json!({})).await;
    let before = record(&vm);

    let err = hotplug::add_disk(
        &vm.node,
        &vm.name,
        &disk_spec(HOT, &vm.dir.join("missing.img")),
    )
    .await
    .unwrap_err();

    assert!(
        matches!(err, HotplugError::Step { step: "open", .. }),
        "{err:?}"
    );
    assert_eq!(record(&vm), before);
    stop(&vm).await;
}

#[tokio::test(flavor = "current_thread")]
async fn removal_the_guest_never_sees_is_pending_then_still_pending() {
    // Paused: the guest never handles the ACPI unplug request.
    let vm = start("hppend", json!({})).await;
    let img = image(&vm.dir, "hot.img", 64);
    hotplug::add_disk(&vm.node, &vm.name, &disk_spec(HOT, &img))
        .await
        .expect("add");

    let removal = hotplug::remove_disk(&vm.node, &vm.name, HOT, Duration::from_millis(500))
        .await
        .expect("remove");

    assert_eq!(
        removal,
        Removal::Pending {
            id: "disk-4070c000-1111-4222".into()
        }
    );
    assert_eq!(
        record(&vm).disks[1].extra.get(hotplug::REMOVAL_PENDING),
        Some(&json!(true))
    );
    let again = hotplug::recover(&vm.node, &vm.name).await.expect("recover");
    assert_eq!(
        again,
        [hotplug::Recovery::StillPending {
            id: "disk-4070c000-1111-4222".into()
        }]
    );
    let c = qmp(&vm).await;
    let realized = c
        .execute(QomGet::new(
            "/machine/peripheral/disk-4070c000-1111-4222",
            "realized",
        ))
        .await
        .expect("qom");
    assert_eq!(realized, json!(true));
    stop(&vm).await;
}

#[tokio::test(flavor = "current_thread")]
async fn stopped_instance_is_not_supported() {
    let vm = start("hpstop", json!({})).await;
    stop(&vm).await;
    let img = image(&vm.dir, "hot.img", 64);

    let err = hotplug::add_disk(&vm.node, &vm.name, &disk_spec(HOT, &img))
        .await
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        "instance hpstop is not running and has no runtime record"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn check_reports_ide_disks_as_not_hotpluggable() {
    let vm = start("hpchk", json!({"disk_type": "ide"})).await;

    let support = hotplug::check(&vm.node, &vm.name).await.expect("check");

    assert!(!support.disk.add);
    assert_eq!(support.disk.reasons, ["disk_type ide is not hot-pluggable"]);
    assert!(support.nic.add && support.nic.remove);
    stop(&vm).await;
}

fn pid_of(vm: &Vm) -> String {
    std::fs::read_to_string(vm.node.run.pid_file(&vm.name)).expect("pid file")
}

#[tokio::test(flavor = "current_thread")]
async fn reboot_that_cannot_restart_stops_nothing_and_keeps_the_record() {
    let vm = start("rbmiss", json!({})).await;
    let pid = pid_of(&vm);
    let disk = vm.dir.join("disk0.img");
    std::fs::rename(&disk, vm.dir.join("moved.img")).expect("move the disk away");

    let err = lifecycle::reboot(&vm.node, &vm.name, true, Duration::from_secs(5))
        .await
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "instance rbmiss cannot start on this host:\n  disks[0].path: {} does not exist on this host",
            disk.display()
        )
    );
    assert_eq!(pid_of(&vm), pid, "the running QEMU was left alone");
    assert!(matches!(
        kvm_hypervisor::state::liveness(&vm.node.run, &vm.name),
        kvm_hypervisor::state::Liveness::Running { .. }
    ));
    assert_eq!(record(&vm).disks.len(), 1);

    // Once the disk is back, the same reboot goes through with a new QEMU.
    std::fs::rename(vm.dir.join("moved.img"), &disk).expect("move it back");
    let started = lifecycle::reboot(&vm.node, &vm.name, true, Duration::from_secs(5))
        .await
        .expect("reboot");
    assert_ne!(started.pid.to_string(), pid.trim());
    assert_eq!(record(&vm).disks.len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn reboot_whose_new_qemu_fails_keeps_the_record_for_a_retry() {
    let vm = start("rbfail", json!({})).await;
    // A QEMU option no check knows to refuse: the restart passes every
    // check and fails only when QEMU reads its command line.
    let mut r = record(&vm);
    r.hvparams
        .insert("kvm_extra".into(), json!("-no-such-option"));
    vm.node
        .run
        .write_record(&vm.name, &r, kvm_hypervisor::state::Format::Ours)
        .expect("record");

    let err = lifecycle::reboot(&vm.node, &vm.name, true, Duration::from_secs(5))
        .await
        .unwrap_err();

    assert!(
        err.to_string()
            .starts_with("starting rbfail failed at step `monitor`"),
        "{err}"
    );
    assert_eq!(record(&vm).hvparams["kvm_extra"], json!("-no-such-option"));
    let info = lifecycle::info(&vm.node, &vm.name).await.expect("info");
    assert_eq!(info.state, lifecycle::InstanceState::Crashed);
}

#[tokio::test(flavor = "current_thread")]
async fn balloon_is_bounded_by_memory_and_warns_below_min_memory() {
    let vm = start("blmin", json!({})).await;

    let err = lifecycle::balloon(&vm.node, &vm.name, 512)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "512 MiB is more than the instance's memory (256 MiB)"
    );
    let done = lifecycle::balloon(&vm.node, &vm.name, 128)
        .await
        .expect("balloon");
    assert_eq!(
        done.warnings,
        ["128 MiB is below the instance's min_memory (256 MiB)"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn stop_does_not_call_a_qemu_killed_by_someone_else_powered_off() {
    let vm = start("stopkill", json!({})).await;
    let pid: i32 = pid_of(&vm).trim().parse().expect("pid");
    // The monitor daemon's socket sees the POWERDOWN that `stop` causes.
    let kvmd = lifecycle::connect(
        &vm.node
            .run
            .socket(&vm.name, kvm_hypervisor::state::Socket::Kvmd),
        Duration::from_secs(5),
    )
    .await
    .expect("kvmd");
    let mut powerdown = kvmd.listen(kvm_hypervisor::qmp::EventFilter::new("POWERDOWN"));
    let opts = StopOptions {
        timeout: Duration::from_secs(60),
        force: false,
    };

    let (ending, ()) = tokio::join!(lifecycle::stop(&vm.node, &vm.name, opts), async {
        powerdown
            .wait(Duration::from_secs(30))
            .await
            .expect("POWERDOWN");
        // Someone else kills QEMU while the (paused) guest has not reacted.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
    });

    assert_eq!(ending.expect("stop"), lifecycle::Ending::Exited);
}

#[tokio::test(flavor = "current_thread")]
async fn sockets_and_logs_are_for_their_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let vm = start("modes", json!({})).await;
    let run = &vm.node.run;
    let mode = |p: PathBuf| {
        let m = std::fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
        (
            p.file_name().map(|n| n.to_string_lossy().into_owned()),
            format!("{m:o}"),
        )
    };
    use kvm_hypervisor::state::Socket;
    let modes = [
        mode(run.socket(&vm.name, Socket::Qmp)),
        mode(run.socket(&vm.name, Socket::Monitor)),
        mode(run.socket(&vm.name, Socket::Serial)),
        mode(run.qemu_log(&vm.name)),
        mode(run.console_log(&vm.name)),
        mode(run.pid_file(&vm.name)),
    ];
    let all_600 = modes.iter().all(|(_, m)| m == "600");
    assert!(all_600, "{modes:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_users_qmp_session_does_not_keep_stop_from_powering_the_guest_off() {
    let vm = start("userqmp", json!({})).await;
    let _console = boot(&vm).await;
    // A user follows events on the users' monitor for as long as they like.
    let user = lifecycle::connect(
        &vm.node
            .run
            .socket(&vm.name, kvm_hypervisor::state::Socket::UserQmp),
        Duration::from_secs(5),
    )
    .await
    .expect("the users' monitor");
    let _events = user.listen(kvm_hypervisor::qmp::EventFilter::new("SHUTDOWN"));
    let opts = StopOptions {
        timeout: Duration::from_secs(120),
        force: false,
    };

    let ending = lifecycle::stop(&vm.node, &vm.name, opts)
        .await
        .expect("stop");

    assert_eq!(ending, lifecycle::Ending::Graceful);
}
