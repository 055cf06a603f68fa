//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::nic::NicMode;

/// What is wrong with an interface name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than 15 bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name is `.` or `..`.
    Dot,
    /// The name holds `/`, `:`, whitespace or NUL.
    BadChar(char),
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("empty"),
            NameProblem::TooLong { len } => write!(
                f,
                "{len} bytes, at most {} allowed",
                crate::name::MAX_TAP_NAME_LEN
            ),
            NameProblem::Dot => f.write_str("`.` and `..` are not interface names"),
            NameProblem::BadChar(c) => write!(f, "{c:?} is not allowed"),
        }
    }
}

/// Everything that can go wrong with taps, links and NIC configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// An interface name the kernel would refuse.
    #[error("invalid interface name `{name}`: {problem}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] nix::Error),
    /// `TUNSETIFF` failed: the tap (or one of its queues) was not created.
    #[error("cannot create tap {}", name.as_deref().unwrap_or("(kernel-assigned name)"))]
    CreateTap {
        /// The name asked for, if any.
        name: Option<String>,
        /// The ioctl's error.
        #[source]
        source: nix::Error,
    },
    /// Several queues were asked for, but the kernel's tun driver lacks
    /// `IFF_MULTI_QUEUE`.
    #[error("{queues} queues asked for, but this kernel's tun driver has no multiqueue support")]
    MultiQueueUnsupported {
        /// The number of queues asked for.
        queues: u8,
    },
    /// A `TUNGETIFF` query on a tap descriptor failed.
    #[error("cannot query the tap descriptor")]
    QueryTap(#[source] nix::Error),
    /// `/dev/vhost-net` does not exist.
    #[error(
        "vhost-net asked for, but /dev/vhost-net does not exist: load the `vhost_net` kernel \
         module or set the hvparam `vhost_net=false`"
    )]
    VhostNetMissing,
    /// `/dev/vhost-net` exists but could not be opened.
    #[error("cannot open /dev/vhost-net")]
    OpenVhost(#[source] nix::Error),
    /// The rtnetlink socket could not be created.
    #[error("cannot open an rtnetlink socket")]
    NetlinkSocket(#[source] io::Error),
    /// There is no interface of that name.
    #[error("no interface named `{name}`")]
    NoSuchLink {
        /// The name looked up.
        name: String,
    },
    /// An rtnetlink request failed.
    #[error("{op} on `{name}` failed")]
    Netlink {
        /// What was being done, e.g. `set mtu 1500`.
        op: String,
        /// The interface (or table) concerned.
        name: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A routing table name that is neither a number nor listed in the
    /// iproute2 table files.
    #[error("routing table `{link}` is neither a number nor a name in {}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    UnknownTable {
        /// The NIC's `link`.
        link: String,
        /// The files that were read.
        searched: Vec<PathBuf>,
    },
    /// A routed NIC without an IP address.
    #[error("NIC {index} is routed but has no IP address")]
    RoutedWithoutIp {
        /// The NIC's index.
        index: usize,
    },
    /// A bridged NIC without a bridge.
    #[error("NIC {index} is bridged but names no bridge (`link`)")]
    BridgedWithoutLink {
        /// The NIC's index.
        index: usize,
    },
    /// A mode that this crate does not configure natively needs a NIC script.
    #[error("NIC {index} is in mode `{mode}`, which needs a NIC script; none is configured")]
    ScriptRequired {
        /// The NIC's index.
        index: usize,
        /// Its mode.
        mode: NicMode,
    },
    /// A VLAN on a bridged NIC needs a NIC script (native VLAN setup is not
    /// implemented).
    #[error("NIC {index} has VLAN `{vlan}`, which only a NIC script can set up")]
    VlanRequiresScript {
        /// The NIC's index.
        index: usize,
        /// The VLAN specification.
        vlan: String,
    },
    /// A sysctl under `/proc/sys` could not be written.
    #[error("cannot write {}", path.display())]
    Sysctl {
        /// The sysctl's path.
        path: PathBuf,
        /// The write's error.
        #[source]
        source: io::Error,
    },
}
