//! `resize-disk NAME DISK SIZE`.

use std::process::ExitCode;

use kvm_hypervisor::hotplug;

use crate::global::Global;
use crate::output::runtime;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// The disk: its UUID, a unique prefix of it, its name or its index.
    disk: String,
    /// The new size: MiB, or with a unit (1.5G, 512MiB, 100GB; K/M/G/T are
    /// binary as in QEMU, KB/MB/GB/TB decimal); `+SIZE` grows it by SIZE.
    #[arg(allow_hyphen_values = true)]
    size: String,
    /// Allow a smaller size, discarding the end of the disk's data.
    #[arg(long)]
    allow_shrink: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        resize(self, g)
    }
}

/// `resize-disk NAME DISK SIZE`: SIZE in MiB, or with a K/M/G/T suffix,
/// `+` to grow by it.
fn resize(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let node = g.node(None)?;
    let (name, size, as_json) = (a.name.as_str(), a.size.as_str(), a.json);
    let allow_shrink = a.allow_shrink;
    let size = hotplug::parse_disk_size(size)?;
    let uuid = hotplug::device_uuid(&node, name, "disk", &a.disk)?;
    let r = runtime()?.block_on(hotplug::resize_disk(&node, name, &uuid, size, allow_shrink))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        match r.previous_bytes {
            Some(p) => println!("{}: resized from {} to {} MiB", r.id, mib(p), mib(r.bytes)),
            None => println!("{}: resized to {} MiB", r.id, mib(r.bytes)),
        }
    }
    Ok(ExitCode::SUCCESS)
}
