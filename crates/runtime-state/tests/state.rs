//! The run directory on a real file system: layout, atomic writes, locks,
//! liveness and cleanup.
#![allow(clippy::disallowed_methods)] // starts a stand-in process for liveness

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use runtime_state::*;

/// A run directory under the temp dir, removed when dropped.
struct TempRun {
    run: RunDir,
}

impl TempRun {
    fn new(test: &str) -> TempRun {
        let root = std::env::temp_dir().join(format!("rs-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        TempRun {
            run: RunDir::open(&root).expect("run dir"),
        }
    }
}

impl Drop for TempRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.run.root());
    }
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn open_creates_ganetis_subdirectories_closed_to_others() {
    let t = TempRun::new("layout");
    for sub in SUBDIRS {
        assert!(t.run.root().join(sub).is_dir(), "{sub}");
    }
    assert_eq!(mode(&t.run.root().join("ctrl")), 0o700);
    assert_eq!(mode(&t.run.root().join("conf")), 0o750);
}

#[test]
fn paths_follow_ganetis_layout() {
    let t = TempRun::new("paths");
    let r = t.run.root();
    assert_eq!(t.run.pid_file("web1"), r.join("pid/web1"));
    assert_eq!(t.run.runtime_file("web1"), r.join("conf/web1.runtime"));
    assert_eq!(t.run.socket("web1", Socket::Qmp), r.join("ctrl/web1.qmp"));
    assert_eq!(
        t.run
            .nic_file("web1", "003fc157-66a8-4e6d-8b7e-ec4f69751396"),
        r.join("nic/web1/003fc157-66a8-4e6d-8b7e-ec4f69751396")
    );
}

#[test]
fn dotdot_name_is_rejected() {
    let t = TempRun::new("badname");
    let err = t.run.lock("../x", LockWait::No).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`../x` is not a usable instance name: it contains `/`"
    );
}

#[test]
fn record_written_is_private_and_reads_back() {
    let t = TempRun::new("write");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/ganeti-runtime/localtime.runtime"),
    )
    .expect("fixture");
    let record = RuntimeFile::parse(std::path::Path::new("x"), &text)
        .expect("parses")
        .record();
    t.run
        .write_record("lt1", &record, Format::Ours)
        .expect("written");
    assert_eq!(mode(&t.run.runtime_file("lt1")), 0o600);
    assert_eq!(
        t.run.read_runtime("lt1").expect("reads"),
        Some(RuntimeFile::Ours(record))
    );
    assert_eq!(t.run.instances().expect("lists"), ["lt1"]);
}

#[test]
fn failed_write_keeps_the_old_file_and_leaves_no_temp() {
    let t = TempRun::new("torn");
    let path = t.run.runtime_file("web1");
    write_atomic(&path, b"old\n", 0o600).expect("first write");
    let err = write_atomic_with(&path, 0o600, |f| {
        use std::io::Write;
        f.write_all(b"half of the new con")?;
        Err(std::io::Error::other("crash in the middle"))
    })
    .unwrap_err();
    assert!(
        matches!(err, StateError::Io { op: "writing", .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("old file"), "old\n");
    let names: Vec<String> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["web1.runtime"]);
}

#[test]
fn second_lock_fails_fast_with_busy() {
    let t = TempRun::new("busy");
    let _held = t.run.lock("web1", LockWait::No).expect("first");
    let err = t.run.lock("web1", LockWait::No).unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance web1 is busy: another operation holds its lock"
    );
}

#[test]
fn waiting_lock_times_out_with_the_deadline() {
    let t = TempRun::new("timeout");
    let _held = t.run.lock("web1", LockWait::No).expect("first");
    let err = t
        .run
        .lock("web1", LockWait::Up(Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(err, StateError::LockTimeout { waited_ms: 50, .. }),
        "{err:?}"
    );
}

#[test]
fn waiting_lock_is_granted_when_released() {
    let t = TempRun::new("handover");
    let held = t.run.lock("web1", LockWait::No).expect("first");
    let run = t.run.clone();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let got = run.lock("web1", LockWait::Up(Duration::from_secs(30)));
        tx.send(got.is_ok()).expect("send");
        got
    });
    drop(held);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
    drop(waiter.join().expect("joins"));
}

#[test]
fn locks_of_different_instances_are_independent() {
    let t = TempRun::new("independent");
    let _a = t.run.lock("a", LockWait::No).expect("a");
    assert!(t.run.lock("b", LockWait::No).is_ok());
}

#[test]
fn liveness_without_pid_file_is_not_running() {
    let t = TempRun::new("nopid");
    assert_eq!(liveness(&t.run, "web1"), Liveness::NotRunning);
}

#[test]
fn liveness_of_a_reused_pid_is_not_this_instance() {
    let t = TempRun::new("reused");
    std::fs::write(t.run.pid_file("web1"), format!("{}\n", std::process::id())).expect("pid file");
    assert_eq!(
        liveness(&t.run, "web1"),
        Liveness::PidReused {
            pid: std::process::id() as i32
        }
    );
}

/// A process whose argv carries `-name NAME -m 64 -smp 1`, like QEMU's,
/// and its pid. Returns once it printed its pid, so its exec is complete;
/// it then stops itself (SIGSTOP), alive with its argv intact until killed.
fn fake_qemu(name: &str) -> (Child, i32) {
    fake_qemu_args(&["-name", name, "-m", "64", "-smp", "1"])
}

/// A stopped process whose argv is `sh` plus `args` (as QEMU's would be).
fn fake_qemu_args(args: &[&str]) -> (Child, i32) {
    use std::io::BufRead;
    let mut child = Command::new("/bin/sh")
        .args(["-c", "echo $$; kill -STOP $$", "sh"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("pid line");
    let pid: i32 = line.trim().parse().expect("a pid");
    assert_eq!(pid, child.id() as i32);
    (Child(child), pid)
}

#[test]
fn liveness_of_a_process_named_as_the_instance_is_running() {
    let t = TempRun::new("running");
    let child = fake_qemu("web1");
    let pid = child.1;
    std::fs::write(t.run.pid_file("web1"), pid.to_string()).expect("pid file");
    assert_eq!(
        liveness(&t.run, "web1"),
        Liveness::Running {
            pid,
            argv: ArgvFacts {
                name: Some("web1".into()),
                memory_mib: Some(64),
                vcpus: Some(1),
                pidfile: None,
            }
        }
    );
}

#[test]
fn cleanup_refuses_a_live_instance() {
    let t = TempRun::new("cleanlive");
    let child = fake_qemu("web1");
    let pid = child.1;
    std::fs::write(t.run.pid_file("web1"), pid.to_string()).expect("pid file");
    let err = t.run.cleanup("web1").unwrap_err();
    assert!(
        matches!(err, StateError::StillRunning { pid: p, .. } if p == pid),
        "{err:?}"
    );
    assert!(t.run.pid_file("web1").exists());
}

#[test]
fn cleanup_removes_every_file_and_quarantines_a_full_chroot() {
    let t = TempRun::new("cleanup");
    let r = &t.run;
    std::fs::write(r.pid_file("web1"), "999999999").expect("pid");
    std::fs::write(r.uid_file("web1"), "2001").expect("uid");
    std::fs::write(r.runtime_file("web1"), "{}").expect("runtime");
    std::fs::write(r.socket("web1", Socket::Qmp), "").expect("qmp");
    std::fs::write(r.shutdown_flag("web1"), "").expect("shutdown");
    std::fs::create_dir_all(r.nic_dir("web1")).expect("nic dir");
    std::fs::write(
        r.nic_file("web1", "003fc157-66a8-4e6d-8b7e-ec4f69751396"),
        "tap0",
    )
    .expect("nic");
    std::fs::create_dir_all(r.chroot_dir("web1")).expect("chroot");
    std::fs::write(r.chroot_dir("web1").join("core"), "x").expect("chroot file");
    std::fs::write(r.socket("web2", Socket::Qmp), "").expect("another instance");

    let done = r.cleanup("web1").expect("cleaned");

    let quarantined: Vec<PathBuf> = std::fs::read_dir(r.root().join("chroot-quarantine"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(quarantined.len(), 1);
    let qname = quarantined[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(qname.starts_with("web1-20"), "{qname}");
    assert_eq!(
        std::fs::read_to_string(quarantined[0].join("core")).expect("kept"),
        "x"
    );
    assert_eq!(done.len(), 9, "{done:?}");
    assert!(!r.chroot_dir("web1").exists());
    assert!(!r.nic_dir("web1").exists());
    assert!(!r.socket("web1", Socket::Qmp).exists());
    assert!(!r.lock_file("web1").exists());
    assert!(r.socket("web2", Socket::Qmp).exists());
    assert_eq!(r.instances().expect("list"), Vec::<String>::new());
}

#[test]
fn cleanup_removes_an_empty_chroot() {
    let t = TempRun::new("emptychroot");
    std::fs::create_dir_all(t.run.chroot_dir("web1")).expect("chroot");
    let done = t.run.cleanup("web1").expect("cleaned");
    assert_eq!(done[0], t.run.chroot_dir("web1"));
    assert_eq!(
        std::fs::read_dir(t.run.root().join("chroot-quarantine"))
            .expect("list")
            .count(),
        0
    );
}

#[test]
fn a_garbled_pid_file_does_not_make_a_live_qemu_look_dead() {
    let t = TempRun::new("garbled");
    let pid_file = t.run.pid_file("web1");
    let pid_path = pid_file.to_str().expect("utf-8");
    let child = fake_qemu_args(&["-name", "web1", "-pidfile", pid_path]);
    std::fs::write(&pid_file, "garbage\n").expect("pid file");

    assert!(matches!(
        liveness(&t.run, "web1"),
        Liveness::Running { pid, .. } if pid == child.1
    ));
    let err = t.run.cleanup("web1").unwrap_err();
    assert!(
        matches!(err, StateError::StillRunning { pid, .. } if pid == child.1),
        "{err}"
    );
    assert!(pid_file.exists(), "cleanup removed the live QEMU's files");
}

#[test]
fn a_process_of_the_same_name_in_another_run_directory_is_not_ours() {
    let t = TempRun::new("othername");
    let _other = fake_qemu_args(&["-name", "web1", "-pidfile", "/elsewhere/pid/web1"]);
    std::fs::write(t.run.pid_file("web1"), "garbage\n").expect("pid file");
    assert_eq!(liveness(&t.run, "web1"), Liveness::NotRunning);
}
