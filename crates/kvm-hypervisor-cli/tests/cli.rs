//! The binary as a user meets it: exact output and exit status.
#![allow(clippy::disallowed_methods)] // a test driver runs the binary under test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvm-hypervisor"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/specs")
        .join(name)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A spec file in a per-test directory, removed when dropped.
struct TempSpec(PathBuf);

impl TempSpec {
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempSpec {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_spec(name: &str, body: &str) -> TempSpec {
    let dir = std::env::temp_dir().join(format!("kvmhv-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write spec");
    TempSpec(path)
}

#[test]
fn validate_reports_all_five_mistakes_and_the_host_problems_of_the_rest_and_exits_1() {
    let out = run(&["validate", &fixture("five-mistakes.json")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: 7 problem(s)\nproblems:\n\
             \x20 name: `../etc` is not a usable instance name: it contains `/`\n\
             \x20 hvparams.acpi: expected a boolean, found string \"yes\"\n\
             \x20 hvparams.boot_ordr: unknown hvparam; did you mean `boot_order`?\n\
             \x20 disks[0]: a disk needs exactly one of `path` (kernelspace) and `uri` (userspace)\n\
             \x20 nics[0].mac: `aa:00:00:11:22` is not a usable MAC address: expected six hex pairs separated by `:`\n\
             \x20 hvparams.kernel_path: /boot/vmlinuz-3-kvmU does not exist\n\
             \x20 disks[0].path: /srv/a.img does not exist on this host\n",
            fixture("five-mistakes.json")
        )
    );
}

#[test]
fn validate_json_lists_problems_by_field() {
    let out = run(&["validate", "--json", &fixture("five-mistakes.json")]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    let fields: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "hvparams.acpi",
            "hvparams.boot_ordr",
            "disks[0]",
            "nics[0].mac",
            "hvparams.kernel_path",
            "disks[0].path"
        ]
    );
}

#[test]
fn validate_typo_in_hvparam_suggests_the_name() {
    let spec = temp_spec(
        "typo.json",
        r#"{"name": "t1", "memory": 64, "vcpus": 1, "hvparams": {"serial_sped": 9600, "kernel_path": ""}}"#,
    );
    let out = run(&["validate", spec.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "t1.json: 1 problem(s)\nproblems:\n  hvparams.serial_sped: unknown hvparam; did you mean `serial_speed`?\n"
            .replace("t1.json", spec.path())
    );
}

#[test]
fn validate_bad_json_syntax_exits_1_with_position() {
    let spec = temp_spec("broken.json", "{\"name\": ");
    let out = run(&["validate", spec.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: {}: EOF while parsing a value at line 1 column 9\n",
            spec.path()
        )
    );
}

#[test]
fn validate_missing_file_is_invalid_input_with_a_cause_chain() {
    let out = run(&["validate", "/nonexistent/spec.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: loading the instance spec\ncaused by: cannot read /nonexistent/spec.json\ncaused by: No such file or directory (os error 2)\n"
    );
}

#[test]
fn validate_without_argument_is_a_usage_error() {
    assert_eq!(run(&["validate"]).status.code(), Some(2));
}

#[test]
fn validate_hvparams_checks_a_map_alone_values_then_host() {
    // Ganeti's CheckParameterSyntax (values only) and ValidateParameters
    // (this host too) through `validate --hvparams`.
    let map = temp_spec(
        "hv.json",
        r#"{"kernel_path": "/nonexistent/vmlinuz", "cpu_type": "host", "machine_version": "pc",
            "migration_bandwidth": 1000}"#,
    );
    let out = run(&["validate", "--hvparams", map.path(), "--syntax-only"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out),
        "hvparams: valid (values only; the host was not looked at)\nwarnings:\n  \
         hvparams.cpu_type: `host` needs the same CPU on every node an instance may migrate to\n  \
         hvparams.machine_version: `pc` is an alias whose meaning changes with the QEMU version, \
         which can break live migration\n"
    );
    let out = run(&["validate", "--hvparams", map.path(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        report["problems"],
        serde_json::json!([{"field": "hvparams.kernel_path",
                            "message": "/nonexistent/vmlinuz does not exist"}])
    );
    let bad = temp_spec("bad.json", r#"{"acpi": "yes", "boot_ordr": "disk"}"#);
    let out = run(&["validate", "--hvparams", bad.path(), "--syntax-only"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).lines().take(4).collect::<Vec<_>>(),
        [
            "hvparams: 2 problem(s)",
            "problems:",
            "  hvparams.acpi: expected a boolean, found string \"yes\"",
            "  hvparams.boot_ordr: unknown hvparam; did you mean `boot_order`?",
        ]
    );
    let list = temp_spec("list.json", "[1]");
    let out = run(&["validate", "--hvparams", list.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("Error: {}: not a JSON object\n", list.path())
    );
    assert_eq!(
        run(&["validate", "--syntax-only", map.path()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn completions_and_man_pages_come_from_the_argument_definitions() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(stdout(&out).contains("node-start"), "{shell}");
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
    let dir = std::env::temp_dir().join(format!("kvmhv-man-{}", std::process::id()));
    let out = run(&["man-pages", "--out-dir", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("pages")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(pages.contains(&"kvm-hypervisor.1".to_owned()), "{pages:?}");
    assert!(
        pages.contains(&"kvm-hypervisor-define.1".to_owned()),
        "{pages:?}"
    );
    assert!(
        !pages.contains(&"kvm-hypervisor-man-pages.1".to_owned()),
        "hidden"
    );
    let define = std::fs::read_to_string(dir.join("kvm-hypervisor-define.1")).expect("page");
    assert!(define.contains("kvm\\-hypervisor define"), "{define}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn installed_units_run_this_binary_and_pass_systemd_analyze_verify() {
    let r = TempRun::new("units");
    let units = r.0.join("units");
    let out = r.run(&[
        "install-units",
        "--unit-dir",
        units.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let monitor =
        std::fs::read_to_string(units.join("kvm-hypervisor-monitor.service")).expect("unit");
    let exec = monitor
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert_eq!(
        exec,
        format!(
            "ExecStart={} --run-dir {} monitor",
            env!("CARGO_BIN_EXE_kvm-hypervisor"),
            r.0.display()
        )
    );
    // CI installs systemd's tools (`cargo xtask ci`); warnings fail too.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join("kvm-hypervisor-monitor.service"))
        .arg(units.join("kvm-hypervisor-node.service"))
        .output()
        .expect("systemd-analyze runs");
    assert_eq!(
        (
            verify.status.code(),
            String::from_utf8_lossy(&verify.stderr).into_owned()
        ),
        (Some(0), String::new())
    );
}

#[test]
fn the_monitor_tells_systemd_it_is_ready() {
    use std::os::unix::net::UnixDatagram;
    let r = TempRun::new("notify");
    let socket = r.0.join("notify.sock");
    let listener = UnixDatagram::bind(&socket).expect("bind");
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_kvm-hypervisor"))
        .arg("--run-dir")
        .arg(&r.0)
        .arg("monitor")
        .env("NOTIFY_SOCKET", &socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let mut buf = [0u8; 256];
    let got = listener
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = monitor.wait().expect("waits");
    assert_eq!(got.expect("a notification"), "READY=1\n");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn spec_schema_describes_the_fixture_specs_fields() {
    let out = run(&["spec-schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // Every field of the bundled specs is one the schema knows.
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("web1.json")).expect("spec"))
            .expect("JSON");
    let known = |at: &serde_json::Value, obj: &serde_json::Value| {
        for k in obj.as_object().expect("object").keys() {
            assert!(at["properties"].get(k).is_some(), "{k}");
        }
    };
    known(&schema, &spec);
    known(&schema["properties"]["hvparams"], &spec["hvparams"]);
    known(&schema["properties"]["disks"]["items"], &spec["disks"][0]);
    known(&schema["properties"]["nics"]["items"], &spec["nics"][0]);
    assert_eq!(
        schema["properties"]["hvparams"]["properties"]["boot_order"]["enum"],
        serde_json::json!(["cdrom", "disk", "floppy", "network"])
    );
}

#[test]
fn a_printing_command_whose_reader_goes_away_ends_quietly_by_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    // More than a pipe's buffer (64 KiB), so that it writes after the
    // reader has gone.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvm-hypervisor"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.signal(), Some(13), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn params_json_lists_every_hvparam_with_ganetis_default() {
    let out = run(&["params", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), 70);
    assert_eq!(list.iter().filter(|p| p["ganeti"] == true).count(), 65);
    assert_eq!(list[65]["name"], "sandbox");
    assert_eq!(list[69]["name"], "migration_postcopy_switch");
    assert_eq!(list[69]["ganeti"], false);
    assert_eq!(
        list[69]["allowed"],
        serde_json::json!(["first-pass", "stalled"])
    );
    let find = |name: &str| list.iter().find(|p| p["name"] == name).expect(name).clone();
    assert_eq!(find("migration_port")["default"], 8102);
    assert_eq!(find("kvm_path")["default"], "/usr/bin/kvm");
    assert_eq!(find("acpi")["default"], true);
    assert_eq!(find("migration_mode")["scope"], "cluster");
    assert_eq!(
        find("boot_order")["allowed"],
        serde_json::json!(["cdrom", "disk", "floppy", "network"])
    );
}

fn runtime_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/ganeti-runtime")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn runtime_show_file_summarises_a_ganeti_runtime() {
    let out = run(&[
        "runtime",
        "show",
        "--file",
        &runtime_fixture("vnc-tls.runtime"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "instance  vnc1 (unknown)\n\
         written   by Ganeti, record version 1\n\
         memory    256 MiB, 1 vCPUs\n\
         machine   QEMU's default\n\
         qemu      /usr/bin/kvm\n\
         argv      /usr/bin/kvm -name vnc1 -m 256 -smp 1 -object tls-creds-x509,id=vnctls0,endpoint=server,dir=/etc/pki/vnc,verify-peer=yes -vnc 0.0.0.0:10,tls-creds=vnctls0,password\n\
         upgraded  old -vnc TLS syntax: now -object tls-creds-…\n"
    );
}

#[test]
fn runtime_show_format_ganeti_writes_the_upgraded_four_element_form() {
    let out = run(&[
        "runtime",
        "show",
        "--format",
        "ganeti",
        "--file",
        &runtime_fixture("localtime.runtime"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "[[\"/usr/bin/kvm\", \"-name\", \"lt1\", \"-m\", 256, \"-smp\", \"1\", \"-rtc\", \"base=localtime\"], [], {\"disk_discard\": \"ignore\"}, []]\n"
    );
}

#[test]
fn runtime_show_json_is_our_versioned_record() {
    let out = run(&[
        "runtime",
        "show",
        "--json",
        "--file",
        &runtime_fixture("current.runtime"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["version"], 1);
    assert_eq!(v["origin"], "ganeti");
    assert_eq!(v["disks"][1]["hvinfo"]["scsi-id"], 1);
}

#[test]
fn runtime_show_unknown_run_dir_is_a_failure() {
    let out = run(&["--run-dir", "/nonexistent/run", "runtime", "show", "web1"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: opening run directory /nonexistent/run\ncaused by: No such file or directory (os error 2)\n"
    );
}

#[test]
fn runtime_show_needs_a_name_or_a_file() {
    assert_eq!(run(&["runtime", "show"]).status.code(), Some(2));
}

/// An empty run directory of this test, removed when dropped.
struct TempRun(PathBuf);

impl TempRun {
    fn new(test: &str) -> TempRun {
        let dir = std::env::temp_dir().join(format!("kvmhv-cli-run-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp run dir");
        TempRun(dir)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--run-dir", self.0.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for TempRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn info_of_an_unknown_instance_exits_3() {
    let r = TempRun::new("info-unknown");
    let out = r.run(&["info", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: instance nosuch is not running and has no runtime record\n"
    );
}

#[test]
fn balloon_of_an_unknown_instance_exits_3_and_leaves_no_lock() {
    let r = TempRun::new("balloon-unknown");
    let out = r.run(&["balloon", "nosuch", "64"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(!r.0.join("conf/nosuch.lock").exists());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: instance nosuch is not running and has no runtime record\n"
    );
}

#[test]
fn migrate_to_a_bad_ssh_url_is_invalid_input() {
    let r = TempRun::new("migrate-bad-url");
    let out = r.run(&["migrate", "web1", "--to", "ssh://node2:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: `ssh://node2:0` is not ssh://[USER@]HOST[:PORT]: the port is not 1 to 65535\n"
    );
    let both = r.run(&[
        "migrate",
        "web1",
        "--to",
        "ssh://node2",
        "--target",
        "192.0.2.1:1",
    ]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn hotplug_on_an_unknown_instance_exits_3() {
    let r = TempRun::new("hotplug-unknown");
    let out = r.run(&["hotplug", "check", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
    let resize = r.run(&[
        "resize-disk",
        "nosuch",
        "0d15c000-0000-4000-8000-000000000000",
        "1G",
    ]);
    assert_eq!(resize.status.code(), Some(3));
    assert!(!r.0.join("conf/nosuch.lock").exists());
}

#[test]
fn hotplug_on_a_stopped_instance_with_a_record_exits_4() {
    let r = TempRun::new("hotplug-stopped");
    let record = r#"{"version": 1, "instance": {"name": "down1"}, "hvparams": {}, "argv": []}"#;
    std::fs::create_dir_all(r.0.join("conf")).expect("conf");
    std::fs::write(r.0.join("conf/down1.runtime"), record).expect("record");
    let out = r.run(&["hotplug", "check", "down1"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: instance down1 is not running\n"
    );
}

#[test]
fn bad_instance_name_exits_1() {
    let r = TempRun::new("bad-name");
    let out = r.run(&["info", "../etc"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: `../etc` is not a usable instance name: it contains `/`\n"
    );
}

#[test]
fn start_of_an_invalid_spec_exits_1_like_validate() {
    let r = TempRun::new("start-invalid");
    let spec = fixture("five-mistakes.json");
    assert_eq!(run(&["validate", &spec]).status.code(), Some(1));
    assert_eq!(r.run(&["start", &spec]).status.code(), Some(1));
}

#[test]
fn a_malformed_uid_pool_is_a_usage_error() {
    let r = TempRun::new("uid-pool");
    let out = r.run(&["--uid-pool", "3000-2000", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: invalid value '3000-2000' for '--uid-pool <RANGES>': range `3000-2000` is descending\n\nFor more information, try '--help'.\n"
    );
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = run(&["--help"]);
    assert!(stdout(&out).contains("  3  no such instance (not running and no runtime record)\n"));
}

#[test]
fn runtime_show_of_an_unknown_instance_exits_3() {
    let r = TempRun::new("runtime-unknown");
    assert_eq!(r.run(&["list"]).status.code(), Some(0)); // lays the run directory out
    let out = r.run(&["runtime", "show", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn console_info_of_an_unknown_instance_exits_3() {
    let r = TempRun::new("console-unknown");
    let out = r.run(&["console", "nosuch", "--info"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn one_stale_pid_file_is_one_stale_row_not_a_failed_listing() {
    let r = TempRun::new("stale-pid");
    assert_eq!(r.run(&["list"]).status.code(), Some(0)); // lays the run directory out
    std::fs::write(r.0.join("pid/ghost1"), "garbage\n").expect("pid file");
    let out = r.run(&["list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["name"], "ghost1");
    assert_eq!(rows[0]["state"], "stale");
    assert_eq!(
        rows[0]["problem"],
        "instance ghost1 is not running and has no runtime record"
    );
}

#[test]
fn a_huge_balloon_target_without_a_record_is_refused_not_wrapped() {
    let r = TempRun::new("balloon-huge");
    let out = r.run(&["balloon", "nosuch", "17592186044417"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "");
}

#[test]
fn cleanup_of_an_unknown_instance_exits_3_and_removes_nothing() {
    let r = TempRun::new("cleanup-unknown");
    assert_eq!(r.run(&["list"]).status.code(), Some(0)); // lays the run directory out
    let out = r.run(&["cleanup", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: instance nosuch has no files in the run directory\n"
    );
}

#[test]
fn malformed_qmp_arguments_are_not_echoed() {
    let r = TempRun::new("qmp-args");
    let out = r.run(&[
        "qmp",
        "--socket",
        "/nonexistent.sock",
        "set_password",
        "{\"password\": \"s3cret",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(
        err,
        "Error: JSON-ARGS is not JSON (EOF while parsing a string at line 1 column 20)\n"
    );
}

#[test]
fn validate_catches_what_start_would_refuse_memory_vcpus_and_a_kvm_path_that_is_no_qemu() {
    let sized = temp_spec(
        "sized.json",
        r#"{"name": "v1", "memory": 99999999, "vcpus": 300,
            "hvparams": {"kernel_path": "", "machine_version": "pc"}}"#,
    );
    let out = run(&["validate", sized.path()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "v1: 2 problem(s)\nproblems:\n  memory: 99999999 MiB is more than this host has ("
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "\n  vcpus: 300 vCPUs are more than machine type pc-i440fx-7.2 takes (255)\n"
        ),
        "{text}"
    );

    let not_qemu = temp_spec(
        "notqemu.json",
        r#"{"name": "v2", "memory": 128, "vcpus": 1,
            "hvparams": {"kernel_path": "", "kvm_path": "/bin/true"}}"#,
    );
    let out = run(&["validate", not_qemu.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("v2: 1 problem(s)\nproblems:\n  hvparams.kvm_path: /bin/true cannot be used as QEMU: probing /bin/true failed"),
        "{}",
        stdout(&out)
    );
}

/// Every file (not directory) under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_start_that_qemu_rejects_leaves_no_file() {
    let r = TempRun::new("qemu-rejects");
    let spec = temp_spec(
        "rejected.json",
        r#"{"name": "rej1", "memory": 64, "vcpus": 1,
            "hvparams": {"kernel_path": "", "kvm_flag": "disabled",
                         "kvm_extra": "-device no-such-device"}}"#,
    );
    let cache = r.0.join("cache");
    let out = r.run(&[
        "start",
        spec.path(),
        "--paused",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // QEMU refuses the device after it made its sockets and console log.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Error: starting rej1 failed at step `monitor`; QEMU said:\n  kvm: -device no-such-device: "
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<PathBuf> = files_under(&r.0)
        .into_iter()
        .filter(|p| !p.starts_with(&cache))
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new());
}

#[test]
fn validate_refuses_a_usb_device_qemu_does_not_have() {
    let spec = temp_spec(
        "usb.json",
        r#"{"name": "u1", "memory": 128, "vcpus": 1,
            "hvparams": {"kernel_path": "", "usb_devices": "tablet,no-such-usb-thing"}}"#,
    );
    let out = run(&["validate", spec.path()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("u1: 1 problem(s)\nproblems:\n  hvparams.usb_devices: QEMU 7.2."),
        "{text}"
    );
    assert!(
        text.contains(" has no device `no-such-usb-thing`\n"),
        "{text}"
    );
}

#[test]
fn migrate_to_a_host_name_is_invalid_input_before_anything_is_touched() {
    let r = TempRun::new("migrate-bad-target");
    let out = r.run(&["migrate", "nosuch", "--target", "node2:8102"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: `node2:8102` is not ADDR:PORT (an IP address; IPv6 in brackets, e.g. [2001:db8::1]:4444)\n"
    );
}

#[test]
fn migration_steps_on_an_unknown_instance_exit_3() {
    let r = TempRun::new("migrate-unknown");
    for args in [
        &["migration-info", "nosuch"][..],
        &["migrate", "nosuch", "--target", "192.0.2.1:4444"],
        &["migrate-cancel", "nosuch", "--json"],
        &["migrate-postcopy", "nosuch"],
        &["migration-status", "nosuch"],
        &["finalize-source", "nosuch", "--failure", "--json"],
    ] {
        let out = r.run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "Error: instance nosuch is not running and has no runtime record\n",
            "{args:?}"
        );
        assert!(!r.0.join("conf/nosuch.lock").exists(), "{args:?}");
    }
}

#[test]
fn a_failed_target_without_a_record_is_cleaned_up_all_the_same() {
    let r = TempRun::new("finalize-target-none");
    let out = r.run(&["finalize-target", "nosuch", "--failure", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({"instance": "nosuch", "outcome": "was not running here; cleaned up"})
    );
}

#[test]
fn accept_with_an_incomplete_tls_directory_names_the_missing_file() {
    let r = TempRun::new("accept-tls");
    let out = r.run(&[
        "accept",
        &runtime_fixture("balloon.runtime"),
        "--listen",
        "127.0.0.1:4444",
        "--tls-creds",
        "/nonexistent-kvmh",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: --tls-creds /nonexistent-kvmh: no ca-cert.pem (the server needs ca-cert.pem, server-cert.pem and server-key.pem)\n"
    );
    assert!(
        !r.0.join("pid").exists()
            || std::fs::read_dir(r.0.join("pid"))
                .expect("pid dir")
                .next()
                .is_none()
    );
}

/// A Ganeti package's skeleton: what `ganeti install` reads and changes
/// (the release in `_constants.py`, the map in `hypervisor/__init__.py`).
fn fake_ganeti(root: &std::path::Path, release: &str) -> std::path::PathBuf {
    let dir = root.join("ganeti");
    std::fs::create_dir_all(dir.join("hypervisor/__pycache__")).expect("dirs");
    std::fs::write(
        dir.join("_constants.py"),
        format!("VERSION_MAJOR = 3\nRELEASE_VERSION = \"{release}\"\n"),
    )
    .expect("constants");
    std::fs::write(
        dir.join("hypervisor/__init__.py"),
        "from ganeti import constants\n\
         from ganeti.hypervisor import hv_fake\n\
         from ganeti.hypervisor import hv_kvm\n\
         \n\
         _HYPERVISOR_MAP = {\n\
         \x20 constants.HT_FAKE: hv_fake.FakeHypervisor,\n\
         \x20 constants.HT_KVM: hv_kvm.KVMHypervisor,\n\
         \x20 }\n",
    )
    .expect("init");
    std::fs::write(
        dir.join("hypervisor/__pycache__/__init__.cpython-311.pyc"),
        b"",
    )
    .expect("pyc");
    dir
}

#[test]
fn ganeti_install_points_kvm_at_our_class_and_uninstall_restores_the_file() {
    for release in ["3.0.2", "3.1.1", "3.2.0~alpha1"] {
        ganeti_install_and_uninstall(release);
    }
}

fn ganeti_install_and_uninstall(release: &str) {
    let r = TempRun::new("ganeti-install");
    let dir = fake_ganeti(&r.0, release);
    let d = dir.to_str().expect("utf-8");
    let init = dir.join("hypervisor/__init__.py");
    let original = std::fs::read_to_string(&init).expect("init");
    let status = |args: &[&str]| -> serde_json::Value {
        let out = r.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let before = status(&["ganeti", "status", "--ganeti-dir", d, "--json"]);
    assert_eq!(before["kvm_class"], "ganeti");
    assert_eq!(before["version"], release);
    for _ in 0..2 {
        let after = status(&["ganeti", "install", "--ganeti-dir", d, "--json"]);
        assert_eq!(after["kvm_class"], "kvm-hypervisor");
        assert_eq!(after["module_current"], true);
    }
    let patched = std::fs::read_to_string(&init).expect("init");
    assert_eq!(
        patched,
        original
            .replace(
                "constants.HT_KVM: hv_kvm.KVMHypervisor,",
                "constants.HT_KVM: kvmh_ganeti.KvmHypervisor,"
            )
            .replace(
                "import hv_kvm\n",
                "import hv_kvm\nfrom ganeti.hypervisor import kvmh_ganeti  # kvm-hypervisor: serves `kvm`\n"
            )
    );
    assert!(
        !dir.join("hypervisor/__pycache__/__init__.cpython-311.pyc")
            .exists()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hypervisor/kvmh_ganeti.py")).expect("module"),
        kvm_hypervisor_class()
    );
    let back = status(&["ganeti", "uninstall", "--ganeti-dir", d, "--json"]);
    assert_eq!(back["kvm_class"], "ganeti");
    assert_eq!(std::fs::read_to_string(&init).expect("init"), original);
    assert!(!dir.join("hypervisor/kvmh_ganeti.py").exists());
    assert!(!dir.join("hypervisor/__init__.py.kvmh-orig").exists());
}

fn kvm_hypervisor_class() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../integrations/ganeti/kvmh_ganeti.py"),
    )
    .expect("class source")
}

#[test]
fn ganeti_install_refuses_an_unknown_release_and_a_non_ganeti_directory() {
    let r = TempRun::new("ganeti-unknown");
    let dir = fake_ganeti(&r.0, "2.16.2");
    let out = r.run(&[
        "ganeti",
        "install",
        "--ganeti-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: {}: Ganeti 2.16.2, which kvm-hypervisor does not know (it knows 3.0, 3.1, 3.2)\n",
            dir.display()
        )
    );
    assert!(!dir.join("hypervisor/kvmh_ganeti.py").exists());
    let out = r.run(&[
        "ganeti",
        "status",
        "--ganeti-dir",
        r.0.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: {}: not Ganeti's Python package (no _constants.py)\n",
            r.0.display()
        )
    );
}

#[test]
fn the_ganeti_class_is_valid_python() {
    let out = std::process::Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../integrations/ganeti/kvmh_ganeti.py"),
        )
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_command_takes_json() {
    let commands: &[&[&str]] = &[
        &["validate"],
        &["params"],
        &["qemu-caps"],
        &["plan"],
        &["start"],
        &["stop"],
        &["info"],
        &["list"],
        &["cleanup"],
        &["reboot"],
        &["console"],
        &["monitor"],
        &["node-info"],
        &["verify"],
        &["balloon"],
        &["qmp"],
        &["runtime", "show"],
        &["hotplug", "add-disk"],
        &["hotplug", "del-disk"],
        &["hotplug", "add-nic"],
        &["hotplug", "del-nic"],
        &["hotplug", "mod-nic"],
        &["hotplug", "check"],
        &["hotplug", "recover"],
        &["resize-disk"],
        &["migration-info"],
        &["accept"],
        &["migrate"],
        &["migration-status"],
        &["migrate-cancel"],
        &["migrate-postcopy"],
        &["finalize-source"],
        &["finalize-target"],
        &["ganeti", "install"],
        &["ganeti", "uninstall"],
        &["ganeti", "status"],
    ];
    let missing: Vec<String> = commands
        .iter()
        .filter(|c| {
            let mut args = c.to_vec();
            args.push("--help");
            let out = run(&args);
            !String::from_utf8_lossy(&out.stdout).contains("--json")
        })
        .map(|c| c.join(" "))
        .collect();
    assert!(missing.is_empty(), "without --json: {missing:?}");
}
