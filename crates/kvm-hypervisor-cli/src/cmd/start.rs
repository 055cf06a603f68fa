//! `start NAME|SPEC`.

use std::path::PathBuf;
use std::process::ExitCode;

use kvm_hypervisor::StartOptions;

use super::load_spec;
use crate::global::Global;
use crate::output::{invalid, print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A defined instance's name, or a spec file (.json or .toml; a path
    /// with a `/` or that extension) for a one-shot start.
    target: String,
    /// Leave the VM paused.
    #[arg(long)]
    paused: bool,
    /// Where probed capabilities are cached.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        start(self, g)
    }
}

fn start(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let node = g.node(a.cache_dir.clone())?;
    let is_file =
        a.target.contains('/') || [".json", ".toml"].iter().any(|e| a.target.ends_with(e));
    let loaded = if is_file {
        let Some(loaded) = load_spec(&PathBuf::from(&a.target))? else {
            return Ok(invalid());
        };
        loaded
    } else {
        g.config_dir().load(&a.target)?
    };
    let (paused, as_json) = (a.paused, a.json);
    for g in &loaded.generated {
        eprintln!(
            "note: generated {} = {} (add it to the spec to keep it)",
            g.field, g.value
        );
    }
    let started = runtime()?.block_on(kvm_hypervisor::start(
        &node,
        &loaded.spec,
        StartOptions { paused },
    ))?;
    if as_json {
        print_json(&started)?;
    } else {
        for w in &started.warnings {
            eprintln!("warning: {w}");
        }
        let state = if started.paused { "paused" } else { "running" };
        println!(
            "{}: {state} (pid {}, {} on {})",
            started.name, started.pid, started.accel, started.machine
        );
    }
    Ok(ExitCode::SUCCESS)
}
