//! `stop NAME`.

use std::process::ExitCode;

use kvm_hypervisor::{Ending, StopOptions};
use serde_json::json;

use crate::global::Global;
use crate::output::runtime;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Seconds the guest gets to power off.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Kill at once.
    #[arg(long)]
    force: bool,
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
    let opts = StopOptions {
        timeout: std::time::Duration::from_secs(timeout),
        force,
    };
    let ending = runtime()?.block_on(kvm_hypervisor::stop(&node, name, opts))?;
    if as_json {
        println!("{}", json!({"name": name, "ending": ending}));
    } else {
        let how = match ending {
            Ending::NotRunning => "was not running",
            Ending::Graceful => "powered off",
            Ending::Terminated => "terminated (SIGTERM)",
            Ending::Killed => "killed (SIGKILL)",
            Ending::Exited => "exited, ended by someone else during the stop",
        };
        println!("{name}: {how}; cleaned up");
    }
    Ok(ExitCode::SUCCESS)
}
