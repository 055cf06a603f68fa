//! Project automation (`cargo xtask …`): everything a developer or CI runs,
//! with what it needs installed first.
#![allow(clippy::disallowed_methods)] // xtask drives cargo, apt and the binary
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci     install what the tests need, then fmt --check, clippy -D warnings,
         every test (the tidy test of the crate graph included), docs -D warnings
  demo   the main job: validate and show the bundled demo instance spec
  capture-fixtures [QEMU]
         record this machine's QEMU help outputs under fixtures/qemu/<version>/
         (never edit those files by hand; re-run this instead)
";

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("demo") => demo(),
        Some("capture-fixtures") => capture_fixtures(std::env::args().nth(2)),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Installs the Debian packages the tests need when their programs are missing.
fn ensure_packages() -> Result<()> {
    let wanted = [("qemu-system-x86_64", "qemu-system-x86")];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!("missing {missing:?} and no apt-get to install them with");
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ci() -> Result<()> {
    ensure_packages()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run("cargo test", cargo().args(["test", "--workspace"]))?;
    run(
        "cargo doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    eprintln!("xtask: ci passed");
    Ok(())
}

fn demo() -> Result<()> {
    let spec = root().join("fixtures/specs/demo.json");
    run(
        "cargo build -p kvm-hypervisor-cli",
        cargo().args(["build", "--quiet", "-p", "kvm-hypervisor-cli"]),
    )?;
    let bin = root().join("target/debug/kvm-hypervisor");
    println!("$ kvm-hypervisor validate {}", spec.display());
    let status = Command::new(&bin)
        .arg("validate")
        .arg(&spec)
        .status()
        .context("running kvm-hypervisor")?;
    println!();
    println!("The spec (hvparams not given take Ganeti's defaults; see `kvm-hypervisor params`):");
    println!("{}", std::fs::read_to_string(&spec)?);
    println!(
        "Booting this instance arrives with the lifecycle work (issue: start/stop on a real guest)."
    );
    if !status.success() {
        bail!("the demo spec did not validate on this host");
    }
    Ok(())
}

/// Records what `qemu` says about itself, for the offline capability parsers' tests.
fn capture_fixtures(qemu: Option<String>) -> Result<()> {
    let qemu = qemu.unwrap_or_else(|| "qemu-system-x86_64".into());
    let output = |args: &[&str]| -> Result<String> {
        let out = Command::new(&qemu)
            .args(args)
            .output()
            .with_context(|| format!("running {qemu} {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{qemu} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = output(&["--version"])?;
    let number = version
        .split("version ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no version in --version output")?;
    let major_minor: String = number.split('.').take(2).collect::<Vec<_>>().join(".");
    let dir = root().join("fixtures/qemu").join(&major_minor);
    std::fs::create_dir_all(&dir)?;
    let files = [
        ("version.txt", vec!["--version"]),
        ("help.txt", vec!["--help"]),
        ("machine-help.txt", vec!["-machine", "help"]),
        ("device-help.txt", vec!["-device", "help"]),
    ];
    for (file, args) in files {
        let text = if file == "version.txt" {
            version.clone()
        } else {
            output(&args)?
        };
        std::fs::write(dir.join(file), text)?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
