//! `cargo xtask bench start`: `kvm-hypervisor start` against the floor of a
//! bare QEMU with the same argv (exec → `cont` answered), interleaved; then
//! `stop --force` and a graceful `stop` of a guest that honours ACPI.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::timing::{Breakdown, RUST_LOG};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The floor: spawn QEMU with the planned argv and our pre-bound monitor
/// sockets (`(path, fd)` as the plan lists them), handshake on the first,
/// `cont`; returns exec → `cont` answered.
fn bare_start(
    argv: &[String],
    sockets: &[(std::path::PathBuf, i32)],
) -> Result<(Duration, std::process::Child, UnixStream)> {
    let start = Instant::now();
    let child = spawn_bare(argv, sockets)?;
    let mut s = UnixStream::connect(&sockets[0].0)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    s.write_all(br#"{"execute":"qmp_capabilities"}"#)?;
    line.clear();
    r.read_line(&mut line)?;
    s.write_all(br#"{"execute":"cont"}"#)?;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line.contains("\"return\"") {
            break;
        }
    }
    Ok((start.elapsed(), child, s))
}

/// Spawns QEMU with `argv` and its monitor sockets (`(path, fd)` as the
/// plan lists them) bound here and passed at their descriptor numbers.
pub(crate) fn spawn_bare(
    argv: &[String],
    sockets: &[(std::path::PathBuf, i32)],
) -> Result<std::process::Child> {
    let mut listeners = Vec::new();
    for (path, fd) in sockets {
        let _ = std::fs::remove_file(path);
        listeners.push((UnixListener::bind(path)?, *fd));
    }
    // Staged above any target first, then moved onto the targets.
    let moves: Vec<(i32, i32)> = listeners
        .iter()
        .map(|(l, fd)| (l.as_raw_fd(), *fd))
        .collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2(2) between fork and exec, on numbers taken before.
    unsafe {
        cmd.pre_exec(move || {
            for &(from, to) in &moves {
                if nix::libc::dup2(from, 1000 + to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &(_, to) in &moves {
                if nix::libc::dup2(1000 + to, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(listeners);
    Ok(child)
}

pub(crate) fn bench_start(
    bin: &Path,
    spec: &Path,
    run_dir: &Path,
    cache: &Path,
    runs: usize,
) -> Result<()> {
    let kvmh = |args: &[&str]| -> Result<std::process::Output> {
        Ok(Command::new(bin)
            .arg("--run-dir")
            .arg(run_dir)
            .args(args)
            .output()?)
    };
    let spec_s = spec.to_str().context("utf-8")?;
    let cache_s = cache.to_str().context("utf-8")?;
    let out = kvmh(&["plan", spec_s, "--json", "--cache-dir", cache_s])?;
    ensure!(
        out.status.success(),
        "plan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    let argv: Vec<String> = plan["argv"]
        .as_array()
        .context("argv")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let name = plan["name"].as_str().context("name")?.to_owned();
    let ctrl = run_dir.join("ctrl");
    std::fs::create_dir_all(&ctrl)?;
    let sockets: Vec<(std::path::PathBuf, i32)> = plan["listen_sockets"]
        .as_array()
        .context("listen_sockets")?
        .iter()
        .filter_map(|s| {
            let path = s["path"].as_str()?;
            // The plan names them under the default run directory.
            let file = std::path::Path::new(path).file_name()?;
            Some((ctrl.join(file), i32::try_from(s["fd"].as_i64()?).ok()?))
        })
        .collect();
    // Warm the capability cache and the page cache.
    ensure!(
        kvmh(&["start", spec_s, "--cache-dir", cache_s])?
            .status
            .success(),
        "warm-up start failed"
    );
    ensure!(
        kvmh(&["stop", &name, "--force"])?.status.success(),
        "warm-up stop failed"
    );

    let (mut floor, mut ours, mut ratios, mut kills) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, mut child, mut s) = bare_start(&argv, &sockets)?;
        s.write_all(br#"{"execute":"quit"}"#)?;
        child.wait()?;
        let _ = std::fs::remove_file(run_dir.join("pid").join(&name));
        floor.push(t);

        let start = Instant::now();
        let o = kvmh(&["start", spec_s, "--cache-dir", cache_s])?;
        let t2 = start.elapsed();
        ensure!(
            o.status.success(),
            "start: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        ours.push(t2);
        ratios.push(t2.as_secs_f64() / t.as_secs_f64());
        let k = Instant::now();
        let o = kvmh(&["stop", &name, "--force"])?;
        kills.push(k.elapsed());
        ensure!(
            o.status.success(),
            "stop: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("start, {runs} interleaved pairs:");
    println!(
        "  floor (bare QEMU, exec -> cont answered)  median {:.1} ms",
        ms(median(floor))
    );
    println!(
        "  kvm-hypervisor start (warm cache)         median {:.1} ms",
        ms(median(ours))
    );
    println!(
        "  median of per-pair ratios                  {:.2}",
        ratios[ratios.len() / 2]
    );
    println!(
        "stop --force                                 median {:.1} ms",
        ms(median(kills))
    );
    // Where ours spends its time: the library's timing events, 5 more runs.
    let mut steps = Breakdown::default();
    for _ in 0..5 {
        let o = Command::new(bin)
            .arg("--run-dir")
            .arg(run_dir)
            .args(["start", spec_s, "--cache-dir", cache_s])
            .env(RUST_LOG.0, RUST_LOG.1)
            .output()?;
        ensure!(
            o.status.success(),
            "start: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        steps.add(&String::from_utf8_lossy(&o.stderr));
        ensure!(
            kvmh(&["stop", &name, "--force"])?.status.success(),
            "stop failed"
        );
    }
    println!("start inside the process, per step (the library's timing events, median of 5):");
    steps.print("  ");

    // Graceful stop of a guest that honours ACPI: wait for it to be ready first.
    let mut graceful = Vec::new();
    for _ in 0..3.min(runs) {
        ensure!(
            kvmh(&["start", spec_s, "--paused", "--cache-dir", cache_s])?
                .status
                .success(),
            "start failed"
        );
        let console = UnixStream::connect(ctrl.join(format!("{name}.serial")))?;
        console.set_read_timeout(Some(Duration::from_secs(120)))?;
        ensure!(
            kvmh(&["qmp", "--instance", &name, "cont"])?
                .status
                .success(),
            "cont failed"
        );
        let mut r = BufReader::new(console);
        let mut line = String::new();
        while !line.contains("GLAB-READY") {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("console closed before READY");
            }
        }
        let g = Instant::now();
        let o = kvmh(&["stop", &name])?;
        graceful.push(g.elapsed());
        ensure!(
            String::from_utf8_lossy(&o.stdout).contains("powered off"),
            "not graceful: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    println!(
        "graceful stop (ACPI power-down until QEMU exited), median of {}: {:.1} ms",
        graceful.len(),
        ms(median(graceful))
    );
    Ok(())
}
