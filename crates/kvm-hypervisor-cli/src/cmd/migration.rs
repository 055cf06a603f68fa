//! Live migration, a step per party: `migration-info`, `accept`,
//! `migrate`, `migration-status`, `migrate-cancel`, `finalize-source`,
//! `finalize-target`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kvm_hypervisor::migration;
use kvm_hypervisor::state::RuntimeFile;

use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct InfoArgs {
    /// The instance (running here).
    name: String,
    /// Print JSON (the record is JSON; accepted for uniformity).
    #[arg(long)]
    json: bool,
}

impl InfoArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let record = runtime()?.block_on(migration::migration_info(&node, &self.name))?;
        print!("{}", migration::info_text(&node, &record));
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct AcceptArgs {
    /// What `migration-info` printed on the source (a file, or `-`); ours or
    /// Ganeti's runtime format.
    info: PathBuf,
    /// Where to listen: `ADDR:PORT` (IPv6 in brackets).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: String,
    /// Allow the source to switch to postcopy (`postcopy-ram`; the source's
    /// `migrate --postcopy` too).
    #[arg(long)]
    postcopy: bool,
    /// Accept over TLS only: a directory with `ca-cert.pem`,
    /// `server-cert.pem` and `server-key.pem` (QEMU's `tls-creds-x509`);
    /// the source's client certificate is verified.
    #[arg(long, value_name = "DIR")]
    tls_creds: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl AcceptArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let text = if self.info.as_os_str() == "-" {
            let mut t = String::new();
            std::io::stdin().read_to_string(&mut t)?;
            t
        } else {
            std::fs::read_to_string(&self.info)
                .with_context(|| format!("reading {}", self.info.display()))?
        };
        let record = RuntimeFile::parse(&self.info, &text)?.record();
        let started = runtime()?.block_on(migration::accept(
            &node,
            &record,
            &self.listen,
            &migration::AcceptOptions::default()
                .postcopy(self.postcopy)
                .tls_creds(self.tls_creds.clone()),
        ))?;
        if self.json {
            print_json(&started)?;
        } else {
            println!(
                "{}: waiting for the migration on {} (pid {})",
                started.name, self.listen, started.pid
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    /// The instance (running here).
    name: String,
    /// The target's `ADDR:PORT`, where `accept` listens.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        required_unless_present = "to",
        conflicts_with = "to"
    )]
    target: Option<String>,
    /// The whole migration to the node reached by `ssh` (batch mode): accept
    /// there, migrate and follow it here, finalize both sides; the target
    /// listens on HOST's address as resolved here and `migration_port`.
    /// `KVM_HYPERVISOR_SSH` is the ssh command line (default `ssh`). With
    /// `--tls-creds`, the directory holds the client's and the server's
    /// files, at the same path on both nodes.
    #[arg(long, value_name = "ssh://[USER@]HOST[:PORT]")]
    to: Option<String>,
    /// With `--to`: our binary on the target's node, with its global
    /// options (split as by a shell).
    #[arg(
        long,
        value_name = "COMMAND",
        requires = "to",
        default_value = "kvm-hypervisor"
    )]
    remote_command: String,
    /// With `--to`: the port the target listens on [default: the hvparam
    /// `migration_port`, 8102]
    #[arg(long, value_name = "PORT", requires = "to")]
    port: Option<u16>,
    /// Follow the migration until it ends, at most this many seconds (a
    /// progress line on a terminal; with `--json`, a JSON line per pass
    /// and status change, then the result's). `--to` always follows (600 s
    /// unless given).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600")]
    wait: Option<u64>,
    /// Allow postcopy (the target accepted with `--postcopy`; also allowed
    /// by `postcopy-ram` in `migration_caps`): with `--wait`, switch as
    /// `--postcopy-switch` says; otherwise `migrate-postcopy` switches.
    #[arg(long)]
    postcopy: bool,
    /// With `--wait` and postcopy allowed: switch once the first full pass
    /// over RAM is done (`first-pass`, Ganeti's), or only when precopy
    /// cannot converge (`stalled`) [default: the hvparam
    /// `migration_postcopy_switch`, first-pass]
    #[arg(long, value_name = "WHEN", value_parser = ["first-pass", "stalled"])]
    postcopy_switch: Option<String>,
    /// Migrate over TLS: a directory with `ca-cert.pem`, `client-cert.pem`
    /// and `client-key.pem`; the target's certificate must name the
    /// target's address.
    #[arg(long, value_name = "DIR")]
    tls_creds: Option<PathBuf>,
    /// Not live: pause the guest first; it runs again on the target at
    /// `finalize-target`, or here at `finalize-source --failure`.
    #[arg(long, conflicts_with = "postcopy")]
    offline: bool,
    /// With `--wait`: passes in a row without progress before the
    /// convergence policy raises the downtime limit (0: off) [default: the
    /// hvparam `migration_converge_passes`, 3]
    #[arg(long, value_name = "N")]
    converge_passes: Option<u32>,
    /// With `--wait`: the highest downtime limit the policy raises to (ms);
    /// past it the migration switches to postcopy (`--postcopy-switch
    /// stalled`) or is cancelled as not converging [default: the hvparam
    /// `migration_downtime_max`, 300]
    #[arg(long, value_name = "MS")]
    downtime_max: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl MigrateArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let opts = migration::MigrateOptions::default()
            .wait(self.wait.map(Duration::from_secs))
            .postcopy(self.postcopy)
            .tls_creds(self.tls_creds)
            .offline(self.offline)
            .converge(
                migration::PolicyOverrides::default()
                    .stall_passes(self.converge_passes)
                    .downtime_max_ms(self.downtime_max)
                    .postcopy_switch(self.postcopy_switch.as_deref().and_then(|w| w.parse().ok())),
            );
        // Following it: JSON lines with --json, a progress line on a
        // terminal otherwise.
        let (json, name) = (self.json, self.name.as_str());
        let bar = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let on_progress = |p: &migration::Progress| {
            if json {
                // A reader that went away must not abort the migration
                // (println! would panic on EPIPE); the result is still
                // printed, or its error reported, at the end.
                if let Ok(line) = serde_json::to_string(p) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                }
            } else if bar {
                let mib = |b: Option<u64>| b.map_or("-".to_owned(), |b| (b >> 20).to_string());
                eprint!(
                    "\r{name}: {} {}/{} MiB sent, {} MiB left, pass {}   ",
                    p.status,
                    mib(p.transferred),
                    mib(p.total),
                    mib(p.remaining),
                    p.passes.unwrap_or(0)
                );
            }
        };
        let rt = runtime()?;
        let result = match (&self.to, &self.target) {
            (Some(url), _) => rt.block_on(migration::migrate_to(
                &node,
                &self.name,
                url,
                migration::ToOptions::new(opts)
                    .remote_command(&self.remote_command)
                    .port(self.port),
                on_progress,
            )),
            (None, target) => rt.block_on(migration::migrate_watch(
                &node,
                &self.name,
                target.as_deref().context("--target or --to is needed")?,
                opts,
                on_progress,
            )),
        };
        if bar {
            eprintln!();
        }
        let p = result?;
        if self.json {
            println!("{}", serde_json::to_string(&p)?);
        } else {
            println!(
                "{}: migration {}{} (total {} ms, downtime {} ms)",
                self.name,
                p.status,
                if p.switched_to_postcopy {
                    ", switched to postcopy"
                } else {
                    ""
                },
                p.total_time_ms.map_or("-".into(), |t| t.to_string()),
                p.downtime_ms.map_or("-".into(), |t| t.to_string())
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// The instance.
    name: String,
    /// Print JSON (the only output; accepted for uniformity).
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        print_json(&runtime()?.block_on(migration::status(&node, &self.name))?)?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct CancelArgs {
    /// The instance (the source).
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What a step that changes a party's state says it did.
#[derive(serde::Serialize)]
struct Done<'a> {
    instance: &'a str,
    outcome: &'a str,
}

fn report(json: bool, instance: &str, outcome: &str) -> anyhow::Result<()> {
    if json {
        print_json(&Done { instance, outcome })
    } else {
        println!("{instance}: {outcome}");
        Ok(())
    }
}

impl CancelArgs {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let done = runtime()?.block_on(migration::cancel(&node, &self.name))?;
        let outcome = match &done.target_cleaned {
            Some(url) => format!(
                "migration cancelled; the guest goes on here; the target on {url} is stopped and cleaned up"
            ),
            None => "migration cancelled; the guest goes on here; `finalize-target --failure` on the target cleans it up".to_owned(),
        };
        report(self.json, &self.name, &outcome)?;
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) fn postcopy(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        runtime()?.block_on(migration::start_postcopy(&node, &self.name))?;
        report(self.json, &self.name, "switched to postcopy")?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(clap::Args)]
pub(crate) struct FinalizeArgs {
    /// The instance.
    name: String,
    /// The migration succeeded.
    #[arg(long, conflicts_with = "failure", required_unless_present = "failure")]
    success: bool,
    /// The migration failed.
    #[arg(long)]
    failure: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl FinalizeArgs {
    pub(crate) fn run(self, g: &Global, source: bool) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        let rt = runtime()?;
        let ending = if source {
            rt.block_on(migration::finalize_source(&node, &self.name, self.success))?
        } else {
            rt.block_on(migration::finalize_target(&node, &self.name, self.success))?
        };
        use kvm_hypervisor::Ending;
        let what = match (ending, source) {
            (Some(Ending::NotRunning), _) => "was not running here; cleaned up",
            (Some(_), _) => "stopped and cleaned up",
            (None, true) => "goes on here",
            (None, false) => "runs here",
        };
        report(self.json, &self.name, what)?;
        Ok(ExitCode::SUCCESS)
    }
}
