//! `monitor`: guest-shutdown detection in the foreground.

use std::io::Write;
use std::process::ExitCode;

use crate::global::Global;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The cap of each serial console log: past it, the log keeps its last
    /// half (sizes as for resize-disk: 4MiB, 1G, …).
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    console_log_max: u64,
    /// Print JSON (each verdict is a JSON line already; accepted for
    /// uniformity).
    #[arg(long)]
    #[allow(dead_code)]
    json: bool,
}

/// Tells systemd (`Type=notify`, `NOTIFY_SOCKET`) that the monitor is up;
/// nothing without systemd.
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not tell systemd the monitor is ready");
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    kvm_hypervisor::hotplug::parse_size(text).map_err(|e| e.to_string())
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let stop = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            let printer = async {
                while let Some(v) = rx.recv().await {
                    println!("{}", serde_json::to_string(&v).unwrap_or_default());
                    let _ = std::io::stdout().flush();
                }
            };
            tokio::select! {
                r = kvm_hypervisor::monitor::run_notifying(node.run.clone(), self.console_log_max, tx, stop, notify_ready) => r.map_err(anyhow::Error::from),
                () = printer => Ok(()),
            }
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
