//! The whole migration driven from the source, for people without a
//! cluster manager (`migrate NAME --to ssh://[USER@]HOST[:PORT]`, like
//! Proxmox's `qm migrate`): the target's steps run on its node through
//! `ssh` in batch mode (no prompts), the source's here.
//!
//! 1. `migration-info` here; `accept -` there, fed the record on stdin,
//!    listening on the target's address (HOST resolved here, so the
//!    address is the one this node reaches) and `migration_port`;
//! 2. `migrate --wait` here, following the migration (the target's node
//!    is recorded in `conf/<name>.migration`, so `migrate-cancel` from
//!    another process cleans the target up too);
//! 3. on success `finalize-target --success` there, then
//!    `finalize-source --success` here; on failure `finalize-source
//!    --failure` here (the guest goes on) and `finalize-target --failure`
//!    there. A failure after the switch to postcopy touches neither side:
//!    the guest's state is split between them.
//!
//! The `ssh` program and its options come from `KVM_HYPERVISOR_SSH` (a
//! command line split as by a shell, like Git's `GIT_SSH_COMMAND`),
//! default `ssh`; `-o BatchMode=yes` is always added.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{MigrateOptions, MigrationError, Outgoing, Progress, RemoteNode};
use crate::node::Node;

/// The environment variable naming the `ssh` command line.
pub const SSH_ENV: &str = "KVM_HYPERVISOR_SSH";

/// How long one step on the target's node may take (`accept` starts a
/// QEMU; a finalize stops one).
const REMOTE_STEP: Duration = Duration::from_secs(120);

/// `ssh://[USER@]HOST[:PORT]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUrl {
    /// The login user.
    pub user: Option<String>,
    /// The host: a name or an address (IPv6 without its brackets).
    pub host: String,
    /// The SSH port.
    pub port: Option<u16>,
}

impl SshUrl {
    /// Parses `ssh://[USER@]HOST[:PORT]` (an IPv6 HOST in brackets).
    pub fn parse(url: &str) -> Result<SshUrl, MigrationError> {
        let bad = |why: &'static str| MigrationError::BadSshUrl {
            url: url.to_owned(),
            why,
        };
        let rest = url
            .strip_prefix("ssh://")
            .ok_or(bad("it must start with ssh://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("it names a host, not a path"));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
            Some(_) => return Err(bad("the user before @ is empty")),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(bad("an unclosed [ in the host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(bad("junk after ]"))?),
            };
            (h, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("no host"));
        }
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
            .map(|p| p.ok_or(bad("the port is not 1 to 65535")))
            .transpose()?;
        Ok(SshUrl {
            user,
            host: host.to_owned(),
            port,
        })
    }
}

/// What a step on the target's node printed.
#[derive(Debug)]
struct RemoteOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The target's node, reached over SSH.
#[derive(Debug, Clone)]
pub struct Remote {
    url: String,
    ssh: Vec<String>,
    command: Vec<String>,
}

impl Remote {
    /// The node at `url`, where `command` (split as by a shell, e.g.
    /// `kvm-hypervisor --run-dir /srv/run`) is our binary.
    pub fn new(url: &str, command: &str) -> Result<Remote, MigrationError> {
        let ssh_url = SshUrl::parse(url)?;
        let ssh_line = std::env::var(SSH_ENV).unwrap_or_else(|_| "ssh".to_owned());
        let mut ssh = shlex::split(&ssh_line)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| MigrationError::BadSshCommand(ssh_line.clone()))?;
        ssh.extend(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"].map(str::to_owned));
        if let Some(p) = ssh_url.port {
            ssh.extend(["-p".to_owned(), p.to_string()]);
        }
        if let Some(u) = &ssh_url.user {
            ssh.extend(["-l".to_owned(), u.clone()]);
        }
        ssh.extend(["--".to_owned(), ssh_url.host.clone()]);
        let command = shlex::split(command)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| MigrationError::BadSshCommand(command.to_owned()))?;
        Ok(Remote {
            url: url.to_owned(),
            ssh,
            command,
        })
    }

    /// The record of this node kept with the outgoing migration.
    pub fn node(&self) -> RemoteNode {
        RemoteNode {
            url: self.url.clone(),
            command: shlex::try_join(self.command.iter().map(String::as_str)).unwrap_or_default(),
        }
    }

    /// The node a migration record names.
    pub fn from_node(node: &RemoteNode) -> Result<Remote, MigrationError> {
        Remote::new(&node.url, &node.command)
    }

    /// Runs our binary there with `args`, `stdin` fed to it.
    async fn run(&self, args: &[&str], stdin: &[u8]) -> Result<RemoteOutput, MigrationError> {
        let words: Vec<&str> = self
            .command
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        let line =
            shlex::try_join(words).map_err(|_| MigrationError::BadSshCommand(args.join(" ")))?;
        tracing::debug!(url = %self.url, %line, "running on the target's node");
        let ssh_args: Vec<&OsStr> = self.ssh[1..]
            .iter()
            .map(OsStr::new)
            .chain([OsStr::new(&line)])
            .collect();
        let ran = crate::process::run_with_input(
            Path::new(&self.ssh[0]),
            &ssh_args,
            Some(stdin),
            crate::process::BaseEnv::Inherit,
            &[],
            REMOTE_STEP,
        )
        .await;
        let output = match ran {
            Ok(output) => output,
            Err(crate::process::ProcessError::Failed { output, .. }) => output,
            Err(e) => {
                return Err(MigrationError::Ssh {
                    url: self.url.clone(),
                    step: args.first().copied().unwrap_or("").to_owned(),
                    source: Box::new(e),
                });
            }
        };
        Ok(RemoteOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// Runs `args` there and demands success.
    async fn ok(&self, args: &[&str], stdin: &[u8]) -> Result<String, MigrationError> {
        let out = self.run(args, stdin).await?;
        if out.code == Some(0) {
            return Ok(out.stdout);
        }
        Err(MigrationError::RemoteStep {
            url: self.url.clone(),
            step: args.join(" "),
            code: out.code,
            stderr: out.stderr,
        })
    }

    /// `finalize-target NAME --failure` there; an instance already gone
    /// (exit 3: someone finalized it first) is fine.
    pub async fn abandon(&self, name: &str) -> Result<(), MigrationError> {
        let args = ["finalize-target", name, "--failure", "--json"];
        let out = self.run(&args, b"").await?;
        match out.code {
            Some(0 | 3) => Ok(()),
            code => Err(MigrationError::RemoteStep {
                url: self.url.clone(),
                step: args.join(" "),
                code,
                stderr: out.stderr,
            }),
        }
    }
}

/// How to migrate to a node reached over SSH.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToOptions {
    /// Our binary on the target's node, with its global options.
    pub remote_command: String,
    /// The port the target listens on (default: `migration_port`).
    pub port: Option<u16>,
    /// The migration itself (`wait` is the deadline; without one, 600 s).
    pub migrate: MigrateOptions,
}

impl ToOptions {
    /// `kvm-hypervisor` on the remote node, `migration_port`, `migrate`.
    pub fn new(migrate: MigrateOptions) -> Self {
        ToOptions {
            remote_command: "kvm-hypervisor".to_owned(),
            port: None,
            migrate,
        }
    }

    /// Our binary there (split as by a shell).
    #[must_use]
    pub fn remote_command(mut self, command: &str) -> Self {
        command.clone_into(&mut self.remote_command);
        self
    }

    /// The port the target listens on.
    #[must_use]
    pub fn port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self
    }
}

/// The first address of `host` (resolved here: the address this node
/// reaches the target at).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, MigrationError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let unresolved = |why: String| MigrationError::Resolve {
        host: host.to_owned(),
        why,
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| unresolved(e.to_string()))?
        .next()
        .ok_or_else(|| unresolved("no address".to_owned()))
}

/// Migrates `name` to the node at `url` and finalizes both sides: see the
/// module's documentation.
pub async fn migrate_to(
    node: &Node,
    name: &str,
    url: &str,
    opts: ToOptions,
    on_progress: impl FnMut(&Progress),
) -> Result<Progress, MigrationError> {
    let remote = Remote::new(url, &opts.remote_command)?;
    let record = super::migration_info(node, name).await?;
    let hv = crate::instance::record_hvparams(&record);
    let port = opts
        .port
        .unwrap_or_else(|| u16::try_from(hv.migration_port()).unwrap_or(8102));
    let at = resolve(&SshUrl::parse(url)?.host, port).await?.to_string();
    let info = super::info_text(node, &record);
    let mut accept = vec!["accept", "-", "--listen", &at, "--json"];
    let m = opts.migrate;
    if m.postcopy {
        accept.push("--postcopy");
    }
    let creds = m
        .tls_creds
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned());
    if let Some(dir) = &creds {
        accept.extend(["--tls-creds", dir]);
    }
    remote.ok(&accept, info.as_bytes()).await?;
    tracing::info!(instance = name, url, listen = %at, "the target accepts");
    let wait = m.wait.unwrap_or(Duration::from_secs(600));
    let m = m.wait(Some(wait)).remote(Some(remote.node()));
    let moved = tokio::select! {
        moved = super::migrate_watch(node, name, &at, m, on_progress) => moved,
        _ = tokio::signal::ctrl_c() => {
            tracing::warn!(instance = name, "interrupted: cancelling the migration");
            let _ = super::cancel_here(node, name).await;
            Err(MigrationError::Interrupted(name.to_owned()))
        }
    };
    match moved {
        Ok(p) => finish(node, name, &remote, p).await,
        Err(e) => Err(give_up(node, name, &remote, e).await),
    }
}

/// After a completed migration: the guest runs there, then the source
/// goes.
async fn finish(
    node: &Node,
    name: &str,
    remote: &Remote,
    p: Progress,
) -> Result<Progress, MigrationError> {
    if let Err(e) = remote
        .ok(&["finalize-target", name, "--success", "--json"], b"")
        .await
    {
        return Err(MigrationError::TargetNotFinalized {
            name: name.to_owned(),
            url: remote.url.clone(),
            source: Box::new(e),
        });
    }
    super::finalize_source(node, name, true).await?;
    Ok(p)
}

/// After a failed migration: the guest goes on here and the target is
/// cleaned up, unless postcopy had begun; returns the error to report.
async fn give_up(node: &Node, name: &str, remote: &Remote, e: MigrationError) -> MigrationError {
    if Outgoing::load(node, name).is_some_and(|o| o.switched_to_postcopy) {
        return MigrationError::PostcopyBroken {
            name: name.to_owned(),
            source: Box::new(e),
        };
    }
    if let Err(resume) = super::finalize_source(node, name, false).await {
        tracing::error!(instance = name, error = %resume, "the guest could not go on here");
        return MigrationError::Unfinished {
            name: name.to_owned(),
            what: format!(
                "the migration failed ({e}) and the guest could not go on here: {resume}; run `finalize-source {name} --failure` here and `finalize-target {name} --failure` on {}",
                remote.url
            ),
        };
    }
    if let Err(clean) = remote.abandon(name).await {
        return MigrationError::Unfinished {
            name: name.to_owned(),
            what: format!(
                "the migration failed ({e}); the guest goes on here, but the target was not cleaned up: {clean}; run `finalize-target {name} --failure` on {}",
                remote.url
            ),
        };
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(user: Option<&str>, host: &str, port: Option<u16>) -> SshUrl {
        SshUrl {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn ssh_urls_with_and_without_user_and_port() {
        let cases = [
            ("ssh://node2", url(None, "node2", None)),
            ("ssh://root@node2/", url(Some("root"), "node2", None)),
            (
                "ssh://192.0.2.130:2222",
                url(None, "192.0.2.130", Some(2222)),
            ),
            (
                "ssh://ops@[2001:db8::2]:22",
                url(Some("ops"), "2001:db8::2", Some(22)),
            ),
            ("ssh://[2001:db8::2]", url(None, "2001:db8::2", None)),
        ];
        for (text, want) in cases {
            assert_eq!(SshUrl::parse(text).expect(text), want, "{text}");
        }
    }

    #[test]
    fn bad_ssh_urls_say_why() {
        let cases = [
            (
                "node2",
                "`node2` is not ssh://[USER@]HOST[:PORT]: it must start with ssh://",
            ),
            (
                "ssh://",
                "`ssh://` is not ssh://[USER@]HOST[:PORT]: no host",
            ),
            (
                "ssh://@node2",
                "`ssh://@node2` is not ssh://[USER@]HOST[:PORT]: the user before @ is empty",
            ),
            (
                "ssh://node2:0",
                "`ssh://node2:0` is not ssh://[USER@]HOST[:PORT]: the port is not 1 to 65535",
            ),
            (
                "ssh://node2:x",
                "`ssh://node2:x` is not ssh://[USER@]HOST[:PORT]: the port is not 1 to 65535",
            ),
            (
                "ssh://node2/srv",
                "`ssh://node2/srv` is not ssh://[USER@]HOST[:PORT]: it names a host, not a path",
            ),
            (
                "ssh://[2001:db8::2",
                "`ssh://[2001:db8::2` is not ssh://[USER@]HOST[:PORT]: an unclosed [ in the host",
            ),
            (
                "ssh://-oProxyCommand=x",
                "`ssh://-oProxyCommand=x` is not ssh://[USER@]HOST[:PORT]: no host",
            ),
        ];
        for (text, want) in cases {
            let err = SshUrl::parse(text).expect_err(text);
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn the_ssh_command_line_ends_with_batch_mode_the_login_and_the_host() {
        let r = Remote::new(
            "ssh://ops@[2001:db8::2]:2222",
            "kvm-hypervisor --run-dir '/srv/run dir'",
        )
        .expect("remote");
        // The variable is not set in the test environment.
        assert_eq!(
            r.ssh,
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=15",
                "-p",
                "2222",
                "-l",
                "ops",
                "--",
                "2001:db8::2"
            ]
        );
        assert_eq!(r.node().command, "kvm-hypervisor --run-dir '/srv/run dir'");
    }
}
