//! `balloon NAME MIB`.

use std::process::ExitCode;

use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Target memory in MiB.
    mib: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let done = runtime()?.block_on(kvm_hypervisor::balloon(&node, &self.name, self.mib))?;
        for w in &done.warnings {
            eprintln!("warning: {w}");
        }
        if self.json {
            print_json(&done)?;
        } else {
            println!("{}: balloon target {} MiB", self.name, done.mib);
        }
        Ok(ExitCode::SUCCESS)
    }
}
