//! Node-level manager for QEMU/KVM virtual machines, compatible with Ganeti's
//! KVM hypervisor layer.
//!
//! This crate composes the leaf crates of the workspace. Today it holds the
//! [instance spec](spec) and [validation](validate) of an instance against
//! this host; starting, stopping, hotplug and migration follow.
//!
//! ```
//! use kvm_hypervisor::spec::InstanceSpec;
//! use serde_json::json;
//!
//! let loaded = InstanceSpec::from_value(&json!({
//!     "name": "web1", "memory": 1024, "vcpus": 2,
//!     "nics": [{"mode": "bridged", "link": "br0"}],
//! })).unwrap();
//! assert_eq!(loaded.spec.min_memory(), 1024);
//! // The NIC's uuid and mac were generated and are reported.
//! let fields: Vec<&str> = loaded.generated.iter().map(|g| g.field.as_str()).collect();
//! assert_eq!(fields, ["uuid", "nics[0].uuid", "nics[0].mac"]);
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod caps;
pub mod cgroup;
pub mod defined;
pub mod devices;
pub mod ganeti;
pub mod host;
pub mod hotplug;
mod instance;
mod launch;
mod lifecycle;
pub mod migration;
pub mod monitor;
mod nicsetup;
pub mod node;
mod outcome;
pub mod process;
pub mod spec;
mod timing;
pub mod validate;

/// Device ids and slot allocation, re-exported.
pub use device_slots as slots;
/// The hvparam definitions and checks, re-exported for users of this crate.
pub use hvparam_validation as hvparams;
pub use instance::{CRASH_HOOK_ENV, FAULT_ENV, Instance, OpenError, ProcessExit, connect};
pub use launch::execute::{MONITOR_TIMEOUT, MONITOR_TIMEOUT_ENV};
pub use launch::plan::{
    FIRST_PASSED_FD, LaunchPlan, ListenSocket, PlanEnv, PlanError, PostStartStep, StartMode,
    TapPlan, plan_start,
};
pub use launch::rollback::{Rollback, Undo};
pub use launch::{StartError, StartOptions, Started, start};
pub use lifecycle::{
    BalloonError, Ballooned, Console, ConsoleError, Consoles, DeviceSummary, Ending, InfoError,
    InstanceInfo, InstanceState, RebootError, StopError, StopOptions, balloon, cleanup, consoles,
    info, info_all, list, prepare_console, press_power_button, reboot, resume_for_console,
    spec_from_record, stop,
};
pub use nicsetup::NicSetupError;
pub use node::{Node, NodeInfo};
pub use outcome::{Classify, ErrorKind, error_chain, error_kind};
/// The QEMU command-line model and capabilities, re-exported.
pub use qemu_cmdline as cmdline;
/// The QMP client, re-exported.
pub use qmp_protocol as qmp;
/// The run directory and runtime files, re-exported for users of this crate.
pub use runtime_state as state;
/// Taps, links and NIC configuration, re-exported.
pub use tap_netdev as net;
pub use timing::TIMING_TARGET;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
