//! What kind of failure an error is, so a caller (the CLI's exit status, a
//! cluster manager's RPC) can react without reading messages.

use std::error::Error;

use crate::caps::CapsError;
use crate::ganeti::GanetiError;
use crate::hotplug::HotplugError;
use crate::instance::OpenError;
use crate::launch::StartError;
use crate::launch::plan::PlanError;
use crate::lifecycle::{BalloonError, InfoError, RebootError, StopError};
use crate::migration::MigrationError;
use crate::spec::SpecError;
use crate::state::{StateError, UidPoolError};

/// The kind of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is wrong: a spec, hvparams, or arguments that parse but
    /// cannot be right (exit status 1).
    InvalidInput,
    /// No such instance: not running and no runtime record (exit status 3).
    NoSuchInstance,
    /// The instance is busy or in the wrong state: locked, already running,
    /// not running, a removal pending (exit status 4).
    Busy,
    /// The operation failed: QEMU, the host, a timeout (exit status 5).
    Failed,
}

impl ErrorKind {
    /// The CLI's exit status for this kind (2 is clap's usage error).
    pub fn exit_status(self) -> u8 {
        match self {
            ErrorKind::InvalidInput => 1,
            ErrorKind::NoSuchInstance => 3,
            ErrorKind::Busy => 4,
            ErrorKind::Failed => 5,
        }
    }
}

/// Errors that know their [`ErrorKind`].
pub trait Classify {
    /// The kind of this failure.
    fn kind(&self) -> ErrorKind;
}

/// An error with its causes, `: `-separated, on one line.
pub fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(&format!(": {cause}"));
        next = cause.source();
    }
    text
}

/// The kind of `err`: the first error in its source chain that this crate
/// (or a leaf crate) classifies; [`ErrorKind::Failed`] when none does.
pub fn error_kind(err: &(dyn Error + 'static)) -> ErrorKind {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(kind) = classify_one(e) {
            return kind;
        }
        next = e.source();
    }
    ErrorKind::Failed
}

fn classify_one(e: &(dyn Error + 'static)) -> Option<ErrorKind> {
    macro_rules! try_types {
        ($($t:ty),* $(,)?) => {
            $(if let Some(x) = e.downcast_ref::<$t>() {
                return Some(x.kind());
            })*
        };
    }
    try_types!(
        MigrationError,
        StartError,
        StopError,
        InfoError,
        BalloonError,
        RebootError,
        HotplugError,
        OpenError,
        StateError,
        SpecError,
        PlanError,
        UidPoolError,
        CapsError,
        GanetiError,
        crate::defined::DefineError,
        crate::lifecycle::ConsoleError,
    );
    None
}

impl Classify for GanetiError {
    fn kind(&self) -> ErrorKind {
        match self {
            GanetiError::NotGaneti { .. } | GanetiError::UnknownVersion { .. } => {
                ErrorKind::InvalidInput
            }
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for StateError {
    fn kind(&self) -> ErrorKind {
        match self {
            StateError::BadName { .. } => ErrorKind::InvalidInput,
            StateError::Busy { .. } | StateError::LockTimeout { .. } => ErrorKind::Busy,
            StateError::StillRunning { .. } => ErrorKind::Busy,
            StateError::NoSuchInstance { .. } => ErrorKind::NoSuchInstance,
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for SpecError {
    fn kind(&self) -> ErrorKind {
        // A spec file that cannot be read is a wrong argument too.
        let _ = self;
        ErrorKind::InvalidInput
    }
}

impl Classify for PlanError {
    /// A spec this QEMU or host cannot run as asked.
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Classify for UidPoolError {
    fn kind(&self) -> ErrorKind {
        match self {
            UidPoolError::State(e) => e.kind(),
            UidPoolError::NotARange(_) | UidPoolError::Descending(_) | UidPoolError::Empty => {
                ErrorKind::InvalidInput
            }
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for CapsError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }
}

impl Classify for OpenError {
    fn kind(&self) -> ErrorKind {
        match self {
            OpenError::State(e) => e.kind(),
            OpenError::NotRunning(_) | OpenError::Incomplete(_) => ErrorKind::Busy,
            OpenError::Unknown(_) => ErrorKind::NoSuchInstance,
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for StartError {
    fn kind(&self) -> ErrorKind {
        match self {
            StartError::State(e) => e.kind(),
            StartError::AlreadyRunning { .. } => ErrorKind::Busy,
            StartError::Invalid { .. } | StartError::Plan { .. } => ErrorKind::InvalidInput,
            StartError::UidPool { source, .. } => source.kind(),
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for StopError {
    fn kind(&self) -> ErrorKind {
        match self {
            StopError::State(e) => e.kind(),
            StopError::NotRunning(_) => ErrorKind::Busy,
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for InfoError {
    fn kind(&self) -> ErrorKind {
        match self {
            InfoError::State(e) => e.kind(),
            InfoError::Unknown(_) => ErrorKind::NoSuchInstance,
        }
    }
}

impl Classify for BalloonError {
    fn kind(&self) -> ErrorKind {
        match self {
            BalloonError::State(e) => e.kind(),
            BalloonError::Instance(e) => e.kind(),
            BalloonError::AboveMaximum { .. } | BalloonError::Zero => ErrorKind::InvalidInput,
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for RebootError {
    fn kind(&self) -> ErrorKind {
        match self {
            RebootError::NoRecord(_) => ErrorKind::NoSuchInstance,
            RebootError::State(e) => e.kind(),
            RebootError::Stop(e) => e.kind(),
            RebootError::Start(e) => e.kind(),
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for HotplugError {
    fn kind(&self) -> ErrorKind {
        match self {
            HotplugError::State(e) => e.kind(),
            HotplugError::Instance(e) => e.kind(),
            HotplugError::NotSupported { .. }
            | HotplugError::Spec { .. }
            | HotplugError::UnknownDevice { .. }
            | HotplugError::NoSuchDevice { .. }
            | HotplugError::AmbiguousDevice { .. }
            | HotplugError::Duplicate { .. }
            | HotplugError::Device(_)
            | HotplugError::BadSize(_)
            | HotplugError::WouldShrink { .. }
            | HotplugError::IpTaken { .. } => ErrorKind::InvalidInput,
            HotplugError::RemovalPending { .. } => ErrorKind::Busy,
            _ => ErrorKind::Failed,
        }
    }
}

impl Classify for MigrationError {
    fn kind(&self) -> ErrorKind {
        match self {
            MigrationError::State(e) => e.kind(),
            MigrationError::Instance(e) => e.kind(),
            MigrationError::Start(e) => e.kind(),
            MigrationError::Stop(e) => e.kind(),
            MigrationError::BadRecord { .. }
            | MigrationError::BadAddress(_)
            | MigrationError::TlsCreds { .. }
            | MigrationError::BadSshUrl { .. }
            | MigrationError::BadSshCommand(_)
            | MigrationError::Resolve { .. } => ErrorKind::InvalidInput,
            _ => ErrorKind::Failed,
        }
    }
}
