//! `ganeti install|uninstall|status`: our class as Ganeti's `kvm`
//! hypervisor on a Ganeti node, and back.

use std::path::PathBuf;
use std::process::ExitCode;

use kvm_hypervisor::ganeti;

use crate::global::Global;
use crate::output::print_json;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: GanetiCommand,
}

#[derive(clap::Subcommand)]
enum GanetiCommand {
    /// Make kvm-hypervisor serve Ganeti's `kvm` hypervisor on this node
    /// (idempotent; restart Ganeti's daemons afterwards).
    Install(Where),
    /// Give `kvm` back to Ganeti's own KVM layer on this node.
    Uninstall(Where),
    /// Which class serves Ganeti's `kvm` hypervisor on this node.
    Status(Where),
}

#[derive(clap::Args)]
struct Where {
    /// Ganeti's Python package [default: /usr/share/ganeti/default/ganeti]
    #[arg(long, value_name = "DIR")]
    ganeti_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, _g: &Global) -> anyhow::Result<ExitCode> {
        let (w, done) = match self.command {
            GanetiCommand::Install(w) => {
                let dir = w.ganeti_dir.clone().unwrap_or_else(ganeti::default_dir);
                (w, ganeti::install(&dir)?)
            }
            GanetiCommand::Uninstall(w) => {
                let dir = w.ganeti_dir.clone().unwrap_or_else(ganeti::default_dir);
                (w, ganeti::uninstall(&dir)?)
            }
            GanetiCommand::Status(w) => {
                let dir = w.ganeti_dir.clone().unwrap_or_else(ganeti::default_dir);
                (w, ganeti::status(&dir)?)
            }
        };
        if w.json {
            print_json(&done)?;
        } else {
            println!(
                "Ganeti {} at {}: kvm is served by {}{}",
                done.version,
                done.dir.display(),
                match done.kvm_class {
                    "kvm-hypervisor" => "kvm-hypervisor (kvmh_ganeti.KvmHypervisor)",
                    _ => "Ganeti's own KVM layer (hv_kvm.KVMHypervisor)",
                },
                if done.kvm_class == "kvm-hypervisor" && !done.module_current {
                    "; its module is not this binary's: run `ganeti install` again"
                } else {
                    ""
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
