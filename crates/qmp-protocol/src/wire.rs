//! The QMP wire format: what one line of JSON means.
//!
//! Server to client: a greeting `{"QMP": {...}}`, replies
//! `{"return": ..., "id": ...}` or `{"error": {"class", "desc"}, "id": ...}`,
//! and events `{"event": ..., "data": ..., "timestamp": ...}`.
//! Client to server: `{"execute": ..., "arguments": {...}, "id": ...}`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ProtocolError, QmpError};
use crate::events::QmpEvent;

/// The greeting QEMU sends when a client connects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Greeting {
    /// QEMU's version, as `query-version` would report it.
    pub version: VersionInfo,
    /// Capabilities QEMU offers (e.g. `oob`). This client enables none.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A QEMU version and package string (greeting and `query-version`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct VersionInfo {
    /// The numeric version.
    pub qemu: QemuVersion,
    /// The distributor's package string, e.g. `Debian 1:7.2+dfsg-7`.
    #[serde(default)]
    pub package: String,
}

/// QEMU's numeric version. Orders as versions do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct QemuVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro version.
    pub micro: u32,
}

impl QemuVersion {
    /// A version from its three parts.
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        QemuVersion {
            major,
            minor,
            micro,
        }
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// When QEMU emitted an event (host clock, since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Timestamp {
    /// Seconds.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// The event name, e.g. `SHUTDOWN`.
    pub name: String,
    /// The event's data; an empty object if QEMU sent none.
    pub data: Value,
    /// When QEMU emitted it.
    pub timestamp: Timestamp,
}

impl Event {
    /// Decode the data of a typed event.
    ///
    /// Fails with [`QmpError::BadEvent`] if this is another event or the
    /// data does not have the expected shape.
    pub fn decode<E: QmpEvent>(&self) -> Result<E, QmpError> {
        if self.name != E::NAME {
            return Err(QmpError::BadEvent {
                event: self.name.clone(),
                raw: self.data.clone(),
                source: serde::de::Error::custom(format_args!("expected event {}", E::NAME)),
            });
        }
        E::deserialize(&self.data).map_err(|source| QmpError::BadEvent {
            event: self.name.clone(),
            raw: self.data.clone(),
            source,
        })
    }
}

/// The `error` member of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) class: String,
    #[serde(default)]
    pub(crate) desc: String,
}

/// One message from QEMU.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    Greeting(Greeting),
    Reply {
        id: Option<Value>,
        result: Result<Value, ErrorBody>,
    },
    Event(Event),
}

/// How many bytes of a bad line an error keeps.
const QUOTE_LEN: usize = 80;

fn invalid_json(line: &str, e: serde_json::Error) -> ProtocolError {
    let mut end = line.len().min(QUOTE_LEN);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    ProtocolError::InvalidJson {
        start: line[..end].to_owned(),
        source: e.into(),
    }
}

/// Classify one line from QEMU. Unknown members are ignored.
pub(crate) fn parse_incoming(line: &str) -> Result<Incoming, ProtocolError> {
    let mut map: Map<String, Value> =
        serde_json::from_str(line).map_err(|e| invalid_json(line, e))?;
    if let Some(ret) = map.remove("return") {
        return Ok(Incoming::Reply {
            id: map.remove("id"),
            result: Ok(ret),
        });
    }
    if let Some(err) = map.remove("error") {
        let body = ErrorBody::deserialize(&err).map_err(|_| ProtocolError::UnexpectedMessage {
            raw: Value::Object(map.clone()),
        })?;
        return Ok(Incoming::Reply {
            id: map.remove("id"),
            result: Err(body),
        });
    }
    match map.remove("event") {
        Some(Value::String(name)) => {
            let data = match map.remove("data") {
                Some(Value::Null) | None => Value::Object(Map::new()),
                Some(d) => d,
            };
            let timestamp = map
                .remove("timestamp")
                .and_then(|t| Timestamp::deserialize(&t).ok())
                .unwrap_or_default();
            return Ok(Incoming::Event(Event {
                name,
                data,
                timestamp,
            }));
        }
        Some(other) => {
            map.insert("event".to_owned(), other);
        }
        None => {}
    }
    if let Some(qmp) = map.get("QMP")
        && let Ok(greeting) = Greeting::deserialize(qmp)
    {
        return Ok(Incoming::Greeting(greeting));
    }
    Err(ProtocolError::UnexpectedMessage {
        raw: Value::Object(map),
    })
}

/// Start the request line for a command: everything up to the `id` value.
///
/// Arguments that serialise to `null` (unit structs) or `{}` are left out;
/// QEMU insists that `arguments`, when present, is an object.
pub(crate) fn encode_request_prefix<A: Serialize + ?Sized>(
    name: &str,
    arguments: &A,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"{\"execute\":");
    serde_json::to_writer(&mut buf, name)?;
    let before_args = buf.len();
    buf.extend_from_slice(b",\"arguments\":");
    let args_start = buf.len();
    serde_json::to_writer(&mut buf, arguments)?;
    match &buf[args_start..] {
        b"null" | b"{}" => buf.truncate(before_args),
        [b'{', ..] => {}
        _ => {
            return Err(serde::ser::Error::custom(
                "QMP command arguments must serialise to a JSON object",
            ));
        }
    }
    buf.extend_from_slice(b",\"id\":");
    Ok(buf)
}

/// Finish a request started by [`encode_request_prefix`].
///
/// No newline follows the object: QEMU's JSON streamer dispatches a command
/// at its closing brace, and it reads its socket one byte at a time. A
/// trailing newline would still be unread when QEMU exits after `quit`, and
/// closing a Unix socket with unread data makes the kernel reset the
/// connection instead of ending it cleanly.
pub(crate) fn finish_request(prefix: &mut Vec<u8>, id: u64) {
    let mut digits = String::with_capacity(20);
    // Writing to a String cannot fail.
    let _ = write!(digits, "{id}");
    prefix.extend_from_slice(digits.as_bytes());
    prefix.push(b'}');
}

/// The arguments part of an encoded request, for logging.
pub(crate) fn arguments_of(prefix: &[u8]) -> &[u8] {
    const KEY: &[u8] = b",\"arguments\":";
    let Some(start) = prefix.windows(KEY.len()).position(|w| w == KEY) else {
        return b"{}";
    };
    let tail = &prefix[start + KEY.len()..];
    tail.strip_suffix(b",\"id\":").unwrap_or(tail)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::ShutdownEvent;

    #[test]
    fn greeting_of_qemu_7_2_parses() {
        let line = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
        let Incoming::Greeting(g) = parse_incoming(line).unwrap() else {
            panic!("not a greeting")
        };
        assert_eq!(g.version.qemu, QemuVersion::new(7, 2, 22));
        assert_eq!(g.version.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(g.capabilities, vec!["oob".to_owned()]);
    }

    #[test]
    fn greeting_with_unknown_members_parses() {
        let line = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 11, "extra": 1}, "package": ""}, "capabilities": [], "new": true}}"#;
        let Incoming::Greeting(g) = parse_incoming(line).unwrap() else {
            panic!("not a greeting")
        };
        assert_eq!(g.version.qemu, QemuVersion::new(11, 0, 0));
    }

    #[test]
    fn return_reply_keeps_id_and_value() {
        let line =
            r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 7}"#;
        assert_eq!(
            parse_incoming(line).unwrap(),
            Incoming::Reply {
                id: Some(json!(7)),
                result: Ok(json!({"status": "running", "singlestep": false, "running": true})),
            }
        );
    }

    #[test]
    fn error_reply_keeps_class_and_desc() {
        let line =
            r#"{"id": 5, "error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}}"#;
        assert_eq!(
            parse_incoming(line).unwrap(),
            Incoming::Reply {
                id: Some(json!(5)),
                result: Err(ErrorBody {
                    class: "DeviceNotFound".to_owned(),
                    desc: "Device 'nope' not found".to_owned()
                }),
            }
        );
    }

    #[test]
    fn event_without_data_gets_empty_object() {
        let line =
            r#"{"timestamp": {"seconds": 1795642501, "microseconds": 263952}, "event": "STOP"}"#;
        assert_eq!(
            parse_incoming(line).unwrap(),
            Incoming::Event(Event {
                name: "STOP".to_owned(),
                data: json!({}),
                timestamp: Timestamp {
                    seconds: 1795642501,
                    microseconds: 263952
                },
            })
        );
    }

    #[test]
    fn shutdown_event_decodes_guest_and_reason() {
        let line = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;
        let Incoming::Event(ev) = parse_incoming(line).unwrap() else {
            panic!("not an event")
        };
        let shutdown: ShutdownEvent = ev.decode().unwrap();
        assert!(!shutdown.guest);
        assert_eq!(shutdown.reason, crate::ShutdownCause::HostQmpQuit);
    }

    #[test]
    fn decoding_the_wrong_event_is_bad_event() {
        let ev = Event {
            name: "STOP".to_owned(),
            data: json!({}),
            timestamp: Timestamp::default(),
        };
        let err = ev.decode::<ShutdownEvent>().unwrap_err();
        assert!(matches!(err, QmpError::BadEvent { ref event, .. } if event == "STOP"));
    }

    #[test]
    fn garbage_is_invalid_json() {
        let err = parse_incoming("this is not json").unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidJson { ref start, .. } if start == "this is not json")
        );
    }

    #[test]
    fn json_array_is_invalid_json() {
        let err = parse_incoming("[1, 2]").unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidJson { .. }));
    }

    #[test]
    fn object_of_unknown_kind_is_unexpected() {
        let err = parse_incoming(r#"{"hello": 1}"#).unwrap_err();
        assert!(
            matches!(err, ProtocolError::UnexpectedMessage { ref raw } if *raw == json!({"hello": 1}))
        );
    }

    #[test]
    fn request_without_arguments_omits_them() {
        #[derive(Serialize)]
        struct Stop;
        let mut line = encode_request_prefix("stop", &Stop).unwrap();
        finish_request(&mut line, 42);
        assert_eq!(line, b"{\"execute\":\"stop\",\"id\":42}");
    }

    #[test]
    fn request_with_arguments_keeps_types() {
        let mut line =
            encode_request_prefix("netdev_add", &json!({"id": "n1", "vhost": true})).unwrap();
        finish_request(&mut line, 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            v,
            json!({"execute": "netdev_add", "arguments": {"id": "n1", "vhost": true}, "id": 1})
        );
    }

    #[test]
    fn arguments_that_are_not_an_object_are_refused() {
        assert!(encode_request_prefix("stop", &json!([1])).is_err());
    }

    #[test]
    fn arguments_of_extracts_the_object() {
        let prefix = encode_request_prefix("device_del", &json!({"id": "d"})).unwrap();
        assert_eq!(arguments_of(&prefix), br#"{"id":"d"}"#);
        let prefix = encode_request_prefix("stop", &Value::Null).unwrap();
        assert_eq!(arguments_of(&prefix), b"{}");
    }
}
