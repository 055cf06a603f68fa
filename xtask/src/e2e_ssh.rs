//! End-to-end `migrate --to ssh://`: an sshd of the test's own inside node
//! B's namespace (its own host key, a client key, nothing from the
//! machine's configuration), the whole migration driven from A; and a
//! migration so driven, cancelled from another process, which cleans B up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::e2e::{Console, Lab, NODE_B, last_json, leftover_files};

fn step(what: &str) {
    eprintln!("e2e ssh: {what}");
}

/// An sshd in node B's namespace, listening on B's address; killed (by
/// its pid) when dropped.
struct Sshd {
    child: Child,
    /// `KVM_HYPERVISOR_SSH` for the client: the test's key, B's host key
    /// as the only known one, no user configuration.
    ssh_command: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()?;
    ensure!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Sshd {
    fn start(lab: &Lab) -> Result<Sshd> {
        let dir = lab.dir.join("ssh");
        std::fs::create_dir_all(&dir)?;
        let (host_key, client_key) = (dir.join("host_key"), dir.join("client_key"));
        keygen(&host_key)?;
        keygen(&client_key)?;
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
        std::fs::write(dir.join("known_hosts"), format!("{NODE_B} {host_pub}"))?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {NODE_B}\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
                host_key.display(),
                dir.join("authorized_keys").display()
            ),
        )?;
        // Debian's sshd wants its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns_b,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("sshd's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        // Listening once it says so; its stderr then drains in a thread.
        loop {
            match lines.next() {
                Some(line) if line.as_ref().is_ok_and(|l| l.contains("Server listening")) => break,
                Some(_) => {}
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("sshd in {} ended before listening", lab.ns_b);
                }
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let ssh_command = format!(
            "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
            client_key.display(),
            dir.join("known_hosts").display()
        );
        Ok(Sshd { child, ssh_command })
    }
}

/// Our binary on B, as the source names it in `--remote-command`.
fn remote_command(lab: &Lab) -> String {
    format!(
        "{} --run-dir {}",
        lab.bin.display(),
        lab.dir.join("run-b").display()
    )
}

fn b_has(lab: &Lab, name: &str) -> Result<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_b])
        .arg(&lab.bin)
        .arg("--run-dir")
        .arg(lab.dir.join("run-b"))
        .args(["info", name, "--json"])
        .output()?;
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

pub(crate) fn scenarios(lab: &Lab) -> Result<()> {
    let sshd = Sshd::start(lab)?;
    let url = format!("ssh://root@{NODE_B}");
    let remote = remote_command(lab);
    let env = [("KVM_HYPERVISOR_SSH", sshd.ssh_command.as_str())];

    step(
        "migrate --to ssh:// (B's sshd): accept, migrate, finalize on both sides in one command, on migration_port; the marker and uptime come along, A is left empty",
    );
    let spec = lab.spec("mig7", false, json!({}))?;
    lab.start(&spec)?;
    let mut console = lab.boot("mig7")?;
    console.run("echo MARK-$((8*8))-ssh > /tmp/mark")?;
    let up_a = crate::e2e_migration::uptime(&mut console)?;
    drop(console);
    let out = lab.kvmh_env(
        &[
            "migrate",
            "mig7",
            "--to",
            &url,
            "--remote-command",
            &remote,
            "--json",
        ],
        &env,
    )?;
    ensure!(
        out.status.success(),
        "migrate --to: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = last_json(&String::from_utf8_lossy(&out.stdout))?;
    ensure!(
        done["status"] == "completed" && done["target"] == format!("{NODE_B}:8102"),
        "migrate --to: {done}"
    );
    let on_b = b_has(lab, "mig7")?;
    ensure!(on_b["state"] == "running", "mig7 on B: {on_b}");
    let left = leftover_files(&lab.dir.join("run"))?;
    ensure!(left.is_empty(), "files left on A: {left:?}");
    let mut console = Console::attach(&lab.dir.join("run-b/ctrl/mig7.serial"))?;
    let mark = console.run("cat /tmp/mark")?;
    ensure!(mark == ["MARK-64-ssh"], "the marker on B: {mark:?}");
    let up_b = crate::e2e_migration::uptime(&mut console)?;
    ensure!(up_b > up_a, "the guest's uptime went from {up_a} to {up_b}");
    drop(console);
    crate::e2e_migration::ok_b(lab, &["stop", "mig7", "--force"])?;

    step(
        "migrate --to ssh:// cancelled from another process: migrate-cancel stops and cleans B, the guest goes on on A",
    );
    let spec = lab.spec("mig8", false, json!({"migration_bandwidth": 1}))?;
    lab.start(&spec)?;
    let mut console = lab.boot("mig8")?;
    // Before: a bad URL is invalid input; a target node without our
    // binary fails at accept, says so, and leaves A's guest alone.
    let bad = lab.kvmh_env(&["migrate", "mig8", "--to", "ssh://"], &env)?;
    ensure!(
        bad.status.code() == Some(1)
            && String::from_utf8_lossy(&bad.stderr)
                .contains("`ssh://` is not ssh://[USER@]HOST[:PORT]: no host"),
        "a bad URL: {bad:?}"
    );
    let missing = lab.kvmh_env(
        &[
            "migrate",
            "mig8",
            "--to",
            &url,
            "--remote-command",
            "/nonexistent/kvm-hypervisor",
        ],
        &env,
    )?;
    let why = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        missing.status.code() == Some(5)
            && why.contains(&format!(
                "on {url}: `accept - --listen {NODE_B}:8102 --json` failed (exit 127)"
            )),
        "no binary on B: {missing:?}"
    );
    eprintln!("e2e ssh:   {}", why.trim());
    ensure!(
        console.run("echo still-$((40+1))")? == ["still-41"],
        "the guest on A after the refused accept"
    );
    let mut follower = spawn_migrate_to(lab, "mig8", &url, &remote, &env)?;
    // The first progress line: the migration runs.
    let mut progress = BufReader::new(follower.stdout.take().context("stdout")?);
    let mut first = String::new();
    progress.read_line(&mut first)?;
    let first: Value = serde_json::from_str(&first).context("a progress line")?;
    ensure!(
        matches!(first["status"].as_str(), Some("setup" | "active")),
        "the migration's first line: {first}"
    );
    let status: Value = serde_json::from_str(&lab.ok(&["migration-status", "mig8"])?)?;
    ensure!(
        status["status"] == "active" && status["target"] == format!("{NODE_B}:4453"),
        "migration-status beside migrate --to: {status}"
    );
    let cancelled: Value = serde_json::from_slice(
        &lab.kvmh_env(&["migrate-cancel", "mig8", "--json"], &env)?
            .stdout,
    )?;
    ensure!(
        cancelled["outcome"]
            .as_str()
            .is_some_and(|o| o.contains(&format!("the target on {url} is stopped and cleaned up"))),
        "migrate-cancel: {cancelled}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut progress, &mut rest)?;
    let ended = follower.wait_with_output()?;
    let why = String::from_utf8_lossy(&ended.stderr);
    ensure!(
        ended.status.code() == Some(5) && why.contains("the migration of mig8 ended cancelled"),
        "the cancelled migrate --to: {ended:?}"
    );
    ensure!(
        b_has(lab, "mig8")?.is_null(),
        "mig8 still on B: {}",
        b_has(lab, "mig8")?
    );
    let left = leftover_files(&lab.dir.join("run-b"))?;
    ensure!(left.is_empty(), "files left on B: {left:?}");
    let alive = console.run("echo still-$((40+3))")?;
    ensure!(alive == ["still-43"], "the guest on A answers: {alive:?}");
    drop(console);
    lab.ok(&["stop", "mig8", "--force"])?;
    drop(sshd);
    Ok(())
}

fn spawn_migrate_to(
    lab: &Lab,
    name: &str,
    url: &str,
    remote: &str,
    env: &[(&str, &str)],
) -> Result<Child> {
    let run: PathBuf = lab.dir.join("run");
    Ok(Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(&lab.bin)
        .arg("--run-dir")
        .arg(run)
        .args(["migrate", name, "--to", url, "--remote-command", remote])
        .args(["--port", "4453", "--json"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}
