//! The source's record of its outgoing migration, `conf/<name>.migration`:
//! where it goes, the policy it runs under, what the policy decided so far,
//! and, for `migrate --to ssh://`, how to reach the target's node. The
//! process following the migration writes it; `migration-status` and
//! `migrate-cancel` read it from any other process. `finalize-source`
//! removes it, and so does any cleanup of the instance.

use serde::{Deserialize, Serialize};

use super::converge::{ConvergencePolicy, Decision};
use crate::node::Node;
use crate::state::StateError;

/// How the source reaches the target's node (`migrate --to ssh://`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteNode {
    /// `ssh://[USER@]HOST[:PORT]`, as given.
    pub url: String,
    /// The command run there, before the subcommand.
    pub command: String,
}

/// An outgoing migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The target's `ADDR:PORT`.
    pub target: String,
    /// The convergence policy it runs under (`None`: nobody follows it).
    pub policy: Option<ConvergencePolicy>,
    /// Whether postcopy is allowed.
    pub postcopy_allowed: bool,
    /// What the policy decided, in order.
    pub decisions: Vec<Decision>,
    /// Whether the switch to postcopy was sent.
    pub switched_to_postcopy: bool,
    /// The target's node, when the source drives both sides.
    pub remote: Option<RemoteNode>,
}

impl Outgoing {
    /// Writes the record atomically (0600).
    pub(crate) fn save(&self, node: &Node, name: &str) -> Result<(), StateError> {
        let path = node.run.migration_file(name);
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        runtime_state::write_atomic(&path, &text, runtime_state::FILE_MODE)
    }

    /// The record of `name`'s outgoing migration, if there is a readable
    /// one (a garbled file is logged and ignored: it only informs).
    pub(crate) fn load(node: &Node, name: &str) -> Option<Outgoing> {
        let path = node.run.migration_file(name);
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(o) => Some(o),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "unreadable migration record ignored");
                None
            }
        }
    }

    /// Removes the record (absent is fine).
    pub(crate) fn remove(node: &Node, name: &str) {
        let path = node.run.migration_file(name);
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), %error, "migration record left");
        }
    }
}
