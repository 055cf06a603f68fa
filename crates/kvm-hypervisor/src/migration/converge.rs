//! The convergence policy of a precopy migration: pure, fed the RAM left
//! after each pass, it answers what to do.
//!
//! A pass that leaves less RAM than every pass before is progress. When
//! `stall_passes` passes in a row make none, the downtime limit is doubled
//! (QEMU then completes as soon as what is left fits in it), up to
//! `downtime_max_ms`; when even the ceiling does not help, the migration is
//! not converging: with postcopy allowed and `migration_postcopy_switch`
//! `stalled` the caller switches to postcopy; otherwise it cancels the
//! migration (the guest runs on where it was) and says so with the figures.
//! With postcopy allowed and the switch at `first-pass` (Ganeti's) the
//! switch comes after the first full pass, so the policy never gets that
//! far.
//!
//! The knobs are our hvparams (`migration_converge_passes`,
//! `migration_downtime_max`, `migration_postcopy_switch`), which
//! `migrate`'s flags override.

use hvparam_validation::PostcopySwitch;
use serde::{Deserialize, Serialize};

/// The policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergencePolicy {
    /// Passes in a row without progress before acting; 0 turns the
    /// policy off.
    pub stall_passes: u32,
    /// The highest downtime limit it raises to, ms.
    pub downtime_max_ms: u64,
    /// At the ceiling, switch to postcopy instead of giving up.
    pub postcopy_when_stalled: bool,
}

impl Default for ConvergencePolicy {
    /// Three passes; up to 300 ms (QEMU's own default limit, ten times
    /// Ganeti's `migration_downtime` default); then give up. The defaults
    /// of the hvparams.
    fn default() -> Self {
        ConvergencePolicy {
            stall_passes: 3,
            downtime_max_ms: 300,
            postcopy_when_stalled: false,
        }
    }
}

/// `migrate`'s overrides of the instance's policy hvparams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyOverrides {
    /// Instead of `migration_converge_passes`.
    pub stall_passes: Option<u32>,
    /// Instead of `migration_downtime_max`, ms.
    pub downtime_max_ms: Option<u64>,
    /// Instead of `migration_postcopy_switch`.
    pub postcopy_switch: Option<PostcopySwitch>,
}

impl PolicyOverrides {
    /// Overrides `migration_converge_passes`.
    #[must_use]
    pub fn stall_passes(mut self, n: Option<u32>) -> Self {
        self.stall_passes = n;
        self
    }

    /// Overrides `migration_downtime_max`.
    #[must_use]
    pub fn downtime_max_ms(mut self, ms: Option<u64>) -> Self {
        self.downtime_max_ms = ms;
        self
    }

    /// Overrides `migration_postcopy_switch`.
    #[must_use]
    pub fn postcopy_switch(mut self, when: Option<PostcopySwitch>) -> Self {
        self.postcopy_switch = when;
        self
    }
}

/// When a migration switches to postcopy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Never: postcopy is not allowed.
    Never,
    /// Once the first full pass over RAM is done (Ganeti's).
    AfterFirstPass,
    /// When the convergence policy gives up on precopy.
    WhenStalled,
}

/// The policy and the postcopy switch of one migration: the instance's
/// hvparams, `migrate`'s overrides, and whether postcopy is allowed.
pub fn policy_for(
    hv: &hvparam_validation::HvParams,
    overrides: PolicyOverrides,
    postcopy_allowed: bool,
) -> (ConvergencePolicy, Switch) {
    let when = overrides
        .postcopy_switch
        .unwrap_or(hv.migration_postcopy_switch());
    let switch = match (postcopy_allowed, when) {
        (false, _) => Switch::Never,
        (true, PostcopySwitch::Stalled) => Switch::WhenStalled,
        (true, _) => Switch::AfterFirstPass,
    };
    let policy = ConvergencePolicy {
        stall_passes: overrides
            .stall_passes
            .unwrap_or_else(|| u32::try_from(hv.migration_converge_passes()).unwrap_or(u32::MAX)),
        downtime_max_ms: overrides
            .downtime_max_ms
            .unwrap_or_else(|| u64::try_from(hv.migration_downtime_max()).unwrap_or(0)),
        postcopy_when_stalled: switch == Switch::WhenStalled,
    };
    (policy, switch)
}

/// What to do after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The ceiling did not help and postcopy is allowed: switch.
    SwitchToPostcopy {
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
        let (best_remaining, downtime_ms) = (self.best.unwrap_or(remaining), self.downtime_ms);
        if self.policy.postcopy_when_stalled {
            Decision::SwitchToPostcopy {
                best_remaining,
                downtime_ms,
            }
        } else {
            Decision::NotConverging {
                best_remaining,
                downtime_ms,
            }
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
            postcopy_when_stalled: false,
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
            postcopy_when_stalled: false,
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
    fn with_postcopy_when_stalled_the_ceiling_switches_instead_of_giving_up() {
        let policy = ConvergencePolicy {
            stall_passes: 1,
            downtime_max_ms: 60,
            postcopy_when_stalled: true,
        };
        let d = run(policy, 30, &[500, 600, 700, 800, 900]);
        use Decision::*;
        assert_eq!(
            d,
            [
                Wait,
                RaiseDowntime {
                    from_ms: 30,
                    to_ms: 60
                },
                SwitchToPostcopy {
                    best_remaining: 500,
                    downtime_ms: 60
                },
                Wait,
                Wait,
            ]
        );
    }

    #[test]
    fn the_hvparams_give_the_policy_and_the_flags_override_them() {
        let mut hv = hvparam_validation::HvParams::default();
        assert_eq!(
            policy_for(&hv, PolicyOverrides::default(), false),
            (ConvergencePolicy::default(), Switch::Never)
        );
        // Ganeti's switch when postcopy is allowed.
        assert_eq!(
            policy_for(&hv, PolicyOverrides::default(), true).1,
            Switch::AfterFirstPass
        );
        let raw = serde_json::json!({
            "migration_converge_passes": 5,
            "migration_downtime_max": 1000,
            "migration_postcopy_switch": "stalled",
        });
        let (parsed, problems) =
            hvparam_validation::HvParams::parse(raw.as_object().expect("object"));
        assert!(problems.is_empty(), "{problems:?}");
        hv = parsed;
        assert_eq!(
            policy_for(&hv, PolicyOverrides::default(), true),
            (
                ConvergencePolicy {
                    stall_passes: 5,
                    downtime_max_ms: 1000,
                    postcopy_when_stalled: true
                },
                Switch::WhenStalled
            )
        );
        let flags = PolicyOverrides::default()
            .stall_passes(Some(2))
            .downtime_max_ms(Some(60))
            .postcopy_switch(Some(PostcopySwitch::FirstPass));
        assert_eq!(
            policy_for(&hv, flags, true),
            (
                ConvergencePolicy {
                    stall_passes: 2,
                    downtime_max_ms: 60,
                    postcopy_when_stalled: false
                },
                Switch::AfterFirstPass
            )
        );
        // Not allowed: never, whatever the switch says.
        assert_eq!(policy_for(&hv, flags, false).1, Switch::Never);
    }

    #[test]
    fn zero_stall_passes_turns_it_off() {
        let policy = ConvergencePolicy {
            stall_passes: 0,
            downtime_max_ms: 100,
            postcopy_when_stalled: false,
        };
        let d = run(policy, 30, &[5, 6, 7, 8, 9, 10]);
        assert!(d.iter().all(|d| *d == Decision::Wait), "{d:?}");
    }

    #[test]
    fn a_zero_downtime_limit_is_raised_too() {
        let policy = ConvergencePolicy {
            stall_passes: 1,
            downtime_max_ms: 4,
            postcopy_when_stalled: false,
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
