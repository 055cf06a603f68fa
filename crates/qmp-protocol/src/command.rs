//! The [`Command`] trait and the table of default timeouts.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A QMP command with typed arguments and a typed reply.
///
/// The arguments are the struct's serialisation, which must be a JSON object
/// (or `null`/`{}` for a command without arguments). The reply is decoded
/// leniently: members this crate does not know are ignored.
///
/// Implement it for commands this crate does not cover:
///
/// ```
/// use qmp_protocol::Command;
///
/// #[derive(serde::Serialize)]
/// struct QueryKvm;
///
/// #[derive(serde::Deserialize)]
/// struct KvmInfo {
///     enabled: bool,
///     present: bool,
/// }
///
/// impl Command for QueryKvm {
///     const NAME: &'static str = "query-kvm";
///     type Returns = KvmInfo;
/// }
/// ```
pub trait Command: Serialize {
    /// The command name on the wire, e.g. `device_add`.
    const NAME: &'static str;
    /// What the `return` member decodes to. `()` accepts any object.
    type Returns: DeserializeOwned;
    /// How long to wait for the reply unless the caller says otherwise.
    const TIMEOUT: Duration = QUERY_TIMEOUT;
}

/// The default deadline: QEMU answers queries at once.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands that wait for I/O or for the main loop to settle (`cont`,
/// `stop`, migration control and queries, `quit`, the schema).
pub(crate) const SLOW_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands that open files or devices (`device_add`, `blockdev-add`,
/// `netdev_add`, `block_resize`).
pub(crate) const DEVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default deadline of a command by name, used by
/// [`Client::execute_raw`](crate::Client::execute_raw) and by every typed
/// [`Command`] of this crate.
///
/// 5 s for queries and anything not listed; 30 s for `cont`, `stop`,
/// `quit`, migration commands, `query-migrate`, `blockdev-del` and
/// `query-qmp-schema`; 60 s for `device_add`, `blockdev-add`, `netdev_add`
/// and `block_resize`.
pub fn default_timeout(command: &str) -> Duration {
    match command {
        "device_add" | "blockdev-add" | "netdev_add" | "block_resize" => DEVICE_TIMEOUT,
        "cont"
        | "stop"
        | "quit"
        | "migrate"
        | "migrate_cancel"
        | "migrate-incoming"
        | "migrate-start-postcopy"
        | "query-migrate"
        | "blockdev-del"
        | "query-qmp-schema" => SLOW_TIMEOUT,
        _ => QUERY_TIMEOUT,
    }
}
