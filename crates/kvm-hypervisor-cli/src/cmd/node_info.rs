//! `node-info`.

use std::process::ExitCode;

use kvm_hypervisor::{caps, node};

use super::{Json, QemuPath};
use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    qemu: QemuPath,
    #[command(flatten)]
    out: Json,
}

impl Args {
    pub(crate) fn run(self, _: &Global) -> anyhow::Result<ExitCode> {
        let cache = caps::default_cache_dir();
        let info = runtime()?.block_on(node::node_info(&self.qemu.qemu, &cache));
        if self.out.json {
            print_json(&info)?;
            return Ok(ExitCode::SUCCESS);
        }
        let or = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
        println!("qemu      {}", or(info.qemu_version.clone()));
        println!(
            "cpus      {} ({} socket(s), {} NUMA node(s))",
            or(info.cpus.map(|c| c.to_string())),
            or(info.cpu_sockets.map(|c| c.to_string())),
            or(info.numa_nodes.map(|c| c.to_string()))
        );
        println!(
            "memory    {} MiB total, {} MiB available, {} MiB active",
            or(info.memory_total_mib.map(|m| m.to_string())),
            or(info.memory_free_mib.map(|m| m.to_string())),
            or(info.memory_active_mib.map(|m| m.to_string()))
        );
        let kvm = match info.kvm {
            Some(true) => "usable",
            Some(false) => "not usable",
            None => "unknown",
        };
        println!("kvm       {kvm}");
        Ok(ExitCode::SUCCESS)
    }
}
