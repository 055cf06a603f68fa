//! Options every subcommand takes.

use std::path::PathBuf;

use anyhow::Context;
use kvm_hypervisor::defined::ConfigDir;
use kvm_hypervisor::state::{RunDir, UidPool};
use kvm_hypervisor::{Node, caps};

/// The global options.
#[derive(clap::Args)]
pub(crate) struct Global {
    /// The run directory [default: /run/kvm-hypervisor for root,
    /// $XDG_RUNTIME_DIR/kvm-hypervisor otherwise]. Point it at Ganeti's
    /// `/var/run/ganeti/kvm-hypervisor` to manage Ganeti's instances.
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// The uid pool for security_model=pool, e.g. `2000-2099,3000` (Ganeti's
    /// cluster uid_pool); also read from KVM_HYPERVISOR_UID_POOL.
    #[arg(
        long,
        global = true,
        value_name = "RANGES",
        env = "KVM_HYPERVISOR_UID_POOL",
        value_parser = parse_uid_pool
    )]
    uid_pool: Option<UidPool>,
    /// A NIC script with Ganeti's contract (`ACTION`, `MODE`, `INTERFACE`,
    /// `MIGRATION_PHASE`, …; e.g. Ganeti's `/usr/lib/ganeti/kvm-nic-setup`)
    /// to set every NIC's host side up and down, `openvswitch` and `ext`
    /// ones included; without one, bridged and routed NICs are set up
    /// natively. Also read from KVM_HYPERVISOR_NIC_SCRIPT.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KVM_HYPERVISOR_NIC_SCRIPT",
        value_parser = parse_script
    )]
    nic_script: Option<PathBuf>,
    /// The NIC script only sets NICs up (Ganeti 3.0's `kvm-ifup`, which
    /// knows no `down`): they are torn down natively. Also read from
    /// KVM_HYPERVISOR_NIC_SCRIPT_UP_ONLY.
    #[arg(long, global = true, env = "KVM_HYPERVISOR_NIC_SCRIPT_UP_ONLY")]
    nic_script_up_only: bool,
    /// Ganeti's own KVM layer shares the run directory (a Ganeti node; set
    /// by our Ganeti class): runtime files of the instances we start are
    /// Ganeti's array with our record inside, so Ganeti's layer can run
    /// them too. Also read from KVM_HYPERVISOR_SHARED_WITH_GANETI.
    #[arg(long, global = true, env = "KVM_HYPERVISOR_SHARED_WITH_GANETI")]
    shared_with_ganeti: bool,
    /// Where defined instances are kept [default:
    /// /var/lib/kvm-hypervisor/instances for root,
    /// $XDG_CONFIG_HOME/kvm-hypervisor/instances otherwise]; also read from
    /// KVM_HYPERVISOR_CONFIG_DIR.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "KVM_HYPERVISOR_CONFIG_DIR"
    )]
    config_dir: Option<PathBuf>,
}

fn parse_script(text: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = PathBuf::from(text);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path),
        Ok(_) => Err("not an executable file".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_uid_pool(text: &str) -> Result<UidPool, String> {
    UidPool::parse(text).map_err(|e| e.to_string())
}

impl Global {
    /// --run-dir, when given.
    pub(crate) fn explicit_run_dir(&self) -> Option<&std::path::Path> {
        self.run_dir.as_deref()
    }

    /// --config-dir (or KVM_HYPERVISOR_CONFIG_DIR), when given.
    pub(crate) fn explicit_config_dir(&self) -> Option<&std::path::Path> {
        self.config_dir.as_deref()
    }

    /// The config directory of defined instances.
    pub(crate) fn config_dir(&self) -> ConfigDir {
        ConfigDir::at(
            self.config_dir
                .clone()
                .unwrap_or_else(ConfigDir::default_path),
        )
    }

    /// The run directory's path.
    pub(crate) fn run_root(&self) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(RunDir::default_path)
    }

    /// The run directory, not created if missing.
    pub(crate) fn run_dir(&self) -> RunDir {
        RunDir::at(self.run_root())
    }

    /// The node: the run directory (created if missing), the capability
    /// cache (`cache_dir`, else the default) and the uid pool.
    pub(crate) fn node(&self, cache_dir: Option<PathBuf>) -> anyhow::Result<Node> {
        let root = self.run_root();
        let cache = cache_dir.unwrap_or_else(caps::default_cache_dir);
        let node = Node::open(&root, cache)
            .with_context(|| format!("opening the run directory {}", root.display()))?;
        Ok(node
            .with_uid_pool(self.uid_pool.clone().unwrap_or_default())
            .with_nic_script(self.nic_script.clone())
            .with_nic_script_up_only(self.nic_script_up_only)
            .with_shared_with_ganeti(self.shared_with_ganeti)
            .with_config_dir(Some(self.config_dir())))
    }
}
