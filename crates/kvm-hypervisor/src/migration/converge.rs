//! The convergence policy of a precopy migration: pure, fed the RAM left
//! after each pass, it answers what to do.
//!
//! A pass that leaves less RAM than every pass before is progress. When
//! `stall_passes` passes in a row make none, the downtime limit is doubled
//! (QEMU then completes as soon as what is left fits in it), up to
//! `downtime_max_ms`; when even the ceiling does not help, the migration is
//! not converging and the caller cancels it (the guest runs on where it
//! was) and says so with the figures. With postcopy allowed the switch
//! comes earlier, after the first pass, as Ganeti has it, so the policy
//! never gets that far.

use serde::Serialize;

/// The policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergencePolicy {
    /// Passes in a row without progress before acting; 0 turns the
    /// policy off.
    pub stall_passes: u32,
    /// The highest downtime limit it raises to, ms.
    pub downtime_max_ms: u64,
}

impl Default for ConvergencePolicy {
    /// Three passes; up to 300 ms (QEMU's own default limit, ten times
    /// Ganeti's `migration_downtime` default).
    fn default() -> Self {
        ConvergencePolicy {
            stall_passes: 3,
            downtime_max_ms: 300,
        }
    }
}

/// What to do after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// Nothing: progress, or not yet enough passes without it.
    Wait,
    /// Raise the downtime limit.
    RaiseDowntime {
        /// The limit so far, ms.
        from_ms: u64,
        /// The new limit, ms.
        to_ms: u64,
    },
    /// Give up: the ceiling did not help.
    NotConverging {
        /// The least RAM any pass left, bytes.
        best_remaining: u64,
        /// The limit reached, ms.
        downtime_ms: u64,
    },
}

/// The policy's state through one migration.
#[derive(Debug, Clone)]
pub struct Convergence {
    policy: ConvergencePolicy,
    downtime_ms: u64,
    best: Option<u64>,
    stalled: u32,
    gave_up: bool,
}

impl Convergence {
    /// Starts with the migration's downtime limit (`migration_downtime`).
    pub fn new(policy: ConvergencePolicy, downtime_ms: u64) -> Self {
        Convergence {
            policy,
            downtime_ms,
            best: None,
            stalled: 0,
            gave_up: false,
        }
    }

    /// The RAM `remaining` after a pass; what to do now.
    pub fn after_pass(&mut self, remaining: u64) -> Decision {
        if self.policy.stall_passes == 0 || self.gave_up {
            return Decision::Wait;
        }
        if self.best.is_none_or(|b| remaining < b) {
            self.best = Some(remaining);
            self.stalled = 0;
            return Decision::Wait;
        }
        self.stalled += 1;
        if self.stalled < self.policy.stall_passes {
            return Decision::Wait;
        }
        self.stalled = 0;
        if self.downtime_ms < self.policy.downtime_max_ms {
            let from_ms = self.downtime_ms;
            let to_ms = from_ms
                .saturating_mul(2)
                .max(1)
                .min(self.policy.downtime_max_ms);
            self.downtime_ms = to_ms;
            return Decision::RaiseDowntime { from_ms, to_ms };
        }
        self.gave_up = true;
        Decision::NotConverging {
            best_remaining: self.best.unwrap_or(remaining),
            downtime_ms: self.downtime_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: ConvergencePolicy, start_ms: u64, passes: &[u64]) -> Vec<Decision> {
        let mut c = Convergence::new(policy, start_ms);
        passes.iter().map(|&r| c.after_pass(r)).collect()
    }

    #[test]
    fn shrinking_passes_need_nothing() {
        let d = run(ConvergencePolicy::default(), 30, &[900, 500, 300, 100, 50]);
        assert!(d.iter().all(|d| *d == Decision::Wait), "{d:?}");
    }

    #[test]
    fn a_stall_doubles_the_downtime_up_to_the_ceiling_then_gives_up_once() {
        let policy = ConvergencePolicy {
            stall_passes: 2,
            downtime_max_ms: 100,
        };
        let d = run(
            policy,
            30,
            &[500, 600, 550, 700, 500, 800, 900, 510, 520, 530],
        );
        use Decision::*;
        assert_eq!(
            d,
            [
                Wait,
                Wait,
                RaiseDowntime {
                    from_ms: 30,
                    to_ms: 60
                },
                Wait,
                RaiseDowntime {
                    from_ms: 60,
                    to_ms: 100
                },
                Wait,
                NotConverging {
                    best_remaining: 500,
                    downtime_ms: 100
                },
                Wait,
                Wait,
                Wait,
            ]
        );
    }

    #[test]
    fn progress_resets_the_count() {
        let policy = ConvergencePolicy {
            stall_passes: 2,
            downtime_max_ms: 100,
        };
        // 400 beats 500: the stall of one pass before it does not count.
        let d = run(policy, 30, &[500, 600, 400, 450, 420]);
        assert_eq!(
            d[4],
            Decision::RaiseDowntime {
                from_ms: 30,
                to_ms: 60
            }
        );
        assert!(d[..4].iter().all(|d| *d == Decision::Wait), "{d:?}");
    }

    #[test]
    fn zero_stall_passes_turns_it_off() {
        let policy = ConvergencePolicy {
            stall_passes: 0,
            downtime_max_ms: 100,
        };
        let d = run(policy, 30, &[5, 6, 7, 8, 9, 10]);
        assert!(d.iter().all(|d| *d == Decision::Wait), "{d:?}");
    }

    #[test]
    fn a_zero_downtime_limit_is_raised_too() {
        let policy = ConvergencePolicy {
            stall_passes: 1,
            downtime_max_ms: 4,
        };
        let d = run(policy, 0, &[5, 6]);
        assert_eq!(
            d[1],
            Decision::RaiseDowntime {
                from_ms: 0,
                to_ms: 1
            }
        );
    }
}
