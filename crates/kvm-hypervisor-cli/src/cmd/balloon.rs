//! `balloon NAME MIB`.

use std::process::ExitCode;

use crate::global::Global;
use crate::output::runtime;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Target memory in MiB.
    mib: u64,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        runtime()?.block_on(kvm_hypervisor::balloon(&node, &self.name, self.mib))?;
        println!("{}: balloon target {} MiB", self.name, self.mib);
        Ok(ExitCode::SUCCESS)
    }
}
