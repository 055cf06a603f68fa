//! The balloon target of a running instance.

use std::time::Duration;

use qmp_protocol::Balloon;
use serde_json::Value as Json;

use crate::instance::{Instance, OpenError};
use crate::node::Node;
use crate::state::StateError;

/// Sets the balloon target of a running instance.
pub async fn balloon(node: &Node, name: &str, mib: u64) -> Result<(), BalloonError> {
    if mib == 0 {
        return Err(BalloonError::Zero);
    }
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let max = inst.record.instance.get("memory").and_then(Json::as_u64);
    if let Some(max) = max
        && mib > max
    {
        return Err(BalloonError::AboveMaximum { mib, max });
    }
    let bytes = mib.saturating_mul(1024 * 1024);
    inst.qmp.execute(Balloon::bytes(bytes)).await?;
    Ok(())
}

const LOCK_WAIT: Duration = Duration::from_secs(30);
const MONITOR_WAIT: Duration = Duration::from_secs(5);

/// Why a balloon request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalloonError {
    /// More than the instance's memory.
    #[error("{mib} MiB is more than the instance's memory ({max} MiB)")]
    AboveMaximum {
        /// Asked for.
        mib: u64,
        /// The maximum.
        max: u64,
    },
    /// Zero.
    #[error("0 MiB is not a balloon target")]
    Zero,
    /// The run directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The instance is unknown, not running, or does not answer.
    #[error(transparent)]
    Instance(#[from] OpenError),
    /// QMP.
    #[error(transparent)]
    Qmp(#[from] qmp_protocol::QmpError),
}
