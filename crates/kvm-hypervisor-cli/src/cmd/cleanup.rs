//! `cleanup NAME`.

use std::process::ExitCode;

use crate::global::Global;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let done = kvm_hypervisor::cleanup(&g.node(None)?, &self.name)?;
        println!("{}: removed {} file(s)", self.name, done.len());
        Ok(ExitCode::SUCCESS)
    }
}
