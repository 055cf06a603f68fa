//! The client against a real `qemu-system-x86_64`.
//!
//! Each test starts its own QEMU. The test binds the QMP listening socket
//! itself (in a fresh temporary directory) and hands it to QEMU as
//! `-chardev socket,fd=N,server=on`, so the socket exists before QEMU runs and
//! `connect` never has to poll for it; one test uses a socketpair instead.
//! The [`Qemu`] guard kills the process and removes the directory on drop,
//! also when a test fails.

// These tests start QEMU themselves: this leaf crate has no process module to
// go through, and the spawn is the thing under test's environment.
#![allow(clippy::disallowed_methods)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use qmp_protocol::{
    AddFd, Balloon, BlockdevAdd, BlockdevDel, Client, CloseFd, Cont, DeviceAdd, DeviceDel,
    DeviceDeletedEvent, EventFilter, Handshake, MigrateSetCapabilities, MigrateSetParameters,
    MigrationInfo, NetdevAdd, NetdevDel, QmpError, QomGet, QomList, QueryBalloon, QueryBlock,
    QueryCommands, QueryCpusFast, QueryFdsets, QueryMigrate, QueryMigrateCapabilities, QueryPci,
    QueryQmpSchema, QueryStatus, QueryVersion, Quit, RemoveFd, ResumeEvent, RunState,
    ShutdownCause, ShutdownEvent, Stop, StopEvent,
};

const QEMU: &str = "qemu-system-x86_64";
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("qmp-protocol-{test}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running QEMU, killed on drop.
struct Qemu {
    child: Child,
    socket: PathBuf,
    // Dropped after the child is killed (fields drop in order after `drop`).
    _dir: TempDir,
}

/// Let `fd` survive `exec` in the child, whatever CLOEXEC it has here.
fn inherit(command: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs between fork and exec and only calls fcntl,
    // which is async-signal-safe; `fd` is open in the parent at spawn time.
    unsafe {
        command.pre_exec(move || {
            let fd = BorrowedFd::borrow_raw(fd);
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
}

fn qemu_command(machine: &[&str], chardev: &str) -> Command {
    let mut command = Command::new(QEMU);
    command
        .args(machine)
        .args(["-nodefaults", "-display", "none", "-chardev", chardev])
        .args(["-mon", "chardev=qmp,mode=control"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

impl Qemu {
    /// Start QEMU with `machine` arguments and a QMP server socket.
    fn start(test: &str, machine: &[&str]) -> Qemu {
        let dir = TempDir::new(test);
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let fd = listener.as_raw_fd();
        let mut command = qemu_command(
            machine,
            &format!("socket,id=qmp,fd={fd},server=on,wait=off"),
        );
        inherit(&mut command, fd);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {QEMU} (is it installed?): {e}"));
        // QEMU has its own copy of the listening socket now.
        drop(listener);
        Qemu {
            child,
            socket,
            _dir: dir,
        }
    }

    /// `-machine none -S`: no devices, nothing runs; enough for QMP itself.
    fn bare(test: &str) -> Qemu {
        Qemu::start(test, &["-machine", "none", "-S"])
    }

    /// `-machine pc -S` under TCG: a PCI bus to plug devices into.
    fn pc(test: &str) -> Qemu {
        Qemu::start(test, &["-machine", "pc", "-accel", "tcg", "-S"])
    }

    async fn client(&self) -> Client {
        Client::connect(&self.socket).await.unwrap()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn handshake_reports_the_version_query_version_reports() {
    let qemu = Qemu::bare("handshake");

    let handshake = Handshake::connect(&qemu.socket).await.unwrap();
    let greeting = handshake.greeting().clone();
    let client = handshake.negotiate().await.unwrap();
    let version = client.execute(QueryVersion).await.unwrap();

    assert_eq!(
        (greeting.version.qemu.major, greeting.version.qemu.minor),
        (7, 2)
    );
    assert_eq!(greeting.capabilities, vec!["oob".to_owned()]);
    assert_eq!(version, greeting.version);
    assert_eq!(client.version(), greeting.version.qemu);
}

#[tokio::test]
async fn query_status_of_a_machine_started_with_dash_s_is_prelaunch() {
    let qemu = Qemu::bare("status");
    let client = qemu.client().await;

    let status = client.execute(QueryStatus).await.unwrap();

    assert_eq!(status.status, RunState::Prelaunch);
    assert!(!status.running);
}

#[tokio::test]
async fn an_already_connected_socketpair_end_is_accepted() {
    let dir = TempDir::new("socketpair");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut command = qemu_command(
        &["-machine", "none", "-S"],
        &format!("socket,id=qmp,fd={}", theirs.as_raw_fd()),
    );
    inherit(&mut command, theirs.as_raw_fd());
    let child = command.spawn().unwrap();
    let _qemu = Qemu {
        child,
        socket: dir.path().join("unused"),
        _dir: dir,
    };
    drop(theirs);
    ours.set_nonblocking(true).unwrap();

    let stream = tokio::net::UnixStream::from_std(ours).unwrap();
    let client = Handshake::from_stream(stream)
        .await
        .unwrap()
        .negotiate()
        .await
        .unwrap();
    let status = client.execute(QueryStatus).await.unwrap();

    assert_eq!(status.status, RunState::Prelaunch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_from_several_tasks_get_their_own_replies() {
    let qemu = Qemu::bare("concurrent");
    let client = qemu.client().await;
    let expected_version = client.greeting().version.clone();

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut versions = Vec::new();
            for _ in 0..25 {
                let (status, version) = tokio::join!(
                    client.execute(QueryStatus).into_future(),
                    client.execute(QueryVersion).into_future()
                );
                statuses.push(status.unwrap().status);
                versions.push(version.unwrap());
            }
            (statuses, versions)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }

    for (statuses, versions) in results {
        assert_eq!(statuses, vec![RunState::Prelaunch; 25]);
        assert_eq!(versions, vec![expected_version.clone(); 25]);
    }
}

#[tokio::test]
async fn getfd_of_a_pipe_then_closefd() {
    let qemu = Qemu::bare("getfd");
    let client = qemu.client().await;
    let (_read_end, write_end) = std::io::pipe().unwrap();

    client.get_fd("pipe-w", write_end.as_fd()).await.unwrap();
    client.execute(CloseFd::new("pipe-w")).await.unwrap();
    let again = client.execute(CloseFd::new("pipe-w")).await.unwrap_err();

    assert!(
        matches!(again, QmpError::Refused { ref command, ref class, ref desc }
            if command == "closefd" && class == "GenericError"
                && desc == "File descriptor named 'pipe-w' not found"),
        "{again:?}"
    );
}

#[tokio::test]
async fn add_fd_shows_in_query_fdsets_until_remove_fd() {
    // Running, not -S: QEMU closes removed descriptors only while running.
    let qemu = Qemu::start("add-fd", &["-machine", "none"]);
    let client = qemu.client().await;
    let (_read_end, write_end) = std::io::pipe().unwrap();
    let fd: OwnedFd = write_end.into();

    let added = client
        .add_fd(
            AddFd {
                fdset_id: None,
                opaque: Some("test-pipe".to_owned()),
            },
            fd.as_fd(),
        )
        .await
        .unwrap();
    let sets = client.execute(QueryFdsets).await.unwrap();
    client.execute(RemoveFd::set(added.fdset_id)).await.unwrap();
    let sets_after = client.execute(QueryFdsets).await.unwrap();
    let removed_again = client
        .execute(RemoveFd::set(added.fdset_id))
        .await
        .unwrap_err();

    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].fdset_id, added.fdset_id);
    assert_eq!(sets[0].fds.len(), 1);
    assert_eq!(sets[0].fds[0].fd, added.fd);
    assert_eq!(sets[0].fds[0].opaque.as_deref(), Some("test-pipe"));
    assert_eq!(sets_after, Vec::new());
    assert!(
        matches!(removed_again, QmpError::Refused { ref class, ref desc, .. }
            if class == "GenericError"
                && *desc == format!("File descriptor named 'fdset-id:{}' not found", added.fdset_id)),
        "{removed_again:?}"
    );
}

#[tokio::test]
async fn cont_then_stop_emit_resume_and_stop() {
    let qemu = Qemu::bare("cont-stop");
    let client = qemu.client().await;
    let mut resumed = client.listen(EventFilter::of::<ResumeEvent>());
    let mut stopped = client.listen(EventFilter::of::<StopEvent>());

    client.execute(Cont).await.unwrap();
    let resume = resumed.wait(EVENT_DEADLINE).await.unwrap();
    let running = client.execute(QueryStatus).await.unwrap();
    client.execute(Stop).await.unwrap();
    let stop = stopped.wait(EVENT_DEADLINE).await.unwrap();
    let paused = client.execute(QueryStatus).await.unwrap();

    assert_eq!(resume.name, "RESUME");
    assert_eq!(resume.data, serde_json::json!({}));
    assert_eq!(stop.name, "STOP");
    assert_eq!(stop.data, serde_json::json!({}));
    assert_eq!(running.status, RunState::Running);
    assert_eq!(paused.status, RunState::Paused);
    assert!(stopped.try_next().is_none());
}

#[tokio::test]
async fn quit_emits_shutdown_then_qemu_closes_the_connection_cleanly() {
    let mut qemu = Qemu::bare("quit");
    let client = qemu.client().await;
    let mut shutdown = client.listen(EventFilter::of::<ShutdownEvent>());

    client.execute(Quit).await.unwrap();
    let event = shutdown.wait(EVENT_DEADLINE).await.unwrap();
    let closed = client.closed().await;
    let after = client.execute(QueryStatus).await.unwrap_err();
    let exit = qemu.child.wait().unwrap();

    let data: ShutdownEvent = event.decode().unwrap();
    assert!(!data.guest);
    assert_eq!(data.reason, ShutdownCause::HostQmpQuit);
    assert!(
        matches!(closed, QmpError::Disconnected { source: None }),
        "{closed:?}"
    );
    assert!(
        matches!(after, QmpError::Disconnected { source: None }),
        "{after:?}"
    );
    assert!(exit.success());
}

#[tokio::test]
async fn a_command_qemu_does_not_have_is_not_supported() {
    let qemu = Qemu::bare("not-supported");
    let client = qemu.client().await;

    let err = client
        .execute_raw("x-no-such-command", serde_json::Value::Null)
        .await
        .unwrap_err();

    assert!(
        matches!(err, QmpError::NotSupported { ref command, ref desc }
            if command == "x-no-such-command"
                && desc == "The command x-no-such-command has not been found"),
        "{err:?}"
    );
    assert_eq!(err.qmp_class(), Some("CommandNotFound"));
}

#[tokio::test]
async fn device_del_of_an_unknown_id_is_refused_with_device_not_found() {
    let qemu = Qemu::bare("device-del");
    let client = qemu.client().await;

    let err = client
        .execute(DeviceDel::new("disk-nope"))
        .await
        .unwrap_err();

    assert!(
        matches!(err, QmpError::Refused { ref command, ref class, ref desc }
            if command == "device_del" && class == "DeviceNotFound"
                && desc == "Device 'disk-nope' not found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn disk_hot_remove_waits_for_device_deleted_then_deletes_the_node() {
    let qemu = Qemu::pc("hot-remove");
    let client = qemu.client().await;
    client
        .execute(DeviceAdd::new("virtio-scsi-pci", "scsi0").bus("pci.0"))
        .await
        .unwrap();
    client
        .execute(BlockdevAdd::new("null-co", "disk-1").property("size", 1 << 20))
        .await
        .unwrap();
    client
        .execute(
            DeviceAdd::new("scsi-hd", "disk-1")
                .bus("scsi0.0")
                .property("drive", "disk-1"),
        )
        .await
        .unwrap();
    let blocks = client.execute(QueryBlock).await.unwrap();

    let mut deleted = client.listen(DeviceDeletedEvent::for_device("disk-1"));
    client.execute(DeviceDel::new("disk-1")).await.unwrap();
    let event = deleted.wait(EVENT_DEADLINE).await.unwrap();
    client.execute(BlockdevDel::new("disk-1")).await.unwrap();
    let blocks_after = client.execute(QueryBlock).await.unwrap();

    assert_eq!(blocks.len(), 1);
    assert_eq!(
        blocks[0].inserted.as_ref().unwrap().node_name.as_deref(),
        Some("disk-1")
    );
    let data: DeviceDeletedEvent = event.decode().unwrap();
    assert_eq!(data.device.as_deref(), Some("disk-1"));
    assert_eq!(data.path, "/machine/peripheral/disk-1");
    assert_eq!(blocks_after.len(), 0);
}

#[tokio::test]
async fn query_commands_lists_exactly_the_commands_of_qemu_7_2() {
    let qemu = Qemu::bare("query-commands");
    let client = qemu.client().await;

    let mut names: Vec<String> = client
        .execute(QueryCommands)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();

    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qemu-7.2/qmp-commands.txt"
    ))
    .unwrap();
    let mut expected: Vec<String> = fixture.lines().map(str::to_owned).collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn the_whole_schema_decodes() {
    let qemu = Qemu::bare("schema");
    let client = qemu.client().await;

    let schema = client.execute(QueryQmpSchema).await.unwrap();

    let query_status = schema.iter().find(|e| e.name == "query-status").unwrap();
    assert_eq!(query_status.meta_type, "command");
    let device_deleted = schema.iter().find(|e| e.name == "DEVICE_DELETED").unwrap();
    assert_eq!(device_deleted.meta_type, "event");
}

#[tokio::test]
async fn migration_capabilities_and_parameters_are_accepted_as_typed() {
    let qemu = Qemu::bare("migration-settings");
    let client = qemu.client().await;

    client
        .execute(MigrateSetCapabilities::new([("postcopy-ram", true)]))
        .await
        .unwrap();
    client
        .execute(MigrateSetParameters {
            max_bandwidth: Some(33_554_432),
            downtime_limit: Some(30),
            max_postcopy_bandwidth: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let caps = client.execute(QueryMigrateCapabilities).await.unwrap();
    let info = client.execute(QueryMigrate).await.unwrap();

    let postcopy = caps
        .iter()
        .find(|c| c.capability == "postcopy-ram")
        .unwrap();
    assert!(postcopy.state);
    assert_eq!(info, MigrationInfo::default());
}

#[tokio::test]
async fn netdev_add_then_netdev_del() {
    let qemu = Qemu::bare("netdev");
    let client = qemu.client().await;

    client
        .execute(NetdevAdd::new("hubport", "nic-1").property("hubid", 0))
        .await
        .unwrap();
    let duplicate = client
        .execute(NetdevAdd::new("hubport", "nic-1").property("hubid", 0))
        .await
        .unwrap_err();
    client.execute(NetdevDel::new("nic-1")).await.unwrap();

    assert!(
        matches!(duplicate, QmpError::Refused { ref command, ref class, .. }
            if command == "netdev_add" && class == "GenericError"),
        "{duplicate:?}"
    );
}

#[tokio::test]
async fn a_plugged_device_shows_in_query_pci_and_qom_list() {
    let qemu = Qemu::pc("query-pci");
    let client = qemu.client().await;

    client
        .execute(
            DeviceAdd::new("virtio-scsi-pci", "scsi0")
                .bus("pci.0")
                .property("addr", "0x5"),
        )
        .await
        .unwrap();
    let buses = client.execute(QueryPci).await.unwrap();
    let peripherals = client
        .execute(QomList::new("/machine/peripheral"))
        .await
        .unwrap();
    let machine_type = client
        .execute(QomGet::new("/machine", "type"))
        .await
        .unwrap();

    let scsi = buses[0]
        .devices
        .iter()
        .find(|d| d.qdev_id == "scsi0")
        .unwrap();
    assert_eq!((scsi.bus, scsi.slot, scsi.function), (0, 5, 0));
    let scsi_child = peripherals.iter().find(|p| p.name == "scsi0").unwrap();
    assert_eq!(scsi_child.kind, "child<virtio-scsi-pci>");
    assert_eq!(machine_type, serde_json::json!("pc-i440fx-7.2-machine"));
}

#[tokio::test]
async fn balloon_reports_the_guest_memory() {
    let qemu = Qemu::start(
        "balloon",
        &["-machine", "pc", "-accel", "tcg", "-S", "-m", "128"],
    );
    let client = qemu.client().await;
    let without = client.execute(QueryBalloon).await.unwrap_err();
    client
        .execute(DeviceAdd::new("virtio-balloon-pci", "balloon0").bus("pci.0"))
        .await
        .unwrap();

    let before = client.execute(QueryBalloon).await.unwrap();
    client.execute(Balloon::bytes(64 << 20)).await.unwrap();

    assert!(
        matches!(without, QmpError::Refused { ref class, .. } if class == "DeviceNotActive"),
        "{without:?}"
    );
    assert_eq!(before.actual, 128 << 20);
}

#[tokio::test]
async fn query_cpus_fast_reports_the_vcpu_thread() {
    let qemu = Qemu::pc("cpus");
    let client = qemu.client().await;

    let cpus = client.execute(QueryCpusFast).await.unwrap();

    assert_eq!(cpus.len(), 1);
    assert_eq!(cpus[0].cpu_index, 0);
    assert_eq!(cpus[0].target, "x86_64");
    // The thread id is a thread of the QEMU process.
    let task = format!("/proc/{}/task/{}", qemu.child.id(), cpus[0].thread_id);
    assert!(Path::new(&task).exists(), "{task}");
}

#[tokio::test]
async fn qemu_killed_ends_listeners_and_later_commands_with_disconnected() {
    let mut qemu = Qemu::bare("killed");
    let client = qemu.client().await;
    let mut events = client.events();

    qemu.child.kill().unwrap();
    let listener_err = events.next().await.unwrap_err();
    let command_err = client.execute(QueryStatus).await.unwrap_err();

    assert!(
        matches!(listener_err, QmpError::Disconnected { .. }),
        "{listener_err:?}"
    );
    assert!(
        matches!(command_err, QmpError::Disconnected { .. }),
        "{command_err:?}"
    );
}
