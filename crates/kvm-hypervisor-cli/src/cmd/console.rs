//! `console NAME`: attach to the serial console, or `--info`: where the
//! consoles are.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::Context;
use kvm_hypervisor::state::{self, Socket};
use kvm_hypervisor::{Console, Node};

use crate::global::Global;
use crate::output::{print_json, runtime};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The instance.
    name: String,
    /// Print the console endpoints instead of attaching.
    #[arg(long)]
    info: bool,
    /// Resume a paused VM on attaching (it stays paused otherwise).
    #[arg(long, conflicts_with = "info")]
    resume: bool,
    /// With --info: print JSON.
    #[arg(long, requires = "info")]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        state::check_name(&self.name)?;
        if !self.info {
            return attach(&node, &self.name, self.resume);
        }
        let c = kvm_hypervisor::consoles(&node, &self.name)?;
        if self.json {
            print_json(&c)?;
            return Ok(ExitCode::SUCCESS);
        }
        for console in &c.consoles {
            let line = match console {
                Console::Serial { socket, .. } => {
                    format!("serial  unix socket {}", socket.display())
                }
                Console::VncSocket { socket } => {
                    format!("vnc     unix socket {}", socket.display())
                }
                Console::Vnc { host, port, .. } => format!(
                    "vnc     {host}:{}",
                    port.map_or("?".into(), |p| p.to_string())
                ),
                Console::Spice { host, port, .. } => format!(
                    "spice   {host}:{}",
                    port.map_or("?".into(), |p| p.to_string())
                ),
                _ => continue,
            };
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Attaches this terminal to the serial console (raw mode; Ctrl-] ends)
/// until the user leaves or QEMU goes away (the guest powered off); a
/// console another client holds is refused; a paused VM is resumed only
/// with `resume`.
fn attach(node: &Node, name: &str, resume: bool) -> anyhow::Result<ExitCode> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let paused = runtime()?.block_on(kvm_hypervisor::prepare_console(node, name, resume))?;
    let socket = node.run.socket(name, Socket::Serial);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .with_context(|| format!("connecting to the serial console {}", socket.display()))?;
    eprintln!("Connected to {name}'s serial console; Ctrl-] ends.");
    if paused {
        eprintln!(
            "{name} is paused: `kvm-hypervisor console --resume {name}` (or `kvm-hypervisor qmp \
             --instance {name} cont`) runs it."
        );
    }
    let raw = RawTerminal::enable();
    let mut stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 4096];
    let ended_by_vm = loop {
        let (vm_ready, user_ready) = {
            let mut fds = [
                PollFd::new(stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            ];
            poll(&mut fds, PollTimeout::NONE)?;
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if vm_ready {
            let n = stream.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break true;
            }
            if stdout
                .write_all(&buf[..n])
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break false;
            }
        }
        if user_ready {
            let n = stdin.read(&mut buf)?;
            if n == 0 {
                break false;
            }
            if let Some(pos) = buf[..n].iter().position(|b| *b == 0x1d) {
                stream.write_all(&buf[..pos])?;
                break false;
            }
            if stream.write_all(&buf[..n]).is_err() {
                break true;
            }
        }
    };
    drop(raw);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if ended_by_vm {
        eprintln!(
            "\r\n{name}'s console closed: QEMU exited (the guest powered off, or was stopped)."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Raw mode on stdin while alive, when stdin is a terminal.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enable() -> RawTerminal {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal(None);
        }
        let Ok(saved) = nix::sys::termios::tcgetattr(stdin.as_fd()) else {
            return RawTerminal(None);
        };
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ =
            nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &raw);
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}
