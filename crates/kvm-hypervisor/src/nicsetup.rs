//! A NIC's host side, set up and torn down: natively (rtnetlink: bridge
//! port, or host route, `ip rule` and proxy ARP/NDP) for bridged and
//! routed NICs, or by the node's NIC script when it has one
//! ([`Node::nic_script`](crate::Node::nic_script): Ganeti's
//! `kvm-nic-setup` contract, reference §7.4), for every mode then,
//! `openvswitch` and `ext` included.
//!
//! Unlike Ganeti, `down` also runs when a start or a NIC hot-add is undone
//! and when a NIC is hot-removed, so nothing a script set up outlives its
//! tap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::{MigrationPhase, Netlink, NicConfig, ScriptAction, TapError, TapName};

/// How long a NIC script may run before it and its children are killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a NIC's host side could not be set up or torn down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NicSetupError {
    /// Natively.
    #[error(transparent)]
    Native(#[from] TapError),
    /// By the node's NIC script.
    #[error("the NIC script {} ({action}) for {tap}", script.display())]
    Script {
        /// The script.
        script: PathBuf,
        /// `up` or `down`.
        action: &'static str,
        /// The tap.
        tap: String,
        /// Why.
        #[source]
        source: Box<crate::process::ProcessError>,
    },
}

/// Sets up and tears down NICs' host sides for one operation.
#[derive(Debug)]
pub(crate) struct NicSetup {
    script: Option<PathBuf>,
    down_script: Option<PathBuf>,
    netlink: Option<Netlink>,
}

impl NicSetup {
    /// With `script` for both directions, if there is one.
    pub(crate) fn new(script: Option<&Path>) -> NicSetup {
        NicSetup {
            script: script.map(Path::to_owned),
            down_script: script.map(Path::to_owned),
            netlink: None,
        }
    }

    /// With the node's NIC script (and its teardown, which is native for
    /// a script that only sets up).
    pub(crate) fn for_node(node: &crate::Node) -> NicSetup {
        NicSetup {
            script: node.nic_script.clone(),
            down_script: node.nic_down_script().map(Path::to_owned),
            netlink: None,
        }
    }

    /// The script that tears down what this sets up, if any.
    pub(crate) fn down_script(&self) -> Option<&Path> {
        self.down_script.as_deref()
    }

    fn netlink(&mut self) -> Result<&Netlink, TapError> {
        let netlink = match self.netlink.take() {
            Some(n) => n,
            None => Netlink::new()?,
        };
        Ok(self.netlink.insert(netlink))
    }

    async fn run(
        &self,
        script: &Path,
        nic: &NicConfig,
        tap: &TapName,
        action: ScriptAction,
    ) -> Result<(), NicSetupError> {
        crate::process::run_nic_script(script, nic, tap, action, SCRIPT_TIMEOUT)
            .await
            .map(drop)
            .map_err(|source| NicSetupError::Script {
                script: script.to_owned(),
                action: match action {
                    ScriptAction::Up { .. } => "up",
                    ScriptAction::Down => "down",
                },
                tap: tap.to_string(),
                source: Box::new(source),
            })
    }

    /// Sets up `nic` on `tap`; `phase` on a migration's target.
    pub(crate) async fn up(
        &mut self,
        nic: &NicConfig,
        tap: &TapName,
        phase: Option<MigrationPhase>,
    ) -> Result<(), NicSetupError> {
        if let Some(script) = self.script.clone() {
            let action = ScriptAction::Up { migration: phase };
            return self.run(&script, nic, tap, action).await;
        }
        let netlink = self.netlink()?;
        Ok(crate::net::configure_native(netlink, nic, tap).await?)
    }

    /// Tears down what [`NicSetup::up`] set up.
    pub(crate) async fn down(
        &mut self,
        nic: &NicConfig,
        tap: &TapName,
    ) -> Result<(), NicSetupError> {
        if let Some(script) = self.down_script.clone() {
            return self.run(&script, nic, tap, ScriptAction::Down).await;
        }
        let netlink = self.netlink()?;
        Ok(crate::net::deconfigure_native(netlink, nic, tap).await?)
    }
}
