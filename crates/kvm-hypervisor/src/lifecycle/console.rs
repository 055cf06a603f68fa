//! Where an instance's consoles are (Ganeti's `GetInstanceConsole`), and
//! readying the serial console for a user.

use std::path::PathBuf;
use std::time::Duration;

use qmp_protocol::{Cont, QueryStatus};
use serde::Serialize;
use serde_json::Value as Json;

use super::InfoError;
use crate::instance::connect;
use crate::node::Node;
use crate::state::{self, Socket};

/// One console of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Console {
    /// The serial console on a Unix socket.
    Serial {
        /// The socket.
        socket: PathBuf,
        /// The command that attaches to it.
        command: String,
    },
    /// VNC on a Unix socket.
    #[serde(rename = "vnc")]
    VncSocket {
        /// The socket.
        socket: PathBuf,
    },
    /// VNC on the network.
    Vnc {
        /// The bind address or interface.
        host: String,
        /// The TCP port.
        port: Option<u64>,
        /// The VNC display (port − 5900).
        display: Option<u64>,
    },
    /// SPICE on the network.
    Spice {
        /// The bind address or interface.
        host: String,
        /// The TCP port.
        port: Option<u64>,
        /// Whether TLS is on.
        tls: bool,
    },
}

/// The consoles of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consoles {
    /// The instance.
    pub instance: String,
    /// Its consoles.
    pub consoles: Vec<Console>,
}

/// Where the consoles of `name` are, from its runtime record.
pub fn consoles(node: &Node, name: &str) -> Result<Consoles, InfoError> {
    state::check_name(name)?;
    let record = node
        .run
        .read_runtime(name)?
        .ok_or_else(|| InfoError::Unknown(name.to_owned()))?
        .record();
    let hv = |k: &str| {
        record
            .hvparams
            .get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
    };
    let flag = |k: &str, default: bool| {
        record
            .hvparams
            .get(k)
            .and_then(Json::as_bool)
            .unwrap_or(default)
    };
    let port = record.instance.get("network_port").and_then(Json::as_u64);
    let mut consoles = Vec::new();
    if flag("serial_console", true) {
        consoles.push(Console::Serial {
            socket: node.run.socket(name, Socket::Serial),
            command: format!("kvm-hypervisor console {name}"),
        });
    }
    let vnc = hv("vnc_bind_address");
    if vnc.starts_with('/') {
        let socket = PathBuf::from(vnc).join(format!("{name}.vnc"));
        consoles.push(Console::VncSocket { socket });
    } else if !vnc.is_empty() {
        consoles.push(Console::Vnc {
            host: vnc.to_owned(),
            port,
            display: port.map(|p| p.saturating_sub(5900)),
        });
    }
    let spice = hv("spice_bind");
    if !spice.is_empty() {
        consoles.push(Console::Spice {
            host: spice.to_owned(),
            port,
            tls: flag("spice_use_tls", false),
        });
    }
    Ok(Consoles {
        instance: name.to_owned(),
        consoles,
    })
}

/// Resumes a paused instance before a user attaches to its console, as
/// Ganeti's console wrapper does.
pub async fn resume_for_console(node: &Node, name: &str) -> Result<(), qmp_protocol::QmpError> {
    let qmp = connect(&node.run.socket(name, Socket::Qmp), Duration::from_secs(5)).await?;
    if !qmp.execute(QueryStatus).await?.running {
        qmp.execute(Cont).await?;
    }
    Ok(())
}
