//! Problems found in hvparams: each names the parameter and the reason.

use std::fmt;
use std::path::PathBuf;

use crate::Kind;

/// One problem with one hvparam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    param: String,
    kind: ProblemKind,
}

impl Problem {
    pub(crate) fn new(param: &str, kind: ProblemKind) -> Problem {
        Problem {
            param: param.to_owned(),
            kind,
        }
    }

    /// The hvparam at fault (for an unknown name: the name as given).
    pub fn param(&self) -> &str {
        &self.param
    }

    /// What is wrong.
    pub fn kind(&self) -> &ProblemKind {
        &self.kind
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.kind)
    }
}

/// The reasons an hvparam can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    // ---- parsing ----
    /// Not a KVM hvparam.
    #[error("unknown hvparam{}", suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Unknown {
        /// The closest known name, when the name looks like a typo of it.
        suggestion: Option<&'static str>,
    },
    /// The JSON type is wrong.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The type the parameter has.
        expected: Kind,
        /// What was given.
        found: String,
    },
    /// A value outside the parameter's set.
    #[error("`{value}` is not one of: {}", allowed.join(", "))]
    NotInSet {
        /// The value given.
        value: String,
        /// The allowed values, in declared order.
        allowed: &'static [&'static str],
    },
    /// Empty, but the parameter must be set.
    #[error("must be set")]
    Required,

    // ---- syntax ----
    /// Not a normalized absolute path.
    #[error("`{value}` is not a normalized absolute path")]
    NotAbsolutePath {
        /// The value given.
        value: String,
    },
    /// Neither a normalized absolute path nor an http(s)/ftp(s) URL.
    #[error("`{value}` is neither a normalized absolute path nor an http, https, ftp or ftps URL")]
    NotPathOrUrl {
        /// The value given.
        value: String,
    },
    /// An integer out of its range.
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange {
        /// The value given.
        value: i64,
        /// Lowest accepted value.
        min: i64,
        /// Highest accepted value.
        max: i64,
    },
    /// A negative integer.
    #[error("{value} is negative")]
    Negative {
        /// The value given.
        value: i64,
    },
    /// An integer outside a small set.
    #[error("{value} is not one of: {}", allowed.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))]
    IntNotInSet {
        /// The value given.
        value: i64,
        /// The allowed values.
        allowed: &'static [i64],
    },
    /// A malformed CPU mask.
    #[error("`{value}` is not a CPU mask: {reason}")]
    CpuMask {
        /// The mask given.
        value: String,
        /// Why it is malformed.
        reason: crate::CpuMaskError,
    },
    /// A bind address of the wrong form.
    #[error("`{value}` is not {expected}")]
    BindAddress {
        /// The value given.
        value: String,
        /// The forms accepted.
        expected: &'static str,
    },
    /// Quotes do not balance.
    #[error("`{value}` cannot be split into words: unbalanced quotes or a trailing backslash")]
    ShellWords {
        /// The value given.
        value: String,
    },
    /// A malformed migration capability list.
    #[error(
        "`{item}` is not a migration capability name (lowercase letters, digits and `-`, separated by `:`)"
    )]
    MigrationCap {
        /// The offending item.
        item: String,
    },
    /// A value Ganeti accepts but that can never start.
    #[error("`{value}` can never start: {reason}")]
    NeverStarts {
        /// The value given.
        value: String,
        /// Why QEMU refuses it.
        reason: &'static str,
    },

    // ---- cross-parameter rules ----
    /// `boot_order` names a device that has no image.
    #[error("booting from `{device}` needs {needs} to be set")]
    BootDeviceMissing {
        /// The boot device.
        device: &'static str,
        /// The parameter that must be set.
        needs: &'static str,
    },
    /// A parameter that another one makes necessary is empty.
    #[error("must be set when {because}")]
    RequiredBy {
        /// The condition that requires it.
        because: &'static str,
    },
    /// A parameter that must stay empty under another's value.
    #[error("must be empty when {because}")]
    ForbiddenBy {
        /// The condition that forbids it.
        because: &'static str,
    },
    /// The serial speed is not a standard one.
    #[error("{value} is not a serial speed; use one of: {}", crate::check::SERIAL_SPEEDS.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))]
    SerialSpeed {
        /// The value given.
        value: i64,
    },
    /// An IP literal of the other family than `spice_ip_version` asks.
    #[error("`{address}` is an IPv{family} address but spice_ip_version is {version}")]
    SpiceIpFamily {
        /// The address.
        address: String,
        /// Its family (4 or 6).
        family: u8,
        /// The configured version.
        version: i64,
    },

    // ---- node validation ----
    /// A path that must exist does not.
    #[error("{} does not exist", path.display())]
    PathMissing {
        /// The path.
        path: PathBuf,
    },
    /// A path exists but is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A path exists but is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A user name unknown on this host.
    #[error("user `{user}` does not exist on this host")]
    UnknownUser {
        /// The user.
        user: String,
    },
    /// An interface unknown on this host.
    #[error("network interface `{interface}` does not exist on this host")]
    UnknownInterface {
        /// The interface.
        interface: String,
    },
    /// An interface without a usable address.
    #[error("network interface `{interface}` has no {family} address to listen on")]
    InterfaceWithoutAddress {
        /// The interface.
        interface: String,
        /// Which addresses were looked for, e.g. "IPv4".
        family: &'static str,
    },
    /// QEMU lacks a feature the parameter needs.
    #[error("{feature} is not supported by QEMU {version}")]
    QemuLacks {
        /// The feature.
        feature: String,
        /// The QEMU version.
        version: String,
    },
    /// A machine type QEMU does not offer.
    #[error(
        "QEMU {version} has no machine type `{value}` (see `qemu-system-x86_64 -machine help`)"
    )]
    UnknownMachine {
        /// The value given.
        value: String,
        /// The QEMU version.
        version: String,
    },
    /// A CPU model QEMU does not offer.
    #[error("QEMU {version} has no CPU model `{value}` (see `qemu-system-x86_64 -cpu help`)")]
    UnknownCpuModel {
        /// The value given.
        value: String,
        /// The QEMU version.
        version: String,
    },
    /// A migration capability QEMU does not offer.
    #[error("QEMU {version} has no migration capability `{value}`")]
    UnknownMigrationCap {
        /// The value given.
        value: String,
        /// The QEMU version.
        version: String,
    },
    /// The CPU mask names CPUs this host does not have.
    #[error("CPU {cpu} does not exist on this host ({online} CPUs online)")]
    CpuNotOnHost {
        /// The highest CPU named.
        cpu: u32,
        /// How many CPUs the host has.
        online: u32,
    },
}

/// Every problem found, sorted by parameter (in Ganeti's order) and then by
/// the order the rules ran in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn sorted(mut problems: Vec<Problem>) -> Problems {
        problems.sort_by_key(|p| crate::params::position(&p.param).unwrap_or(usize::MAX));
        Problems(problems)
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The problems, in order.
    pub fn as_slice(&self) -> &[Problem] {
        &self.0
    }

    /// The problems, in order.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid hvparam {one}"),
            many => {
                write!(f, "{} invalid hvparams", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// A value that is not in a set, from `FromStr` of a value enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of: {}", allowed.join(", "))]
pub struct UnknownValue {
    pub(crate) value: String,
    pub(crate) allowed: &'static [&'static str],
}
