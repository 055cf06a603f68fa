//! A typed model of a QEMU invocation, rendered to an argv.
//!
//! - [`Invocation`]: machine, accelerator, CPU and topology, memory, chardevs,
//!   monitors, serial ports, display, `-blockdev`, `-device`, `-netdev`,
//!   `-object`, privilege drop and chroot, sandbox, extra arguments; rendered
//!   by [`Invocation::render`] for the [`Features`] of a given QEMU.
//! - [`Opts`]: QEMU's `key=value` notation, commas in values doubled,
//!   booleans in the long form (`server=on,wait=off`).
//! - [`Blockdev`]: nested `-blockdev` options flattened to dotted keyval
//!   (lists too) or rendered as JSON; [`storage_uri`] parses userspace disk
//!   URIs (rbd, gluster, nbd, iscsi, http(s), ftp(s)) into blockdev nodes.
//! - [`QemuCaps`]: what a QEMU binary can do, from its QMP replies or, as an
//!   offline fallback, from its help texts ([`parse_version`],
//!   [`parse_machine_help`], [`parse_device_help`], [`parse_help_options`]).
//!
//! Architecture invariant: this crate does no I/O. It neither reads files
//! nor spawns QEMU; facts about the binary are passed in as data.
//!
//! ```
//! use qemu_cmdline::{Invocation, Opts, QemuCaps};
//!
//! let help = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)\n-run-with user=U\n-audio driver\n";
//! let caps = QemuCaps::from_help(help, None, None).unwrap();
//! let mut inv = Invocation::new("/usr/bin/qemu-system-x86_64", "web1", "pc-i440fx-7.2");
//! inv.chardevs.push(Opts::new("socket").set("id", "qmp").set("path", "/run/a,b.qmp").set("server", true).set("wait", false));
//! let argv = inv.render(&caps.features());
//! assert!(argv.contains(&"socket,id=qmp,path=/run/a,,b.qmp,server=on,wait=off".to_owned()));
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod blockdev;
mod caps;
mod invocation;
mod opts;

pub use blockdev::{Blockdev, storage_uri};
pub use caps::{
    CapsSource, Features, MachineType, QemuCaps, QemuVersion, parse_device_help,
    parse_help_options, parse_machine_help, parse_version,
};
pub use invocation::{Accel, Audio, Display, Invocation, KernelBoot, RunWith, Smp, host_port};
pub use opts::{OptValue, Opts, escape};

/// What can go wrong building a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmdlineError {
    /// A userspace disk URI that cannot be parsed.
    #[error("`{uri}` is not a usable storage URI: {why}")]
    BadStorageUri {
        /// The URI.
        uri: String,
        /// Why not.
        why: String,
    },
    /// A malformed blockdev node.
    #[error("bad blockdev options: {0}")]
    BadBlockdev(String),
    /// Capability data that cannot be understood.
    #[error("cannot read QEMU capabilities: {0}")]
    BadCaps(String),
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
