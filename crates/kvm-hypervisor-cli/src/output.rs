//! Output in one place: JSON, the error chain, exit statuses, the runtime.

use std::process::ExitCode;

use serde::Serialize;

/// The exit statuses, as `--help` shows them.
pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  invalid input: a spec, hvparams, or arguments that parse but are wrong
  2  usage error (unknown command or option, missing or malformed argument)
  3  no such instance (not running and no runtime record)
  4  busy or in the wrong state: locked, already running, not running
  5  the operation failed: QEMU, the host, a timeout";

/// Exit status 1: invalid input.
pub(crate) fn invalid() -> ExitCode {
    ExitCode::from(kvm_hypervisor::ErrorKind::InvalidInput.exit_status())
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Arguments that parse but cannot be right (exit status 1), found by the
/// binary itself rather than the library.
#[derive(Debug)]
pub(crate) struct Invalid(pub(crate) String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Prints `err` as `Error: …` / `caused by: …` lines and returns the exit
/// status of its kind.
pub(crate) fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("Error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("caused by: {cause}");
    }
    if err.downcast_ref::<Invalid>().is_some() {
        return invalid();
    }
    ExitCode::from(kvm_hypervisor::error_kind(err.as_ref()).exit_status())
}

/// A single-threaded tokio runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
