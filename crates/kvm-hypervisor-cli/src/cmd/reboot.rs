//! `reboot NAME`.

use std::process::ExitCode;
use std::time::Duration;

use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Kill QEMU instead of an ACPI power-down, as `stop --force` does
    /// (`--hard`, Ganeti's word, is the same).
    #[arg(long, alias = "hard")]
    force: bool,
    /// Seconds the guest gets to power off.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let timeout = Duration::from_secs(self.timeout);
        let started = runtime()?.block_on(kvm_hypervisor::reboot(
            &node, &self.name, self.force, timeout,
        ))?;
        if self.json {
            print_json(&started)?;
        } else {
            println!("{}: rebooted (pid {})", self.name, started.pid);
        }
        Ok(ExitCode::SUCCESS)
    }
}
