//! `stop NAME`.

use std::io::IsTerminal;
use std::process::ExitCode;

use kvm_hypervisor::StopOptions;
use serde_json::json;

use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Seconds the guest gets to power off (then SIGTERM, then SIGKILL).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Kill at once, without asking the guest.
    #[arg(long)]
    force: bool,
    /// Only press the ACPI power button and return; the guest powers off in
    /// its own time (a later `stop` or `cleanup` removes what is left).
    #[arg(long, conflicts_with_all = ["force", "timeout"])]
    no_wait: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        stop(self, g)
    }
}

fn stop(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let node = g.node(None)?;
    let (name, timeout, force, as_json) = (a.name.as_str(), a.timeout, a.force, a.json);
    if a.no_wait {
        runtime()?.block_on(kvm_hypervisor::press_power_button(&node, name))?;
        if as_json {
            print_json(&json!({"name": name, "ending": "power-button-pressed"}))?;
        } else {
            println!("{name}: power button pressed; the guest powers off in its own time");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = StopOptions {
        timeout: std::time::Duration::from_secs(timeout),
        force,
    };
    let rt = runtime()?;
    let ending = rt.block_on(async {
        let stopping = kvm_hypervisor::stop(&node, name, opts);
        // On a terminal: a progress line while the guest takes its time.
        if force || as_json || !std::io::stderr().is_terminal() {
            return stopping.await;
        }
        tokio::pin!(stopping);
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                ending = &mut stopping => {
                    eprint!("\r\x1b[K");
                    return ending;
                }
                _ = tick.tick() => {
                    let spent = started.elapsed().as_secs();
                    if spent >= 2 {
                        match timeout.checked_sub(spent) {
                            Some(left) => eprint!(
                                "\r\x1b[Kwaiting for {name}'s guest to power off, {left} s left"
                            ),
                            None => eprint!("\r\x1b[Kthe guest did not power off: ending QEMU"),
                        }
                    }
                }
            }
        }
    })?;
    if as_json {
        print_json(&json!({"name": name, "ending": ending}))?;
    } else {
        let how = ending.describe();
        println!("{name}: {how}; cleaned up");
    }
    Ok(ExitCode::SUCCESS)
}
