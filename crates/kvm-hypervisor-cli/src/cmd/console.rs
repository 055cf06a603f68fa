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
    /// With --info: print JSON.
    #[arg(long, requires = "info")]
    json: bool,
}

impl Args {
    pub(crate) fn run(self, g: &Global) -> anyhow::Result<ExitCode> {
        let node = g.node(None)?;
        state::check_name(&self.name)?;
        if !self.info {
            return attach(&node, &self.name);
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

/// Attaches this terminal to the serial console (raw mode; Ctrl-] ends),
/// resuming a paused VM first, as Ganeti's console wrapper does.
fn attach(node: &Node, name: &str) -> anyhow::Result<ExitCode> {
    let socket = node.run.socket(name, Socket::Serial);
    let stream = std::os::unix::net::UnixStream::connect(&socket)
        .with_context(|| format!("connecting to the serial console {}", socket.display()))?;
    runtime()?.block_on(kvm_hypervisor::resume_for_console(node, name))?;
    eprintln!("Connected to {name}'s serial console; Ctrl-] ends.");
    let _raw = RawTerminal::enable();
    let mut from_vm = stream.try_clone()?;
    let out = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = from_vm.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut to_vm = stream;
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(pos) = buf[..n].iter().position(|b| *b == 0x1d) {
            to_vm.write_all(&buf[..pos])?;
            break;
        }
        if to_vm.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to_vm.shutdown(std::net::Shutdown::Both);
    let _ = out.join();
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
