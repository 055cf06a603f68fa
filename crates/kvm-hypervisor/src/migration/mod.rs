//! Live migration between nodes (to come): `migration-info` on the source,
//! `accept` on the target (a [`crate::LaunchPlan`] started in incoming mode,
//! rebuilt through [`crate::devices`] so hot-plugged devices are recreated
//! exactly), `migrate`, `migration-status` and `migrate-cancel`, with the
//! start and hotplug rollback ([`crate::launch::rollback`]).
