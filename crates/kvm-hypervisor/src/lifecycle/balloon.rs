//! The balloon target of a running instance.

use std::time::Duration;

use qmp_protocol::Balloon;
use serde_json::Value as Json;

use crate::instance::{Instance, OpenError};
use crate::node::Node;
use crate::state::StateError;

/// What [`balloon`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ballooned {
    /// The target set, MiB.
    pub mib: u64,
    /// Things the user should know (a target below `min_memory`).
    pub warnings: Vec<String>,
}

/// Sets the balloon target of a running instance: at most its memory; a
/// target below its `min_memory` is set with a warning (Ganeti never goes
/// below it on its own).
pub async fn balloon(node: &Node, name: &str, mib: u64) -> Result<Ballooned, BalloonError> {
    if mib == 0 {
        return Err(BalloonError::Zero);
    }
    let inst = Instance::open(node, name, LOCK_WAIT, MONITOR_WAIT).await?;
    let field = |k: &str| inst.record.instance.get(k).and_then(Json::as_u64);
    let max = field("memory").ok_or_else(|| BalloonError::NoMemory(name.to_owned()))?;
    if mib > max {
        return Err(BalloonError::AboveMaximum { mib, max });
    }
    let mut warnings = Vec::new();
    if let Some(min) = field("min_memory").filter(|min| mib < *min) {
        warnings.push(format!(
            "{mib} MiB is below the instance's min_memory ({min} MiB)"
        ));
    }
    // mib <= memory, which a record holds in MiB: no overflow.
    let bytes = mib
        .checked_mul(1024 * 1024)
        .ok_or(BalloonError::AboveMaximum { mib, max })?;
    inst.qmp.execute(Balloon::bytes(bytes)).await?;
    Ok(Ballooned { mib, warnings })
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
    /// The record does not say how much memory the instance has.
    #[error("the runtime record of {0} has no memory size to bound the balloon by")]
    NoMemory(String),
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
