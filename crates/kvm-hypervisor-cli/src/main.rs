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
pub(crate) struct Cli {
    #[command(flatten)]
    global: global::Global,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    // Arguments first: `--version` and `--help` exit before the subscriber
    // (whose filter parsing costs about a millisecond) is built.
    let cli = Cli::parse();
    if cli.command.only_prints() {
        // SAFETY: no other thread exists yet, and SIG_DFL installs no
        // handler code.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    logging();
    match cli.command.run(&cli.global) {
        Ok(code) => code,
        Err(err) => output::fail(&err),
    }
}

/// Logs to stderr: errors only, or what `RUST_LOG` asks for. The filter
/// parser is only built when `RUST_LOG` is set (it costs about 0.2 ms of
/// every command's start).
fn logging() {
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal, and never with NO_COLOR set
        // (https://no-color.org).
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        );
    if std::env::var_os("RUST_LOG").is_some() {
        fmt.with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    } else {
        fmt.with_max_level(tracing::Level::ERROR).init();
    }
}
