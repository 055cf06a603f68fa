//! `resize-disk NAME UUID SIZE`.

use std::process::ExitCode;

use kvm_hypervisor::hotplug;

use crate::global::Global;
use crate::output::runtime;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// The disk's UUID.
    uuid: String,
    /// The new size: MiB, or with a K/M/G/T suffix.
    size: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        resize(self, g)
    }
}

/// `resize-disk NAME UUID SIZE`: SIZE in MiB, or with a K/M/G/T suffix.
fn resize(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let node = g.node(None)?;
    let (name, uuid, size, as_json) = (a.name.as_str(), a.uuid.as_str(), a.size.as_str(), a.json);
    let bytes = hotplug::parse_size(size)?;
    let r = runtime()?.block_on(hotplug::resize_disk(&node, name, uuid, bytes))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{}: resized to {} MiB", r.id, r.bytes / (1024 * 1024));
    }
    Ok(ExitCode::SUCCESS)
}
