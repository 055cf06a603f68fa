//! `cargo xtask dist [--debug]`: the binary with what goes around it, laid
//! out as under a prefix (`/usr/local`) and packed as a tarball:
//! `sbin/kvm-hypervisor` (where the units look for it), its man pages
//! (`share/man/man1`), completions for bash, zsh and fish, the systemd
//! units (`lib/systemd/system`, running `/usr/local/sbin/kvm-hypervisor`;
//! `kvm-hypervisor install-units` writes another path in), and the docs
//! and licence.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::{cargo, root, run};

pub(crate) fn dist(release: bool) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "kvm-hypervisor-cli"]);
    if release {
        build.arg("--release");
    }
    run("cargo build -p kvm-hypervisor-cli", &mut build)?;
    let bin = root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("kvm-hypervisor");
    let version = output(&bin, &["--version"])?
        .split_whitespace()
        .last()
        .context("no version")?
        .to_owned();
    let name = format!("kvm-hypervisor-{version}-{}-linux", std::env::consts::ARCH);
    let dist = root().join("target/dist");
    let out = dist.join(&name);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let put = |rel: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(rel);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    put("sbin/kvm-hypervisor", &std::fs::read(&bin)?)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        out.join("sbin/kvm-hypervisor"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    output(
        &bin,
        &[
            "man-pages",
            "--out-dir",
            out.join("share/man/man1").to_str().context("utf-8")?,
        ],
    )?;
    for (shell, rel) in [
        ("bash", "share/bash-completion/completions/kvm-hypervisor"),
        ("zsh", "share/zsh/site-functions/_kvm-hypervisor"),
        (
            "fish",
            "share/fish/vendor_completions.d/kvm-hypervisor.fish",
        ),
    ] {
        put(rel, output(&bin, &["completions", shell])?.as_bytes())?;
    }
    for unit in [
        "kvm-hypervisor-monitor.service",
        "kvm-hypervisor-node.service",
    ] {
        put(
            &format!("lib/systemd/system/{unit}"),
            &std::fs::read(root().join("integrations/systemd").join(unit))?,
        )?;
    }
    for doc in ["README.md", "ARCHITECTURE.md", "LICENSE"] {
        put(
            &format!("share/doc/kvm-hypervisor/{doc}"),
            &std::fs::read(root().join(doc))?,
        )?;
    }
    ensure!(
        out.join("share/man/man1/kvm-hypervisor-node-start.1")
            .is_file(),
        "no man page for node-start"
    );
    let tarball = dist.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dist)
        .args(["-czf"])
        .arg(&tarball)
        .arg(&name)
        .status()?;
    ensure!(status.success(), "tar failed");
    eprintln!("xtask: dist: {}", tarball.display());
    Ok(tarball)
}

fn output(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin).args(args).output()?;
    ensure!(
        out.status.success(),
        "kvm-hypervisor {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
