//! Per-step timings of an operation, as `debug` events of target
//! [`TIMING_TARGET`] (`RUST_LOG=kvm_hypervisor::timing=debug` shows them;
//! `cargo xtask bench` reads them for its per-step breakdown).

use std::time::Instant;

/// The tracing target of timing events.
pub const TIMING_TARGET: &str = "kvm_hypervisor::timing";

/// Measures the steps of one operation, each from the end of the last.
pub(crate) struct StepClock {
    op: &'static str,
    last: Instant,
}

impl StepClock {
    /// Starts timing `op`.
    pub(crate) fn start(op: &'static str) -> StepClock {
        StepClock {
            op,
            last: Instant::now(),
        }
    }

    /// Ends `step`: emits its duration and starts the next.
    pub(crate) fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        let us = u64::try_from(now.duration_since(self.last).as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(target: TIMING_TARGET, op = self.op, step, us);
        self.last = now;
    }
}
