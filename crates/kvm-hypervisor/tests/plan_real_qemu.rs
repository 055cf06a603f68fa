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
async fn start_paused(fixture: &str) -> Started {
    // Two tests may start the same fixture at once: a scratch of each call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "kvmhv-real-{}-{call}-{fixture}",
        std::process::id()
    )));
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
        let layout = guest_layout(&qmp).await?;
        let _ = qmp.execute_raw("quit", Value::Null).await;
        Ok::<_, kvm_hypervisor::qmp::QmpError>(Started {
            status: status["status"].as_str().unwrap_or_default().to_owned(),
            layout,
        })
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
fn in_netns(fixture: &'static str) -> Started {
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

fn on_host(fixture: &'static str) -> Started {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(start_paused(fixture))
}

#[test]
fn defaults_is_accepted() {
    assert_eq!(in_netns("defaults.json").status, "prelaunch");
}

#[test]
fn kernel_boot_with_serial_console_is_accepted() {
    assert_eq!(in_netns("kernel-serial.json").status, "prelaunch");
}

#[test]
fn cdrom_boot_is_accepted() {
    assert_eq!(in_netns("cdrom-boot.json").status, "prelaunch");
}

#[test]
fn scsi_is_accepted() {
    assert_eq!(in_netns("scsi.json").status, "prelaunch");
}

#[test]
fn ide_is_accepted() {
    assert_eq!(in_netns("ide.json").status, "prelaunch");
}

#[test]
fn many_nics_with_multiqueue_are_accepted() {
    assert_eq!(in_netns("multiqueue.json").status, "prelaunch");
}

#[test]
fn security_user_with_chroot_is_accepted() {
    assert_eq!(in_netns("security-user-chroot.json").status, "prelaunch");
}

#[test]
fn security_pool_with_chroot_is_accepted() {
    assert_eq!(in_netns("security-pool.json").status, "prelaunch");
}

#[test]
fn q35_is_accepted() {
    assert_eq!(in_netns("q35.json").status, "prelaunch");
}

/// What a started plan shows the guest.
struct Started {
    status: String,
    layout: Layout,
}

/// The guest-visible machine: PCI functions (`SS.F vendor:device`) and the
/// drives, ports and USB devices QOM shows (sorted driver names).
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    pci: Vec<String>,
    legacy: Vec<String>,
}

async fn guest_layout(
    qmp: &kvm_hypervisor::qmp::Client,
) -> Result<Layout, kvm_hypervisor::qmp::QmpError> {
    let buses = qmp.execute_raw("query-pci", Value::Null).await?;
    let mut pci = Vec::new();
    for bus in buses.as_array().into_iter().flatten() {
        for d in bus["devices"].as_array().into_iter().flatten() {
            pci.push(format!(
                "{:02x}.{} {:04x}:{:04x}",
                d["slot"].as_u64().unwrap_or(0),
                d["function"].as_u64().unwrap_or(0),
                d["id"]["vendor"].as_u64().unwrap_or(0),
                d["id"]["device"].as_u64().unwrap_or(0)
            ));
        }
    }
    let qtree = qmp
        .execute_raw(
            "human-monitor-command",
            serde_json::json!({"command-line": "info qtree"}),
        )
        .await?;
    let mut legacy = Vec::new();
    for line in qtree.as_str().unwrap_or_default().lines() {
        if let Some(rest) = line.trim().strip_prefix("dev: ") {
            let driver = rest.split(',').next().unwrap_or_default();
            let wanted = [
                "floppy",
                "ide-cd",
                "ide-hd",
                "scsi-cd",
                "scsi-hd",
                "isa-parallel",
                "isa-serial",
                "usb-tablet",
                "usb-mouse",
                "usb-kbd",
            ];
            if wanted.contains(&driver) {
                legacy.push(driver.to_owned());
            }
        }
    }
    legacy.sort();
    Ok(Layout { pci, legacy })
}

// The guest machines Ganeti's argv gives on QEMU 7.2 (reference §3, §5):
// the PIIX3 functions with the UHCI of `-usb` at 01.2, QEMU's VGA at 02.0,
// then what QEMU places itself in Ganeti's argv order (sound card, SCSI
// controller, balloon, virtio-blk CD-ROMs, virtio-serials), then disks and
// NICs from slot 0xc (an IDE disk takes its slot too); the empty floppy
// drive, the parallel port and, unless an IDE or SCSI drive is given, the
// empty IDE CD-ROM of QEMU's defaults.

const PIIX: [&str; 5] = [
    "00.0 8086:1237",
    "01.0 8086:7000",
    "01.1 8086:7010",
    "01.2 8086:7020",
    "01.3 8086:7113",
];
const STD_VGA: &str = "02.0 1234:1111";
const BALLOON: &str = "1af4:1002";
const VIRTIO_BLK: &str = "1af4:1001";
const VIRTIO_NET: &str = "1af4:1000";

fn pci(extra: &[String]) -> Vec<String> {
    PIIX.iter()
        .map(|s| (*s).to_owned())
        .chain(extra.iter().cloned())
        .collect()
}

fn at(slot: &str, id: &str) -> String {
    format!("{slot} {id}")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn defaults_have_ganetis_machine() {
    let l = in_netns("defaults.json").layout;
    assert_eq!(
        l.pci,
        pci(&[
            STD_VGA.into(),
            at("03.0", BALLOON),
            at("0c.0", VIRTIO_BLK),
            at("0d.0", VIRTIO_NET)
        ])
    );
    assert_eq!(
        l.legacy,
        names(&["floppy", "ide-cd", "isa-parallel", "isa-serial"])
    );
}

#[test]
fn virtio_cdroms_follow_the_balloon_as_in_ganetis_machine() {
    let l = in_netns("cdrom-boot.json").layout;
    assert_eq!(
        l.pci,
        pci(&[
            STD_VGA.into(),
            at("03.0", BALLOON),
            at("04.0", VIRTIO_BLK),
            at("05.0", VIRTIO_BLK),
            at("0c.0", VIRTIO_BLK),
        ])
    );
    assert_eq!(
        l.legacy,
        names(&["floppy", "ide-cd", "isa-parallel", "isa-serial"])
    );
}

#[test]
fn scsi_controller_precedes_the_balloon_as_in_ganetis_machine() {
    let l = in_netns("scsi.json").layout;
    assert_eq!(
        l.pci,
        pci(&[STD_VGA.into(), at("03.0", "1af4:1004"), at("04.0", BALLOON)])
    );
    // SCSI drives: QEMU adds no default CD-ROM.
    assert_eq!(
        l.legacy,
        names(&[
            "floppy",
            "isa-parallel",
            "isa-serial",
            "scsi-cd",
            "scsi-hd",
            "scsi-hd"
        ])
    );
}

#[test]
fn an_ide_disk_takes_ganetis_pci_slot_so_the_nic_sits_where_ganetis_does() {
    let l = in_netns("ide.json").layout;
    assert_eq!(
        l.pci,
        pci(&[STD_VGA.into(), at("03.0", BALLOON), at("0d.0", "8086:100e")])
    );
    assert_eq!(
        l.legacy,
        names(&["floppy", "ide-hd", "isa-parallel", "isa-serial"])
    );
}

#[test]
fn vnc_with_tls_and_password_is_accepted_with_ganetis_tablet_on_the_uhci() {
    // One test per fixture that listens on the host: its port is fixed.
    let started = on_host("vnc-tls.json");
    assert_eq!(started.status, "prelaunch");
    let l = started.layout;
    assert_eq!(l.pci, pci(&[STD_VGA.into(), at("03.0", BALLOON)]));
    assert_eq!(
        l.legacy,
        names(&[
            "floppy",
            "ide-cd",
            "isa-parallel",
            "isa-serial",
            "usb-tablet"
        ])
    );
}

#[test]
fn spice_with_sound_and_the_guest_agent_is_accepted_with_ganetis_machine() {
    let started = on_host("spice.json");
    assert_eq!(started.status, "prelaunch");
    let l = started.layout;
    assert_eq!(
        l.pci,
        pci(&[
            at("02.0", "1b36:0100"),
            at("03.0", "8086:2668"),
            at("04.0", BALLOON),
            at("05.0", "1af4:1003"),
            at("06.0", "1af4:1003"),
        ])
    );
    // No tablet with SPICE: Ganeti adds it for VNC only.
    assert_eq!(
        l.legacy,
        names(&["floppy", "ide-cd", "isa-parallel", "isa-serial"])
    );
}
