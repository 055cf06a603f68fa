//! `cleanup NAME`.

use std::process::ExitCode;

use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What `cleanup --json` prints.
#[derive(serde::Serialize)]
struct Cleaned<'a> {
    instance: &'a str,
    removed: Vec<String>,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let done = runtime()?.block_on(kvm_hypervisor::cleanup(&node, &self.name))?;
        if self.json {
            print_json(&Cleaned {
                instance: &self.name,
                removed: done.iter().map(|p| p.display().to_string()).collect(),
            })?;
        } else {
            println!("{}: removed {} file(s)", self.name, done.len());
        }
        Ok(ExitCode::SUCCESS)
    }
}
