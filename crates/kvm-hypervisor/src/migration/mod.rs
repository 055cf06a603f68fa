//! Live migration between nodes, one step per party as Ganeti's hypervisor
//! API has it (reference §1.7):
//!
//! - source: [`migration_info`] (the runtime record the target needs);
//! - target: [`accept`] starts QEMU for the incoming instance, re-planned
//!   for this node (its QEMU, new taps) with the same guest machine: each
//!   disk and NIC, hot-plugged ones included, keeps the placement the record
//!   gives it; the target's record exists from the start, so a failed or
//!   abandoned incoming instance can always be stopped and cleaned;
//! - source: [`migrate`] sets the migration parameters (Ganeti's
//!   `migration_bandwidth`, `migration_downtime`) and starts; with a
//!   deadline it follows the migration through QEMU's `MIGRATION` events;
//!   with postcopy allowed (by both parties) it switches to postcopy once
//!   the first full pass over RAM is done (`MIGRATION_PASS` 2), at most
//!   once; [`start_postcopy`] switches by hand;
//! - [`status`], [`cancel`] (the source keeps running; Ganeti sends no
//!   cancel, §11.4.3);
//! - [`finalize_source`] and [`finalize_target`]: on success the source is
//!   stopped and cleaned and the target runs; on failure the source goes on
//!   and the target is stopped and cleaned; the capabilities a migration
//!   set are cleared on the party that goes on.
//!
//! Transient QEMU states (`setup`, `device`, `pre-switchover`,
//! `wait-unplug`, `cancelling`) are not failures (Ganeti's §11.4 bug).

mod converge;
mod outgoing;
mod remote;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qmp_protocol::{
    Cont, EventFilter, Migrate, MigrateCancel, MigrateSetCapabilities, MigrateSetParameters,
    MigrateStartPostcopy, MigrationInfo, MigrationStatus, ObjectAdd, ObjectDel, QmpError,
    QueryMigrate, QueryStatus,
};
use serde::Serialize;
use serde_json::Value as Json;

pub use converge::{Convergence, ConvergencePolicy, Decision, PolicyOverrides, Switch, policy_for};
pub use outgoing::{Outgoing, RemoteNode};
pub use remote::{Remote, SSH_ENV, SshUrl, ToOptions, migrate_to};

use crate::instance::{Instance, OpenError};
use crate::launch::plan::StartMode;
use crate::launch::{How, StartError, Started, start_with};
use crate::lifecycle::{Ending, StopError, StopOptions, spec_from_record, stop};
use crate::node::Node;
use crate::spec::SpecProblems;
use crate::state::{RuntimeRecord, StateError};

const LOCK_WAIT: Duration = Duration::from_secs(30);
const MONITOR_WAIT: Duration = Duration::from_secs(10);

/// Why a migration step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The run directory or the record.
    #[error(transparent)]
    State(#[from] StateError),
    /// The instance is unknown, not running or does not answer.
    #[error(transparent)]
    Instance(#[from] OpenError),
    /// The record does not make a spec.
    #[error("the runtime record of {name} is not a valid spec")]
    BadRecord {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: SpecProblems,
    },
    /// The incoming QEMU could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Stopping a party failed.
    #[error(transparent)]
    Stop(#[from] StopError),
    /// QMP.
    #[error("QMP on instance {name}")]
    Qmp {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: Box<QmpError>,
    },
    /// The migration ended without completing.
    #[error("the migration of {name} ended {status}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotCompleted {
        /// The instance.
        name: String,
        /// How it ended (`failed`, `cancelled`).
        status: String,
        /// QEMU's reason.
        error: Option<String>,
    },
    /// Not an `ADDR:PORT` (IPv6 in brackets).
    #[error("`{0}` is not ADDR:PORT (an IP address; IPv6 in brackets, e.g. [2001:db8::1]:4444)")]
    BadAddress(String),
    /// A routed NIC of the arrived instance could not be configured (the
    /// guest runs here; finalize again to retry).
    #[error("{name} runs here, but its routed NICs could not be configured")]
    Routes {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: Box<crate::nicsetup::NicSetupError>,
    },
    /// The convergence policy gave up; the migration was cancelled and
    /// the guest runs on here.
    #[error("the migration of {name} is not converging: {passes} passes, at best {} MiB left, downtime limit raised to {downtime_ms} ms; cancelled, the guest runs here (allow postcopy, raise migration_downtime or --downtime-max, or migrate offline)", best_remaining / (1024 * 1024))]
    NotConverging {
        /// The instance.
        name: String,
        /// Passes made.
        passes: u64,
        /// The least RAM a pass left, bytes.
        best_remaining: u64,
        /// The downtime limit reached, ms.
        downtime_ms: u64,
    },
    /// A TLS credentials directory lacks a file this party needs.
    #[error("--tls-creds {}: no {missing} (the {endpoint} needs ca-cert.pem, {endpoint}-cert.pem and {endpoint}-key.pem)", dir.display())]
    TlsCreds {
        /// The directory.
        dir: PathBuf,
        /// `server` (target) or `client` (source).
        endpoint: &'static str,
        /// The missing file.
        missing: &'static str,
    },
    /// Not `ssh://[USER@]HOST[:PORT]`.
    #[error("`{url}` is not ssh://[USER@]HOST[:PORT]: {why}")]
    BadSshUrl {
        /// As given.
        url: String,
        /// Why.
        why: &'static str,
    },
    /// `KVM_HYPERVISOR_SSH` or `--remote-command` does not split into words.
    #[error("`{0}` is not a command line (empty, or unbalanced quotes)")]
    BadSshCommand(String),
    /// The target's host name does not resolve here.
    #[error("the target's host {host} does not resolve: {why}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        why: String,
    },
    /// `ssh` could not be run or did not end in time.
    #[error("running `{step}` on {url} over ssh")]
    Ssh {
        /// The target's node.
        url: String,
        /// Our subcommand there.
        step: String,
        /// Why.
        #[source]
        source: Box<crate::process::ProcessError>,
    },
    /// A step on the target's node failed (exit 255: ssh itself).
    #[error("on {url}: `{step}` failed (exit {}): {stderr}", code.map_or("by a signal".to_owned(), |c| c.to_string()))]
    RemoteStep {
        /// The target's node.
        url: String,
        /// Our subcommand and its arguments there.
        step: String,
        /// Its exit status.
        code: Option<i32>,
        /// What it said.
        stderr: String,
    },
    /// The migration completed but the target could not be finalized: the
    /// source is kept, paused, holding the guest's last state.
    #[error(
        "{name} migrated, but finalize-target on {url} failed; the source is kept paused here: run `finalize-target {name} --success` there, then `finalize-source {name} --success` here"
    )]
    TargetNotFinalized {
        /// The instance.
        name: String,
        /// The target's node.
        url: String,
        /// Why.
        #[source]
        source: Box<MigrationError>,
    },
    /// A failure after the switch to postcopy: neither side holds the
    /// whole guest, so neither was touched.
    #[error(
        "the migration of {name} failed after the switch to postcopy: the guest's state is split between both nodes and neither was touched; stop both sides (`stop --force`) unless QEMU can recover it"
    )]
    PostcopyBroken {
        /// The instance.
        name: String,
        /// Why it failed.
        #[source]
        source: Box<MigrationError>,
    },
    /// A failure whose clean-up did not finish; says what is left to do.
    #[error("{what}")]
    Unfinished {
        /// The instance.
        name: String,
        /// What failed and what to run.
        what: String,
    },
    /// Interrupted (SIGINT); the migration was cancelled.
    #[error("the migration of {0} was interrupted and cancelled")]
    Interrupted(String),
    /// The migration did not end within the deadline (it goes on).
    #[error("the migration of {name} did not end within {after:?}; it goes on")]
    Timeout {
        /// The instance.
        name: String,
        /// The deadline.
        after: Duration,
    },
}

/// QEMU's `tcp:` URI of `ADDR:PORT`, an IPv6 address in brackets
/// (`[2001:db8::1]:4444`; Ganeti forgets them, §11.4.4).
pub fn tcp_uri(addr: &str) -> Result<String, MigrationError> {
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| MigrationError::BadAddress(addr.to_owned()))?;
    Ok(format!("tcp:{parsed}"))
}

/// The id of the `tls-creds-x509` object a TLS migration uses.
pub(crate) const TLS_ID: &str = "migtls0";

/// Checks that `dir` holds what QEMU's `tls-creds-x509` needs for
/// `endpoint` (`server` on the target, `client` on the source; both verify
/// the peer): `ca-cert.pem`, `ENDPOINT-cert.pem`, `ENDPOINT-key.pem`.
pub fn check_tls_creds(dir: &Path, endpoint: &'static str) -> Result<(), MigrationError> {
    let files: [&'static str; 3] = match endpoint {
        "server" => ["ca-cert.pem", "server-cert.pem", "server-key.pem"],
        _ => ["ca-cert.pem", "client-cert.pem", "client-key.pem"],
    };
    match files.into_iter().find(|f| !dir.join(f).is_file()) {
        Some(missing) => Err(MigrationError::TlsCreds {
            dir: dir.to_owned(),
            endpoint,
            missing,
        }),
        None => Ok(()),
    }
}

/// The `object-add` of the TLS credentials in `dir` for `endpoint`.
pub(crate) fn tls_object(dir: &Path, endpoint: &str) -> ObjectAdd {
    ObjectAdd::new("tls-creds-x509", TLS_ID)
        .property("dir", dir.to_string_lossy().into_owned())
        .property("endpoint", endpoint)
        .property("verify-peer", true)
}

fn qmp_err(name: &str) -> impl FnOnce(QmpError) -> MigrationError + '_ {
    move |source| MigrationError::Qmp {
        name: name.to_owned(),
        source: Box::new(source),
    }
}

/// The runtime record of the running instance `name`, as the target needs
/// it: read under the instance's lock; QEMU's monitor is not needed.
pub async fn migration_info(node: &Node, name: &str) -> Result<RuntimeRecord, MigrationError> {
    crate::state::check_name(name)?;
    let lock = node.run.lock(name, crate::state::LockWait::Up(LOCK_WAIT))?;
    if let Err(e) = running(node, name) {
        if matches!(e, OpenError::Unknown(_)) {
            // Nothing of it exists: not even its lock file stays.
            let _ = std::fs::remove_file(lock.path());
        }
        return Err(e.into());
    }
    Ok(crate::instance::complete_record(node, name)?)
}

/// Whether `name`'s QEMU runs here; if not, whether it is known at all.
fn running(node: &Node, name: &str) -> Result<(), OpenError> {
    match crate::state::liveness(&node.run, name) {
        crate::state::Liveness::Running { .. } => Ok(()),
        _ if node.run.runtime_file(name).exists() => Err(OpenError::NotRunning(name.to_owned())),
        _ => Err(OpenError::Unknown(name.to_owned())),
    }
}

/// The text `accept` reads: Ganeti's runtime format for an instance that
/// came from Ganeti's KVM layer (Ganeti's own argv as its argv, so Ganeti's
/// `AcceptInstance` can take it back, and so can ours); for one of ours,
/// the node's form ([`Node::render_record`]): on a node Ganeti's layer
/// shares, Ganeti's array with our record inside, which either layer's
/// `accept` takes.
pub fn info_text(node: &Node, record: &RuntimeRecord) -> String {
    use crate::state::{Format, Origin, render};
    match &record.guest_argv {
        Some(ganeti) => {
            let mut r = record.clone();
            r.argv.clone_from(ganeti);
            r.guest_argv = None;
            r.origin = Origin::Ganeti;
            render(&r, Format::Ganeti)
        }
        None => node.render_record(record),
    }
}

/// What the target allows.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AcceptOptions {
    /// Let the source switch to postcopy (`postcopy-ram`).
    pub postcopy: bool,
    /// Accept over TLS only, with the `tls-creds-x509` files in this
    /// directory (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`); the
    /// source's client certificate is verified.
    pub tls_creds: Option<PathBuf>,
}

impl AcceptOptions {
    /// Allow postcopy.
    #[must_use]
    pub fn postcopy(mut self, postcopy: bool) -> Self {
        self.postcopy = postcopy;
        self
    }

    /// Accept over TLS with the credentials in `dir`.
    #[must_use]
    pub fn tls_creds(mut self, dir: Option<PathBuf>) -> Self {
        self.tls_creds = dir;
        self
    }
}

/// Starts the incoming instance of `record` on this node, listening on
/// `listen` (`ADDR:PORT`; IPv6 addresses in brackets).
pub async fn accept(
    node: &Node,
    record: &RuntimeRecord,
    listen: &str,
    opts: &AcceptOptions,
) -> Result<Started, MigrationError> {
    let name = record
        .instance
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_owned();
    let spec = spec_from_record(record).map_err(|source| MigrationError::BadRecord {
        name: name.clone(),
        source,
    })?;
    let mut placements = BTreeMap::new();
    let hvinfos = record
        .disks
        .iter()
        .map(|d| (&d.uuid, &d.hvinfo))
        .chain(record.nics.iter().map(|n| (&n.uuid, &n.hvinfo)));
    for (uuid, hvinfo) in hvinfos {
        let placement = hvinfo
            .as_ref()
            .and_then(|h| serde_json::to_value(h).ok())
            .and_then(|v| device_slots::HvInfo::from_json(&v).ok())
            .map(|h| h.placement);
        if let Some(p) = placement {
            placements.insert(uuid.clone(), p);
        }
    }
    // A NIC without its option ROM was hot-plugged under chroot.
    let hot_plugged_nics: BTreeSet<String> = record
        .nics
        .iter()
        .filter(|n| n.extra.get("romfile").is_some())
        .map(|n| n.uuid.clone())
        .collect();
    let uri = tcp_uri(listen)?;
    if let Some(dir) = &opts.tls_creds {
        check_tls_creds(dir, "server")?;
    }
    // An instance Ganeti's KVM layer started keeps Ganeti's guest part of
    // its argv (ganeti.rs reads it as the record's argv).
    let guest_argv = record
        .guest_argv
        .clone()
        .or_else(|| (record.origin == crate::state::Origin::Ganeti).then(|| record.argv.clone()));
    let how = How {
        mode: StartMode::Incoming {
            uri,
            postcopy: opts.postcopy,
            tls_creds: opts.tls_creds.clone(),
        },
        placements,
        hot_plugged_nics,
        guest_argv,
    };
    Ok(start_with(node, &spec, how).await?)
}

/// Where a migration stands.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// QEMU's status (`active`, `completed`, …).
    pub status: String,
    /// Whether it ended (`completed`, `failed`, `cancelled`).
    pub finished: bool,
    /// RAM transferred, bytes.
    pub transferred: Option<u64>,
    /// RAM in all, bytes.
    pub total: Option<u64>,
    /// RAM left, bytes.
    pub remaining: Option<u64>,
    /// Milliseconds since the start.
    pub total_time_ms: Option<i64>,
    /// The downtime, once completed, ms.
    pub downtime_ms: Option<i64>,
    /// QEMU's expected downtime while precopy runs, ms.
    pub expected_downtime_ms: Option<i64>,
    /// Dirty bitmap synchronisations so far (a pass each).
    pub passes: Option<u64>,
    /// Pages the guest dirties per second.
    pub dirty_pages_rate: Option<u64>,
    /// Pages the target asked for after the switch to postcopy.
    pub postcopy_requests: Option<u64>,
    /// Whether `migrate` switched this migration to postcopy.
    pub switched_to_postcopy: bool,
    /// What the convergence policy decided, pass by pass (on the source,
    /// while a `migrate --wait` follows it).
    pub decisions: Vec<Decision>,
    /// The target's `ADDR:PORT` (on the source).
    pub target: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

fn status_name(s: Option<MigrationStatus>) -> String {
    s.and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "none".to_owned())
}

fn progress(info: &MigrationInfo) -> Progress {
    let ram = info.ram.as_ref();
    let finished = matches!(
        info.status,
        Some(MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled)
    );
    Progress {
        status: status_name(info.status),
        finished,
        transferred: ram.map(|r| r.transferred),
        total: ram.map(|r| r.total),
        remaining: ram.map(|r| r.remaining),
        total_time_ms: info.total_time,
        downtime_ms: info.downtime,
        expected_downtime_ms: info.expected_downtime,
        passes: ram.map(|r| r.dirty_sync_count),
        dirty_pages_rate: ram.map(|r| r.dirty_pages_rate),
        postcopy_requests: ram.map(|r| r.postcopy_requests),
        switched_to_postcopy: false,
        decisions: Vec::new(),
        target: None,
        error: info.error_desc.clone(),
    }
}

/// How to migrate.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// Follow the migration until it ends, at most this long.
    pub wait: Option<Duration>,
    /// Allow postcopy (the target must have accepted with postcopy too):
    /// while following, the migration switches to postcopy once the first
    /// full pass over RAM is done; without `wait`, [`start_postcopy`]
    /// switches it.
    pub postcopy: bool,
    /// Migrate over TLS with the `tls-creds-x509` files in this directory
    /// (`ca-cert.pem`, `client-cert.pem`, `client-key.pem`); the target's
    /// certificate is verified against the target address.
    pub tls_creds: Option<PathBuf>,
    /// Not live: pause the guest first (Ganeti's non-live migration); it
    /// runs again on the target at `finalize_target`, or here at
    /// `finalize_source` after a failure.
    pub offline: bool,
    /// While following: overrides of the convergence policy's hvparams.
    pub converge: PolicyOverrides,
    /// The target's node, when this process drives both sides (recorded
    /// for `migrate-cancel`).
    pub remote: Option<RemoteNode>,
}

impl MigrateOptions {
    /// Follow the migration for at most `wait`.
    #[must_use]
    pub fn wait(mut self, wait: Option<Duration>) -> Self {
        self.wait = wait;
        self
    }

    /// Allow postcopy.
    #[must_use]
    pub fn postcopy(mut self, postcopy: bool) -> Self {
        self.postcopy = postcopy;
        self
    }

    /// Migrate over TLS with the credentials in `dir`.
    #[must_use]
    pub fn tls_creds(mut self, dir: Option<PathBuf>) -> Self {
        self.tls_creds = dir;
        self
    }

    /// Pause the guest first.
    #[must_use]
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Overrides of the convergence policy's hvparams.
    #[must_use]
    pub fn converge(mut self, overrides: PolicyOverrides) -> Self {
        self.converge = overrides;
        self
    }

    /// The target's node, reached by this process.
    #[must_use]
    pub fn remote(mut self, remote: Option<RemoteNode>) -> Self {
        self.remote = remote;
        self
    }
}

/// The capabilities a party sets: `events`, Ganeti's `migration_caps`,
/// and `postcopy-ram` when allowed (QEMU needs it on both sides before
/// `migrate`).
pub(crate) fn capabilities(hv_caps: Vec<&str>, postcopy: bool) -> Vec<String> {
    let mut caps: Vec<String> = std::iter::once("events")
        .chain(hv_caps)
        .map(str::to_owned)
        .collect();
    if postcopy && !caps.iter().any(|c| c == "postcopy-ram") {
        caps.push("postcopy-ram".to_owned());
    }
    caps
}

/// Starts migrating `name` to `target` (`ADDR:PORT`), with Ganeti's
/// `migration_bandwidth` (MiB/s, also for postcopy) and
/// `migration_downtime` (ms); with `wait`, follows it up to that deadline
/// and returns how it ended.
pub async fn migrate(
    node: &Node,
    name: &str,
    target: &str,
    opts: MigrateOptions,
) -> Result<Progress, MigrationError> {
    migrate_watch(node, name, target, opts, |_| {}).await
}

/// [`migrate`], calling `progress` while following it: after each pass
/// over RAM and each change of status, with QEMU's figures then.
///
/// Postcopy is allowed by `opts.postcopy` or by `postcopy-ram` in the
/// instance's `migration_caps` (Ganeti's way); when to switch, and what to
/// do when passes stop making progress, come from the instance's hvparams
/// (ours) and `opts.converge`. Every decision is logged and kept in
/// `conf/<name>.migration` for `migration-status` from other processes.
pub async fn migrate_watch(
    node: &Node,
    name: &str,
    target: &str,
    opts: MigrateOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Progress, MigrationError> {
    let uri = tcp_uri(target)?;
    if let Some(dir) = &opts.tls_creds {
        check_tls_creds(dir, "client")?;
    }
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let hv = crate::instance::record_hvparams(&inst.record);
    let q = &inst.qmp;
    let downtime = u64::try_from(hv.migration_downtime()).unwrap_or(0);
    let postcopy = opts.postcopy || hv.migration_cap_list().contains(&"postcopy-ram");
    let (policy, switch) = policy_for(&hv, opts.converge, postcopy);
    set_up_source(q, name, &hv, &opts, postcopy, downtime).await?;
    // Listen before sending, so the end is never missed.
    let mut events = q.listen(EventFilter::new("MIGRATION").or_event("STOP"));
    let mut passes = q.listen(EventFilter::new("MIGRATION_PASS"));
    q.execute(Migrate::new(uri)).await.map_err(qmp_err(name))?;
    tracing::info!(
        instance = name,
        target,
        postcopy,
        ?switch,
        "migration started"
    );
    let mut follow = Follow {
        node,
        name,
        q,
        switch,
        policy: Convergence::new(policy, downtime),
        outgoing: Outgoing {
            target: target.to_owned(),
            policy: opts.wait.map(|_| policy),
            postcopy_allowed: postcopy,
            decisions: Vec::new(),
            switched_to_postcopy: false,
            remote: opts.remote.clone(),
        },
        gave_up: None,
    };
    follow.save();
    let Some(deadline) = opts.wait else {
        let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
        return Ok(progress(&info));
    };
    let until = tokio::time::Instant::now() + deadline;
    let timeout = || MigrationError::Timeout {
        name: name.to_owned(),
        after: deadline,
    };
    let mut clock = EventClock::default();
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let watching = follow.watching();
        tokio::select! {
            ev = events.wait(left) => match ev {
                Ok(ev) => {
                    clock.saw(&ev.name, &ev.data, ev.timestamp);
                    let st = ev.data.get("status").and_then(Json::as_str).unwrap_or("");
                    if matches!(st, "completed" | "failed" | "cancelled") {
                        break;
                    }
                    if ev.name == "MIGRATION" {
                        let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
                        on_progress(&follow.progress(&info));
                    }
                }
                Err(QmpError::EventTimeout { .. }) => return Err(timeout()),
                Err(e) => return Err(qmp_err(name)(e)),
            },
            pass = passes.wait(left), if watching => match pass {
                Ok(ev) => {
                    let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
                    on_progress(&follow.progress(&info));
                    let n = ev.data.get("pass").and_then(Json::as_u64).unwrap_or(0);
                    follow.after_pass(n, &info).await?;
                }
                Err(QmpError::EventTimeout { .. }) => return Err(timeout()),
                Err(e) => return Err(qmp_err(name)(e)),
            },
        }
    }
    if let Some(err) = follow.gave_up.take() {
        return Err(err);
    }
    let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
    let mut p = follow.progress(&info);
    clock.settle(&mut p);
    if p.status != "completed" {
        return Err(MigrationError::NotCompleted {
            name: name.to_owned(),
            status: p.status,
            error: p.error,
        });
    }
    tracing::info!(instance = name, total_ms = ?p.total_time_ms, downtime_ms = ?p.downtime_ms, postcopy = p.switched_to_postcopy, "migrated");
    Ok(p)
}

/// A migration being followed: the policy's state and what it decided.
struct Follow<'a> {
    node: &'a Node,
    name: &'a str,
    q: &'a qmp_protocol::Client,
    switch: Switch,
    policy: Convergence,
    outgoing: Outgoing,
    gave_up: Option<MigrationError>,
}

impl Follow<'_> {
    /// Whether passes still matter: no switch sent, not given up.
    fn watching(&self) -> bool {
        !self.outgoing.switched_to_postcopy && self.gave_up.is_none()
    }

    fn progress(&self, info: &MigrationInfo) -> Progress {
        let mut p = progress(info);
        p.switched_to_postcopy = self.outgoing.switched_to_postcopy;
        p.decisions.clone_from(&self.outgoing.decisions);
        p.target = Some(self.outgoing.target.clone());
        p
    }

    fn save(&self) {
        if let Err(error) = self.outgoing.save(self.node, self.name) {
            tracing::warn!(instance = self.name, %error, "migration record not written");
        }
    }

    /// After pass `n`. Pass 1 is the setup's sync; pass 2 ends the first
    /// full copy of RAM: with the switch at the first pass, what is dirty
    /// now goes on demand; otherwise the policy judges each pass from here.
    async fn after_pass(&mut self, n: u64, info: &MigrationInfo) -> Result<(), MigrationError> {
        if n < 2 {
            return Ok(());
        }
        if self.switch == Switch::AfterFirstPass {
            switch_to_postcopy(self.q, self.name).await?;
            self.outgoing.switched_to_postcopy = true;
            self.save();
            return Ok(());
        }
        let Some(ram) = &info.ram else {
            return Ok(());
        };
        let decision = self.policy.after_pass(ram.remaining);
        if decision == Decision::Wait {
            return Ok(());
        }
        self.gave_up = act_on(self.q, self.name, decision, ram).await?;
        self.outgoing.decisions.push(decision);
        self.outgoing.switched_to_postcopy |= matches!(decision, Decision::SwitchToPostcopy { .. });
        self.save();
        Ok(())
    }
}

/// The source's settings before `migrate`: TLS credentials, capabilities,
/// bandwidth and downtime limit (Ganeti's), and `stop` when offline.
async fn set_up_source(
    q: &qmp_protocol::Client,
    name: &str,
    hv: &crate::hvparams::HvParams,
    opts: &MigrateOptions,
    postcopy: bool,
    downtime_ms: u64,
) -> Result<(), MigrationError> {
    if let Some(dir) = &opts.tls_creds {
        // A previous TLS migration's object, if one was left.
        let _ = q.execute(ObjectDel::new(TLS_ID)).await;
        q.execute(tls_object(dir, "client"))
            .await
            .map_err(qmp_err(name))?;
    }
    let caps = capabilities(hv.migration_cap_list(), postcopy);
    q.execute(MigrateSetCapabilities::new(
        caps.into_iter().map(|c| (c, true)),
    ))
    .await
    .map_err(qmp_err(name))?;
    let bytes = u64::try_from(hv.migration_bandwidth())
        .unwrap_or(32)
        .saturating_mul(1024 * 1024);
    let params = MigrateSetParameters {
        max_bandwidth: Some(bytes),
        max_postcopy_bandwidth: postcopy.then_some(bytes),
        downtime_limit: Some(downtime_ms),
        tls_creds: opts.tls_creds.as_ref().map(|_| TLS_ID.to_owned()),
        ..MigrateSetParameters::default()
    };
    q.execute(params).await.map_err(qmp_err(name))?;
    if opts.offline {
        q.execute(qmp_protocol::Stop).await.map_err(qmp_err(name))?;
    }
    Ok(())
}

/// Carries out a convergence decision; giving up cancels the migration
/// and returns the error to end with once QEMU says it is cancelled.
async fn act_on(
    q: &qmp_protocol::Client,
    name: &str,
    decision: Decision,
    ram: &qmp_protocol::MigrationStats,
) -> Result<Option<MigrationError>, MigrationError> {
    match decision {
        Decision::Wait => Ok(None),
        Decision::RaiseDowntime { from_ms, to_ms } => {
            tracing::info!(
                instance = name,
                from_ms,
                to_ms,
                remaining = ram.remaining,
                "not converging: downtime limit raised"
            );
            let raise = MigrateSetParameters {
                downtime_limit: Some(to_ms),
                ..MigrateSetParameters::default()
            };
            q.execute(raise).await.map_err(qmp_err(name))?;
            Ok(None)
        }
        Decision::SwitchToPostcopy {
            best_remaining,
            downtime_ms,
        } => {
            tracing::info!(
                instance = name,
                best_remaining,
                downtime_ms,
                passes = ram.dirty_sync_count,
                "not converging: switching to postcopy"
            );
            switch_to_postcopy(q, name).await?;
            Ok(None)
        }
        Decision::NotConverging {
            best_remaining,
            downtime_ms,
        } => {
            tracing::warn!(
                instance = name,
                best_remaining,
                downtime_ms,
                passes = ram.dirty_sync_count,
                "not converging: cancelled"
            );
            q.execute(MigrateCancel).await.map_err(qmp_err(name))?;
            Ok(Some(MigrationError::NotConverging {
                name: name.to_owned(),
                passes: ram.dirty_sync_count,
                best_remaining,
                downtime_ms,
            }))
        }
    }
}

/// The source's migration events' own timestamps: QEMU's first
/// `query-migrate` after `completed` can still say `total-time: 0,
/// downtime: 0` (its figures are computed just after the event; guest-lab
/// pitfall 7), so the figures come from the events then (same clock, same
/// QEMU): setup to completed, and the guest's `STOP` to completed.
#[derive(Debug, Default)]
struct EventClock {
    setup_us: Option<i64>,
    stop_us: Option<i64>,
    done_us: Option<i64>,
}

impl EventClock {
    fn saw(&mut self, name: &str, data: &Json, at: qmp_protocol::Timestamp) {
        let us = at
            .seconds
            .saturating_mul(1_000_000)
            .saturating_add(at.microseconds);
        match (name, data.get("status").and_then(Json::as_str)) {
            ("MIGRATION", Some("setup")) => self.setup_us = self.setup_us.or(Some(us)),
            ("MIGRATION", Some("completed")) => self.done_us = Some(us),
            ("STOP", _) => self.stop_us = Some(us),
            _ => {}
        }
    }

    fn settle(&self, p: &mut Progress) {
        tracing::debug!(clock = ?self, total = ?p.total_time_ms, "event clock");
        if p.status != "completed" || !matches!(p.total_time_ms, None | Some(0)) {
            return;
        }
        let ms = |from: Option<i64>| Some((self.done_us? - from?) / 1000);
        p.total_time_ms = ms(self.setup_us).or(p.total_time_ms);
        p.downtime_ms = ms(self.stop_us).or(p.downtime_ms);
    }
}

/// Sends the switch to postcopy; a migration that completed meanwhile
/// needs none.
async fn switch_to_postcopy(q: &qmp_protocol::Client, name: &str) -> Result<(), MigrationError> {
    match q.execute(MigrateStartPostcopy).await {
        Ok(_) => {
            tracing::info!(instance = name, "switched to postcopy");
            Ok(())
        }
        Err(e) => {
            let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
            if info.status == Some(MigrationStatus::Completed) {
                Ok(())
            } else {
                Err(qmp_err(name)(e))
            }
        }
    }
}

/// Switches the outgoing migration of `name` to postcopy now (once; both
/// parties must have allowed postcopy).
pub async fn start_postcopy(node: &Node, name: &str) -> Result<(), MigrationError> {
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    switch_to_postcopy(&inst.qmp, name).await
}

/// A QMP session on `name`'s users' monitor (`ctrl/<name>.qmp-user`),
/// without the instance's lock: what status and cancel use, so they work
/// while `migrate --wait` holds the lock and the control monitor. A QEMU
/// Ganeti's layer started has only its control monitor: that one then.
async fn observe(node: &Node, name: &str) -> Result<qmp_protocol::Client, MigrationError> {
    crate::state::check_name(name)?;
    running(node, name)?;
    // A QEMU that Ganeti's layer started has no users' monitor: its
    // control monitor then (free unless our `migrate --wait` holds it).
    let user = node.run.socket(name, crate::state::Socket::UserQmp);
    let socket = if user.exists() {
        user
    } else {
        node.run.socket(name, crate::state::Socket::Qmp)
    };
    crate::instance::connect(&socket, MONITOR_WAIT)
        .await
        .map_err(qmp_err(name))
}

/// Where the migration of `name` stands (either party); on the source,
/// with the target, the policy's decisions and the postcopy switch as the
/// process following it recorded them. Takes no lock.
pub async fn status(node: &Node, name: &str) -> Result<Progress, MigrationError> {
    let q = observe(node, name).await?;
    let info = q.execute(QueryMigrate).await.map_err(qmp_err(name))?;
    let mut p = progress(&info);
    if let Some(o) = Outgoing::load(node, name) {
        p.target = Some(o.target);
        p.decisions = o.decisions;
        p.switched_to_postcopy = o.switched_to_postcopy;
    }
    Ok(p)
}

/// Sends `migrate_cancel` for `name` (no lock taken).
pub(crate) async fn cancel_here(node: &Node, name: &str) -> Result<(), MigrationError> {
    let q = observe(node, name).await?;
    q.execute(MigrateCancel).await.map_err(qmp_err(name))?;
    Ok(())
}

/// What [`cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cancelled {
    /// The target's node that was cleaned up (`migrate --to` records it).
    pub target_cleaned: Option<String>,
}

/// Cancels the outgoing migration of `name`; the source goes on. When the
/// migration runs to a node this node reaches over SSH (`migrate --to`),
/// the target's side is stopped and cleaned too; otherwise that is
/// `finalize-target --failure` on the target. Takes no lock, so it works
/// while `migrate --wait` follows the migration.
pub async fn cancel(node: &Node, name: &str) -> Result<Cancelled, MigrationError> {
    cancel_here(node, name).await?;
    let Some(remote) = Outgoing::load(node, name).and_then(|o| o.remote) else {
        return Ok(Cancelled {
            target_cleaned: None,
        });
    };
    remote::Remote::from_node(&remote)?.abandon(name).await?;
    Ok(Cancelled {
        target_cleaned: Some(remote.url),
    })
}

fn kill() -> StopOptions {
    StopOptions {
        timeout: Duration::from_secs(10),
        force: true,
    }
}

/// The source's end of a migration: after success its QEMU (paused in
/// `postmigrate`) is stopped and every file of it removed; after a failure
/// the guest goes on (`cont` if QEMU paused it).
pub async fn finalize_source(
    node: &Node,
    name: &str,
    success: bool,
) -> Result<Option<Ending>, MigrationError> {
    if success {
        return Ok(Some(stop(node, name, kill()).await?));
    }
    resume(node, name).await?;
    Outgoing::remove(node, name);
    Ok(None)
}

/// The target's end of a migration: after success the guest runs here;
/// after a failure the incoming QEMU is stopped and cleaned up (its record
/// exists from the start, so this works whatever state it reached).
pub async fn finalize_target(
    node: &Node,
    name: &str,
    success: bool,
) -> Result<Option<Ending>, MigrationError> {
    if success {
        resume(node, name).await?;
        route_nics(node, name).await?;
        return Ok(None);
    }
    Ok(Some(stop(node, name, kill()).await?))
}

/// Configures the routed and `ext` NICs of the instance that arrived here
/// (accept leaves routed ones alone, reference §1.7): their host routes
/// and rules now point here; with the node's NIC script, it runs with
/// `MIGRATION_PHASE=post` for both, as Ganeti's. A NIC that cannot be
/// configured is an error naming it (Ganeti only logs it); the guest runs
/// here all the same, and a retry configures what is left.
async fn route_nics(node: &Node, name: &str) -> Result<(), MigrationError> {
    use crate::net::NicMode;
    let Some(file) = node.run.read_runtime(name)? else {
        return Ok(());
    };
    let record = file.record();
    let arrived: Vec<_> = record
        .nics
        .iter()
        .enumerate()
        .filter_map(|(i, n)| crate::devices::nic_config_of(name, n, i))
        .filter(|(c, _)| matches!(c.mode, NicMode::Routed | NicMode::Ext))
        .collect();
    let mut setup = crate::nicsetup::NicSetup::for_node(node);
    for (config, tap) in arrived {
        setup
            .up(&config, &tap, Some(crate::net::MigrationPhase::Post))
            .await
            .map_err(|e| MigrationError::Routes {
                name: name.to_owned(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// Clears the capabilities a migration set, lets the guest run if QEMU
/// holds it paused.
async fn resume(node: &Node, name: &str) -> Result<(), MigrationError> {
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let hv = crate::instance::record_hvparams(&inst.record);
    let off = capabilities(hv.migration_cap_list(), true)
        .into_iter()
        .map(|c| (c, false));
    // QEMU refuses while a cancelled migration still winds down; the
    // capabilities only matter to the next migration, which sets its own.
    if let Err(error) = inst.qmp.execute(MigrateSetCapabilities::new(off)).await {
        tracing::warn!(instance = name, %error, "migration capabilities left set");
    }
    let tls_off = MigrateSetParameters {
        tls_creds: Some(String::new()),
        ..MigrateSetParameters::default()
    };
    if let Err(error) = inst.qmp.execute(tls_off).await {
        tracing::warn!(instance = name, %error, "migration TLS parameter left set");
    }
    // Absent unless the migration used TLS.
    let _ = inst.qmp.execute(ObjectDel::new(TLS_ID)).await;
    let s = inst.qmp.execute(QueryStatus).await.map_err(qmp_err(name))?;
    if !s.running {
        inst.qmp.execute(Cont).await.map_err(qmp_err(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_uri_takes_ipv4_and_bracketed_ipv6() {
        assert_eq!(tcp_uri("192.0.2.7:8102").unwrap(), "tcp:192.0.2.7:8102");
        assert_eq!(
            tcp_uri("[2001:db8::1]:4444").unwrap(),
            "tcp:[2001:db8::1]:4444"
        );
    }

    fn saw(clock: &mut EventClock, name: &str, status: Option<&str>, us: i64) {
        let data = status.map_or(
            serde_json::json!({}),
            |st| serde_json::json!({"status": st}),
        );
        let at = qmp_protocol::Timestamp {
            seconds: us / 1_000_000,
            microseconds: us % 1_000_000,
        };
        clock.saw(name, &data, at);
    }

    fn completed(total: Option<i64>, downtime: Option<i64>) -> Progress {
        let info: MigrationInfo = serde_json::from_value(serde_json::json!({
            "status": "completed", "total-time": total, "downtime": downtime,
        }))
        .unwrap();
        progress(&info)
    }

    #[test]
    fn zero_figures_after_completed_come_from_the_events() {
        let mut clock = EventClock::default();
        saw(&mut clock, "MIGRATION", Some("setup"), 53_866_000);
        saw(&mut clock, "MIGRATION", Some("active"), 53_867_000);
        saw(&mut clock, "STOP", None, 56_775_635);
        saw(&mut clock, "MIGRATION", Some("completed"), 56_778_452);
        let mut p = completed(Some(0), Some(0));
        clock.settle(&mut p);
        assert_eq!((p.total_time_ms, p.downtime_ms), (Some(2912), Some(2)));
        // QEMU's own figures, once there, are kept.
        let mut p = completed(Some(2911), Some(3));
        clock.settle(&mut p);
        assert_eq!((p.total_time_ms, p.downtime_ms), (Some(2911), Some(3)));
    }

    #[test]
    fn tls_creds_name_the_first_missing_file() {
        let dir = std::env::temp_dir().join(format!("kvmh-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca-cert.pem"), "").unwrap();
        std::fs::write(dir.join("server-cert.pem"), "").unwrap();
        let err = check_tls_creds(&dir, "server").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--tls-creds {}: no server-key.pem (the server needs ca-cert.pem, server-cert.pem and server-key.pem)",
                dir.display()
            )
        );
        std::fs::write(dir.join("server-key.pem"), "").unwrap();
        check_tls_creds(&dir, "server").unwrap();
        let err = check_tls_creds(&dir, "client").unwrap_err();
        assert!(matches!(
            err,
            MigrationError::TlsCreds {
                missing: "client-cert.pem",
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn capabilities_put_events_first_and_postcopy_once() {
        assert_eq!(capabilities(vec!["xbzrle"], false), ["events", "xbzrle"]);
        assert_eq!(
            capabilities(vec!["xbzrle"], true),
            ["events", "xbzrle", "postcopy-ram"]
        );
        assert_eq!(
            capabilities(vec!["postcopy-ram"], true),
            ["events", "postcopy-ram"]
        );
    }

    #[test]
    fn tcp_uri_refuses_what_is_not_addr_port() {
        for bad in [
            "2001:db8::1:4444",
            "node2:8102",
            "192.0.2.7",
            "192.0.2.7:99999",
            "",
        ] {
            let err = tcp_uri(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "`{bad}` is not ADDR:PORT (an IP address; IPv6 in brackets, e.g. [2001:db8::1]:4444)"
                )
            );
        }
    }
}
