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
        // The command works from any shell: with this run directory when
        // it is not the default one.
        let run_dir = if node.run.root() == state::RunDir::default_path() {
            String::new()
        } else {
            format!(
                " --run-dir {}",
                shell_word(&node.run.root().display().to_string())
            )
        };
        consoles.push(Console::Serial {
            socket: node.run.socket(name, Socket::Serial),
            command: format!("kvm-hypervisor{run_dir} console {name}"),
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
/// `word` as one shell word: as it is when it is plain, else in single
/// quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Why the serial console cannot be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// Another client holds it (QEMU serves one at a time).
    #[error("{0}'s serial console is in use by another client")]
    InUse(String),
    /// The monitor.
    #[error("asking QEMU about {name}'s console: {source}")]
    Qmp {
        /// The instance.
        name: String,
        /// The cause.
        source: qmp_protocol::QmpError,
    },
}

impl crate::Classify for ConsoleError {
    fn kind(&self) -> crate::ErrorKind {
        match self {
            ConsoleError::InUse(_) => crate::ErrorKind::Busy,
            ConsoleError::Qmp { .. } => crate::ErrorKind::Failed,
        }
    }
}

/// Readies `name`'s serial console for a user: refuses while another
/// client holds it (QEMU would leave a second one silent), and resumes a
/// paused VM only when `resume`. Returns whether the VM is paused.
pub async fn prepare_console(node: &Node, name: &str, resume: bool) -> Result<bool, ConsoleError> {
    let qmp_err = |source| ConsoleError::Qmp {
        name: name.to_owned(),
        source,
    };
    let qmp = connect(&node.run.socket(name, Socket::Qmp), Duration::from_secs(5))
        .await
        .map_err(qmp_err)?;
    let chardevs = qmp
        .execute_raw("query-chardev", Json::Object(Default::default()))
        .await
        .map_err(qmp_err)?;
    // A listening socket chardev's filename is `disconnected:unix:…`
    // until a client connects.
    let in_use = chardevs.as_array().is_some_and(|all| {
        all.iter().any(|c| {
            c["label"] == "serial0"
                && c["filename"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("unix:"))
        })
    });
    if in_use {
        return Err(ConsoleError::InUse(name.to_owned()));
    }
    let running = qmp.execute(QueryStatus).await.map_err(qmp_err)?.running;
    if !running && resume {
        qmp.execute(Cont).await.map_err(qmp_err)?;
        return Ok(false);
    }
    Ok(!running)
}

/// Resumes a paused VM (what Ganeti's console wrapper does on attach).
pub async fn resume_for_console(node: &Node, name: &str) -> Result<(), qmp_protocol::QmpError> {
    let qmp = connect(&node.run.socket(name, Socket::Qmp), Duration::from_secs(5)).await?;
    if !qmp.execute(QueryStatus).await?.running {
        qmp.execute(Cont).await?;
    }
    Ok(())
}
