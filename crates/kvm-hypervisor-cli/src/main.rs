//! The `kvm-hypervisor` command. One module per subcommand (`cmd/`), each
//! with its own `Args` and `run`; the global options in `global.rs`; output
//! and exit statuses in `output.rs`. No logic a library user would need.

mod cmd;
mod global;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// Manage QEMU/KVM virtual machines on this node (Ganeti-compatible).
#[derive(Parser)]
#[command(name = "kvm-hypervisor", version, about, after_help = output::EXIT_STATUS)]
struct Cli {
    #[command(flatten)]
    global: global::Global,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    // Arguments first: `--version` and `--help` exit before the subscriber
    // (whose filter parsing costs about a millisecond) is built.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match cli.command.run(&cli.global) {
        Ok(code) => code,
        Err(err) => output::fail(&err),
    }
}
