//! NIC scripts run through `process::run_nic_script`: Ganeti's exact
//! environment, a timeout that kills the whole process group, and a failing
//! script's stderr in the error.
//!
//! The scripts are written once, before any test spawns anything, so no
//! test ever executes a file another thread still holds open for writing
//! (ETXTBSY). They live under cargo's per-target temp dir; each test names
//! its outputs after its own tap name.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use kvm_hypervisor::process::{ProcessError, run_nic_script};
use tap_netdev::{MigrationPhase, NicConfig, NicMode, ScriptAction, TapName};

struct Scripts {
    dir: PathBuf,
}

impl Scripts {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvmhv-nic-script");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let scripts = [
        (
            "dump-env",
            format!("#!/bin/sh\nenv > {d}/env-\"$INTERFACE\"\nprintf '%s\\n' \"$@\" > {d}/args-\"$INTERFACE\"\n"),
        ),
        // A child in the background and one in the foreground: both must die.
        ("hang", "#!/bin/sh\nsleep 1000 &\nsleep 1000\n".to_owned()),
        (
            "fail",
            "#!/bin/sh\necho \"configuring $INTERFACE\"\necho \"bridge $LINK does not exist\" >&2\nexit 3\n"
                .to_owned(),
        ),
    ];
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Scripts { dir }
});

/// The variables of Ganeti's NIC script contract (reference §7.4) plus the
/// two it always sets.
const GANETI_VARS: &[&str] = &[
    "ACTION",
    "BRIDGE",
    "INSTANCE",
    "INTERFACE",
    "INTERFACE_INDEX",
    "INTERFACE_NAME",
    "INTERFACE_UUID",
    "IP",
    "LC_ALL",
    "LINK",
    "MAC",
    "MIGRATION_PHASE",
    "MODE",
    "NETWORK_GATEWAY",
    "NETWORK_GATEWAY6",
    "NETWORK_MAC_PREFIX",
    "NETWORK_NAME",
    "NETWORK_SUBNET",
    "NETWORK_SUBNET6",
    "NETWORK_TAGS",
    "NETWORK_UUID",
    "PATH",
    "TAGS",
    "VLAN",
];

fn nic(mode: NicMode, link: &str) -> NicConfig {
    NicConfig {
        instance: "web1.example.com".to_owned(),
        instance_tags: vec!["prod".to_owned(), "web".to_owned()],
        index: 2,
        uuid: "6f9619ff-8b86-d011-b42d-00c04fc964ff".to_owned(),
        name: None,
        mac: "aa:00:00:12:34:56".to_owned(),
        mode,
        link: link.to_owned(),
        vlan: None,
        ip: None,
        network: None,
    }
}

/// The Ganeti variables the dump script saw for `tap`.
fn ganeti_env_seen(tap: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(SCRIPTS.path(&format!("env-{tap}"))).unwrap();
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(k, _)| GANETI_VARS.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn expected_path() -> String {
    format!("{}:/sbin:/usr/sbin", std::env::var("PATH").unwrap())
}

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn bridged_up_script_gets_ganetis_environment_and_the_name_as_argument() {
    let tap = TapName::new("kvmhvscr1").unwrap();
    let config = nic(NicMode::Bridged, "br0");

    run_nic_script(
        &SCRIPTS.path("dump-env"),
        &config,
        &tap,
        ScriptAction::Up { migration: None },
        TIMEOUT,
    )
    .await
    .unwrap();

    assert_eq!(
        ganeti_env_seen("kvmhvscr1"),
        map(&[
            ("ACTION", "up"),
            ("BRIDGE", "br0"),
            ("INSTANCE", "web1.example.com"),
            ("INTERFACE", "kvmhvscr1"),
            ("INTERFACE_INDEX", "2"),
            ("INTERFACE_UUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            ("LC_ALL", "C"),
            ("LINK", "br0"),
            ("MAC", "aa:00:00:12:34:56"),
            ("MODE", "bridged"),
            ("PATH", &expected_path()),
            ("TAGS", "prod web"),
        ])
    );
    let args = std::fs::read_to_string(SCRIPTS.path("args-kvmhvscr1")).unwrap();
    assert_eq!(args, "kvmhvscr1\n");
}

#[tokio::test]
async fn routed_migration_target_script_gets_phase_ip_name_and_empty_vlan() {
    let tap = TapName::new("kvmhvscr2").unwrap();
    let config = NicConfig {
        ip: Some("192.0.2.10".parse().unwrap()),
        name: Some("front".to_owned()),
        vlan: Some(String::new()),
        ..nic(NicMode::Routed, "100")
    };

    run_nic_script(
        &SCRIPTS.path("dump-env"),
        &config,
        &tap,
        ScriptAction::Up {
            migration: Some(MigrationPhase::Post),
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    assert_eq!(
        ganeti_env_seen("kvmhvscr2"),
        map(&[
            ("ACTION", "up"),
            ("INSTANCE", "web1.example.com"),
            ("INTERFACE", "kvmhvscr2"),
            ("INTERFACE_INDEX", "2"),
            ("INTERFACE_NAME", "front"),
            ("INTERFACE_UUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            ("IP", "192.0.2.10"),
            ("LC_ALL", "C"),
            ("LINK", "100"),
            ("MAC", "aa:00:00:12:34:56"),
            ("MIGRATION_PHASE", "post"),
            ("MODE", "routed"),
            ("PATH", &expected_path()),
            ("TAGS", "prod web"),
            ("VLAN", ""),
        ])
    );
}

#[tokio::test]
async fn openvswitch_down_script_gets_action_down() {
    let tap = TapName::new("kvmhvscr3").unwrap();
    let config = NicConfig {
        vlan: Some(".100:200".to_owned()),
        ..nic(NicMode::Openvswitch, "ovsbr0")
    };

    run_nic_script(
        &SCRIPTS.path("dump-env"),
        &config,
        &tap,
        ScriptAction::Down,
        TIMEOUT,
    )
    .await
    .unwrap();

    assert_eq!(
        ganeti_env_seen("kvmhvscr3"),
        map(&[
            ("ACTION", "down"),
            ("INSTANCE", "web1.example.com"),
            ("INTERFACE", "kvmhvscr3"),
            ("INTERFACE_INDEX", "2"),
            ("INTERFACE_UUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            ("LC_ALL", "C"),
            ("LINK", "ovsbr0"),
            ("MAC", "aa:00:00:12:34:56"),
            ("MODE", "openvswitch"),
            ("PATH", &expected_path()),
            ("TAGS", "prod web"),
            ("VLAN", ".100:200"),
        ])
    );
}

#[tokio::test]
async fn hanging_script_is_killed_with_its_children_at_the_timeout() {
    let tap = TapName::new("kvmhvscr4").unwrap();
    let script = SCRIPTS.path("hang");
    // A pipe whose write end every process of the script inherits: reading
    // it reaches EOF only once all of them are dead. No waiting on time.
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(
        &read_end,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();

    let err = run_nic_script(
        &script,
        &nic(NicMode::Bridged, "br0"),
        &tap,
        ScriptAction::Up { migration: None },
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    drop(write_end);

    assert!(
        matches!(
            &err,
            ProcessError::Timeout { program, after }
                if *program == script && *after == Duration::from_millis(500)
        ),
        "{err:?}"
    );
    let read = tokio::task::spawn_blocking(move || {
        std::fs::File::from(read_end).read_to_end(&mut Vec::new())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(read, 0);
}

#[tokio::test]
async fn failing_script_reports_status_and_stderr() {
    let tap = TapName::new("kvmhvscr5").unwrap();
    let script = SCRIPTS.path("fail");

    let err = run_nic_script(
        &script,
        &nic(NicMode::Bridged, "kvmhvnobr"),
        &tap,
        ScriptAction::Up { migration: None },
        TIMEOUT,
    )
    .await
    .unwrap_err();

    let ProcessError::Failed {
        program,
        status,
        output,
    } = &err
    else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!(program, &script);
    assert_eq!(status.code(), Some(3));
    assert_eq!(output.stdout, b"configuring kvmhvscr5\n");
    assert_eq!(output.stderr, b"bridge kvmhvnobr does not exist\n");
    assert_eq!(
        err.to_string(),
        format!(
            "{} failed (exit status: 3): bridge kvmhvnobr does not exist",
            script.display()
        )
    );
}

#[tokio::test]
async fn missing_script_cannot_be_spawned() {
    let script = SCRIPTS.path("no-such-script");

    let err = run_nic_script(
        &script,
        &nic(NicMode::Bridged, "br0"),
        &TapName::new("kvmhvscr6").unwrap(),
        ScriptAction::Down,
        TIMEOUT,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(
            &err,
            ProcessError::Spawn { program, source }
                if *program == script && source.kind() == std::io::ErrorKind::NotFound
        ),
        "{err:?}"
    );
}
