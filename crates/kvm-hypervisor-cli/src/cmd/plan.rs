//! `plan SPEC`: the command line an instance would get.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kvm_hypervisor::devices::{DiskDevice, NicDevice};
use kvm_hypervisor::{caps, host};
use serde_json::json;

use super::load_spec;
use crate::global::Global;
use crate::output::{invalid, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The spec file (.json or .toml).
    spec: PathBuf,
    /// Use this QEMU instead of the spec's kvm_path.
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// Where probed capabilities are cached.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        plan(self, g)
    }
}

fn plan(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let Args {
        spec: spec_path,
        qemu,
        cache_dir,
        json: as_json,
    } = a;
    let Some(loaded) = load_spec(&spec_path)? else {
        return Ok(invalid());
    };
    let spec = loaded.spec;
    let binary = qemu.unwrap_or_else(|| PathBuf::from(spec.hvparams().kvm_path()));
    let dir = cache_dir.unwrap_or_else(caps::default_cache_dir);
    let probed = runtime()?.block_on(caps::capabilities(&binary, &dir))?;
    let env = host::plan_env(&spec, &probed.caps);
    let run = g.run_dir();
    let plan = kvm_hypervisor::plan_start(&spec, &probed.caps, &run, &env)
        .with_context(|| format!("cannot plan {}", spec.name()))?;
    if as_json {
        let disk = |d: &DiskDevice| json!({"uuid": d.record().uuid, "hvinfo": d.device().hvinfo().to_json()});
        let nic = |d: &NicDevice| json!({"uuid": d.record().uuid, "hvinfo": d.device().hvinfo().to_json()});
        let out = json!({
            "name": spec.name(),
            "machine": plan.machine,
            "accel": format!("{:?}", plan.accel).to_lowercase(),
            "argv": plan.argv,
            "listen_sockets": plan.listen_sockets,
            "taps": plan.taps,
            "disks": plan.disks.iter().map(disk).collect::<Vec<_>>(),
            "nics": plan.nics.iter().map(nic).collect::<Vec<_>>(),
            "warnings": plan.warnings,
            "caps_cached": probed.cached,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
        for arg in &plan.argv {
            println!("{arg}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
