//! Tap devices, links and bridges for QEMU guests' NICs, and Ganeti's NIC
//! script contract.
//!
//! - [`Tap::open`] opens a tap through `/dev/net/tun`: a given or
//!   kernel-assigned [`TapName`], `IFF_VNET_HDR` when asked for and offered
//!   (`TUNGETFEATURES`), one descriptor per queue (`IFF_MULTI_QUEUE`), and
//!   one `/dev/vhost-net` descriptor per queue. Every descriptor has
//!   `O_CLOEXEC`, and a failure closes all of them.
//! - [`Netlink`] sets links up, sets MTUs and addresses, creates and deletes
//!   bridges, attaches and detaches ports, and manages host routes and rules,
//!   through rtnetlink (no `ip` command).
//! - [`configure_native`] sets a NIC up in Ganeti's `bridged` or `routed`
//!   mode; [`script_env`] is the exact environment Ganeti gives a NIC script
//!   when one is configured instead.
//!
//! This crate spawns no processes (running a NIC script is the caller's
//! job, with [`script_env`]) and depends on no other crate of the workspace.
//! Network operations act in the network namespace of the calling thread.
//!
//! ```
//! use tap_netdev::{NicConfig, NicMode, ScriptAction, TapName, script_env};
//!
//! let nic = NicConfig {
//!     instance: "web1".into(),
//!     instance_tags: vec![],
//!     index: 0,
//!     uuid: "6f9619ff-8b86-d011-b42d-00c04fc964ff".into(),
//!     name: None,
//!     mac: "aa:00:00:12:34:56".into(),
//!     mode: NicMode::Bridged,
//!     link: "br0".into(),
//!     vlan: None,
//!     ip: None,
//!     network: None,
//! };
//! let tap = TapName::new("tap0").unwrap();
//! let env = script_env(&nic, &tap, ScriptAction::Up { migration: None }, "/usr/bin:/bin");
//! assert!(env.contains(&("BRIDGE".to_string(), "br0".to_string())));
//! assert!(env.contains(&("PATH".to_string(), "/usr/bin:/bin:/sbin:/usr/sbin".to_string())));
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod error;
mod name;
mod netlink;
mod nic;
mod table;
mod tap;

pub use error::{NameProblem, TapError};
pub use name::{MAX_TAP_NAME_LEN, TapName};
pub use netlink::{Link, Netlink, Route, Rule};
pub use nic::{
    MigrationPhase, NetworkInfo, NicConfig, NicMode, SCRIPT_PATH_SUFFIX, ScriptAction,
    configure_native, deconfigure_native, script_env,
};
pub use table::{MAIN_TABLE, routing_table};
pub use tap::{TUN_DEVICE, Tap, TapInfo, TapOptions, VHOST_NET_DEVICE, tap_info};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
