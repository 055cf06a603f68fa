//! Spawning processes: the one place in the workspace that does it (the
//! `disallowed-methods` lint bans `Command::new` everywhere else).
//!
//! [`run_with_timeout`] runs a program to completion with captured output,
//! in a process group of its own that is killed as a whole when the time is
//! up. [`run_nic_script`] runs a NIC script with Ganeti's environment.
//! [`spawn_with_fds`] starts a long-lived process (QEMU) in a session of its
//! own with descriptors at fixed numbers (monitor sockets, taps).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tap_netdev::{NicConfig, ScriptAction, TapName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// `PATH` for a NIC script when this process has none (Ganeti always has
/// one, being started by init).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Which environment a process starts from, before the variables given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseEnv {
    /// This process's environment.
    Inherit,
    /// Nothing.
    Empty,
}

/// A process that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot run {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the program or reading its output failed.
    #[error("lost track of {}", program.display())]
    Wait {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran longer than allowed; it and its process group were
    /// killed with SIGKILL.
    #[error("{} did not finish within {after:?} and was killed", program.display())]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The time it was given.
        after: Duration,
    },
    /// The program exited unsuccessfully.
    #[error("{} failed ({status}){}", program.display(), output_tail(output))]
    Failed {
        /// The program.
        program: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote.
        output: Output,
    },
}

/// `: <stderr>` (or stdout when stderr is empty), trimmed, or nothing.
fn output_tail(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Runs `program` with `args`, the environment `base` plus `env`, stdin from
/// `/dev/null`, and stdout and stderr captured, and waits at most `timeout`.
///
/// The program leads a new process group. On timeout the whole group gets
/// SIGKILL (so a script's children die too), the program is reaped, and
/// [`ProcessError::Timeout`] is returned. A non-zero exit is
/// [`ProcessError::Failed`] with the captured output.
///
/// Must be called within a tokio runtime.
pub async fn run_with_timeout(
    program: &Path,
    args: &[&OsStr],
    base: BaseEnv,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Output, ProcessError> {
    run_with_input(program, args, None, base, env, timeout).await
}

/// Runs a shell command line (`sh -c`) in the foreground on the user's
/// terminal, with `arg` as its `$1`, and waits for it without a deadline:
/// an editor, which the user ends. Returns its exit status.
pub fn run_interactive(
    command_line: &str,
    arg: &OsStr,
) -> std::io::Result<std::process::ExitStatus> {
    #[allow(clippy::disallowed_methods)] // this module is where processes are spawned
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command_line} \"$1\""))
        .arg("sh")
        .arg(arg)
        .status()
}

/// [`run_with_timeout`] with `input` on the program's stdin (then closed)
/// instead of `/dev/null`.
pub async fn run_with_input(
    program: &Path,
    args: &[&OsStr],
    input: Option<&[u8]>,
    base: BaseEnv,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Output, ProcessError> {
    let mut child =
        spawn(program, args, input.is_some(), base, env).map_err(|source| ProcessError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let pid = child.id();
    tracing::debug!(program = %program.display(), ?args, pid, "spawned");
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async {
        if let (Some(pipe), Some(bytes)) = (&mut stdin, input) {
            // A program that exits without reading all of it is not an
            // error of ours: its exit status says how it went.
            if let Err(e) = pipe.write_all(bytes).await
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e);
            }
        }
        drop(stdin.take());
        Ok(())
    };
    let finished = tokio::time::timeout(timeout, async {
        let (status, (), out, err) = tokio::try_join!(
            child.wait(),
            feed,
            read_all(&mut stdout),
            read_all(&mut stderr)
        )?;
        Ok::<_, std::io::Error>((status, out, err))
    })
    .await;
    match finished {
        Ok(Ok((status, stdout, stderr))) => {
            let output = Output {
                status,
                stdout,
                stderr,
            };
            if status.success() {
                Ok(output)
            } else {
                Err(ProcessError::Failed {
                    program: program.to_owned(),
                    status,
                    output,
                })
            }
        }
        Ok(Err(source)) => Err(ProcessError::Wait {
            program: program.to_owned(),
            source,
        }),
        Err(_elapsed) => {
            kill_group(&mut child, pid).await;
            tracing::warn!(program = %program.display(), ?timeout, "killed after timeout");
            Err(ProcessError::Timeout {
                program: program.to_owned(),
                after: timeout,
            })
        }
    }
}

/// Runs a NIC script for `tap` as Ganeti does: its argument is the tap's
/// name (a plain string, not Ganeti's `b'tap0'`), its environment this
/// process's plus [`tap_netdev::script_env`] (with this process's `PATH`,
/// or [`DEFAULT_PATH`], as the base of `PATH`).
///
/// A NIC's `down` must run only after QEMU has exited; that ordering is the
/// caller's.
pub async fn run_nic_script(
    script: &Path,
    nic: &NicConfig,
    tap: &TapName,
    action: ScriptAction,
    timeout: Duration,
) -> Result<Output, ProcessError> {
    let base_path = std::env::var_os("PATH")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_PATH.to_owned());
    let env = tap_netdev::script_env(nic, tap, action, &base_path);
    let arg = OsStr::new(tap.as_str());
    run_with_timeout(script, &[arg], BaseEnv::Inherit, &env, timeout).await
}

/// Builds and spawns a command that runs to completion.
fn spawn(
    program: &Path,
    args: &[&OsStr],
    stdin: bool,
    base: BaseEnv,
    env: &[(String, String)],
) -> std::io::Result<Child> {
    let mut command = new_command(program);
    command
        .args(args)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if base == BaseEnv::Empty {
        command.env_clear();
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe close_range(2)/fcntl(2) calls.
    unsafe {
        command.pre_exec(|| {
            cloexec_from(3);
            Ok(())
        });
    }
    command.spawn()
}

/// Marks every descriptor from `first` up close-on-exec. In the child
/// between fork and exec: whatever our caller left open without `O_CLOEXEC`
/// (a shell's `9>lock`, say) must not live on in QEMU or a script. Marked,
/// not closed: the pipe through which the child reports a failed exec to
/// us is among them and must stay open until the exec. Async-signal-safe.
fn cloexec_from(first: i32) {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    let from = u32::try_from(first).unwrap_or(3);
    // SAFETY: close_range(2) on numbers only; no memory is touched.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            from,
            u32::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Kernels before 5.11: one by one up to a generous bound.
        for fd in first..65_536 {
            cloexec(fd);
        }
    }
}

/// Marks `fd` close-on-exec (EBADF for an unused number is fine).
fn cloexec(fd: i32) {
    // SAFETY: fcntl(2) F_SETFD on a number; no memory is touched.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC) };
}

/// A descriptor handed to a child at a fixed number.
#[derive(Debug, Clone, Copy)]
pub struct PassFd<'a> {
    /// The number the child sees (3 and up).
    pub target: i32,
    /// Our descriptor.
    pub fd: BorrowedFd<'a>,
}

/// Where a spawned child's stderr goes.
#[derive(Debug)]
pub enum ChildStderr {
    /// A pipe the caller reads (`child.stderr`).
    Piped,
    /// Appended to this file (QEMU's log, kept for error reports).
    File(std::fs::File),
    /// Discarded.
    Null,
}

/// Starts `program` with `args` in a new session (so it outlives us and
/// no terminal signal reaches it), stdin and stdout on `/dev/null`, and each
/// [`PassFd`] at its target number. Every other descriptor of ours is
/// close-on-exec and does not leak.
///
/// This replaces QEMU's `-daemonize`: the caller keeps the pid and learns
/// of readiness from the monitor, not from a double fork.
pub fn spawn_with_fds(
    program: &Path,
    args: &[String],
    fds: &[PassFd<'_>],
    stderr: ChildStderr,
) -> Result<Child, ProcessError> {
    let spawn_err = |source| ProcessError::Spawn {
        program: program.to_owned(),
        source,
    };
    // Stage every descriptor above any target number first, so that the
    // dup2 calls in the child cannot overwrite one another.
    let staged: Vec<(i32, OwnedFd)> = fds
        .iter()
        .map(|p| {
            nix::fcntl::fcntl(p.fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(STAGE_FD_BASE))
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
                .map(|raw| (p.target, unsafe { OwnedFd::from_raw_fd(raw) }))
                .map_err(|e| spawn_err(std::io::Error::from(e)))
        })
        .collect::<Result<_, _>>()?;
    let moves: Vec<(i32, i32)> = staged.iter().map(|(t, fd)| (fd.as_raw_fd(), *t)).collect();
    // Everything above the highest target is closed at exec; so are the
    // gaps below it.
    let top = fds.iter().map(|p| p.target).max().unwrap_or(2);
    let gaps: Vec<i32> = (3..top)
        .filter(|n| !fds.iter().any(|p| p.target == *n))
        .collect();
    let stderr = match stderr {
        ChildStderr::Piped => Stdio::piped(),
        ChildStderr::File(f) => Stdio::from(f),
        ChildStderr::Null => Stdio::null(),
    };
    let mut command = new_command(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(false);
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe setsid(2), umask(2), dup2(2), fcntl(2) and
    // close_range(2) on numbers computed before the fork.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // What QEMU creates (its HMP and serial sockets, the console
            // log, the pid file) is for us alone, as our own files are.
            nix::libc::umask(0o077);
            for &(from, to) in &moves {
                if nix::libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &fd in &gaps {
                cloexec(fd);
            }
            cloexec_from(top + 1);
            Ok(())
        });
    }
    let child = command.spawn().map_err(spawn_err)?;
    drop(staged);
    Ok(child)
}

/// Staged descriptors live at or above this number in the parent.
const STAGE_FD_BASE: i32 = 1000;

/// The only `Command::new` of the workspace (see clippy.toml).
#[allow(clippy::disallowed_methods)]
fn new_command(program: &Path) -> Command {
    Command::new(program)
}

async fn read_all<R: AsyncRead + Unpin>(pipe: &mut Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// SIGKILLs the process group `child` leads, then reaps `child`.
async fn kill_group(child: &mut Child, pid: Option<u32>) {
    if let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH: the group is already gone.
        if let Err(errno) = killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
            tracing::debug!(pgid, %errno, "killpg");
        }
    }
    // Reaps it; after SIGKILL this returns promptly.
    if let Err(e) = child.wait().await {
        tracing::warn!(error = %e, "reaping a killed child failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;

    fn output(stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(1 << 8),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    /// The descriptors a child sees: `ls` lists its own, plus the one it
    /// opens to list them.
    const LIST_FDS: &str = "ls /proc/self/fd";

    #[tokio::test(flavor = "current_thread")]
    async fn scripts_inherit_no_descriptor_beyond_stdio() {
        let devnull = std::fs::File::open("/dev/null").expect("open");
        // dup(2) gives a descriptor without O_CLOEXEC, as a caller's shell would.
        let leaked = nix::unistd::dup(&devnull).expect("dup");
        let out = run_with_timeout(
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(LIST_FDS)],
            BaseEnv::Inherit,
            &[],
            Duration::from_secs(10),
        )
        .await
        .expect("sh");
        drop(leaked);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n3\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_spawned_child_keeps_only_the_descriptors_passed_to_it() {
        let devnull = std::fs::File::open("/dev/null").expect("open");
        let leaked = nix::unistd::dup(&devnull).expect("dup");
        let passed = std::fs::File::open("/dev/null").expect("open");
        let args = ["-c".to_owned(), format!("{LIST_FDS} >&2")];
        let pass = [PassFd {
            target: 4,
            fd: passed.as_fd(),
        }];
        let child =
            spawn_with_fds(Path::new("/bin/sh"), &args, &pass, ChildStderr::Piped).expect("spawn");
        let out = child.wait_with_output().await.expect("wait");
        drop(leaked);
        // 3 is the gap below the passed 4, then taken by ls for its listing.
        assert_eq!(String::from_utf8_lossy(&out.stderr), "0\n1\n2\n3\n4\n");
    }

    #[test]
    fn failure_message_shows_stderr() {
        assert_eq!(output_tail(&output("out\n", "  err line\n")), ": err line");
    }

    #[test]
    fn failure_message_falls_back_to_stdout() {
        assert_eq!(output_tail(&output("out\n", "\n")), ": out");
    }

    #[test]
    fn failure_message_without_output_is_bare() {
        assert_eq!(output_tail(&output("", "")), "");
    }
}
