//! The `kvm-hypervisor` command.

mod hotplug_cmd;
mod ops_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kvm_hypervisor as lifecycle;
use kvm_hypervisor::hvparams;
use kvm_hypervisor::spec::{InstanceSpec, SpecError};
use kvm_hypervisor::state;
use kvm_hypervisor::validate::{Finding, Report, validate_on_host};
use kvm_hypervisor::{caps, cmdline, host};
use serde_json::json;

/// Manage QEMU/KVM virtual machines on this node (Ganeti-compatible).
#[derive(Parser)]
#[command(name = "kvm-hypervisor", version, about, after_help = EXIT_STATUS)]
struct Cli {
    /// The run directory [default: /run/kvm-hypervisor for root,
    /// $XDG_RUNTIME_DIR/kvm-hypervisor otherwise]. Point it at Ganeti's
    /// `/var/run/ganeti/kvm-hypervisor` to manage Ganeti's instances.
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// The uid pool for security_model=pool, e.g. `2000-2099,3000` (Ganeti's
    /// cluster uid_pool); also read from KVM_HYPERVISOR_UID_POOL.
    #[arg(
        long,
        global = true,
        value_name = "RANGES",
        env = "KVM_HYPERVISOR_UID_POOL"
    )]
    uid_pool: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check an instance spec and validate it against this host.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 usage error.
    Validate {
        /// The spec file (.json or .toml).
        spec: PathBuf,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// List every hvparam with its type, default and allowed values.
    Params {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what a QEMU binary can do (probed once, then cached).
    QemuCaps {
        /// The QEMU binary.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/bin/qemu-system-x86_64"
        )]
        qemu: PathBuf,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the QEMU command line an instance would get, starting nothing.
    ///
    /// Passed descriptors appear as numbers: the monitor sockets are fds 3
    /// and 4, each tap queue (and vhost-net) fd follows.
    Plan {
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
    },
    /// Start an instance from its spec (QEMU starts paused, is configured
    /// over QMP, then continued). Any failure undoes everything.
    Start {
        /// The spec file (.json or .toml).
        spec: PathBuf,
        /// Leave the VM paused.
        #[arg(long)]
        paused: bool,
        /// Where probed capabilities are cached.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop an instance: ACPI power-down, wait, then SIGTERM, then SIGKILL.
    Stop {
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
    },
    /// The state of one instance (or all).
    Info {
        /// The instance.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every instance the run directory knows.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List instances with their state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every file of a stopped (or crashed) instance.
    Cleanup {
        /// The instance.
        name: String,
    },
    /// Reboot: a graceful stop (ACPI, waiting up to --timeout) then a start
    /// from the runtime record; --hard kills instead of powering off.
    Reboot {
        /// The instance.
        name: String,
        /// Kill QEMU instead of an ACPI power-down.
        #[arg(long)]
        hard: bool,
        /// Seconds the guest gets to power off.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach to the serial console (Ctrl-] ends); --info prints where the
    /// consoles (serial, VNC, SPICE) are.
    Console {
        /// The instance.
        name: String,
        /// Print the console endpoints instead of attaching.
        #[arg(long)]
        info: bool,
        /// With --info: print JSON.
        #[arg(long, requires = "info")]
        json: bool,
    },
    /// Watch every running instance (and those started later) for a guest
    /// shutdown; records it so `info` says shutdown-by-guest, not crashed.
    /// Runs in the foreground until SIGINT/SIGTERM (systemd-friendly); prints
    /// one JSON line per QEMU that went away.
    Monitor,
    /// What this node has: QEMU version, CPUs, memory, KVM.
    NodeInfo {
        /// The QEMU binary.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/bin/qemu-system-x86_64"
        )]
        qemu: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Whether this node can run instances: QEMU, /dev/kvm, /dev/net/tun,
    /// /dev/vhost-net, run-directory permissions. Exit status 1 on a failure.
    Verify {
        /// The QEMU binary.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/bin/qemu-system-x86_64"
        )]
        qemu: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the balloon target of a running instance.
    Balloon {
        /// The instance.
        name: String,
        /// Target memory in MiB.
        mib: u64,
    },
    /// Send one QMP command and print the reply as JSON; or print events.
    Qmp {
        /// The QMP socket.
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "instance",
            conflicts_with = "instance"
        )]
        socket: Option<PathBuf>,
        /// An instance of the run directory (its `ctrl/NAME.qmp`).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// The command, e.g. `query-status`.
        #[arg(required_unless_present = "events")]
        command: Option<String>,
        /// Its arguments as a JSON object.
        #[arg(value_name = "JSON-ARGS")]
        arguments: Option<String>,
        /// Print events as they arrive for this many seconds (after the command, if any).
        #[arg(long, value_name = "SECONDS")]
        events: Option<u64>,
        /// With --events: stop at the first event of this name.
        #[arg(long, value_name = "EVENT", requires = "events")]
        until: Option<String>,
    },
    /// Runtime records of running instances.
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// Hot-add, remove or replace disks and NICs of a running instance.
    Hotplug {
        #[command(subcommand)]
        command: hotplug_cmd::HotplugCommand,
    },
    /// Resize a disk of a running instance (`block_resize`).
    ResizeDisk {
        /// The instance.
        name: String,
        /// The disk's UUID.
        uuid: String,
        /// The new size: MiB, or with a K/M/G/T suffix.
        size: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RuntimeCommand {
    /// Show an instance's runtime record (ours, or Ganeti's upgraded).
    Show {
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
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RecordFormat {
    Ours,
    Ganeti,
}

/// The exit statuses, as `--help` shows them.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  invalid input: a spec, hvparams, or arguments that parse but are wrong
  2  usage error (unknown command or option, missing argument)
  3  no such instance (not running and no runtime record)
  4  busy or in the wrong state: locked, already running, not running
  5  the operation failed: QEMU, the host, a timeout";

/// Exit status for an invalid spec.
const INVALID: u8 = 1;

fn main() -> ExitCode {
    // Arguments first: `--version` and `--help` exit before the subscriber
    // (whose filter parsing costs about a millisecond) is built.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Some(pool) = &cli.uid_pool {
        match state::UidPool::parse(pool) {
            Ok(p) => {
                let _ = UID_POOL.set(p);
            }
            Err(e) => {
                eprintln!("Error: --uid-pool: {e}");
                return ExitCode::from(INVALID);
            }
        }
    }
    let result = match cli.command {
        Command::Validate { spec, json } => validate(&spec, json),
        Command::Params { json } => params(json).map(|()| ExitCode::SUCCESS),
        Command::QemuCaps {
            qemu,
            from_help,
            machines,
            devices,
            cache_dir,
            json,
        } => qemu_caps(&qemu, from_help, machines, devices, cache_dir, json)
            .map(|()| ExitCode::SUCCESS),
        Command::Qmp {
            socket,
            instance,
            command,
            arguments,
            events,
            until,
        } => qmp_command(
            cli.run_dir,
            socket,
            instance,
            command,
            arguments,
            events,
            until,
        )
        .map(|()| ExitCode::SUCCESS),
        Command::Start {
            spec,
            paused,
            cache_dir,
            json,
        } => lifecycle_start(&spec, paused, node(cli.run_dir, cache_dir), json),
        Command::Stop {
            name,
            timeout,
            force,
            json,
        } => lifecycle_stop(&name, timeout, force, node(cli.run_dir, None), json),
        Command::Info { name, all, json } => {
            lifecycle_info(name, all, node(cli.run_dir, None), json)
        }
        Command::List { json } => lifecycle_info(None, true, node(cli.run_dir, None), json),
        Command::Cleanup { name } => node(cli.run_dir, None).and_then(|n| {
            let done = lifecycle::cleanup(&n, &name)?;
            println!("{name}: removed {} file(s)", done.len());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Reboot {
            name,
            hard,
            timeout,
            json,
        } => node(cli.run_dir, None).and_then(|n| ops_cmd::reboot(n, &name, hard, timeout, json)),
        Command::Console { name, info, json } => {
            node(cli.run_dir, None).and_then(|n| ops_cmd::console(n, &name, info, json))
        }
        Command::Monitor => node(cli.run_dir, None).and_then(ops_cmd::monitor),
        Command::NodeInfo { qemu, json } => {
            ops_cmd::node_info(&qemu, caps::default_cache_dir(), json)
        }
        Command::Verify { qemu, json } => node(cli.run_dir, None)
            .and_then(|n| ops_cmd::verify(&qemu, caps::default_cache_dir(), n, json)),
        Command::Balloon { name, mib } => node(cli.run_dir, None).and_then(|n| {
            runtime()?.block_on(lifecycle::balloon(&n, &name, mib))?;
            println!("{name}: balloon target {mib} MiB");
            Ok(ExitCode::SUCCESS)
        }),
        Command::Plan {
            spec,
            qemu,
            cache_dir,
            json,
        } => plan(&spec, qemu, cache_dir, cli.run_dir, json),
        Command::Runtime {
            command:
                RuntimeCommand::Show {
                    name,
                    file,
                    format,
                    json,
                },
        } => runtime_show(cli.run_dir, name, file, format, json).map(|()| ExitCode::SUCCESS),
        Command::Hotplug { command } => {
            node(cli.run_dir, None).and_then(|n| hotplug_cmd::run(n, command))
        }
        Command::ResizeDisk {
            name,
            uuid,
            size,
            json,
        } => {
            node(cli.run_dir, None).and_then(|n| hotplug_cmd::resize(n, &name, &uuid, &size, json))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::from(kvm_hypervisor::error_kind(err.as_ref()).exit_status())
        }
    }
}

fn validate(path: &std::path::Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let loaded = match InstanceSpec::load(path) {
        Ok(loaded) => loaded,
        Err(SpecError::Invalid(problems)) => {
            let findings: Vec<Finding> = problems
                .0
                .iter()
                .map(|p| Finding {
                    field: p.field.clone(),
                    message: p.reason.to_string(),
                })
                .collect();
            let report = Report {
                problems: findings,
                warnings: Vec::new(),
                unchecked: Vec::new(),
                generated: Vec::new(),
            };
            print_report(path, None, &report, as_json)?;
            return Ok(ExitCode::from(INVALID));
        }
        Err(e @ SpecError::Syntax { .. }) => {
            if as_json {
                println!(
                    "{}",
                    json!({"spec": path, "valid": false, "error": e.to_string()})
                );
            } else {
                eprintln!("Error: {e}");
            }
            return Ok(ExitCode::from(INVALID));
        }
        Err(e) => return Err(e).context("loading the instance spec"),
    };
    let mut facts = host::gather(&loaded.spec);
    // QEMU is probed (or read from the cache); a binary that cannot be
    // probed leaves its checks unchecked, and says why.
    let binary = PathBuf::from(loaded.spec.hvparams().kvm_path());
    let probed = runtime()?.block_on(caps::capabilities(&binary, &caps::default_cache_dir()));
    let probe_error = match probed {
        Ok(p) => {
            facts.hv.qemu = Some(host::qemu_facts(&p.caps));
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let mut report = validate_on_host(&loaded.spec, &facts, loaded.generated.clone());
    if let Some(why) = probe_error {
        for f in &mut report.unchecked {
            if f.message == "needs QEMU capabilities" {
                f.message = format!("needs QEMU capabilities ({why})");
            }
        }
    }
    print_report(path, Some(loaded.spec.name().as_str()), &report, as_json)?;
    Ok(if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(INVALID)
    })
}

fn print_report(
    path: &std::path::Path,
    name: Option<&str>,
    report: &Report,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        let out = json!({
            "spec": path,
            "name": name,
            "valid": report.is_valid(),
            "problems": report.problems,
            "warnings": report.warnings,
            "unchecked": report.unchecked,
            "generated": report.generated,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let who = name.map_or_else(|| path.display().to_string(), str::to_owned);
    if report.is_valid() {
        println!("{who}: valid on this host");
    } else {
        println!("{who}: {} problem(s)", report.problems.len());
    }
    let section = |title: &str, items: &[Finding]| {
        if !items.is_empty() {
            println!("{title}:");
            for f in items {
                println!("  {}: {}", f.field, f.message);
            }
        }
    };
    section("problems", &report.problems);
    section("warnings", &report.warnings);
    // One line per missing fact, not one per parameter.
    let mut unchecked: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in &report.unchecked {
        match unchecked.iter_mut().find(|(m, _)| *m == f.message) {
            Some((_, fields)) => fields.push(&f.field),
            None => unchecked.push((&f.message, vec![&f.field])),
        }
    }
    if !unchecked.is_empty() {
        println!("not checked:");
        for (message, fields) in unchecked {
            println!("  {}: {message}", fields.join(", "));
        }
    }
    if !report.generated.is_empty() {
        println!("generated (add these to the spec to keep them):");
        for g in &report.generated {
            println!("  {} = {}", g.field, g.value);
        }
    }
    Ok(())
}

fn params(as_json: bool) -> anyhow::Result<()> {
    let defs = hvparams::params();
    if as_json {
        let out: Vec<serde_json::Value> = defs
            .iter()
            .map(|d| {
                json!({
                    "name": d.name(),
                    "type": d.kind(),
                    "default": d.default_value(),
                    "required": d.required(),
                    "allowed": d.allowed(),
                    "scope": d.scope(),
                    "ganeti": d.is_ganeti(),
                    "description": d.doc(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let width = defs.iter().map(|d| d.name().len()).max().unwrap_or(0);
    for d in defs {
        let kind = match d.kind() {
            hvparams::Kind::Bool => "bool",
            hvparams::Kind::Int => "int",
            hvparams::Kind::String => "string",
        };
        let allowed = if d.allowed().is_empty() {
            String::new()
        } else {
            format!("  one of: {}", d.allowed().join(", "))
        };
        println!(
            "{:width$}  {kind:6}  default {}{allowed}\n{:width$}  {}",
            d.name(),
            d.default_value(),
            "",
            d.doc(),
        );
    }
    Ok(())
}

fn runtime_show(
    run_dir: Option<PathBuf>,
    name: Option<String>,
    file: Option<PathBuf>,
    format: RecordFormat,
    as_json: bool,
) -> anyhow::Result<()> {
    let loaded = match (name, file) {
        (_, Some(file)) => state::RuntimeFile::read(&file)?,
        (Some(name), None) => {
            let root = run_dir.unwrap_or_else(state::RunDir::default_path);
            let run = state::RunDir::existing(&root)?;
            run.read_runtime(&name)?.with_context(|| {
                format!(
                    "instance {name} has no runtime record in {}",
                    root.display()
                )
            })?
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn qemu_caps(
    qemu: &std::path::Path,
    from_help: Option<PathBuf>,
    machines: Option<PathBuf>,
    devices: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<()> {
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
            let probed = runtime()?.block_on(caps::capabilities(qemu, &dir))?;
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

fn plan(
    spec_path: &std::path::Path,
    qemu: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_spec(spec_path)? else {
        return Ok(ExitCode::from(INVALID));
    };
    let spec = loaded.spec;
    let binary = qemu.unwrap_or_else(|| PathBuf::from(spec.hvparams().kvm_path()));
    let dir = cache_dir.unwrap_or_else(caps::default_cache_dir);
    let probed = runtime()?.block_on(caps::capabilities(&binary, &dir))?;
    let env = host::plan_env(&spec, &probed.caps);
    let run = state::RunDir::at(run_dir.unwrap_or_else(state::RunDir::default_path));
    let plan = match kvm_hypervisor::plan_start(&spec, &probed.caps, &run, &env) {
        Ok(p) => p,
        Err(e) => {
            let mut msg = format!("Error: cannot plan {}: {e}", spec.name());
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!("\ncaused by: {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            return Ok(ExitCode::from(INVALID));
        }
    };
    if as_json {
        let disk = |d: &kvm_hypervisor::devices::DiskDevice| json!({"uuid": d.record().uuid, "hvinfo": d.device().hvinfo().to_json()});
        let nic = |d: &kvm_hypervisor::devices::NicDevice| json!({"uuid": d.record().uuid, "hvinfo": d.device().hvinfo().to_json()});
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

/// The node's uid pool, from --uid-pool.
static UID_POOL: std::sync::OnceLock<state::UidPool> = std::sync::OnceLock::new();

fn node(run_dir: Option<PathBuf>, cache_dir: Option<PathBuf>) -> anyhow::Result<lifecycle::Node> {
    let root = run_dir.unwrap_or_else(state::RunDir::default_path);
    let node = lifecycle::Node::open(&root, cache_dir.unwrap_or_else(caps::default_cache_dir))
        .with_context(|| format!("opening the run directory {}", root.display()))?;
    Ok(node.with_uid_pool(UID_POOL.get().cloned().unwrap_or_default()))
}

fn lifecycle_start(
    spec_path: &std::path::Path,
    paused: bool,
    node: anyhow::Result<lifecycle::Node>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let node = node?;
    let Some(loaded) = load_spec(spec_path)? else {
        return Ok(ExitCode::from(INVALID));
    };
    for g in &loaded.generated {
        eprintln!(
            "note: generated {} = {} (add it to the spec to keep it)",
            g.field, g.value
        );
    }
    let started = runtime()?.block_on(lifecycle::start(
        &node,
        &loaded.spec,
        lifecycle::StartOptions { paused },
    ))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&started)?);
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

fn lifecycle_stop(
    name: &str,
    timeout: u64,
    force: bool,
    node: anyhow::Result<lifecycle::Node>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let node = node?;
    let opts = lifecycle::StopOptions {
        timeout: std::time::Duration::from_secs(timeout),
        force,
    };
    let ending = runtime()?.block_on(lifecycle::stop(&node, name, opts))?;
    if as_json {
        println!("{}", json!({"name": name, "ending": ending}));
    } else {
        let how = match ending {
            lifecycle::Ending::NotRunning => "was not running",
            lifecycle::Ending::Graceful => "powered off",
            lifecycle::Ending::Terminated => "terminated (SIGTERM)",
            lifecycle::Ending::Killed => "killed (SIGKILL)",
        };
        println!("{name}: {how}; cleaned up");
    }
    Ok(ExitCode::SUCCESS)
}

fn lifecycle_info(
    name: Option<String>,
    all: bool,
    node: anyhow::Result<lifecycle::Node>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let node = node?;
    let rt = runtime()?;
    let names = if all {
        lifecycle::list(&node)?
    } else {
        name.into_iter().collect()
    };
    let mut infos = Vec::new();
    for n in &names {
        infos.push(rt.block_on(lifecycle::info(&node, n))?);
    }
    if as_json {
        let v = if all {
            serde_json::to_value(&infos)?
        } else {
            serde_json::to_value(&infos[0])?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let state_of = |i: &lifecycle::InstanceInfo| {
        serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    if all {
        println!(
            "{:<24} {:<18} {:>7} {:>8} {:>5}",
            "NAME", "STATE", "PID", "MEMORY", "VCPUS"
        );
        for i in &infos {
            println!(
                "{:<24} {:<18} {:>7} {:>8} {:>5}",
                i.name,
                state_of(i),
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.memory_mib.map_or("-".into(), |m| format!("{m}M")),
                i.vcpus.map_or("-".into(), |v| v.to_string())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let i = &infos[0];
    println!("instance  {}", i.name);
    println!("state     {}", state_of(i));
    if let Some(p) = i.pid {
        println!("pid       {p}");
    }
    if let Some(m) = i.memory_mib {
        println!("memory    {m} MiB");
    }
    if let Some(v) = i.vcpus {
        println!("vcpus     {v}");
    }
    if let Some(u) = i.uptime_secs {
        println!("uptime    {u} s");
    }
    if let Some(v) = &i.qemu_version {
        println!("qemu      {v}");
    }
    if let Some(m) = &i.machine {
        println!("machine   {m}");
    }
    if !i.from_qmp && i.pid.is_some() {
        println!("note      QEMU's monitor did not answer; figures come from its command line");
    }
    for d in &i.devices {
        println!(
            "{:<9} {} {} {}{}",
            d.kind,
            d.uuid,
            d.id.as_deref().unwrap_or("-"),
            d.placement.as_deref().unwrap_or("-"),
            d.tap
                .as_deref()
                .map(|t| format!(" tap {t}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn qmp_command(
    run_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    instance: Option<String>,
    command: Option<String>,
    arguments: Option<String>,
    events: Option<u64>,
    until: Option<String>,
) -> anyhow::Result<()> {
    let path = match (socket, instance) {
        (Some(p), _) => p,
        (None, Some(name)) => {
            state::check_name(&name)?;
            state::RunDir::at(run_dir.unwrap_or_else(state::RunDir::default_path))
                .socket(&name, state::Socket::Qmp)
        }
        (None, None) => anyhow::bail!("give --socket or --instance"),
    };
    let args: serde_json::Value = match &arguments {
        Some(text) => {
            serde_json::from_str(text).with_context(|| format!("JSON-ARGS is not JSON: {text}"))?
        }
        None => serde_json::Value::Null,
    };
    if !(args.is_null() || args.is_object()) {
        anyhow::bail!("JSON-ARGS must be a JSON object, not {args}");
    }
    runtime()?.block_on(async {
        let qmp = kvm_hypervisor::qmp::Client::connect(&path).await?;
        let listener = events.map(|_| qmp.events());
        if let Some(name) = &command {
            let reply = qmp.execute_raw(name.clone(), args).await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        if let (Some(secs), Some(mut listener)) = (events, listener) {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
            while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, listener.next()).await {
                let line = json!({
                    "event": event.name,
                    "data": event.data,
                    "timestamp": {"seconds": event.timestamp.seconds, "microseconds": event.timestamp.microseconds},
                });
                println!("{line}");
                if until.as_deref() == Some(event.name.as_str()) {
                    break;
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// Loads a spec; an invalid one is reported on stderr and gives `None`.
fn load_spec(path: &std::path::Path) -> anyhow::Result<Option<kvm_hypervisor::spec::Loaded>> {
    match InstanceSpec::load(path) {
        Ok(l) => Ok(Some(l)),
        Err(SpecError::Invalid(problems)) => {
            eprintln!(
                "Error: {}: invalid instance spec: {problems}",
                path.display()
            );
            Ok(None)
        }
        Err(e) => Err(e).context("loading the instance spec"),
    }
}
