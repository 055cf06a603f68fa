//! `cleanup NAME`.

use std::process::ExitCode;

use crate::global::Global;
use crate::output::runtime;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let done = runtime()?.block_on(kvm_hypervisor::cleanup(&node, &self.name))?;
        println!("{}: removed {} file(s)", self.name, done.len());
        Ok(ExitCode::SUCCESS)
    }
}
