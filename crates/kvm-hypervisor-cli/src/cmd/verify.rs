//! `verify`: whether this node can run instances.

use std::process::ExitCode;

use kvm_hypervisor::caps;
use kvm_hypervisor::node::{self, CheckOutcome};
use serde_json::json;

use super::{Json, QemuPath};
use crate::global::Global;
use crate::output::{invalid, print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    qemu: QemuPath,
    #[command(flatten)]
    out: Json,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let cache = caps::default_cache_dir();
        let checks = runtime()?.block_on(node::verify(&self.qemu.qemu, &cache, &node.run));
        let failed = checks.iter().any(|c| c.verdict == CheckOutcome::Fail);
        if self.out.json {
            print_json(&json!({"ok": !failed, "checks": checks}))?;
        } else {
            for c in &checks {
                let v = match c.verdict {
                    CheckOutcome::Ok => "ok",
                    CheckOutcome::Warn => "warn",
                    CheckOutcome::Fail => "FAIL",
                };
                println!("{v:<5} {:<10} {}", c.what, c.detail);
            }
        }
        Ok(if failed { invalid() } else { ExitCode::SUCCESS })
    }
}
