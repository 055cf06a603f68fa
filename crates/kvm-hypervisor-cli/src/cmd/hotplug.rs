//! `hotplug …`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use kvm_hypervisor::hotplug::{self, Added, Removal};
use serde_json::{Value, json};

use crate::global::Global;
use crate::output::{invalid, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: HotplugCommand,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        run(g, self.command)
    }
}

/// Device hotplug on a running instance.
#[derive(Subcommand)]
enum HotplugCommand {
    /// Hot-add a disk. DISKSPEC is a JSON object shaped like an element of
    /// an instance spec's `disks` (or `@FILE`).
    AddDisk {
        /// The instance.
        name: String,
        /// The disk spec (JSON, or @FILE).
        diskspec: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hot-remove a disk; a guest that does not release it in time leaves
    /// it "removal pending", completed by a later command.
    DelDisk {
        /// The instance.
        name: String,
        /// The disk: its UUID, a unique prefix of it, its name or its index.
        uuid: String,
        /// Seconds the guest gets to release the device.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hot-add a NIC. NICSPEC is a JSON object shaped like an element of an
    /// instance spec's `nics` (or `@FILE`).
    AddNic {
        /// The instance.
        name: String,
        /// The NIC spec (JSON, or @FILE).
        nicspec: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hot-remove a NIC, then its netdev and network configuration.
    DelNic {
        /// The instance.
        name: String,
        /// The NIC: its UUID, a unique prefix of it, its name or its index.
        uuid: String,
        /// Seconds the guest gets to release the device.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a NIC (same UUID) with new parameters in the same slot.
    ModNic {
        /// The instance.
        name: String,
        /// The NIC spec (JSON, or @FILE), with the UUID of the NIC to replace.
        nicspec: String,
        /// Seconds the guest gets to release the old device.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Whether hotplug is possible for the instance, per device type.
    Check {
        /// The instance.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Finish or undo an interrupted hotplug and complete pending removals.
    Recover {
        /// The instance.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn spec_json(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).context("the device spec is not JSON")
}

fn print_added(a: &Added, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(a)?);
    } else {
        let tap = a
            .tap
            .as_deref()
            .map(|t| format!(" (tap {t})"))
            .unwrap_or_default();
        println!("{} {}: added as {} {}{tap}", a.kind, a.uuid, a.id, a.hvinfo);
    }
    Ok(())
}

fn print_removal(r: &Removal, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        match r {
            Removal::Removed { id } => println!("{id}: removed"),
            Removal::Pending { id } => println!(
                "{id}: removal pending (the guest has not released it yet; a later command completes it)"
            ),
        }
    }
    Ok(())
}

/// Runs one `hotplug` subcommand.
fn run(g: &Global, command: HotplugCommand) -> anyhow::Result<ExitCode> {
    let node = g.node(None)?;
    let rt = runtime()?;
    match command {
        HotplugCommand::AddDisk {
            name,
            diskspec,
            json,
        } => {
            let disk = hotplug::parse_disk_spec(&spec_json(&diskspec)?)?;
            print_added(&rt.block_on(hotplug::add_disk(&node, &name, &disk))?, json)?;
        }
        HotplugCommand::AddNic {
            name,
            nicspec,
            json,
        } => {
            let nic = hotplug::parse_nic_spec(&spec_json(&nicspec)?)?;
            print_added(&rt.block_on(hotplug::add_nic(&node, &name, &nic))?, json)?;
        }
        HotplugCommand::ModNic {
            name,
            nicspec,
            timeout,
            json,
        } => {
            let nic = hotplug::parse_nic_spec(&spec_json(&nicspec)?)?;
            let deadline = Duration::from_secs(timeout);
            print_added(
                &rt.block_on(hotplug::modify_nic(&node, &name, &nic, deadline))?,
                json,
            )?;
        }
        HotplugCommand::DelDisk {
            name,
            uuid,
            timeout,
            json,
        } => {
            let deadline = Duration::from_secs(timeout);
            let uuid = hotplug::device_uuid(&node, &name, "disk", &uuid)?;
            let r = rt.block_on(hotplug::remove_disk(&node, &name, &uuid, deadline))?;
            print_removal(&r, json)?;
        }
        HotplugCommand::DelNic {
            name,
            uuid,
            timeout,
            json,
        } => {
            let deadline = Duration::from_secs(timeout);
            let uuid = hotplug::device_uuid(&node, &name, "NIC", &uuid)?;
            let r = rt.block_on(hotplug::remove_nic(&node, &name, &uuid, deadline))?;
            print_removal(&r, json)?;
        }
        HotplugCommand::Check { name, json } => {
            let s = rt.block_on(hotplug::check(&node, &name))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for (kind, v) in [("disk", &s.disk), ("nic", &s.nic)] {
                    let yes = |b: bool| if b { "yes" } else { "no" };
                    println!(
                        "{kind:5} add: {}  remove: {}{}",
                        yes(v.add),
                        yes(v.remove),
                        v.reasons
                            .iter()
                            .map(|r| format!("\n      {r}"))
                            .collect::<String>()
                    );
                }
            }
            let all = s.disk.add && s.nic.add;
            return Ok(if all { ExitCode::SUCCESS } else { invalid() });
        }
        HotplugCommand::Recover { name, json } => {
            let done = rt.block_on(hotplug::recover(&node, &name))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else if done.is_empty() {
                println!("{name}: nothing to recover");
            } else {
                for d in done {
                    println!("{}", json!(d));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
