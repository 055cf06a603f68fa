//! Project automation (`cargo xtask …`): everything a developer or CI runs,
//! with what it needs installed first.
#![allow(clippy::disallowed_methods)] // xtask drives cargo, apt and the binary
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench_hotplug;
mod bench_migrate;
mod bench_start;
mod dist;
mod e2e;
mod e2e_ganeti;
mod e2e_hotplug;
mod e2e_migration;
mod e2e_persist;
mod e2e_ssh;
mod faults;
mod ganeti_lab;
mod load;
mod timing;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci     install what the tests need, then fmt --check, clippy -D warnings,
         every test (the tidy test of the crate graph and bounded fuzzing
         included), the end-to-end scenarios, the fault-injection and load
         suites, the Ganeti cluster, docs -D warnings
  demo   the main job: validate and show the bundled demo instance spec
  e2e    the end-to-end scenarios: the real binary and a real guest inside a
         network namespace (root); part of `ci` (KVMH_E2E_ONLY=migration:
         only the migration scenarios, ssh and Ganeti's included; =ssh,
         =ganeti, =persist: only those)
  faults fault injection: the CLI killed, QEMU killed or stopped at each
         step boundary of start, stop, reboot and hotplug, and a full run
         directory; after each, info tells the truth, the next command
         completes or undoes, nothing is left; prints a table (part of `ci`)
  ganeti real Ganeti 3.0 clusters in namespaces (Debian's `ganeti`
         package) whose `kvm` hypervisor is our class and binary: one node
         (verify, add, start, console, hotplug, balloon, soft and hard
         reboot, a power-off seen by kvmd, shutdown, remove), two (live
         migration both ways, postcopy, failover), and mixed with Ganeti's
         own KVM layer (instances moving both ways) (part of `ci`)
  load   20 instances started and stopped concurrently, then 200 start /
         hotplug add-disk / stop cycles, the monitor daemon watching: no
         failure, no descriptor leaked by the monitor, an empty run
         directory (part of `ci`)
  dist [--debug]
         the binary (release build), its man pages, bash/zsh/fish
         completions, the systemd units, README, ARCHITECTURE and LICENSE,
         laid out under a prefix in target/dist/kvm-hypervisor-VERSION-ARCH-linux
         and packed as .tar.gz (a debug build of it is part of `ci`)
  guest  build (once, cached in target/guest) the test guest: a Debian cloud
         kernel and a busybox initramfs whose /init prints GLAB-READY on ttyS0,
         powers off on the ACPI power button and runs commands sent on ttyS0
  bench plan
         `kvm-hypervisor plan` wall time with a warm capability cache, next to
         one `qemu-system-x86_64 --help` spawn (what Ganeti pays per probe),
         interleaved, medians of 30 runs each; then the criterion benches
  bench start
         `kvm-hypervisor start` (warm cache) against a bare QEMU with the same
         argv (exec -> cont answered), 20 interleaved pairs; `stop --force`;
         graceful stop of the test guest
  bench hotplug
         `kvm-hypervisor hotplug add-disk` / `del-disk` against the raw QMP
         floor (same commands, same DEVICE_DELETED wait), 15 interleaved
         pairs on one running TCG guest (KVMH_BENCH_LEAN=1: a lean machine)
  bench migrate
         a live migration with our five commands against the same migration
         done by hand (bare QEMUs, raw QMP), 10 interleaved pairs of an idle
         TCG guest going back and forth between two run directories
         (KVMH_BENCH_DIRTY=N: a guest rewriting N copies of busybox in RAM)
  fuzz [EXECUTIONS]
         every parser of outside input (QMP lines, runtime files, instance
         specs in JSON and TOML, hvparams, CPU masks, storage URIs, QEMU help
         texts) under the mutation fuzzer of `testkit`, EXECUTIONS per target
         (default 1000000) from a fresh random seed, release build; prints
         executions, crashes and hangs per target (a bounded run of the same
         targets is part of `ci`)
  capture-fixtures [QEMU]
         record this machine's QEMU help outputs under fixtures/qemu/<version>/
         (never edit those files by hand; re-run this instead)
";

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("demo") => demo(),
        Some("e2e") => run_e2e(),
        Some("faults") => run_faults(),
        Some("load") => run_load(),
        Some("ganeti") => run_ganeti(),
        Some("dist") => dist::dist(std::env::args().nth(2).as_deref() != Some("--debug")).map(drop),
        Some("guest") => guest().map(|g| {
            println!("kernel {}", g.kernel.display());
            println!("initrd {}", g.initrd.display());
        }),
        Some("bench") => match std::env::args().nth(2).as_deref() {
            Some("plan") => bench_plan(),
            Some("start") => bench_start(),
            Some("hotplug") => bench_hotplug(),
            Some("migrate") => bench_migrate(),
            other => bail!("unknown benchmark {other:?}; known: plan, start, hotplug, migrate"),
        },
        Some("capture-fixtures") => capture_fixtures(std::env::args().nth(2)),
        Some("fuzz") => fuzz(std::env::args().nth(2)),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    // sbin directories too: a CI runner's PATH may lack them.
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}

/// Installs the Debian packages the tests need when their programs are missing.
fn ensure_packages() -> Result<()> {
    install_missing(&[("qemu-system-x86_64", "qemu-system-x86")])
}

fn ci() -> Result<()> {
    ensure_packages()?;
    // systemd-analyze checks the shipped units (the CLI tests).
    install_missing(&[
        ("ip", "iproute2"),
        ("openssl", "openssl"),
        ("systemd-analyze", "systemd"),
    ])?;
    // Tests that boot a real guest need it built first.
    guest()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run("cargo test", cargo().args(["test", "--workspace"]))?;
    // Every leaf crate packs and builds on its own, as crates.io gets it.
    for leaf in [
        "qmp-protocol",
        "qemu-cmdline",
        "device-slots",
        "runtime-state",
        "tap-netdev",
        "hvparam-validation",
    ] {
        run(
            &format!("cargo publish --dry-run -p {leaf}"),
            cargo().args([
                "publish",
                "--dry-run",
                "--allow-dirty",
                "--quiet",
                "-p",
                leaf,
            ]),
        )?;
    }
    run_e2e()?;
    run_faults()?;
    run_load()?;
    run_ganeti()?;
    // The layout of a distribution (a debug build: the release build
    // would double CI's build time).
    dist::dist(false)?;
    run(
        "cargo doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    eprintln!("xtask: ci passed");
    Ok(())
}

fn demo() -> Result<()> {
    ensure_packages()?;
    let g = guest()?;
    run(
        "cargo build -p kvm-hypervisor-cli",
        cargo().args(["build", "--quiet", "-p", "kvm-hypervisor-cli"]),
    )?;
    let bin = root().join("target/debug/kvm-hypervisor");
    let dir = root().join("target/demo");
    let _ = std::fs::remove_dir_all(dir.join("run"));
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk0.img");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let spec = dir.join("demo1.json");
    std::fs::write(&spec, serde_json::to_string_pretty(&demo_spec(&g, &disk))?)?;
    let kvmh = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.arg("--run-dir").arg(dir.join("run")).args(args);
        c
    };
    println!("$ kvm-hypervisor start {} --paused", spec.display());
    run(
        "kvm-hypervisor start",
        kvmh(&[
            "start",
            spec.to_str().context("utf-8 path")?,
            "--paused",
            "--cache-dir",
        ])
        .arg(dir.join("cache")),
    )?;
    // Attach to the serial console before the guest runs, as a console
    // client would, then let it run: the whole boot is seen.
    let mut console = std::os::unix::net::UnixStream::connect(dir.join("run/ctrl/demo1.serial"))?;
    console.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let mut reader = std::io::BufReader::new(console.try_clone()?);
    run(
        "kvm-hypervisor qmp cont",
        kvmh(&["qmp", "--instance", "demo1", "cont"]).stdout(std::process::Stdio::null()),
    )?;
    let read_until = |reader: &mut std::io::BufReader<std::os::unix::net::UnixStream>,
                      marker: &str|
     -> Result<()> {
        use std::io::BufRead;
        loop {
            let mut line = String::new();
            if reader
                .read_line(&mut line)
                .context("reading the serial console (no output for 120 s)")?
                == 0
            {
                bail!("the serial console closed before `{marker}`");
            }
            let line = line.trim_end();
            if !line.is_empty() {
                println!("console| {line}");
            }
            if line.contains(marker) {
                return Ok(());
            }
        }
    };
    read_until(&mut reader, "GLAB-READY")?;
    use std::io::Write;
    console.write_all(b"uname -sr; free -m | head -2\n")?;
    read_until(&mut reader, "GLAB cmd-end")?;
    println!("\n$ kvm-hypervisor info demo1");
    run("kvm-hypervisor info", &mut kvmh(&["info", "demo1"]))?;
    println!("\n$ kvm-hypervisor stop demo1");
    run("kvm-hypervisor stop", &mut kvmh(&["stop", "demo1"]))?;
    read_until(&mut reader, "GLAB powerbutton").ok();
    println!("\n$ kvm-hypervisor list");
    run("kvm-hypervisor list", &mut kvmh(&["list"]))?;
    Ok(())
}

/// Whether this CPU can run KVM guests natively (no vmx/svm: a nested or
/// emulated KVM that cannot boot the guest in useful time, so use TCG).
fn kvm_can_boot() -> bool {
    std::path::Path::new("/dev/kvm").exists()
        && std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| {
                c.lines()
                    .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
            })
            .unwrap_or(false)
}

fn demo_spec(g: &Guest, disk: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "name": "demo1",
        "uuid": "0d5e4a52-5a3c-4d6e-9f0b-6a1d2c3b4e5f",
        "memory": 256, "min_memory": 128, "vcpus": 1,
        "hvparams": {
            "kvm_path": "/usr/bin/qemu-system-x86_64",
            "kernel_path": g.kernel, "initrd_path": g.initrd,
            "root_path": "/dev/ram0", "kernel_args": "quiet panic=-1", "serial_speed": 115200,
            "kvm_flag": if kvm_can_boot() { "enabled" } else { "disabled" },
            "machine_version": "pc-i440fx-7.2", "cpu_type": "qemu64",
            "vhost_net": false, "migration_bandwidth": 1000
        },
        "disks": [{"uuid": "7c079136-2573-4112-82d0-0d3d2aa90d8f", "path": disk, "size": 64, "name": "disk0"}]
    })
}

/// Records what `qemu` says about itself, for the offline capability parsers' tests.
fn capture_fixtures(qemu: Option<String>) -> Result<()> {
    let qemu = qemu.unwrap_or_else(|| "qemu-system-x86_64".into());
    let output = |args: &[&str]| -> Result<String> {
        let out = Command::new(&qemu)
            .args(args)
            .output()
            .with_context(|| format!("running {qemu} {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{qemu} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = output(&["--version"])?;
    let number = version
        .split("version ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no version in --version output")?;
    let major_minor: String = number.split('.').take(2).collect::<Vec<_>>().join(".");
    let dir = root().join("fixtures/qemu").join(&major_minor);
    std::fs::create_dir_all(&dir)?;
    let files = [
        ("version.txt", vec!["--version"]),
        ("help.txt", vec!["--help"]),
        ("machine-help.txt", vec!["-machine", "help"]),
        ("device-help.txt", vec!["-device", "help"]),
    ];
    for (file, args) in files {
        let text = if file == "version.txt" {
            version.clone()
        } else {
            output(&args)?
        };
        std::fs::write(dir.join(file), text)?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_run(cmd: &mut Command) -> Result<std::time::Duration> {
    let start = std::time::Instant::now();
    let out = cmd.output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn bench_plan() -> Result<()> {
    ensure_packages()?;
    run(
        "cargo build --release -p kvm-hypervisor-cli",
        cargo().args(["build", "--release", "--quiet", "-p", "kvm-hypervisor-cli"]),
    )?;
    let bin = root().join("target/release/kvm-hypervisor");
    let cache = root().join("target/bench-caps");
    let spec = root().join("fixtures/plans/multiqueue.json");
    let plan_cmd = || {
        let mut c = Command::new(&bin);
        c.arg("plan").arg(&spec).arg("--cache-dir").arg(&cache);
        c
    };
    time_run(&mut plan_cmd())?; // warms the cache
    let (mut plans, mut helps) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        plans.push(time_run(&mut plan_cmd())?);
        helps.push(time_run(Command::new("qemu-system-x86_64").arg("--help"))?);
    }
    let (p, h) = (median(plans), median(helps));
    println!(
        "kvm-hypervisor plan (warm cache), median of 30: {:.2} ms",
        p.as_secs_f64() * 1e3
    );
    println!(
        "qemu-system-x86_64 --help, median of 30:        {:.2} ms",
        h.as_secs_f64() * 1e3
    );
    println!(
        "Ganeti spawns QEMU for probing about 6 times per start: {:.1} ms",
        6.0 * h.as_secs_f64() * 1e3
    );
    run(
        "cargo bench -p kvm-hypervisor --bench plan",
        cargo().args([
            "bench",
            "-p",
            "kvm-hypervisor",
            "--bench",
            "plan",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
        ]),
    )
}

/// The test guest's files.
pub(crate) struct Guest {
    kernel: PathBuf,
    initrd: PathBuf,
}

fn sh(what: &str, script: &str) -> Result<()> {
    run(what, Command::new("sh").args(["-euc", script]))
}

fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the test guest once; later calls return the cached files.
fn guest() -> Result<Guest> {
    let dir = root().join("target/guest");
    let init = root().join("xtask/guest/init");
    let guest = Guest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.gz"),
    };
    let stamp = dir.join("init.stamp");
    let init_text = std::fs::read_to_string(&init).context("reading xtask/guest/init")?;
    if guest.kernel.is_file()
        && guest.initrd.is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(init_text.as_str())
    {
        return Ok(guest);
    }
    std::fs::create_dir_all(&dir)?;
    let wanted = [
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("gzip", "gzip"),
    ];
    install_missing(&wanted)?;
    if !output_of(Command::new("busybox").arg("--list"))?
        .lines()
        .any(|l| l == "acpid")
    {
        install(&["busybox-static"])?;
    }
    let kroot = dir.join("kroot");
    if !kroot.join("boot").is_dir() {
        let depends = |_: ()| {
            output_of(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))
        };
        let mut text = depends(()).unwrap_or_default();
        if !text.contains("Depends: linux-image-") {
            run(
                "apt-get update",
                Command::new("apt-get").args(["update", "-qq"]),
            )?;
            text = depends(())?;
        }
        let pkg = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| {
                p.starts_with("linux-image-")
                    && p.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
            })
            .context("no linux-image-cloud-amd64 dependency found")?
            .to_owned();
        let debs = dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        run(
            &format!("apt-get download {pkg}"),
            Command::new("apt-get")
                .args(["download", &pkg])
                .current_dir(&debs),
        )?;
        let _ = std::fs::remove_dir_all(&kroot);
        sh(
            "unpacking the kernel",
            &format!(
                "dpkg-deb -x {}/{pkg}_*.deb {}",
                debs.display(),
                kroot.display()
            ),
        )?;
    }
    sh(
        "copying the kernel",
        &format!(
            "cp {}/boot/vmlinuz-* {}",
            kroot.display(),
            guest.kernel.display()
        ),
    )?;
    let script = format!(
        r#"KROOT={kroot}; OUT={out}; INIT={init}
KVER=$(ls "$KROOT/lib/modules")
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/bin" "$ST/dev" "$ST/proc" "$ST/sys" "$ST/lib/modules" "$ST/etc"
cp "$(command -v busybox)" "$ST/bin/busybox"
ln -s busybox "$ST/bin/sh"
cp "$INIT" "$ST/init"; chmod 755 "$ST/init"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci          virtio_blk failover net_failover virtio_net virtio_balloon          scsi_common scsi_mod virtio_scsi sd_mod button evdev; do
  f=$(find "$KROOT/lib/modules/$KVER" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
  case "$f" in *.xz) xz -dc "$f" > "$ST/lib/modules/$m.ko" ;; "") ;; *) cp "$f" "$ST/lib/modules/" ;; esac
done
mknod -m 600 "$ST/dev/console" c 5 1
(cd "$ST" && find . | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > "$OUT.tmp"
mv "$OUT.tmp" "$OUT""#,
        kroot = kroot.display(),
        out = guest.initrd.display(),
        init = init.display(),
    );
    sh("building the initramfs", &script)?;
    std::fs::write(&stamp, init_text)?;
    Ok(guest)
}

fn install(packages: &[&str]) -> Result<()> {
    if !have("apt-get") {
        bail!("missing {packages:?} and no apt-get to install them with");
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("apt-get install {}", packages.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn install_missing(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(p, _)| !have(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        install(&missing)
    }
}

/// What the e2e, fault and load suites need: packages, `ip`, the test
/// guest and the debug binary.
fn lab_ready() -> Result<Guest> {
    ensure_packages()?;
    install_missing(&[
        ("ip", "iproute2"),
        ("openssl", "openssl"),
        ("ssh", "openssh-client"),
        ("sshd", "openssh-server"),
    ])?;
    let guest = guest()?;
    run(
        "cargo build -p kvm-hypervisor-cli",
        cargo().args(["build", "--quiet", "-p", "kvm-hypervisor-cli"]),
    )?;
    Ok(guest)
}

/// What a benchmark needs: packages, the test guest, the release binary.
fn bench_ready() -> Result<Guest> {
    ensure_packages()?;
    let guest = guest()?;
    run(
        "cargo build --release -p kvm-hypervisor-cli",
        cargo().args(["build", "--release", "--quiet", "-p", "kvm-hypervisor-cli"]),
    )?;
    Ok(guest)
}

/// Writes `dir/NAME.json`: the demo spec named `name` with a 64 MiB disk
/// `dir/NAME.img`, as `adjust` leaves it.
fn bench_spec(
    g: &Guest,
    dir: &Path,
    name: &str,
    adjust: impl FnOnce(&mut serde_json::Value),
) -> Result<PathBuf> {
    let disk = dir.join(format!("{name}.img"));
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let mut spec = demo_spec(g, &disk);
    spec["name"] = serde_json::json!(name);
    adjust(&mut spec);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&spec)?)?;
    Ok(path)
}

fn run_e2e() -> Result<()> {
    let guest = lab_ready()?;
    let accel = if kvm_can_boot() {
        "enabled"
    } else {
        "disabled"
    };
    e2e::e2e(guest, root().join("target/debug/kvm-hypervisor"), accel)
}

fn run_faults() -> Result<()> {
    let guest = lab_ready()?;
    faults::faults(
        guest,
        root().join("target/debug/kvm-hypervisor"),
        "disabled",
    )
}

fn run_ganeti() -> Result<()> {
    let guest = lab_ready()?;
    install_missing(&[
        ("gnt-cluster", "ganeti"),
        ("socat", "socat"),
        ("tmux", "tmux"),
        ("unshare", "util-linux"),
    ])?;
    if !Path::new("/usr/share/ganeti/os/noop").exists() {
        install(&["ganeti-os-noop"])?;
    }
    ganeti_lab::ganeti(
        &guest.kernel,
        &guest.initrd,
        &root().join("target/debug/kvm-hypervisor"),
    )
}

fn run_load() -> Result<()> {
    let guest = lab_ready()?;
    load::load(
        guest,
        root().join("target/debug/kvm-hypervisor"),
        "disabled",
    )
}

fn bench_start() -> Result<()> {
    let g = bench_ready()?;
    let dir = bench_dir("start");
    let _ = std::fs::remove_dir_all(dir.join("run"));
    std::fs::create_dir_all(&dir)?;
    // The start is measured without the balloon's wait on free memory.
    let path = bench_spec(&g, &dir, "bench1", |spec| {
        spec["min_memory"] = serde_json::json!(256);
    })?;
    bench_start::bench_start(
        &root().join("target/release/kvm-hypervisor"),
        &path,
        &dir.join("run"),
        &dir.join("cache"),
        20,
    )
}

/// Where a benchmark keeps its run directory, images and cache. On a real
/// host the run directory (/run) is a tmpfs, so the benchmarks use one too:
/// `KVMH_BENCH_DIR`, else `/dev/shm/kvmh-bench-NAME`, else `target/`.
fn bench_dir(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KVMH_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.join(format!("kvmh-bench-{name}"));
    }
    root().join(format!("target/bench-{name}"))
}

/// `cargo xtask fuzz`: the fuzz targets of every crate, long, in release.
fn fuzz(executions: Option<String>) -> Result<()> {
    let executions = executions.unwrap_or_else(|| "1000000".into());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos()
        % u128::from(u64::MAX);
    eprintln!("xtask: fuzzing, {executions} executions per target, seed {seed}");
    let out = cargo()
        .args([
            "test",
            "--release",
            "--workspace",
            "fuzz_",
            "--",
            "--nocapture",
        ])
        .env("KVMH_FUZZ_ITERATIONS", &executions)
        .env("KVMH_FUZZ_SEED", seed.to_string())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("fuzz ")).collect();
    for l in &lines {
        println!("{l}");
    }
    let total = |word: &str| -> u64 {
        lines
            .iter()
            .filter_map(|l| {
                let before = l.split(&format!(" {word}")).next()?;
                before.rsplit([' ', ',']).next()?.parse::<u64>().ok()
            })
            .sum()
    };
    println!(
        "fuzz total: {} targets, {} executions, {} crashes, {} hangs (seed {seed})",
        lines.len(),
        total("executions"),
        total("crashes"),
        total("hangs")
    );
    if !out.status.success() {
        bail!("a fuzz target failed (findings in target/fuzz-findings/):\n{stderr}");
    }
    Ok(())
}

fn bench_hotplug() -> Result<()> {
    let g = bench_ready()?;
    let dir = bench_dir("hotplug");
    let _ = std::fs::remove_dir_all(dir.join("run"));
    std::fs::create_dir_all(&dir)?;
    let path = bench_spec(&g, &dir, "benchhp1", |spec| {
        // KVMH_BENCH_LEAN=1: a lean machine (no UHCI polling under TCG).
        if std::env::var_os("KVMH_BENCH_LEAN").is_some() {
            spec["hvparams"]["lean_machine"] = serde_json::json!(true);
        }
    })?;
    bench_hotplug::bench_hotplug(
        &root().join("target/release/kvm-hypervisor"),
        &path,
        &dir,
        &dir.join("cache"),
        15,
    )
}

fn bench_migrate() -> Result<()> {
    let g = bench_ready()?;
    let dir = bench_dir("migrate");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut specs = Vec::new();
    for name in ["benchmig0", "benchmig1"] {
        specs.push(bench_spec(&g, &dir, name, |spec| {
            spec["min_memory"] = serde_json::json!(256);
            // KVMH_BENCH_DIRTY=N: the guest rewrites N copies of busybox in
            // RAM in a loop.
            if let Some(n) = std::env::var("KVMH_BENCH_DIRTY").ok().filter(|n| n != "0") {
                spec["hvparams"]["kernel_args"] =
                    serde_json::json!(format!("quiet panic=-1 glab.dirty={n}"));
            }
        })?);
    }
    bench_migrate::bench_migrate(
        &root().join("target/release/kvm-hypervisor"),
        &specs[0],
        &specs[1],
        &dir,
        &dir.join("cache"),
        10,
    )
}
