//! A real reboot: stop, then start from the runtime record.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::stop::{StopError, StopOptions, stop_keeping_record};
use crate::launch::{StartError, StartOptions, Started, check_startable, start};
use crate::node::Node;
use crate::spec::InstanceSpec;
use crate::state::{RuntimeRecord, StateError};

/// Why a reboot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebootError {
    /// No runtime record to restart from.
    #[error("instance {0} has no runtime record to restart from")]
    NoRecord(String),
    /// The record no longer makes a valid spec.
    #[error("the runtime record of {name} is not a valid spec")]
    BadRecord {
        /// The instance.
        name: String,
        /// Why.
        #[source]
        source: crate::spec::SpecProblems,
    },
    /// The run directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The stop failed.
    #[error(transparent)]
    Stop(#[from] StopError),
    /// The start failed.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The instance spec a runtime record was started from (ours), or the
/// nearest spec for a Ganeti record.
pub fn spec_from_record(r: &RuntimeRecord) -> Result<InstanceSpec, crate::spec::SpecProblems> {
    let mut spec = Json::Object(r.instance.clone());
    spec["hvparams"] = Json::Object(r.hvparams.clone());
    spec["disks"] = r
        .disks
        .iter()
        .map(|d| {
            let mut j = json!({"uuid": d.uuid, "mode": d.mode});
            if let Some(n) = &d.name {
                j["name"] = json!(n);
            }
            if let Some(s) = d.size {
                j["size"] = json!(s);
            }
            if let Some(t) = d.extra.get("dev_type").and_then(Json::as_str)
                && crate::spec::DEV_TYPES.contains(&t)
            {
                j["dev_type"] = json!(t);
            }
            match (&d.path, &d.uri) {
                (_, Some(u)) => j["uri"] = json!(u),
                (Some(p), None) => j["path"] = json!(p),
                (None, None) => {}
            }
            j
        })
        .collect();
    spec["nics"] = r
        .nics
        .iter()
        .map(|n| {
            let mut j = json!({"uuid": n.uuid});
            for (k, v) in [
                ("mac", &n.mac),
                ("name", &n.name),
                ("mode", &n.mode),
                ("link", &n.link),
                ("vlan", &n.vlan),
                ("ip", &n.ip),
            ] {
                if let Some(v) = v {
                    j[k] = json!(v);
                }
            }
            j
        })
        .collect();
    InstanceSpec::from_value(&spec).map(|l| l.spec)
}

/// A real reboot (Ganeti's "soft" reboot is a hard kill, reference
/// §11.2.1): a graceful stop (ACPI power-down, waiting up to `timeout`),
/// or a kill with `hard`, then a start from the runtime record, re-planned
/// for the QEMU at hand. A restart that cannot work (a disk gone, the QEMU
/// changed) is refused before anything is stopped, and the record is kept
/// until the new QEMU runs: a failed restart never loses the instance.
pub async fn reboot(
    node: &Node,
    name: &str,
    hard: bool,
    timeout: Duration,
) -> Result<Started, RebootError> {
    let record = node
        .run
        .read_runtime(name)?
        .ok_or_else(|| RebootError::NoRecord(name.to_owned()))?
        .record();
    let spec = spec_from_record(&record).map_err(|source| RebootError::BadRecord {
        name: name.to_owned(),
        source,
    })?;
    // Refuse a restart that cannot work before anything is stopped.
    check_startable(node, &spec).await?;
    // The record stays until the new QEMU has written its own, so a failed
    // restart can be retried with `reboot` or `start`.
    let opts = StopOptions {
        timeout,
        force: hard,
    };
    stop_keeping_record(node, name, opts).await?;
    crate::instance::fault_point("reboot-stopped", None);
    Ok(start(node, &spec, StartOptions::default()).await?)
}
