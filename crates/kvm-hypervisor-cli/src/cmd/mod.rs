//! The subcommands, one module each.

mod balloon;
mod cleanup;
mod console;
mod define;
mod docs;
mod ganeti;
mod hotplug;
mod info;
mod migration;
mod monitor;
mod node_info;
mod params;
mod plan;
mod qemu_caps;
mod qmp;
mod reboot;
mod resize_disk;
mod runtime;
mod start;
mod stop;
mod units;
mod validate;
mod verify;

use std::process::ExitCode;

use clap::Subcommand;

use crate::global::Global;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check an instance spec and validate it against this host and its QEMU.
    ///
    /// Exit status: 0 valid, 1 invalid (as `start` would refuse it).
    Validate(validate::Args),
    /// List every hvparam with its type, default and allowed values.
    Params(params::Args),
    /// Show what a QEMU binary can do (probed once, then cached).
    QemuCaps(qemu_caps::Args),
    /// Print the QEMU command line an instance would get, starting nothing.
    ///
    /// Passed descriptors appear as numbers: the QMP monitor sockets (ours,
    /// the monitor daemon's, the users') are fds 3, 4 and 5, each tap queue
    /// (and vhost-net) fd follows.
    Plan(plan::Args),
    /// Start an instance from its spec (QEMU starts paused, is configured
    /// over QMP, then continued). Any failure undoes everything.
    Start(start::Args),
    /// Stop an instance: ACPI power-down, wait, then SIGTERM, then SIGKILL.
    Stop(stop::Args),
    /// The state of one instance (or all).
    Info(info::Args),
    /// List instances with their state.
    List(info::ListArgs),
    /// Remove every file of a stopped (or crashed) instance.
    Cleanup(cleanup::Args),
    /// Reboot: a graceful stop (ACPI, waiting up to --timeout) then a start
    /// from the runtime record; --hard kills instead of powering off.
    Reboot(reboot::Args),
    /// Attach to the serial console (Ctrl-] ends); --info prints where the
    /// consoles (serial, VNC, SPICE) are.
    Console(console::Args),
    /// Watch every running instance (and those started later) for a guest
    /// shutdown; records it so `info` says shutdown-by-guest, not crashed.
    /// Runs in the foreground until SIGINT/SIGTERM (systemd-friendly); prints
    /// one JSON line per QEMU that went away.
    Monitor(monitor::Args),
    /// What this node has: QEMU version, CPUs, memory, KVM.
    NodeInfo(node_info::Args),
    /// Whether this node can run instances: QEMU, /dev/kvm, /dev/net/tun,
    /// /dev/vhost-net, run-directory permissions. Exit status 1 on a failure.
    Verify(verify::Args),
    /// Set the balloon target of a running instance.
    Balloon(balloon::Args),
    /// Send one QMP command and print the reply as JSON; or print events.
    Qmp(qmp::Args),
    /// Runtime records of running instances.
    Runtime(runtime::Args),
    /// Hot-add, remove or replace disks and NICs of a running instance.
    Hotplug(hotplug::Args),
    /// Resize a disk of a running instance (`block_resize`).
    ResizeDisk(resize_disk::Args),
    /// Live migration, source: the runtime record the target needs.
    MigrationInfo(migration::InfoArgs),
    /// Live migration, target: start the incoming instance and listen.
    Accept(migration::AcceptArgs),
    /// Live migration, source: start migrating to a target that accepts.
    Migrate(migration::MigrateArgs),
    /// Live migration: where it stands (JSON).
    MigrationStatus(migration::StatusArgs),
    /// Live migration, source: cancel; the guest goes on here.
    MigrateCancel(migration::CancelArgs),
    /// Live migration, source: switch to postcopy now (both parties must
    /// allow it).
    MigratePostcopy(migration::CancelArgs),
    /// Live migration, source: after success stop and clean up here; after
    /// a failure let the guest go on.
    FinalizeSource(migration::FinalizeArgs),
    /// Live migration, target: after success the guest runs here; after a
    /// failure stop and clean up the incoming instance.
    FinalizeTarget(migration::FinalizeArgs),
    /// Serve Ganeti's `kvm` hypervisor on this Ganeti node, or stop doing so.
    Ganeti(ganeti::Args),
    /// Keep an instance's spec in the config directory, so that `start
    /// NAME` starts it and it survives a reboot of the node; values it
    /// leaves out (UUIDs, MACs) are generated once and written in.
    Define(define::DefineArgs),
    /// Forget a defined instance (not while it runs).
    Undefine(define::NameArgs),
    /// Edit a definition in $VISUAL or $EDITOR; it is checked before it is
    /// saved.
    Edit(define::NameArgs),
    /// Whether `node-start` starts a defined instance.
    Autostart(define::AutostartArgs),
    /// Start every autostart instance that is not running (at boot), in
    /// their order, some at once.
    NodeStart(define::NodeStartArgs),
    /// Stop every running instance at once, with one deadline for all (at
    /// shutdown).
    NodeStop(define::NodeStopArgs),
    /// Write the systemd units (the monitor as a service; node-start at
    /// boot and node-stop at shutdown) with this binary's path, and the
    /// global --run-dir/--config-dir given, written in.
    InstallUnits(units::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `kvm-hypervisor completions bash >
    /// /usr/share/bash-completion/completions/kvm-hypervisor`.
    Completions(docs::CompletionsArgs),
    /// Print the JSON Schema of an instance spec (for editors: e.g. VS Code's
    /// `json.schemas`, or `"$schema"` in the spec).
    SpecSchema(docs::SchemaArgs),
    /// Write the man pages (one per command) into a directory.
    #[command(hide = true)]
    ManPages(docs::ManPagesArgs),
}

impl Command {
    /// Whether the command only reads and prints: such a command may die
    /// of SIGPIPE when its reader goes away (`| head`), as Unix tools do;
    /// the others finish what they do and ignore the closed pipe.
    pub(crate) fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Validate(_)
                | Command::Params(_)
                | Command::QemuCaps(_)
                | Command::Plan(_)
                | Command::Info(_)
                | Command::List(_)
                | Command::NodeInfo(_)
                | Command::Verify(_)
                | Command::Runtime(_)
                | Command::MigrationInfo(_)
                | Command::MigrationStatus(_)
                | Command::Completions(_)
                | Command::ManPages(_)
                | Command::SpecSchema(_)
        )
    }

    /// Runs the subcommand.
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        match self {
            Command::Validate(a) => a.run(g),
            Command::Params(a) => a.run(g),
            Command::QemuCaps(a) => a.run(g),
            Command::Plan(a) => a.run(g),
            Command::Start(a) => a.run(g),
            Command::Stop(a) => a.run(g),
            Command::Info(a) => a.run(g),
            Command::List(a) => a.run(g),
            Command::Cleanup(a) => a.run(g),
            Command::Reboot(a) => a.run(g),
            Command::Console(a) => a.run(g),
            Command::Monitor(a) => a.run(g),
            Command::NodeInfo(a) => a.run(g),
            Command::Verify(a) => a.run(g),
            Command::Balloon(a) => a.run(g),
            Command::Qmp(a) => a.run(g),
            Command::Runtime(a) => a.run(g),
            Command::Hotplug(a) => a.run(g),
            Command::ResizeDisk(a) => a.run(g),
            Command::MigrationInfo(a) => a.run(g),
            Command::Accept(a) => a.run(g),
            Command::Migrate(a) => a.run(g),
            Command::MigrationStatus(a) => a.run(g),
            Command::MigrateCancel(a) => a.run(g),
            Command::MigratePostcopy(a) => a.postcopy(g),
            Command::FinalizeSource(a) => a.run(g, true),
            Command::FinalizeTarget(a) => a.run(g, false),
            Command::Ganeti(a) => a.run(g),
            Command::Define(a) => a.run(g),
            Command::Undefine(a) => a.undefine(g),
            Command::Edit(a) => a.edit(g),
            Command::Autostart(a) => a.run(g),
            Command::NodeStart(a) => a.run(g),
            Command::NodeStop(a) => a.run(g),
            Command::InstallUnits(a) => a.run(g),
            Command::Completions(a) => a.run(),
            Command::ManPages(a) => a.run(),
            Command::SpecSchema(a) => a.run(),
        }
    }
}

/// `--qemu PATH`, defaulting to Debian's binary.
#[derive(clap::Args)]
pub(crate) struct QemuPath {
    /// The QEMU binary.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/bin/qemu-system-x86_64"
    )]
    pub(crate) qemu: std::path::PathBuf,
}

/// `--json`.
#[derive(clap::Args)]
pub(crate) struct Json {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Loads a spec; an invalid one is reported on stderr and gives `None`.
pub(crate) fn load_spec(
    path: &std::path::Path,
) -> anyhow::Result<Option<kvm_hypervisor::spec::Loaded>> {
    use anyhow::Context;
    use kvm_hypervisor::spec::{InstanceSpec, SpecError};
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
