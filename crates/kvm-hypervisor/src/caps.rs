//! QEMU capabilities: probed once per binary through QMP and cached on disk,
//! keyed by the binary's path, device, inode, size and mtime, so a start with
//! a warm cache spawns no probe (Ganeti runs `--help` and friends up to six
//! times per start, reference §1.0).

use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_cmdline::QemuCaps;
use qmp_protocol::{Client, Handshake};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::io::AsyncReadExt;

use crate::process::{ChildStderr, PassFd, ProcessError, spawn_with_fds};

/// Bumped when the cached form changes.
const CACHE_VERSION: u32 = 1;

/// How long a probe may take, end to end.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What identifies a binary for the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryId {
    /// The path as given.
    pub path: PathBuf,
    /// Device of the file (after following symlinks).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
}

impl BinaryId {
    /// Reads the identity of `path`.
    pub fn of(path: &Path) -> Result<BinaryId, CapsError> {
        let m = std::fs::metadata(path).map_err(|source| CapsError::Binary {
            path: path.to_owned(),
            source,
        })?;
        Ok(BinaryId {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    version: u32,
    binary: BinaryId,
    caps: QemuCaps,
}

/// Why capabilities could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapsError {
    /// The binary cannot be looked at.
    #[error("cannot use QEMU binary {}", path.display())]
    Binary {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The probe could not be started.
    #[error("cannot start a capability probe of {}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// A local socket for the probe failed.
    #[error("cannot set up the probe's monitor socket")]
    Socket(#[source] std::io::Error),
    /// QMP failed during the probe; QEMU's stderr, if any, is attached.
    #[error("probing {} failed{}", path.display(), stderr_tail(stderr))]
    Qmp {
        /// The binary.
        path: PathBuf,
        /// What QEMU wrote on stderr.
        stderr: String,
        /// The QMP error.
        #[source]
        source: Box<qmp_protocol::QmpError>,
    },
    /// The replies did not make sense.
    #[error("probing {} gave unusable replies", path.display())]
    Replies {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: qemu_cmdline::CmdlineError,
    },
    /// The probe did not finish in time.
    #[error("probing {} took longer than {PROBE_TIMEOUT:?}", path.display())]
    Timeout {
        /// The binary.
        path: PathBuf,
    },
}

fn stderr_tail(s: &str) -> String {
    let t = s.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// Capabilities and whether they came from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The capabilities.
    pub caps: QemuCaps,
    /// Whether no probe was spawned.
    pub cached: bool,
}

/// The default cache directory: `/var/cache/kvm-hypervisor` for root,
/// `$XDG_CACHE_HOME/kvm-hypervisor` (or `~/.cache/kvm-hypervisor`) otherwise.
pub fn default_cache_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/kvm-hypervisor");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kvm-hypervisor")
}

fn cache_file(dir: &Path, binary: &Path) -> PathBuf {
    // FNV-1a of the path: a stable, dependency-free file name per binary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in binary.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    dir.join(format!("qemu-caps-{h:016x}.json"))
}

/// The cached capabilities of `binary`, if the cache holds them for exactly
/// this file (same device, inode, size and mtime).
pub fn cached(dir: &Path, binary: &Path) -> Option<QemuCaps> {
    let id = BinaryId::of(binary).ok()?;
    let text = std::fs::read_to_string(cache_file(dir, binary)).ok()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    (entry.version == CACHE_VERSION && entry.binary == id).then_some(entry.caps)
}

/// Capabilities of `binary`: from the cache in `dir` when fresh, else probed
/// and stored (a cache that cannot be written only costs the next probe).
pub async fn capabilities(binary: &Path, dir: &Path) -> Result<Probed, CapsError> {
    if let Some(caps) = cached(dir, binary) {
        return Ok(Probed { caps, cached: true });
    }
    let id = BinaryId::of(binary)?;
    let caps = probe(binary).await?;
    let entry = CacheEntry {
        version: CACHE_VERSION,
        binary: id,
        caps: caps.clone(),
    };
    let stored = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec_pretty(&entry).map_err(|e| e.to_string()))
        .and_then(|bytes| {
            crate::state::write_atomic(&cache_file(dir, binary), &bytes, 0o644)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = stored {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot store QEMU capabilities");
    }
    Ok(Probed {
        caps,
        cached: false,
    })
}

/// Spawns `binary` with no machine and asks it over QMP what it can do.
///
/// The monitor is a listening socket in the abstract namespace that we bind
/// and pass to QEMU, so we connect at once, without waiting for a socket
/// file; our copy of the listener is closed after the spawn, so if QEMU dies
/// the connection fails instead of hanging.
pub async fn probe(binary: &Path) -> Result<QemuCaps, CapsError> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe_inner(binary)).await {
        Ok(r) => r,
        Err(_) => Err(CapsError::Timeout {
            path: binary.to_owned(),
        }),
    }
}

async fn probe_inner(binary: &Path) -> Result<QemuCaps, CapsError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("kvm-hypervisor-probe-{}-{n}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(CapsError::Socket)?;
    let listener = UnixListener::bind_addr(&addr).map_err(CapsError::Socket)?;
    let args: Vec<String> = [
        "-machine",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-accel",
        "kvm",
        "-accel",
        "tcg",
        "-chardev",
        "socket,id=qmp,fd=3,server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]
    .map(String::from)
    .to_vec();
    let mut child = spawn_with_fds(
        binary,
        &args,
        &[PassFd {
            target: 3,
            fd: listener.as_fd(),
        }],
        ChildStderr::Piped,
    )
    .map_err(|source| CapsError::Spawn {
        path: binary.to_owned(),
        source,
    })?;
    drop(listener);
    let mut stderr_pipe = child.stderr.take();
    let result = async {
        let stream = UnixStream::connect_addr(&addr)?;
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    }
    .await;
    let queried = match result {
        Err(source) => Err(qmp_protocol::QmpError::Connect {
            path: PathBuf::from(format!("@{name}")),
            source,
        }),
        Ok(stream) => query_all(stream).await,
    };
    if queried.is_err() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
    let mut stderr = String::new();
    if let Some(pipe) = &mut stderr_pipe {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    let replies = queried.map_err(|source| CapsError::Qmp {
        path: binary.to_owned(),
        stderr,
        source: Box::new(source),
    })?;
    let [
        version,
        machines,
        types,
        options,
        cpus,
        migrate,
        commands,
        kvm,
    ] = replies;
    let mut caps = QemuCaps::from_qmp(
        &version, &machines, &types, &options, &cpus, &migrate, &commands, &kvm,
    )
    .map_err(|source| CapsError::Replies {
        path: binary.to_owned(),
        source,
    })?;
    // query-command-line-options lists only QemuOpts-based options; options
    // such as -runas, -chroot, -audio or -no-acpi show only in --help.
    let help = crate::process::run_with_timeout(
        binary,
        &[std::ffi::OsStr::new("--help")],
        crate::process::BaseEnv::Inherit,
        &[],
        Duration::from_secs(10),
    )
    .await
    .map_err(|source| CapsError::Spawn {
        path: binary.to_owned(),
        source,
    })?;
    caps.options
        .extend(qemu_cmdline::parse_help_options(&String::from_utf8_lossy(
            &help.stdout,
        )));
    Ok(caps)
}

async fn query_all(stream: tokio::net::UnixStream) -> Result<[Json; 8], qmp_protocol::QmpError> {
    let qmp: Client = Handshake::from_stream(stream).await?.negotiate().await?;
    let q = |name: &str, args: Json| qmp.execute_raw(name.to_owned(), args);
    let version = q("query-version", Json::Null).await?;
    let machines = q("query-machines", Json::Null).await?;
    let types = q(
        "qom-list-types",
        json!({"implements": "device", "abstract": false}),
    )
    .await?;
    let options = q("query-command-line-options", Json::Null).await?;
    // Optional queries: a QEMU without them still gets capabilities.
    let cpus = q("query-cpu-definitions", Json::Null)
        .await
        .unwrap_or(Json::Null);
    let migrate = q("query-migrate-capabilities", Json::Null)
        .await
        .unwrap_or(Json::Null);
    let commands = q("query-commands", Json::Null).await.unwrap_or(Json::Null);
    let kvm = q("query-kvm", Json::Null).await.unwrap_or(Json::Null);
    let _ = q("quit", Json::Null).await;
    Ok([
        version, machines, types, options, cpus, migrate, commands, kvm,
    ])
}
