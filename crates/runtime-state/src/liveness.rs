//! Whether an instance's QEMU is alive: its pid file, then `/proc/<pid>`,
//! whose `-name` must be this instance (a reused pid is not liveness).

use std::path::Path;

use crate::layout::RunDir;

/// What a QEMU argv says about the instance, parsed as Ganeti does; a
/// fallback for when QMP does not answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgvFacts {
    /// The value of `-name` up to the first `,`.
    pub name: Option<String>,
    /// The value of `-m` (MiB), up to the first `,` and without a size suffix `M`.
    pub memory_mib: Option<u64>,
    /// The first field of `-smp`.
    pub vcpus: Option<u32>,
    /// `-pidfile`'s path.
    pub pidfile: Option<String>,
}

impl ArgvFacts {
    /// Parses `-name`, `-m` and `-smp` out of an argv.
    pub fn parse<S: AsRef<str>>(argv: &[S]) -> ArgvFacts {
        let mut facts = ArgvFacts::default();
        let value = |i: usize| argv.get(i + 1).map(|s| s.as_ref());
        for (i, arg) in argv.iter().enumerate() {
            match arg.as_ref() {
                "-name" => {
                    let v = value(i).unwrap_or_default();
                    let first = v.split(',').next().unwrap_or_default();
                    // `-name guest=NAME,…` is the long form.
                    facts.name = Some(first.strip_prefix("guest=").unwrap_or(first).to_owned());
                }
                "-m" => {
                    let v = value(i).unwrap_or_default();
                    let first = v.split(',').next().unwrap_or_default();
                    let first = first.strip_prefix("size=").unwrap_or(first);
                    facts.memory_mib = first.trim_end_matches(['M', 'm']).parse().ok();
                }
                "-pidfile" => facts.pidfile = value(i).map(str::to_owned),
                "-smp" => {
                    let v = value(i).unwrap_or_default();
                    let first = v.split(',').next().unwrap_or_default();
                    let first = first.strip_prefix("cpus=").unwrap_or(first);
                    facts.vcpus = first.parse().ok();
                }
                _ => {}
            }
        }
        facts
    }
}

/// The liveness of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// No pid file, or its process is gone (or a zombie).
    NotRunning,
    /// The pid file's process is alive and its `-name` is this instance.
    Running {
        /// QEMU's pid.
        pid: i32,
        /// What its argv says.
        argv: ArgvFacts,
    },
    /// The pid file names a live process that is not this instance's QEMU.
    PidReused {
        /// The pid in the pid file.
        pid: i32,
    },
}

impl Liveness {
    /// Whether the instance's QEMU is alive.
    pub fn is_running(&self) -> bool {
        matches!(self, Liveness::Running { .. })
    }
}

/// Reads a pid file: a decimal number, optionally followed by a newline.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|pid: &i32| *pid > 0)
}

/// The argv of a live process; `None` for no process or a zombie.
pub fn process_argv(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X" | "x")) {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// The liveness of instance `name` in `run`.
pub fn liveness(run: &RunDir, name: &str) -> Liveness {
    let pid_file = run.pid_file(name);
    if !pid_file.exists() {
        return Liveness::NotRunning;
    }
    let by_file = read_pid_file(&pid_file).map(|pid| (pid, process_argv(pid)));
    let verdict = match by_file {
        Some((pid, Some(argv))) => {
            let facts = ArgvFacts::parse(&argv);
            if facts.name.as_deref() == Some(name) {
                return Liveness::Running { pid, argv: facts };
            }
            Liveness::PidReused { pid }
        }
        _ => Liveness::NotRunning,
    };
    // A pid file that is garbled, or names a dead or other process, is not
    // proof of death: a QEMU of this instance may live on (its pid file
    // overwritten, say). Look for one by its argv before saying so.
    match find_qemu(name, &pid_file) {
        Some((pid, argv)) => Liveness::Running { pid, argv },
        None => verdict,
    }
}

/// A live process whose argv names instance `name` and the pid file
/// `pid_file` (so an instance of the same name in another run directory is
/// not taken for it), in this process's mount namespace (a path names the
/// same file only there: another container's, or a lab node's, QEMU of the
/// same name and run directory is not ours).
fn find_qemu(name: &str, pid_file: &Path) -> Option<(i32, ArgvFacts)> {
    let wanted = pid_file.to_string_lossy();
    let mount_ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let ours = mount_ns("self");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            if ours.is_some() && mount_ns(&pid.to_string()) != ours {
                return None;
            }
            let facts = ArgvFacts::parse(&process_argv(pid)?);
            let ours = facts.name.as_deref() == Some(name)
                && facts.pidfile.as_deref() == Some(wanted.as_ref());
            ours.then_some((pid, facts))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ganeti_argv_gives_name_memory_and_vcpus() {
        let argv = [
            "/usr/bin/kvm",
            "-name",
            "inst1,debug-threads=on",
            "-m",
            "1024",
            "-smp",
            "2,cores=2",
        ];
        assert_eq!(
            ArgvFacts::parse(&argv),
            ArgvFacts {
                name: Some("inst1".into()),
                memory_mib: Some(1024),
                vcpus: Some(2),
                pidfile: None,
            }
        );
    }

    #[test]
    fn long_forms_are_understood() {
        let argv = [
            "qemu",
            "-name",
            "guest=web1,debug-threads=on",
            "-m",
            "size=512M,maxmem=1G",
            "-smp",
            "cpus=4",
        ];
        assert_eq!(
            ArgvFacts::parse(&argv),
            ArgvFacts {
                name: Some("web1".into()),
                memory_mib: Some(512),
                vcpus: Some(4),
                pidfile: None,
            }
        );
    }

    #[test]
    fn this_process_is_alive_and_not_a_qemu() {
        let argv = process_argv(std::process::id() as i32).expect("our own argv");
        assert_eq!(ArgvFacts::parse(&argv).name, None);
    }
}
