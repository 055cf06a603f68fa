//! Putting our Ganeti hypervisor class in place on a Ganeti node, and
//! taking it out again.
//!
//! Ganeti has no plugin mechanism: `ganeti/hypervisor/__init__.py` maps
//! each hypervisor kind to a class (`_HYPERVISOR_MAP`), and every caller
//! (noded, the job processes, the watcher) goes through that map. So
//! [`install`] writes our class (`integrations/ganeti/kvmh_ganeti.py`,
//! compiled into this binary) next to Ganeti's as
//! `hypervisor/kvmh_ganeti.py` and points the map's `kvm` entry at it,
//! keeping the original `__init__.py` as `__init__.py.kvmh-orig`;
//! [`uninstall`] puts the original back. Both are idempotent, refuse a
//! Ganeti version they do not know, and drop the stale byte code of the
//! files they change. Ganeti's daemons pick the change up when restarted
//! (jobs are new processes anyway).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Our class, as installed.
pub const CLASS_SOURCE: &str = include_str!("../../../integrations/ganeti/kvmh_ganeti.py");
/// Its module's file name under `ganeti/hypervisor/`.
pub const MODULE_FILE: &str = "kvmh_ganeti.py";
/// The Ganeti releases the class is written for (`major.minor`): 3.0 (run
/// in `cargo xtask ganeti`), 3.1 (adds `ResizeDisk` and `AssessParameters`,
/// which the class implements) and 3.2, Ganeti's master branch
/// (`3.2.0~alpha1`), whose `hypervisor/__init__.py` and `KVMHypervisor`
/// methods are 3.1's. Their `hypervisor/__init__.py` is the same.
pub const KNOWN_RELEASES: &[&str] = &["3.0", "3.1", "3.2"];

const STOCK_ENTRY: &str = "constants.HT_KVM: hv_kvm.KVMHypervisor,";
const OUR_ENTRY: &str = "constants.HT_KVM: kvmh_ganeti.KvmHypervisor,";
const IMPORT_ANCHOR: &str = "from ganeti.hypervisor import hv_kvm\n";
const OUR_IMPORT: &str =
    "from ganeti.hypervisor import kvmh_ganeti  # kvm-hypervisor: serves `kvm`\n";
const BACKUP_SUFFIX: &str = ".kvmh-orig";

/// Why the class could not be put in place or taken out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GanetiError {
    /// Not Ganeti's Python package.
    #[error("{}: not Ganeti's Python package (no {missing})", dir.display())]
    NotGaneti {
        /// The directory.
        dir: PathBuf,
        /// The file looked for.
        missing: &'static str,
    },
    /// A Ganeti release the class was not written for.
    #[error("{}: Ganeti {version}, which kvm-hypervisor does not know (it knows {})", dir.display(), KNOWN_RELEASES.join(", "))]
    UnknownVersion {
        /// The directory.
        dir: PathBuf,
        /// Its `RELEASE_VERSION`.
        version: String,
    },
    /// `hypervisor/__init__.py` is not shaped as expected.
    #[error("{}: {what}; left unchanged", file.display())]
    Unexpected {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// Reading or writing a file.
    #[error("{what} {}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Which class serves Ganeti's `kvm` kind on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GanetiStatus {
    /// Ganeti's Python package.
    pub dir: PathBuf,
    /// Its `RELEASE_VERSION`.
    pub version: String,
    /// `kvm-hypervisor` (ours) or `ganeti` (Ganeti's own KVM layer).
    pub kvm_class: &'static str,
    /// Whether our module's file is there and current.
    pub module_current: bool,
}

/// Ganeti's Python package of the installed release
/// (`/usr/share/ganeti/default/ganeti`, a symbolic link chain to it).
pub fn default_dir() -> PathBuf {
    PathBuf::from("/usr/share/ganeti/default/ganeti")
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GanetiError {
    let path = path.to_owned();
    move |source| GanetiError::Io { what, path, source }
}

fn read(path: &Path) -> Result<String, GanetiError> {
    std::fs::read_to_string(path).map_err(io("reading", path))
}

fn write(path: &Path, text: &str) -> Result<(), GanetiError> {
    crate::state::write_atomic(path, text.as_bytes(), 0o644).map_err(|e| GanetiError::Io {
        what: "writing",
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// `RELEASE_VERSION` of the package at `dir`, checked against
/// [`KNOWN_RELEASES`].
fn version(dir: &Path) -> Result<String, GanetiError> {
    let constants = dir.join("_constants.py");
    if !constants.is_file() {
        return Err(GanetiError::NotGaneti {
            dir: dir.to_owned(),
            missing: "_constants.py",
        });
    }
    let text = read(&constants)?;
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("RELEASE_VERSION = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    let known = KNOWN_RELEASES.iter().any(|r| {
        version
            .strip_prefix(r)
            .is_some_and(|rest| rest.starts_with('.'))
    });
    if !known {
        return Err(GanetiError::UnknownVersion {
            dir: dir.to_owned(),
            version,
        });
    }
    Ok(version)
}

fn init_file(dir: &Path) -> Result<PathBuf, GanetiError> {
    let init = dir.join("hypervisor/__init__.py");
    if !init.is_file() {
        return Err(GanetiError::NotGaneti {
            dir: dir.to_owned(),
            missing: "hypervisor/__init__.py",
        });
    }
    Ok(init)
}

/// Removes the byte code of `stem` (`__init__`, `kvmh_ganeti`) under
/// `hypervisor/__pycache__`, so Python reads the source as it is now.
fn drop_byte_code(dir: &Path, stem: &str) -> Result<(), GanetiError> {
    let cache = dir.join("hypervisor/__pycache__");
    let Ok(entries) = std::fs::read_dir(&cache) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{stem}.")) && name.ends_with(".pyc") {
            std::fs::remove_file(e.path()).map_err(io("removing", &e.path()))?;
        }
    }
    Ok(())
}

/// Which class serves `kvm` on the Ganeti at `dir`.
pub fn status(dir: &Path) -> Result<GanetiStatus, GanetiError> {
    let version = version(dir)?;
    let init = read(&init_file(dir)?)?;
    let module = dir.join("hypervisor").join(MODULE_FILE);
    Ok(GanetiStatus {
        dir: dir.to_owned(),
        version,
        kvm_class: if init.contains(OUR_ENTRY) {
            "kvm-hypervisor"
        } else {
            "ganeti"
        },
        module_current: std::fs::read_to_string(module).is_ok_and(|m| m == CLASS_SOURCE),
    })
}

/// Makes our class serve `kvm` on the Ganeti at `dir` (again: the module
/// is refreshed).
pub fn install(dir: &Path) -> Result<GanetiStatus, GanetiError> {
    version(dir)?;
    let init_path = init_file(dir)?;
    let init = read(&init_path)?;
    write(&dir.join("hypervisor").join(MODULE_FILE), CLASS_SOURCE)?;
    drop_byte_code(dir, "kvmh_ganeti")?;
    if !init.contains(OUR_ENTRY) {
        let unexpected = |what| GanetiError::Unexpected {
            file: init_path.clone(),
            what,
        };
        if init.matches(STOCK_ENTRY).count() != 1 {
            return Err(unexpected("no single `kvm` entry of Ganeti's map"));
        }
        if init.matches(IMPORT_ANCHOR).count() != 1 {
            return Err(unexpected("no single import of hv_kvm"));
        }
        let backup = init_path.with_file_name(format!("__init__.py{BACKUP_SUFFIX}"));
        if !backup.exists() {
            write(&backup, &init)?;
        }
        let patched = init
            .replace(STOCK_ENTRY, OUR_ENTRY)
            .replace(IMPORT_ANCHOR, &format!("{IMPORT_ANCHOR}{OUR_IMPORT}"));
        write(&init_path, &patched)?;
        drop_byte_code(dir, "__init__")?;
        tracing::info!(dir = %dir.display(), "kvm is served by kvm-hypervisor");
    }
    status(dir)
}

/// Gives `kvm` back to Ganeti's own class on the Ganeti at `dir`.
pub fn uninstall(dir: &Path) -> Result<GanetiStatus, GanetiError> {
    version(dir)?;
    let init_path = init_file(dir)?;
    let init = read(&init_path)?;
    let backup = init_path.with_file_name(format!("__init__.py{BACKUP_SUFFIX}"));
    if init.contains(OUR_ENTRY) {
        let original = if backup.is_file() {
            read(&backup)?
        } else {
            init.replace(OUR_ENTRY, STOCK_ENTRY).replace(OUR_IMPORT, "")
        };
        write(&init_path, &original)?;
        drop_byte_code(dir, "__init__")?;
    }
    for leftover in [backup, dir.join("hypervisor").join(MODULE_FILE)] {
        if let Err(e) = std::fs::remove_file(&leftover)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(io("removing", &leftover)(e));
        }
    }
    drop_byte_code(dir, "kvmh_ganeti")?;
    status(dir)
}
