//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Everything that can go wrong talking QMP.
///
/// The variants keep four situations apart: QEMU answered with an error
/// ([`Refused`](Self::Refused), [`NotSupported`](Self::NotSupported)), the
/// connection broke ([`Disconnected`](Self::Disconnected)), the peer does not
/// speak QMP ([`Protocol`](Self::Protocol)), and QEMU did not answer in time
/// ([`Timeout`](Self::Timeout)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The QMP socket could not be connected to.
    #[error("cannot connect to QMP socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why `connect(2)` failed.
        #[source]
        source: io::Error,
    },

    /// QEMU executed the command and answered with an error.
    #[error("QEMU refused {command}: {desc} ({class})")]
    Refused {
        /// The command QEMU refused.
        command: String,
        /// The QMP error class, e.g. `GenericError` or `DeviceNotFound`.
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },

    /// This QEMU does not have the command (error class `CommandNotFound`).
    #[error("QEMU does not support the {command} command")]
    NotSupported {
        /// The unknown command.
        command: String,
        /// QEMU's human-readable description.
        desc: String,
    },

    /// No reply arrived before the command's deadline. The connection is
    /// still usable; a late reply is dropped.
    #[error("{command} got no reply within {timeout:?}")]
    Timeout {
        /// The command (or handshake step) that timed out.
        command: String,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// No event matching a listener's filter arrived before the deadline.
    #[error("no {event} event within {timeout:?}")]
    EventTimeout {
        /// The event names the listener waited for.
        event: String,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// The connection is gone: QEMU closed it (EOF, `source` is `None`), it
    /// was reset, a write failed, or this client was dropped.
    #[error("QMP connection closed")]
    Disconnected {
        /// The I/O error that broke the connection, if any.
        #[source]
        source: Option<Arc<io::Error>>,
    },

    /// The peer sent something that is not QMP. The connection is closed.
    #[error("QMP protocol violation")]
    Protocol {
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },

    /// QEMU's reply does not have the shape this crate expects.
    #[error("unexpected reply to {command}")]
    BadReply {
        /// The command whose reply did not decode.
        command: String,
        /// The reply's `return` value as QEMU sent it.
        raw: Value,
        /// Why decoding failed.
        #[source]
        source: serde_json::Error,
    },

    /// An event's `data` does not have the shape of the typed event.
    #[error("unexpected data in {event} event")]
    BadEvent {
        /// The event name.
        event: String,
        /// The event's `data` as QEMU sent it.
        raw: Value,
        /// Why decoding failed.
        #[source]
        source: serde_json::Error,
    },

    /// The command's arguments could not be serialised to JSON.
    #[error("cannot encode the arguments of {command}")]
    Encode {
        /// The command.
        command: String,
        /// Why serialisation failed.
        #[source]
        source: serde_json::Error,
    },
}

/// How the peer broke the QMP protocol.
///
/// Any of these closes the connection: after a message that cannot be framed
/// or parsed, the stream cannot be trusted to stay in step.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line is not valid JSON.
    #[error("invalid JSON in line starting {start:?}")]
    InvalidJson {
        /// The first bytes of the offending line.
        start: String,
        /// The parser's complaint.
        #[source]
        source: Arc<serde_json::Error>,
    },

    /// A line is not valid UTF-8.
    #[error("line is not UTF-8")]
    InvalidUtf8,

    /// A line is longer than the configured maximum.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The configured maximum line length.
        max: usize,
    },

    /// A JSON message that is neither a reply, an event nor a greeting.
    #[error("message is neither a reply, an event nor a greeting")]
    UnexpectedMessage {
        /// The message.
        raw: Value,
    },

    /// The first message that is not an event is not a QMP greeting.
    #[error("expected a QMP greeting")]
    NotAGreeting {
        /// The message received instead.
        raw: Value,
    },
}

impl QmpError {
    /// The QMP error class if QEMU refused the command
    /// (`CommandNotFound` for [`QmpError::NotSupported`]).
    pub fn qmp_class(&self) -> Option<&str> {
        match self {
            QmpError::Refused { class, .. } => Some(class),
            QmpError::NotSupported { .. } => Some("CommandNotFound"),
            _ => None,
        }
    }
}

impl From<ProtocolError> for QmpError {
    fn from(source: ProtocolError) -> Self {
        QmpError::Protocol { source }
    }
}
