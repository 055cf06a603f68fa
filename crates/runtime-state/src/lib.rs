//! The per-node run directory and the per-instance runtime files.
//!
//! - [`RunDir`]: Ganeti's layout (`pid`, `uid`, `ctrl`, `conf`, `nic`,
//!   `chroot`, `chroot-quarantine`), created without access for others;
//!   an existing Ganeti tree works the same.
//! - [`RuntimeRecord`]: our versioned record of a running instance, which
//!   stores the model (instance, hvparams, hvinfo, QEMU identity, machine type)
//!   and the argv as launched.
//! - [`GanetiRuntime`]: Ganeti's runtime file in every historical form, upgraded
//!   by Ganeti's rules (without its bugs) and writable back ([`Format::Ganeti`]).
//! - [`render_shared`]: both at once, for a run directory Ganeti's own KVM
//!   layer shares: Ganeti's array, whose first four elements Ganeti reads
//!   (3.0 to master ignore the rest), with our record whole as a fifth.
//! - [`write_atomic`]: temp file, fsync, rename, fsync of the directory.
//! - [`InstanceLock`]: per-instance exclusive locks, failing fast or waiting
//!   with a deadline.
//! - [`liveness`]: pid file plus `/proc/<pid>/cmdline`, whose `-name` must be
//!   the instance.
//!
//! Architecture invariant: this is the only crate of the workspace that knows
//! on-disk file formats. It depends on no other workspace crate: the instance
//! is kept as JSON in the spec's shape.
//!
//! ```
//! use runtime_state::{Format, RunDir, RuntimeFile};
//!
//! let dir = std::env::temp_dir().join(format!("rs-doc-{}", std::process::id()));
//! let run = RunDir::open(&dir).unwrap();
//! let ganeti = r#"[["/usr/bin/kvm", "-name", "web1", "-m", 512, "-localtime"], [], {"disk_discard": "default"}]"#;
//! let file = RuntimeFile::parse(&run.runtime_file("web1"), ganeti).unwrap();
//! let record = file.record();
//! assert_eq!(record.argv, ["/usr/bin/kvm", "-name", "web1", "-m", "512", "-rtc", "base=localtime"]);
//! assert_eq!(record.hvparams["disk_discard"], "ignore");
//! run.write_record("web1", &record, Format::Ours).unwrap();
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod atomic;
mod error;
mod ganeti;
mod intent;
mod layout;
mod liveness;
mod lock;
mod record;
mod time;
mod uid_pool;

use std::path::Path;

pub use atomic::{write_atomic, write_atomic_with};
pub use error::StateError;
pub use ganeti::{GanetiRuntime, to_ganeti};
pub use intent::{Intent, IntentAction, IntentDevice};
pub use layout::{
    CTRL_SUFFIXES, FILE_MODE, MAX_NAME_LEN, OUR_SUBDIRS, RunDir, SUBDIRS, Socket, check_name,
    name_problem,
};
pub use liveness::{ArgvFacts, Liveness, liveness, process_argv, read_pid_file};
pub use lock::{InstanceLock, LockWait};
pub use record::{
    DiskRecord, HvInfo, NicRecord, Origin, QemuIdentity, RECORD_VERSION, RuntimeRecord,
};
pub use uid_pool::{UidPool, UidPoolError};

use error::io;

/// The on-disk form to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Our versioned record (JSON object).
    Ours,
    /// Ganeti's 4-element array, on one line, as Ganeti's `DumpJson` writes it.
    Ganeti,
}

/// A runtime file as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeFile {
    /// Our record.
    Ours(RuntimeRecord),
    /// Ganeti's array, upgraded.
    Ganeti(GanetiRuntime),
}

impl RuntimeFile {
    /// Parses a runtime file's text: a JSON object is our record, an array is
    /// Ganeti's. `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<RuntimeFile, StateError> {
        let bad = |reason: String| StateError::BadRuntime {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        match &value {
            serde_json::Value::Object(map) => {
                let version = map
                    .get("version")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                if version > u64::from(RECORD_VERSION) {
                    return Err(StateError::NewerRecord {
                        path: path.to_owned(),
                        found: u32::try_from(version).unwrap_or(u32::MAX),
                        supported: RECORD_VERSION,
                    });
                }
                serde_json::from_value(value)
                    .map(RuntimeFile::Ours)
                    .map_err(|e| bad(e.to_string()))
            }
            serde_json::Value::Array(items)
                if items
                    .get(SHARED_INDEX)
                    .and_then(|v| v.get(SHARED_KEY))
                    .is_some_and(serde_json::Value::is_object) =>
            {
                let ours = items[SHARED_INDEX][SHARED_KEY].clone();
                RuntimeFile::parse(path, &ours.to_string())
            }
            serde_json::Value::Array(_) => {
                let mut new_uuid = || uuid::Uuid::new_v4().to_string();
                GanetiRuntime::upgrade(&value, &mut new_uuid)
                    .map(RuntimeFile::Ganeti)
                    .map_err(bad)
            }
            _ => Err(bad("neither a JSON object nor an array".into())),
        }
    }

    /// Reads and parses a runtime file.
    pub fn read(path: &Path) -> Result<RuntimeFile, StateError> {
        let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
        RuntimeFile::parse(path, &text)
    }

    /// The record, converting Ganeti's form.
    pub fn record(&self) -> RuntimeRecord {
        match self {
            RuntimeFile::Ours(r) => r.clone(),
            RuntimeFile::Ganeti(g) => g.to_record(),
        }
    }
}

/// Renders a record in the given format (with a trailing newline).
pub fn render(record: &RuntimeRecord, format: Format) -> String {
    match format {
        Format::Ours => {
            let mut s = serde_json::to_string_pretty(record).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Ganeti => {
            let mut s = python_json(&to_ganeti(record));
            s.push('\n');
            s
        }
    }
}

/// Where a shared runtime file keeps our record: Ganeti's array has four
/// elements (`kvm_cmd`, NICs, hvparams, disks).
const SHARED_INDEX: usize = 4;
/// The key of our record in that fifth element.
const SHARED_KEY: &str = "kvm-hypervisor";

/// Renders `record` for a run directory Ganeti's own KVM layer shares:
/// Ganeti's array (its `kvm_cmd` is `ganeti_argv`, a command line Ganeti's
/// layer can complete and run, e.g. on a migration's target) with
/// `{"kvm-hypervisor": record}` as a fifth element, which Ganeti's loaders
/// (3.0 to master) ignore and [`RuntimeFile::parse`] reads back whole.
pub fn render_shared(record: &RuntimeRecord, ganeti_argv: &[String]) -> String {
    let mut view = record.clone();
    view.argv = ganeti_argv.to_vec();
    let mut array = match to_ganeti(&view) {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    array.truncate(SHARED_INDEX);
    let ours = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    array.push(serde_json::json!({ SHARED_KEY: ours }));
    let mut s = python_json(&serde_json::Value::Array(array));
    s.push('\n');
    s
}

impl RunDir {
    /// Reads instance `name`'s runtime file; `None` when there is none.
    pub fn read_runtime(&self, name: &str) -> Result<Option<RuntimeFile>, StateError> {
        check_name(name)?;
        let path = self.runtime_file(name);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => RuntimeFile::read(&path).map(Some),
        }
    }

    /// Writes instance `name`'s runtime file atomically, mode 0600.
    pub fn write_record(
        &self,
        name: &str,
        record: &RuntimeRecord,
        format: Format,
    ) -> Result<(), StateError> {
        self.write_runtime(name, &render(record, format))
    }

    /// Writes `text` (a record rendered by [`render`] or
    /// [`render_shared`]) as instance `name`'s runtime file, atomically,
    /// mode 0600.
    pub fn write_runtime(&self, name: &str, text: &str) -> Result<(), StateError> {
        check_name(name)?;
        write_atomic(&self.runtime_file(name), text.as_bytes(), FILE_MODE)
    }
}

/// JSON as Python's `json.dumps` writes it: `", "` and `": "` separators and
/// non-ASCII characters escaped.
fn python_json(value: &serde_json::Value) -> String {
    struct Python;
    impl serde_json::ser::Formatter for Python {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
        fn write_string_fragment<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            fragment: &str,
        ) -> std::io::Result<()> {
            for c in fragment.chars() {
                if c.is_ascii() {
                    w.write_all(&[c as u8])?;
                } else {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        write!(w, "\\u{unit:04x}")?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Python);
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
