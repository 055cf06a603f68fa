//! `cargo xtask load`: 20 instances started and stopped concurrently, then
//! 200 start / hotplug add-disk / stop cycles on one instance, with the
//! monitor daemon watching all along. Nothing may fail, the monitor may not
//! leak a descriptor, and the run directory must be empty at the end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::Guest;
use crate::e2e::{Lab, leftover_files};

/// The monitor daemon of the lab, killed when dropped, and the lines it
/// prints (one per QEMU that went away).
struct Monitor(Child, std::sync::mpsc::Receiver<String>, usize);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Monitor {
    /// Waits until the monitor has reported `n` QEMUs gone in all, or has
    /// been silent for 10 s (an instance it never had a session with, one
    /// that came and went before it connected, gets no line).
    fn settle(&mut self, n: usize) {
        while self.2 < n {
            match self.1.recv_timeout(Duration::from_secs(10)) {
                Ok(_) => self.2 += 1,
                Err(_) => return,
            }
        }
    }

    /// Descriptors the monitor process holds (its own pid is the child of
    /// `ip netns exec`, which execs it).
    fn fds(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.0.id()))?.count())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn load(guest: Guest, bin: PathBuf, accel: &'static str) -> Result<()> {
    let lab = Lab::new("load", guest, bin, accel)?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(&lab.bin)
        .arg("--run-dir")
        .arg(lab.dir.join("run"))
        .arg("monitor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("monitor stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut monitor = Monitor(child, rx, 0);

    // 20 at once.
    let specs: Vec<PathBuf> = (0..20)
        .map(|i| lab.spec(&format!("ld{i}"), false, json!({})))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let lab = &lab;
                s.spawn(move || -> Result<()> {
                    lab.start(spec)?;
                    lab.ok(&["stop", &format!("ld{i}"), "--force"])?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        }
        Ok(())
    })?;
    let concurrent = t.elapsed();

    // 200 cycles on one instance.
    let spec = lab.spec("cyc1", false, json!({}))?;
    let disk = lab.dir.join("cyc1-hot.img");
    std::fs::File::create(&disk)?.set_len(16 << 20)?;
    let hot = json!({"uuid": "0c1c0000-0000-4000-8000-000000000000", "path": disk}).to_string();
    let cycle = || -> Result<Duration> {
        let t = Instant::now();
        lab.start(&spec)?;
        lab.ok(&["hotplug", "add-disk", "cyc1", &hot])?;
        lab.ok(&["stop", "cyc1", "--force"])?;
        Ok(t.elapsed())
    };
    // The first cycle settles the monitor (it has seen an instance come and
    // go); its descriptor count then must not grow.
    let mut times = vec![cycle().context("cycle 1")?];
    monitor.settle(21);
    let baseline = monitor.fds()?;
    for n in 2..=200 {
        times.push(cycle().with_context(|| format!("cycle {n}"))?);
    }
    monitor.settle(220);
    let after = monitor.fds()?;
    let left = leftover_files(&lab.dir.join("run"))?;
    println!(
        "load: 20 concurrent start + stop: 20 ok in {:.1} s",
        concurrent.as_secs_f64()
    );
    println!(
        "load: 200 cycles of start + hotplug add-disk + stop: 200 ok, median {:.0} ms a cycle, {:.1} s in all",
        median(times.clone()).as_secs_f64() * 1e3,
        times.iter().sum::<Duration>().as_secs_f64()
    );
    println!("load: monitor descriptors: {baseline} after the first cycle, {after} after the last");
    println!("load: files left in the run directory: {}", left.len());
    ensure!(
        after == baseline,
        "the monitor leaked {} descriptors",
        after.saturating_sub(baseline)
    );
    ensure!(left.is_empty(), "files left: {left:?}");
    Ok(())
}
