//! Event filters, listeners and typed events.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::Shared;
use crate::commands::MigrationStatus;
use crate::error::QmpError;
use crate::wire::Event;

/// Which events a listener receives: one of some names, with some members of
/// `data` equal to given values.
///
/// ```
/// use qmp_protocol::EventFilter;
///
/// // Ganeti's wait after `device_del`: either outcome for one device.
/// let filter = EventFilter::new("DEVICE_DELETED")
///     .or_event("DEVICE_UNPLUG_GUEST_ERROR")
///     .data_eq("device", "disk-1234");
/// # let _ = filter;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventFilter {
    /// Empty means every event.
    names: Vec<String>,
    data: Vec<(String, Value)>,
}

impl EventFilter {
    /// Events named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        EventFilter {
            names: vec![name.into()],
            data: Vec::new(),
        }
    }

    /// Every event.
    pub fn all() -> Self {
        EventFilter {
            names: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Events of a typed event's name.
    pub fn of<E: QmpEvent>() -> Self {
        EventFilter::new(E::NAME)
    }

    /// Also events named `name`.
    pub fn or_event(mut self, name: impl Into<String>) -> Self {
        if !self.names.is_empty() {
            self.names.push(name.into());
        }
        self
    }

    /// Only events whose `data` has `key` equal to `value`. A `key` that
    /// starts with `/` is a JSON pointer into `data` (e.g. `/status`).
    pub fn data_eq(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.push((key.into(), value.into()));
        self
    }

    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        (self.names.is_empty() || self.names.contains(&event.name))
            && self.data.iter().all(|(key, want)| {
                let got = if key.starts_with('/') {
                    event.data.pointer(key)
                } else {
                    event.data.get(key)
                };
                got == Some(want)
            })
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.names.is_empty() {
            f.write_str("any")?;
        } else {
            f.write_str(&self.names.join("|"))?;
        }
        for (i, (key, value)) in self.data.iter().enumerate() {
            let sep = if i == 0 { " with " } else { ", " };
            write!(f, "{sep}{key}={value}")?;
        }
        Ok(())
    }
}

/// Receives the events that pass a filter, in the order QEMU sent them,
/// from the moment [`Client::listen`](crate::Client::listen) returned.
///
/// Events queue up until taken (the queue is unbounded; QEMU rate-limits its
/// chatty events). Dropping the listener unregisters it. Once the connection
/// is gone and the queue is drained, the listener yields the connection's
/// error. It is also a [`Stream`] of events that ends with the connection.
#[derive(Debug)]
pub struct EventListener {
    rx: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    id: u64,
    filter: EventFilter,
}

impl EventListener {
    pub(crate) fn new(
        rx: mpsc::UnboundedReceiver<Event>,
        shared: Arc<Shared>,
        id: u64,
        filter: EventFilter,
    ) -> Self {
        EventListener {
            rx,
            shared,
            id,
            filter,
        }
    }

    /// The filter this listener was registered with.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// The next matching event; waits as long as the connection lives.
    pub async fn next(&mut self) -> Result<Event, QmpError> {
        match self.rx.recv().await {
            Some(event) => Ok(event),
            None => Err(self.shared.close_error()),
        }
    }

    /// The next matching event, if it arrives within `timeout`.
    ///
    /// Fails with [`QmpError::EventTimeout`] after `timeout`, or with the
    /// connection's error if it closes first.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Event, QmpError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(result) => result,
            Err(_) => Err(QmpError::EventTimeout {
                event: self.filter.to_string(),
                timeout,
            }),
        }
    }

    /// A matching event that already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Stream for EventListener {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventListener {
    fn drop(&mut self) {
        self.shared.remove_listener(self.id);
    }
}

/// An event with typed data; decode with [`Event::decode`].
pub trait QmpEvent: DeserializeOwned {
    /// The event name on the wire, e.g. `SHUTDOWN`.
    const NAME: &'static str;
}

/// `SHUTDOWN`: QEMU is shutting down (or, with `-no-shutdown`, stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ShutdownEvent {
    /// Whether the guest asked for it (QEMU ≥ 2.10).
    pub guest: bool,
    /// Why (QEMU ≥ 4.0).
    #[serde(default = "ShutdownCause::unknown")]
    pub reason: ShutdownCause,
}

impl QmpEvent for ShutdownEvent {
    const NAME: &'static str = "SHUTDOWN";
}

/// Why QEMU shut down or reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ShutdownCause {
    /// No shutdown requested.
    None,
    /// An error on the host.
    HostError,
    /// The `quit` command.
    HostQmpQuit,
    /// The `system_reset` command.
    HostQmpSystemReset,
    /// A signal such as SIGTERM.
    HostSignal,
    /// The user interface (e.g. window closed).
    HostUi,
    /// The guest powered off (ACPI, halt).
    GuestShutdown,
    /// The guest reset itself.
    GuestReset,
    /// The guest panicked (`-action panic=shutdown`).
    GuestPanic,
    /// A subsystem reset.
    SubsystemReset,
    /// A snapshot was loaded.
    SnapshotLoad,
    /// A cause this crate does not know.
    #[serde(other)]
    Other,
}

impl ShutdownCause {
    fn unknown() -> Self {
        ShutdownCause::Other
    }
}

/// `STOP`: the vCPUs stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct StopEvent {}

impl QmpEvent for StopEvent {
    const NAME: &'static str = "STOP";
}

/// `RESUME`: the vCPUs resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ResumeEvent {}

impl QmpEvent for ResumeEvent {
    const NAME: &'static str = "RESUME";
}

/// `DEVICE_DELETED`: the guest released a device and QEMU removed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct DeviceDeletedEvent {
    /// The device id, if it had one.
    #[serde(default)]
    pub device: Option<String>,
    /// The device's QOM path.
    pub path: String,
}

impl QmpEvent for DeviceDeletedEvent {
    const NAME: &'static str = "DEVICE_DELETED";
}

impl DeviceDeletedEvent {
    /// The filter for the removal of device `id`.
    pub fn for_device(id: impl Into<Value>) -> EventFilter {
        EventFilter::of::<Self>().data_eq("device", id)
    }

    /// The filter for the removal of the device at QOM path `path`.
    pub fn for_path(path: impl Into<Value>) -> EventFilter {
        EventFilter::of::<Self>().data_eq("path", path)
    }
}

/// `DEVICE_UNPLUG_GUEST_ERROR`: the guest refused to release a device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct DeviceUnplugGuestErrorEvent {
    /// The device id, if it had one.
    #[serde(default)]
    pub device: Option<String>,
    /// The device's QOM path.
    pub path: String,
}

impl QmpEvent for DeviceUnplugGuestErrorEvent {
    const NAME: &'static str = "DEVICE_UNPLUG_GUEST_ERROR";
}

/// `MIGRATION`: the migration status changed (capability `events` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MigrationEvent {
    /// The new status.
    pub status: MigrationStatus,
}

impl QmpEvent for MigrationEvent {
    const NAME: &'static str = "MIGRATION";
}

/// `BALLOON_CHANGE`: the guest's memory size changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BalloonChangeEvent {
    /// The guest's memory in bytes.
    pub actual: u64,
}

impl QmpEvent for BalloonChangeEvent {
    const NAME: &'static str = "BALLOON_CHANGE";
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::Timestamp;

    fn event(name: &str, data: Value) -> Event {
        Event {
            name: name.to_owned(),
            data,
            timestamp: Timestamp::default(),
        }
    }

    #[test]
    fn filter_matches_name_and_data() {
        let filter = DeviceDeletedEvent::for_device("disk-1");
        assert!(filter.matches(&event(
            "DEVICE_DELETED",
            json!({"device": "disk-1", "path": "/machine/peripheral/disk-1"})
        )));
        assert!(!filter.matches(&event(
            "DEVICE_DELETED",
            json!({"device": "disk-2", "path": "/machine/peripheral/disk-2"})
        )));
        assert!(!filter.matches(&event(
            "DEVICE_UNPLUG_GUEST_ERROR",
            json!({"device": "disk-1", "path": "/machine/peripheral/disk-1"})
        )));
    }

    #[test]
    fn filter_with_two_names_matches_either() {
        let filter = EventFilter::new("DEVICE_DELETED")
            .or_event("DEVICE_UNPLUG_GUEST_ERROR")
            .data_eq("device", "disk-1");
        assert!(filter.matches(&event(
            "DEVICE_UNPLUG_GUEST_ERROR",
            json!({"device": "disk-1", "path": "/p"})
        )));
    }

    #[test]
    fn filter_data_key_is_typed() {
        let filter = EventFilter::new("SHUTDOWN").data_eq("guest", true);
        assert!(filter.matches(&event(
            "SHUTDOWN",
            json!({"guest": true, "reason": "guest-shutdown"})
        )));
        assert!(!filter.matches(&event(
            "SHUTDOWN",
            json!({"guest": "true", "reason": "guest-shutdown"})
        )));
    }

    #[test]
    fn filter_pointer_reaches_nested_members() {
        let filter = EventFilter::new("X").data_eq("/a/b", 1);
        assert!(filter.matches(&event("X", json!({"a": {"b": 1}}))));
        assert!(!filter.matches(&event("X", json!({"a": {"b": 2}}))));
    }

    #[test]
    fn filter_all_matches_everything() {
        let filter = EventFilter::all().or_event("ignored");
        assert!(filter.matches(&event("RESUME", json!({}))));
        assert_eq!(filter.to_string(), "any");
    }

    #[test]
    fn filter_display_names_event_and_data() {
        let filter = EventFilter::new("DEVICE_DELETED")
            .or_event("DEVICE_UNPLUG_GUEST_ERROR")
            .data_eq("device", "disk-1");
        assert_eq!(
            filter.to_string(),
            r#"DEVICE_DELETED|DEVICE_UNPLUG_GUEST_ERROR with device="disk-1""#
        );
    }

    #[test]
    fn typed_events_decode() {
        assert_eq!(
            event("STOP", json!({})).decode::<StopEvent>().unwrap(),
            StopEvent {}
        );
        assert_eq!(
            event("MIGRATION", json!({"status": "postcopy-active"}))
                .decode::<MigrationEvent>()
                .unwrap()
                .status,
            MigrationStatus::PostcopyActive
        );
        assert_eq!(
            event("BALLOON_CHANGE", json!({"actual": 536870912}))
                .decode::<BalloonChangeEvent>()
                .unwrap()
                .actual,
            536870912
        );
        let deleted = event(
            "DEVICE_DELETED",
            json!({"path": "/machine/peripheral-anon/device[3]"}),
        )
        .decode::<DeviceDeletedEvent>()
        .unwrap();
        assert_eq!(deleted.device, None);
        assert_eq!(deleted.path, "/machine/peripheral-anon/device[3]");
    }

    #[test]
    fn shutdown_with_unknown_or_missing_reason_decodes() {
        let new = event(
            "SHUTDOWN",
            json!({"guest": true, "reason": "guest-hibernate"}),
        )
        .decode::<ShutdownEvent>()
        .unwrap();
        assert_eq!(new.reason, ShutdownCause::Other);
        let old = event("SHUTDOWN", json!({"guest": true}))
            .decode::<ShutdownEvent>()
            .unwrap();
        assert_eq!(old.reason, ShutdownCause::Other);
    }
}
