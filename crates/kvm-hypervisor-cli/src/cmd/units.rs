//! `install-units`: the systemd units of `integrations/systemd/`, with
//! this binary's path written in.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::global::Global;
use crate::output::print_json;

/// The units, by file name, as shipped (the binary at
/// `/usr/local/sbin/kvm-hypervisor`).
pub(crate) const UNITS: &[(&str, &str)] = &[
    (
        "kvm-hypervisor-monitor.service",
        include_str!("../../../../integrations/systemd/kvm-hypervisor-monitor.service"),
    ),
    (
        "kvm-hypervisor-node.service",
        include_str!("../../../../integrations/systemd/kvm-hypervisor-node.service"),
    ),
];

const SHIPPED_BINARY: &str = "/usr/local/sbin/kvm-hypervisor";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Where to write the units.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
    /// The binary the units run [default: this one].
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let bin = match self.bin {
            Some(b) => b,
            None => std::env::current_exe().context("finding this binary")?,
        };
        let mut options = String::new();
        if let Some(dir) = g.explicit_run_dir() {
            options.push_str(&format!(" --run-dir {}", dir.display()));
        }
        if let Some(dir) = g.explicit_config_dir() {
            options.push_str(&format!(" --config-dir {}", dir.display()));
        }
        std::fs::create_dir_all(&self.unit_dir)
            .with_context(|| format!("creating {}", self.unit_dir.display()))?;
        let mut written = Vec::new();
        for (file, text) in UNITS {
            let path = self.unit_dir.join(file);
            let text = text.replace(SHIPPED_BINARY, &format!("{}{options}", bin.display()));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
        if self.json {
            print_json(&json!({"written": written}))?;
        } else {
            for p in &written {
                println!("wrote {}", p.display());
            }
            println!(
                "then: systemctl daemon-reload && systemctl enable --now \
                 kvm-hypervisor-monitor.service kvm-hypervisor-node.service"
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
