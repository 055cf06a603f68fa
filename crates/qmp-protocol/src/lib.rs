//! An asynchronous (tokio) client for the QEMU Machine Protocol (QMP).
//!
//! # What it does
//!
//! - Connects to a QMP Unix socket, or takes an already-connected stream
//!   (e.g. one end of a socketpair handed to QEMU as `-chardev socket,fd=N`),
//!   reads the greeting (events before it are skipped) and negotiates
//!   `qmp_capabilities`. A typestate makes commands impossible before that:
//!   [`Handshake`] can only [`negotiate`](Handshake::negotiate), which yields
//!   a [`Client`].
//! - Tags every command with an `id` and routes each reply to its caller, so
//!   several tasks may have commands in flight on one connection. One reader
//!   task owns the read half of the socket.
//! - Sends typed commands ([`Command`]: one struct per QMP command, arguments
//!   with their JSON types, replies decoded leniently) and untyped ones
//!   ([`Client::execute_raw`]).
//! - Passes file descriptors with `SCM_RIGHTS` in the same `sendmsg(2)` as
//!   the command (`getfd`, `add-fd`).
//! - Bounds every command with a deadline (a per-command default, see
//!   [`default_timeout`], overridable per call). A timed-out command fails
//!   with [`QmpError::Timeout`] and the connection stays usable; its late
//!   reply is dropped.
//! - Delivers events to listeners registered with a filter *before* the
//!   command that causes them is sent, so an event that overtakes the reply
//!   is never lost.
//! - Logs commands at `debug` and raw lines at `trace` with `tracing`,
//!   never showing the password of `set_password`.
//!
//! # What it does not do
//!
//! It does not start or supervise QEMU, reconnect, know about Ganeti,
//! instances or run directories, check commands against `query-commands`
//! before sending them (QEMU's `CommandNotFound` becomes
//! [`QmpError::NotSupported`]), or use out-of-band execution (`exec-oob`).
//! Event queues are unbounded: take events from listeners you keep.
//!
//! # Example
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use std::time::Duration;
//!
//! use qmp_protocol::{
//!     Client, DeviceDel, DeviceDeletedEvent, QemuVersion, QueryStatus, RunState,
//! };
//!
//! # async fn example(tap: std::fs::File) -> Result<(), qmp_protocol::QmpError> {
//! let qmp = Client::connect("/var/run/ganeti/kvm-hypervisor/ctrl/vm1.qmp").await?;
//! if qmp.version() < QemuVersion::new(7, 2, 0) {
//!     // Too old for this caller.
//! }
//!
//! let status = qmp.execute(QueryStatus).await?;
//! assert_eq!(status.status, RunState::Running);
//!
//! // Pass a descriptor: getfd with SCM_RIGHTS.
//! qmp.get_fd("tapfd-nic-1", tap.as_fd()).await?;
//!
//! // Listen first, then act, then wait.
//! let mut deleted = qmp.listen(DeviceDeletedEvent::for_device("disk-1234"));
//! qmp.execute(DeviceDel::new("disk-1234")).await?;
//! deleted.wait(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod codec;
mod command;
mod commands;
mod error;
mod events;
mod redact;
mod wire;

#[cfg(test)]
mod fuzz;

pub use client::{Client, ConnectOptions, Execute, Handshake};
pub use command::{Command, default_timeout};
pub use commands::{
    AddFd, AddFdInfo, Balloon, BalloonInfo, BlockDeviceInfo, BlockInfo, BlockResize, BlockdevAdd,
    BlockdevDel, CloseFd, CommandInfo, CommandLineOptionInfo, CommandLineParameterInfo, Cont,
    CpuDefinitionInfo, CpuInfoFast, DeviceAdd, DeviceDel, DeviceListProperties, DisplayProtocol,
    FdsetFdInfo, FdsetInfo, GetFd, MachineInfo, Migrate, MigrateCancel, MigrateIncoming,
    MigrateSetCapabilities, MigrateSetParameters, MigrateStartPostcopy, MigrationCapabilityStatus,
    MigrationInfo, MigrationStats, MigrationStatus, NetdevAdd, NetdevDel, ObjectAdd, ObjectDel,
    ObjectPropertyInfo, ObjectTypeInfo, PciBridgeInfo, PciDeviceId, PciDeviceInfo, PciInfo, QomGet,
    QomList, QomListTypes, QueryBalloon, QueryBlock, QueryCommandLineOptions, QueryCommands,
    QueryCpuDefinitions, QueryCpusFast, QueryFdsets, QueryMachines, QueryMigrate,
    QueryMigrateCapabilities, QueryPci, QueryQmpSchema, QueryStatus, QueryVersion, Quit, RemoveFd,
    RunState, SchemaInfo, SetPassword, StatusInfo, Stop, SystemPowerdown, SystemReset,
};
pub use error::{ProtocolError, QmpError};
pub use events::{
    BalloonChangeEvent, DeviceDeletedEvent, DeviceUnplugGuestErrorEvent, EventFilter,
    EventListener, MigrationEvent, QmpEvent, ResumeEvent, ShutdownCause, ShutdownEvent, StopEvent,
};
pub use wire::{Event, Greeting, QemuVersion, Timestamp, VersionInfo};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
