//! `runtime show`: a runtime record, ours or Ganeti's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kvm_hypervisor::state;

use crate::global::Global;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Subcommand)]
enum RuntimeCommand {
    /// Show an instance's runtime record (ours, or Ganeti's upgraded).
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct ShowArgs {
    /// The instance, looked up in the run directory.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    name: Option<String>,
    /// A runtime file to read instead.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// `ours`: our versioned record; `ganeti`: Ganeti's 4-element form.
    #[arg(long, value_enum, default_value_t = RecordFormat::Ours)]
    format: RecordFormat,
    /// Print the record as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RecordFormat {
    Ours,
    Ganeti,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        match self.command {
            RuntimeCommand::Show(a) => runtime_show(a, g)?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn runtime_show(a: ShowArgs, g: &Global) -> anyhow::Result<()> {
    let ShowArgs {
        name,
        file,
        format,
        json: as_json,
    } = a;
    let loaded = match (name, file) {
        (_, Some(file)) => state::RuntimeFile::read(&file)?,
        (Some(name), None) => {
            let root = g.run_root();
            let run = state::RunDir::existing(&root)?;
            run.read_runtime(&name)?
                .ok_or_else(|| kvm_hypervisor::InfoError::Unknown(name.clone()))?
        }
        (None, None) => anyhow::bail!("give an instance name or --file"),
    };
    let record = loaded.record();
    match (format, as_json) {
        (RecordFormat::Ganeti, _) => print!("{}", state::render(&record, state::Format::Ganeti)),
        (RecordFormat::Ours, true) => print!("{}", state::render(&record, state::Format::Ours)),
        (RecordFormat::Ours, false) => print_record_summary(&loaded, &record),
    }
    Ok(())
}

fn print_record_summary(file: &state::RuntimeFile, r: &state::RuntimeRecord) {
    let field = |k: &str| {
        r.instance.get(k).map_or_else(
            || "unknown".to_owned(),
            |v| v.to_string().trim_matches('"').to_owned(),
        )
    };
    let origin = match r.origin {
        state::Origin::Ours => "kvm-hypervisor",
        state::Origin::Ganeti => "Ganeti",
    };
    println!("instance  {} ({})", field("name"), field("uuid"));
    println!("written   by {origin}, record version {}", r.version);
    println!(
        "memory    {} MiB, {} vCPUs",
        field("memory"),
        field("vcpus")
    );
    println!(
        "machine   {}",
        r.machine.as_deref().unwrap_or("QEMU's default")
    );
    if let Some(q) = &r.qemu {
        println!(
            "qemu      {}{}",
            q.path,
            q.version
                .as_deref()
                .map(|v| format!(" ({v})"))
                .unwrap_or_default()
        );
    }
    let hv = |h: &Option<state::HvInfo>| match h {
        None => "no hvinfo".to_owned(),
        Some(h) => {
            let place = match (&h.addr, h.scsi_id) {
                (Some(addr), _) => format!("addr {addr}"),
                (None, Some(id)) => format!("scsi-id {id}"),
                _ => "auto".to_owned(),
            };
            format!(
                "{} {} on {} {place}",
                h.driver,
                h.id,
                h.bus.as_deref().unwrap_or("?")
            )
        }
    };
    for (i, d) in r.disks.iter().enumerate() {
        let source = d.uri.as_deref().or(d.path.as_deref()).unwrap_or("?");
        println!("disk {i}    {} {source} ({})", d.uuid, hv(&d.hvinfo));
    }
    for (i, n) in r.nics.iter().enumerate() {
        println!(
            "nic {i}     {} {} {} {} ({})",
            n.uuid,
            n.mac.as_deref().unwrap_or("?"),
            n.mode.as_deref().unwrap_or("?"),
            n.link.as_deref().unwrap_or(""),
            hv(&n.hvinfo)
        );
    }
    println!("argv      {}", r.argv.join(" "));
    if let state::RuntimeFile::Ganeti(g) = file {
        for u in &g.upgrades {
            println!("upgraded  {u}");
        }
    }
}
