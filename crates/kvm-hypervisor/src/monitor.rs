//! Guest-shutdown detection without a daemon per VM (Ganeti's kvmd, done
//! better): one task per running instance holds a QMP session on its second
//! monitor socket (`ctrl/<name>.kvmd`) and decides from the events
//! themselves — `SHUTDOWN` with `guest: true` and no `POWERDOWN` before it
//! is a shutdown by the guest; a power-down we asked for, a signal
//! (`guest: false`) or a crash is not. Ganeti matches substrings and calls
//! its own SIGTERM a user shutdown (reference §9, §11.6.6).
//!
//! The verdict is recorded as Ganeti does, as the flag file
//! `ctrl/<name>.shutdown`, which `info` reads. New instances are picked up
//! through inotify on `ctrl/`; existing ones by a scan at start, so a
//! restarted monitor resumes where it left off.
//!
//! The monitor also caps every serial console log (`log/<name>.console`):
//! a guest printing in a loop would otherwise fill the run directory (a
//! tmpfs) and make every later start fail. QEMU appends to the log; when it
//! grows past the cap, its last half is kept and the rest cut off in place
//! ([`cap_console_log`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use qmp_protocol::{Client, Event};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::state::{RunDir, write_atomic};

/// What the monitor concluded when an instance's QEMU went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestExit {
    /// The instance.
    pub instance: String,
    /// Whether the guest shut itself down.
    pub by_guest: bool,
    /// `SHUTDOWN.data.reason`, if one came.
    pub reason: Option<String>,
}

/// Why the monitor stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// inotify on the control directory failed.
    #[error("cannot watch {dir}")]
    Watch {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The decision from the events (name, data) of one QEMU life.
pub fn decide<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> (bool, Option<String>) {
    let mut powerdown = false;
    for (name, data) in events {
        match name {
            "POWERDOWN" => powerdown = true,
            "SHUTDOWN" => {
                let guest = data
                    .get("guest")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                let reason = data
                    .get("reason")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
                let by_guest = guest && !powerdown && reason.as_deref() != Some("guest-reset");
                return (by_guest, reason);
            }
            _ => {}
        }
    }
    (false, None)
}

/// Runs until `shutdown` resolves; sends each verdict on `verdicts`.
/// The default cap of a serial console log.
pub const DEFAULT_CONSOLE_LOG_MAX: u64 = 4 << 20;

/// Cuts the console log at `path` down to its last `max / 2` bytes when it
/// is larger than `max`, in place, so that QEMU, which appends, goes on at
/// the new end. Returns the bytes dropped, if any.
pub fn cap_console_log(path: &std::path::Path, max: u64) -> std::io::Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len <= max {
        return Ok(None);
    }
    let keep = max / 2;
    let mut tail = Vec::with_capacity(usize::try_from(keep).unwrap_or(0));
    file.seek(SeekFrom::Start(len - keep))?;
    file.by_ref().take(keep).read_to_end(&mut tail)?;
    file.write_all_at(&tail, 0)?;
    file.set_len(keep)?;
    Ok(Some(len - keep))
}

/// Watches every instance of `run` ([`run_with`] with the default console
/// log cap).
pub async fn run(
    run: RunDir,
    verdicts: mpsc::UnboundedSender<GuestExit>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MonitorError> {
    run_with(run, DEFAULT_CONSOLE_LOG_MAX, verdicts, shutdown).await
}

/// Watches every instance of `run` for guest shutdowns, and caps their
/// console logs at `console_log_max` bytes.
pub async fn run_with(
    run: RunDir,
    console_log_max: u64,
    verdicts: mpsc::UnboundedSender<GuestExit>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MonitorError> {
    run_notifying(run, console_log_max, verdicts, shutdown, || {}).await
}

/// [`run_with`] that calls `ready` once it watches every instance (those
/// started before it included) and will see every new one: where a
/// service manager is told it is up (systemd's `READY=1`).
pub async fn run_notifying(
    run: RunDir,
    console_log_max: u64,
    verdicts: mpsc::UnboundedSender<GuestExit>,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), MonitorError> {
    let ctrl = run.root().join("ctrl");
    let watch_err = |source| MonitorError::Watch {
        dir: ctrl.display().to_string(),
        source,
    };
    use futures_util::StreamExt;
    use inotify::{Inotify, WatchMask};
    let inotify = Inotify::init().map_err(watch_err)?;
    let ctrl_watch = inotify
        .watches()
        .add(&ctrl, WatchMask::CREATE | WatchMask::MOVED_TO)
        .map_err(watch_err)?;
    let logs = run.root().join("log");
    let log_watch = inotify
        .watches()
        .add(&logs, WatchMask::MODIFY)
        .map_err(watch_err)?;
    let mut events = inotify.into_event_stream([0u8; 4096]).map_err(watch_err)?;
    let watched: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let start_watch = |name: String| {
        let newly = watched
            .lock()
            .map(|mut w| w.insert(name.clone()))
            .unwrap_or(false);
        if newly {
            tokio::spawn(watch_instance(
                run.clone(),
                name,
                verdicts.clone(),
                watched.clone(),
            ));
        }
    };
    // Instances started before us.
    if let Ok(entries) = std::fs::read_dir(&ctrl) {
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str().and_then(|f| f.strip_suffix(".kvmd")) {
                start_watch(name.to_owned());
            }
        }
    }
    tracing::info!(dir = %ctrl.display(), "monitoring guest shutdowns");
    ready();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            event = events.next() => {
                let ev = match event {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => return Err(watch_err(e)),
                    None => return Err(watch_err(std::io::Error::other("the inotify stream ended"))),
                };
                let file = ev.name.as_ref().and_then(|n| n.to_str());
                if ev.wd == ctrl_watch {
                    if let Some(name) = file.and_then(|f| f.strip_suffix(".kvmd")) {
                        start_watch(name.to_owned());
                    }
                } else if ev.wd == log_watch
                    && let Some(f) = file.filter(|f| f.ends_with(".console"))
                {
                    match cap_console_log(&logs.join(f), console_log_max) {
                        Ok(Some(dropped)) => tracing::info!(log = f, dropped, "console log capped"),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(log = f, error = %e, "cannot cap the console log"),
                    }
                }
            }
        }
    }
}

async fn watch_instance(
    run: RunDir,
    name: String,
    verdicts: mpsc::UnboundedSender<GuestExit>,
    watched: Arc<Mutex<BTreeSet<String>>>,
) {
    let socket = run.socket(&name, crate::state::Socket::Kvmd);
    let outcome = async {
        // Sockets appear (a hard link, launch/execute.rs) only once they
        // listen: a refused connection means the instance is gone.
        let qmp: Client =
            crate::instance::connect(&socket, std::time::Duration::from_secs(10)).await?;
        let mut events = qmp.events();
        let mut seen = Vec::new();
        // Until QEMU closes the connection (it exited).
        while let Ok(e) = events.next().await {
            seen.push(e);
        }
        Ok::<_, qmp_protocol::QmpError>(seen)
    }
    .await;
    if let Ok(seen) = outcome {
        let (by_guest, reason) = decide(seen.iter().map(|e: &Event| (e.name.as_str(), &e.data)));
        let flag = run.shutdown_flag(&name);
        if by_guest {
            if let Err(e) = write_atomic(&flag, b"", 0o600) {
                tracing::warn!(instance = name, error = %e, "cannot record the guest shutdown");
            }
            tracing::info!(instance = name, ?reason, "guest shut itself down");
        } else {
            let _ = std::fs::remove_file(&flag);
        }
        let _ = verdicts.send(GuestExit {
            instance: name.clone(),
            by_guest,
            reason,
        });
    } else {
        tracing::debug!(
            instance = name,
            "no monitor session (instance gone or socket stale)"
        );
    }
    if let Ok(mut w) = watched.lock() {
        w.remove(&name);
    }
}

#[cfg(test)]
mod cap_tests {
    use std::io::Write;

    use super::cap_console_log;

    #[test]
    fn a_console_log_past_its_cap_keeps_its_last_half_and_appending_goes_on_at_the_end() {
        let dir = std::env::temp_dir().join(format!("kvmhv-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("web1.console");
        // QEMU's side: an appending writer.
        let mut qemu = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let text: String = (0..10_000).map(|i| format!("line {i:05}\n")).collect();
        qemu.write_all(text.as_bytes()).expect("write");

        let dropped = cap_console_log(&path, 16 << 10).expect("cap");

        assert_eq!(dropped, Some(text.len() as u64 - (8 << 10)));
        let kept = std::fs::read_to_string(&path).expect("read");
        assert_eq!(kept, text[text.len() - (8 << 10)..]);
        qemu.write_all(b"after the cut\n").expect("write");
        let after = std::fs::read(&path).expect("read");
        assert_eq!(
            after.len(),
            (8 << 10) + 14,
            "not sparse: the writer went on at the new end"
        );
        assert!(after.ends_with(b"line 09999\nafter the cut\n"));
        assert_eq!(cap_console_log(&path, 16 << 10).expect("cap"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_monitor_caps_a_growing_console_log() {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dir = std::env::temp_dir().join(format!("kvmhv-capmon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = crate::state::RunDir::open(&dir).expect("run dir");
        let path = run.console_log("web1");
        let mut qemu = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let monitor = tokio::spawn(super::run_with(run.clone(), 16 << 10, tx, async {
            let _ = stop_rx.await;
        }));
        // The file's own events tell when the monitor has cut it.
        let watch = Inotify::init(InitFlags::IN_CLOEXEC).expect("inotify");
        watch
            .add_watch(&path, AddWatchFlags::IN_MODIFY)
            .expect("watch");
        let capped = tokio::task::spawn_blocking(move || {
            let line = [b'x'; 1023];
            // Writes go on until the monitor has cut the file (each write
            // is an event for it), at most 1 MiB.
            for _ in 0..1024 {
                qemu.write_all(&line)
                    .and_then(|()| qemu.write_all(b"\n"))
                    .expect("write");
                let _ = watch.read_events();
                if std::fs::metadata(&path).expect("stat").len() < (16 << 10) {
                    return true;
                }
            }
            false
        });
        // The monitor runs on this thread between the writer's events.
        let capped = capped.await.expect("writer");
        let _ = stop_tx.send(());
        monitor.await.expect("monitor").expect("monitor ran");
        assert!(capped, "the console log grew past its cap");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide_on(events: &[(&str, serde_json::Value)]) -> (bool, Option<String>) {
        decide(events.iter().map(|(n, d)| (*n, d)))
    }

    #[test]
    fn guest_poweroff_is_a_user_shutdown() {
        let events = [(
            "SHUTDOWN",
            json!({"guest": true, "reason": "guest-shutdown"}),
        )];
        assert_eq!(decide_on(&events), (true, Some("guest-shutdown".into())));
    }

    #[test]
    fn acpi_powerdown_we_asked_for_is_not() {
        let events = [
            ("POWERDOWN", json!({})),
            (
                "SHUTDOWN",
                json!({"guest": true, "reason": "guest-shutdown"}),
            ),
        ];
        assert_eq!(decide_on(&events), (false, Some("guest-shutdown".into())));
    }

    #[test]
    fn sigterm_is_not_a_user_shutdown_unlike_ganeti() {
        let events = [("SHUTDOWN", json!({"guest": false, "reason": "host-signal"}))];
        assert_eq!(decide_on(&events), (false, Some("host-signal".into())));
    }

    #[test]
    fn a_crash_sends_nothing_and_is_not() {
        assert_eq!(decide_on(&[]), (false, None));
    }
}
