//! The library's per-step timing events (`RUST_LOG=kvm_hypervisor::timing=debug`
//! on stderr), collected over runs into per-step medians.

use std::collections::BTreeMap;

/// The env var and filter that make the binary print its timing events.
pub(crate) const RUST_LOG: (&str, &str) = ("RUST_LOG", "kvm_hypervisor::timing=debug");

/// Steps in the order first seen, with their samples in µs.
#[derive(Default)]
pub(crate) struct Breakdown {
    order: Vec<(String, String)>,
    samples: BTreeMap<(String, String), Vec<u64>>,
}

impl Breakdown {
    /// Adds the timing events of one run's stderr.
    pub(crate) fn add(&mut self, stderr: &str) {
        for line in stderr.lines() {
            let field = |k: &str| {
                let rest = line.split(&format!(" {k}=")).nth(1)?;
                Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
            };
            let (Some(op), Some(step), Some(us)) = (field("op"), field("step"), field("us")) else {
                continue;
            };
            let Ok(us) = us.parse() else { continue };
            let key = (op, step);
            if !self.order.contains(&key) {
                self.order.push(key.clone());
            }
            self.samples.entry(key).or_default().push(us);
        }
    }

    /// Prints one line per step: op, step, median in ms.
    pub(crate) fn print(&self, indent: &str) {
        for key in &self.order {
            let mut v = self.samples.get(key).cloned().unwrap_or_default();
            v.sort_unstable();
            let m = v.get(v.len() / 2).copied().unwrap_or(0);
            println!(
                "{indent}{:<9} {:<14} {:>8.2} ms",
                key.0,
                key.1,
                m as f64 / 1e3
            );
        }
    }
}
