//! Dependency hygiene, as `cargo deny`'s `licenses` and `bans` checks would
//! do it (its advisory database cannot be fetched from these machines):
//! every package in the graph has a licence from the allowed list, and the
//! crates we use directly come in one major version only.

use std::collections::{BTreeMap, BTreeSet};

mod common;

/// Licences (SPDX identifiers) a dependency may be under.
const ALLOWED_LICENSES: &[&str] = &[
    "Apache-2.0",
    "MIT",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Zlib",
    "Unlicense",
    "0BSD",
    "CC0-1.0",
    "Apache-2.0 WITH LLVM-exception",
    "MPL-2.0",
    "BSL-1.0",
];

/// Crates of which the graph may hold one version only (per major).
const ONE_VERSION: &[&str] = &[
    "nix",
    "thiserror",
    "tokio",
    "serde",
    "serde_json",
    "rtnetlink",
    "netlink-packet-route",
    "clap",
    "tracing",
];

fn metadata() -> serde_json::Value {
    // What is built here (Linux only): no download of other platforms'
    // crates.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    common::cargo_metadata(&["--filter-platform", &platform])
}

/// Whether an SPDX expression is satisfied by the allowed licences: an
/// `OR` needs one side allowed, an `AND` both.
fn allowed(expr: &str) -> bool {
    let expr = expr.trim().trim_start_matches('(').trim_end_matches(')');
    if let Some((a, b)) = expr.split_once(" OR ") {
        return allowed(a) || allowed(b);
    }
    if let Some((a, b)) = expr.split_once(" AND ") {
        return allowed(a) && allowed(b);
    }
    // Old crates write `MIT/Apache-2.0`.
    if expr.contains('/') {
        return expr.split('/').any(allowed);
    }
    ALLOWED_LICENSES.contains(&expr)
}

#[test]
fn every_dependency_has_an_allowed_license() {
    let meta = metadata();
    // Only what is built: packages reachable in the resolved graph.
    let resolved: BTreeSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let refused: Vec<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| resolved.contains(id)))
        .filter(|p| !p["license"].as_str().is_some_and(allowed))
        .map(|p| format!("{} {}: {}", p["name"], p["version"], p["license"]))
        .collect();
    assert_eq!(refused, Vec::<String>::new());
}

#[test]
fn crates_we_use_come_in_one_major_version() {
    let meta = metadata();
    let mut versions: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().unwrap_or_default();
        if ONE_VERSION.contains(&name) {
            let v = p["version"].as_str().unwrap_or_default();
            // The semver-compatible part: 0.x.y -> 0.x, x.y.z -> x.
            let parts: Vec<&str> = v.split('.').collect();
            let major = if parts[0] == "0" {
                format!("0.{}", parts.get(1).unwrap_or(&"0"))
            } else {
                parts[0].to_owned()
            };
            versions.entry(name).or_default().insert(major);
        }
    }
    let doubled: Vec<String> = versions
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(n, v)| format!("{n}: {v:?}"))
        .collect();
    assert_eq!(doubled, Vec::<String>::new());
}

#[test]
fn spdx_expressions_are_read_as_cargo_deny_reads_them() {
    assert!(allowed("MIT OR Apache-2.0"));
    assert!(allowed("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(allowed("MIT/Apache-2.0"));
    assert!(!allowed("GPL-3.0-only"));
    assert!(!allowed("MIT AND GPL-2.0"));
}
