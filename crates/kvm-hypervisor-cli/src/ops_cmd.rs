//! `reboot`, `console`, `node-info` and `verify`.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kvm_hypervisor::node::{self, CheckOutcome as Verdict};
use kvm_hypervisor::state;
use kvm_hypervisor::{self as lifecycle, Node};
use serde_json::{Value, json};

use crate::runtime;

pub(crate) fn reboot(
    node: Node,
    name: &str,
    hard: bool,
    timeout: u64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let started = runtime()?.block_on(lifecycle::reboot(
        &node,
        name,
        hard,
        Duration::from_secs(timeout),
    ))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&started)?);
    } else {
        println!("{name}: rebooted (pid {})", started.pid);
    }
    Ok(ExitCode::SUCCESS)
}

/// Ganeti's `GetInstanceConsole`: where the consoles of `name` are.
fn console_info(node: &Node, name: &str) -> anyhow::Result<Value> {
    let record = node
        .run
        .read_runtime(name)?
        .with_context(|| format!("instance {name} has no runtime record"))?
        .record();
    let hv = |k: &str| {
        record
            .hvparams
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let port = record.instance.get("network_port").and_then(Value::as_u64);
    let mut consoles = Vec::new();
    if record
        .hvparams
        .get("serial_console")
        .and_then(Value::as_bool)
        .unwrap_or(true)
    {
        consoles.push(
            json!({"kind": "serial", "socket": node.run.socket(name, kvm_hypervisor::state::Socket::Serial),
                             "command": format!("kvm-hypervisor console {name}")}),
        );
    }
    let vnc = hv("vnc_bind_address");
    if vnc.starts_with('/') {
        consoles
            .push(json!({"kind": "vnc", "socket": Path::new(&vnc).join(format!("{name}.vnc"))}));
    } else if !vnc.is_empty() {
        consoles.push(json!({"kind": "vnc", "host": vnc, "port": port, "display": port.map(|p| p.saturating_sub(5900))}));
    }
    let spice = hv("spice_bind");
    if !spice.is_empty() {
        let tls = record
            .hvparams
            .get("spice_use_tls")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        consoles.push(json!({"kind": "spice", "host": spice, "port": port, "tls": tls}));
    }
    Ok(json!({"instance": name, "consoles": consoles}))
}

pub(crate) fn console(
    node: Node,
    name: &str,
    info: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    state::check_name(name)?;
    if info {
        let v = console_info(&node, name)?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            for c in v["consoles"].as_array().into_iter().flatten() {
                let place = match (c.get("socket"), c.get("host")) {
                    (Some(s), _) => format!("unix socket {}", s.as_str().unwrap_or_default()),
                    (None, Some(h)) => format!("{}:{}", h.as_str().unwrap_or_default(), c["port"]),
                    _ => String::new(),
                };
                println!("{:<7} {place}", c["kind"].as_str().unwrap_or_default());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    attach(&node, name)
}

/// Attaches this terminal to the serial console (raw mode; Ctrl-] ends),
/// resuming a paused VM first, as Ganeti's console wrapper does.
fn attach(node: &Node, name: &str) -> anyhow::Result<ExitCode> {
    let socket = node.run.socket(name, kvm_hypervisor::state::Socket::Serial);
    let stream = std::os::unix::net::UnixStream::connect(&socket)
        .with_context(|| format!("connecting to the serial console {}", socket.display()))?;
    runtime()?.block_on(async {
        let qmp = lifecycle::connect(
            &node.run.socket(name, kvm_hypervisor::state::Socket::Qmp),
            Duration::from_secs(5),
        )
        .await?;
        let status = qmp.execute(kvm_hypervisor::qmp::QueryStatus).await?;
        if !status.running {
            qmp.execute(kvm_hypervisor::qmp::Cont).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
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

pub(crate) fn node_info(
    qemu: &Path,
    cache_dir: PathBuf,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let info = runtime()?.block_on(node::node_info(qemu, &cache_dir));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let or = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    println!("qemu      {}", or(info.qemu_version.clone()));
    println!("cpus      {}", or(info.cpus.map(|c| c.to_string())));
    println!(
        "memory    {} MiB total, {} MiB available",
        or(info.memory_total_mib.map(|m| m.to_string())),
        or(info.memory_free_mib.map(|m| m.to_string()))
    );
    println!(
        "kvm       {}",
        match info.kvm {
            Some(true) => "usable",
            Some(false) => "not usable",
            None => "unknown",
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(
    qemu: &Path,
    cache_dir: PathBuf,
    node: Node,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let checks = runtime()?.block_on(node::verify(qemu, &cache_dir, &node.run));
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": !failed, "checks": checks}))?
        );
    } else {
        for c in &checks {
            let v = match c.verdict {
                Verdict::Ok => "ok",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            println!("{v:<5} {:<10} {}", c.what, c.detail);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn monitor(node: Node) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let printer = async {
            while let Some(v) = rx.recv().await {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
                let _ = std::io::stdout().flush();
            }
        };
        tokio::select! {
            r = kvm_hypervisor::monitor::run(node.run.clone(), tx, stop) => r.map_err(anyhow::Error::from),
            () = printer => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
