//! Every KVM hypervisor parameter (hvparam) of Ganeti: its type, default and
//! allowed values, and three levels of checking.
//!
//! 1. [`HvParams::from_map`] types a JSON object of overrides (missing names
//!    take Ganeti's defaults) and runs [`HvParams::check`]: syntax and every
//!    cross-parameter rule of Ganeti's `check_*` functions. Nothing outside the
//!    values is looked at.
//! 2. [`HvParams::validate`] compares the parameters with [`HostFacts`] that
//!    the caller gathered (QEMU's capabilities, interfaces, users, paths, CPUs).
//!    [`HvParams::facts_wanted`] says which facts are needed; a fact left out is
//!    reported as [`Unchecked`], never guessed.
//! 3. [`HvParams::assess`] gives Ganeti's advisory [`Warning`]s, and a few more.
//!
//! Every problem is reported at once, each naming the hvparam, sorted in
//! Ganeti's parameter order, with set members listed in declared order.
//!
//! Where Ganeti is wrong, this crate does better (see the reference's §11):
//! `machine_version` is matched exactly instead of interpolated into a regex;
//! `disk_type`/`cdrom_disk_type` values that can never start are refused;
//! `cpu_mask` entries that pin to no CPU are refused; a VNC/SPICE interface
//! without an address is refused; port 65535 is a port.
//!
//! This crate does no I/O and depends on no other crate of the workspace.
//!
//! ```
//! use hvparam_validation::{BootOrder, HvParams, ProblemKind};
//! use serde_json::json;
//!
//! let ok = HvParams::from_map(json!({"boot_order": "network"}).as_object().unwrap()).unwrap();
//! assert_eq!(ok.boot_order(), BootOrder::Network);
//! assert_eq!(ok.migration_port(), 8102); // Ganeti's default
//!
//! let err = HvParams::from_map(json!({"boot_ordr": "disk", "acpi": "yes"}).as_object().unwrap())
//!     .unwrap_err();
//! let names: Vec<&str> = err.as_slice().iter().map(|p| p.param()).collect();
//! assert_eq!(names, ["acpi", "boot_ordr"]);
//! assert_eq!(err.as_slice()[1].to_string(), "boot_ordr: unknown hvparam; did you mean `boot_order`?");
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod assess;
mod check;
mod cpumask;
mod enums;
mod host;
mod params;
mod problem;
mod value;

pub use assess::{Warning, WarningKind};
pub use check::{SERIAL_SPEEDS, is_norm_abs_path};
pub use cpumask::{CpuMask, CpuMaskError, CpuSet, MAX_CPU_ID};
pub use enums::{
    BootOrder, DiskAio, DiskCache, DiskDiscard, DiskType, KvmFlag, MigrationMode, NicType,
    PostcopySwitch, RebootBehavior, ScsiControllerType, SecurityModel, SpiceImageCompression,
    SpiceStreamingVideo, SpiceWanCompression, UsbMouse,
};
pub use host::{
    FactsWanted, HostFacts, MISSING_QEMU_CAPS, PathKind, QemuFacts, Unchecked, Validation,
};
pub use params::{
    DEFAULT_KERNEL_PATH, DEFAULT_KVM_PATH, EXTENSIONS, HvParams, ParamDef, Rule, Scope, lookup,
    params,
};
pub use problem::{Problem, ProblemKind, Problems, UnknownValue};
pub use value::Kind;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
