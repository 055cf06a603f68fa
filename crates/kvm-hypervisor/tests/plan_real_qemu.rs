//! Every fixture's plan started for real on this machine's QEMU with `-S`:
//! the argv must be accepted (QEMU answers on its monitor, in `prelaunch`).
//! Needs root (taps, `-runas`) and qemu-system-x86_64 (`cargo xtask ci`
//! installs it). Each test with NICs runs in a network namespace of its own.
#![allow(clippy::disallowed_methods)] // the test runs openssl to make VNC certificates

use std::collections::BTreeMap;
use std::num::NonZeroU8;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use kvm_hypervisor::caps;
use kvm_hypervisor::net::{Tap, TapOptions};
use kvm_hypervisor::process::{ChildStderr, PassFd, spawn_with_fds};
use kvm_hypervisor::qmp::Handshake;
use kvm_hypervisor::spec::InstanceSpec;
use kvm_hypervisor::state::RunDir;
use kvm_hypervisor::{PlanEnv, plan_start};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of `len` bytes; a fake bzImage header when `bzimage`.
fn make_file(path: &Path, len: usize, bzimage: bool) {
    let mut b = vec![0u8; len];
    if bzimage {
        b[0x1f1] = 4;
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = 1;
        b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    }
    std::fs::write(path, b).expect("write file");
}

/// A CA and a server certificate it signed, as QEMU's x509 credentials want.
fn make_vnc_certs(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=kvmhv-test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kvmhv-test",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca-cert.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "server-cert.pem",
    ]);
}

/// Rewrites every host path of the fixture into `scratch` and creates the files.
fn localise(mut spec: Value, scratch: &Path) -> Value {
    let local = |p: &str| scratch.join(p.trim_start_matches('/').replace('/', "_"));
    if let Some(disks) = spec["disks"].as_array_mut() {
        for d in disks {
            if let Some(p) = d["path"].as_str() {
                let l = local(p);
                make_file(&l, 1 << 20, false);
                d["path"] = json!(l);
            }
        }
    }
    let hv = &mut spec["hvparams"];
    for key in [
        "cdrom_image_path",
        "cdrom2_image_path",
        "floppy_image_path",
        "initrd_path",
    ] {
        if let Some(p) = hv[key].as_str().filter(|p| p.starts_with('/')) {
            let l = local(p);
            make_file(&l, 1 << 20, false);
            hv[key] = json!(l);
        }
    }
    if let Some(p) = hv["kernel_path"].as_str().filter(|p| p.starts_with('/')) {
        let l = local(p);
        make_file(&l, 16384, true);
        hv["kernel_path"] = json!(l);
    }
    if let Some(p) = hv["vnc_x509_path"].as_str().filter(|p| p.starts_with('/')) {
        let l = local(p);
        make_vnc_certs(&l);
        hv["vnc_x509_path"] = json!(l);
    }
    spec
}

/// Plans `fixture`, starts it with `-S`, and returns the status QEMU reports.
async fn start_paused(fixture: &str) -> String {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("kvmhv-real-{}-{fixture}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).expect("scratch");
    let text =
        std::fs::read_to_string(root().join("fixtures/plans").join(fixture)).expect("fixture");
    let spec_json = localise(serde_json::from_str(&text).expect("json"), &scratch.0);
    let spec = InstanceSpec::from_value(&spec_json)
        .expect("valid spec")
        .spec;
    let run = RunDir::open(scratch.0.join("run")).expect("run dir");
    if spec.hvparams().use_chroot() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(run.chroot_dir(spec.name().as_str()))
            .expect("chroot dir");
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-caps");
    let caps = caps::capabilities(Path::new(QEMU), &cache)
        .await
        .expect("capabilities")
        .caps;
    let env = PlanEnv {
        kvm_usable: false,
        vhost_net: false,
        interfaces: BTreeMap::from([("eth0".to_owned(), vec!["127.0.0.1".parse().expect("ip")])]),
        block_devices: Vec::new(),
        pool_user: Some("nobody".into()),
        spare_root_ports: 2,
        spice_cert_dir: None,
        ..PlanEnv::default()
    };
    let plan = plan_start(&spec, &caps, &run, &env).expect("plans");

    let listeners: Vec<(i32, std::os::unix::net::UnixListener)> = plan
        .listen_sockets
        .iter()
        .map(|s| {
            (
                s.fd,
                std::os::unix::net::UnixListener::bind(&s.path).expect("bind monitor socket"),
            )
        })
        .collect();
    let taps: Vec<(Vec<i32>, Tap)> = plan
        .taps
        .iter()
        .map(|t| {
            let options = TapOptions {
                name: None,
                vnet_hdr: t.vnet_hdr,
                queues: NonZeroU8::new(u8::try_from(t.fds.len()).expect("queues"))
                    .expect("at least one"),
                vhost: false,
            };
            (t.fds.clone(), Tap::open(&options).expect("tap opens"))
        })
        .collect();
    let mut pass: Vec<PassFd<'_>> = listeners
        .iter()
        .map(|(n, l)| PassFd {
            target: *n,
            fd: l.as_fd(),
        })
        .collect();
    for (numbers, tap) in &taps {
        for (n, fd) in numbers.iter().zip(tap.fds()) {
            pass.push(PassFd {
                target: *n,
                fd: fd.as_fd(),
            });
        }
    }
    let mut child = spawn_with_fds(
        Path::new(&plan.argv[0]),
        &plan.argv[1..],
        &pass,
        ChildStderr::Piped,
    )
    .expect("spawn");
    drop(pass);
    let qmp_path = plan.listen_sockets[0].path.clone();
    drop(listeners);
    drop(taps);
    let status = async {
        let qmp = Handshake::connect(&qmp_path).await?.negotiate().await?;
        let status = qmp.execute_raw("query-status", Value::Null).await?;
        let _ = qmp.execute_raw("quit", Value::Null).await;
        Ok::<_, kvm_hypervisor::qmp::QmpError>(
            status["status"].as_str().unwrap_or_default().to_owned(),
        )
    }
    .await;
    if status.is_err() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    match status {
        Ok(s) => s,
        Err(e) => panic!(
            "QEMU refused the plan of {fixture}: {e}\nstderr: {stderr}\nargv: {}",
            plan.argv.join(" ")
        ),
    }
}

/// Runs `start_paused` in a thread with a network namespace of its own, so
/// the taps it opens vanish with it.
fn in_netns(fixture: &'static str) -> String {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare netns (root needed)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(start_paused(fixture))
    })
    .join()
    .expect("test thread")
}

fn on_host(fixture: &'static str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(start_paused(fixture))
}

#[test]
fn defaults_is_accepted() {
    assert_eq!(in_netns("defaults.json"), "prelaunch");
}

#[test]
fn kernel_boot_with_serial_console_is_accepted() {
    assert_eq!(in_netns("kernel-serial.json"), "prelaunch");
}

#[test]
fn cdrom_boot_is_accepted() {
    assert_eq!(in_netns("cdrom-boot.json"), "prelaunch");
}

#[test]
fn scsi_is_accepted() {
    assert_eq!(in_netns("scsi.json"), "prelaunch");
}

#[test]
fn ide_is_accepted() {
    assert_eq!(in_netns("ide.json"), "prelaunch");
}

#[test]
fn many_nics_with_multiqueue_are_accepted() {
    assert_eq!(in_netns("multiqueue.json"), "prelaunch");
}

#[test]
fn vnc_with_tls_and_password_is_accepted() {
    assert_eq!(on_host("vnc-tls.json"), "prelaunch");
}

#[test]
fn spice_is_accepted() {
    assert_eq!(on_host("spice.json"), "prelaunch");
}

#[test]
fn security_user_with_chroot_is_accepted() {
    assert_eq!(in_netns("security-user-chroot.json"), "prelaunch");
}

#[test]
fn security_pool_with_chroot_is_accepted() {
    assert_eq!(in_netns("security-pool.json"), "prelaunch");
}

#[test]
fn q35_is_accepted() {
    assert_eq!(in_netns("q35.json"), "prelaunch");
}
