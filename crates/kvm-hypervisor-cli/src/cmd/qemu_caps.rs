//! `qemu-caps`: what a QEMU binary can do.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kvm_hypervisor::{caps, cmdline};
use serde_json::json;

use super::{Json, QemuPath};
use crate::global::Global;
use crate::output::runtime;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    qemu: QemuPath,
    /// Parse a recorded `--help` output instead of probing.
    #[arg(long, value_name = "FILE")]
    from_help: Option<PathBuf>,
    /// With --from-help: a recorded `-machine help` output.
    #[arg(long, value_name = "FILE", requires = "from_help")]
    machines: Option<PathBuf>,
    /// With --from-help: a recorded `-device help` output.
    #[arg(long, value_name = "FILE", requires = "from_help")]
    devices: Option<PathBuf>,
    /// Where probed capabilities are cached.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    out: Json,
}

impl Args {
    pub(crate) fn run(self, _: &Global) -> anyhow::Result<ExitCode> {
        qemu_caps(self)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn qemu_caps(a: Args) -> anyhow::Result<()> {
    let Args {
        qemu,
        from_help,
        machines,
        devices,
        cache_dir,
        out,
    } = a;
    let as_json = out.json;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let (caps, cached) = match from_help {
        Some(help) => {
            let machines = machines.as_ref().map(read).transpose()?;
            let devices = devices.as_ref().map(read).transpose()?;
            (
                cmdline::QemuCaps::from_help(
                    &read(&help)?,
                    machines.as_deref(),
                    devices.as_deref(),
                )?,
                false,
            )
        }
        None => {
            let dir = cache_dir.unwrap_or_else(caps::default_cache_dir);
            let probed = runtime()?.block_on(caps::capabilities(&qemu.qemu, &dir))?;
            (probed.caps, probed.cached)
        }
    };
    if as_json {
        let mut v = serde_json::to_value(&caps)?;
        v["features"] = serde_json::to_value(caps.features())?;
        v["cached"] = json!(cached);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let source = match caps.source {
        cmdline::CapsSource::Qmp if cached => "QMP probe, from the cache",
        cmdline::CapsSource::Qmp => "QMP probe",
        cmdline::CapsSource::Help => "help text",
    };
    println!("QEMU      {} ({})", caps.version, caps.package);
    println!("source    {source}");
    let default = caps.default_machine().map_or("none", |m| m.name.as_str());
    println!("machines  {} (default {default})", caps.machines.len());
    println!("devices   {}", caps.devices.len());
    println!("options   {}", caps.options.len());
    if !caps.cpu_models.is_empty() {
        println!("cpus      {}", caps.cpu_models.len());
    }
    match caps.kvm {
        Some(true) => println!("kvm       usable"),
        Some(false) => println!("kvm       not usable (TCG only)"),
        None => println!("kvm       unknown"),
    }
    let f = caps.features();
    let flags = [
        ("-run-with", f.run_with),
        ("-runas", f.runas),
        ("-chroot", f.chroot_option),
        ("-audio", f.audio_option),
        ("-soundhw", f.soundhw_option),
        ("-no-acpi", f.no_acpi_option),
        ("machine acpi=", f.machine_acpi_property),
        ("-sandbox", f.sandbox),
        ("debug-threads", f.debug_threads),
        ("JSON -device", f.json_device),
        ("SPICE", f.spice),
    ];
    let have: Vec<&str> = flags
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
    println!("features  {}", have.join(", "));
    Ok(())
}
