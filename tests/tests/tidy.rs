//! The crate graph of STYLE.md §1, enforced: any workspace edge not listed here
//! fails the test. A new edge is a design change; record why in ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};

mod common;

const LEAVES: &[&str] = &[
    "qmp-protocol",
    "qemu-cmdline",
    "device-slots",
    "runtime-state",
    "tap-netdev",
    "hvparam-validation",
];

/// Allowed (from, to, kind) edges between workspace packages; kind is
/// `normal`, `dev` or `build` as cargo metadata reports it.
fn allowed() -> BTreeSet<(String, String, String)> {
    let mut edges = BTreeSet::new();
    let mut add = |from: &str, to: &str, kind: &str| {
        edges.insert((from.to_owned(), to.to_owned(), kind.to_owned()));
    };
    for leaf in LEAVES {
        add("kvm-hypervisor", leaf, "normal");
        add(leaf, "testkit", "dev");
        add("workspace-tests", leaf, "dev");
    }
    add("kvm-hypervisor", "testkit", "dev");
    add("kvm-hypervisor-cli", "kvm-hypervisor", "normal");
    add("kvm-hypervisor-cli", "testkit", "dev");
    add("workspace-tests", "kvm-hypervisor", "dev");
    add("workspace-tests", "testkit", "dev");
    edges
}

fn workspace_edges() -> BTreeSet<(String, String, String)> {
    let meta = common::cargo_metadata(&["--no-deps"]);
    let packages = meta["packages"].as_array().expect("packages array");
    let members: BTreeMap<String, &serde_json::Value> = packages
        .iter()
        .map(|p| (p["name"].as_str().expect("name").to_owned(), p))
        .collect();
    let mut edges = BTreeSet::new();
    for (name, pkg) in &members {
        for dep in pkg["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dep name");
            if members.contains_key(dep_name) {
                let kind = dep["kind"].as_str().unwrap_or("normal").to_owned();
                edges.insert((name.clone(), dep_name.to_owned(), kind));
            }
        }
    }
    edges
}

#[test]
fn workspace_crate_graph_has_only_allowed_edges() {
    let allowed = allowed();
    let unexpected: Vec<String> = workspace_edges()
        .difference(&allowed)
        .map(|(from, to, kind)| format!("{from} -> {to} ({kind})"))
        .collect();
    assert_eq!(
        unexpected,
        Vec::<String>::new(),
        "edges outside STYLE.md §1"
    );
}

#[test]
fn leaves_exist_as_workspace_members() {
    let meta = common::cargo_metadata(&["--no-deps"]);
    let names: BTreeSet<&str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    let expected: BTreeSet<&str> = LEAVES
        .iter()
        .copied()
        .chain([
            "kvm-hypervisor",
            "kvm-hypervisor-cli",
            "xtask",
            "workspace-tests",
        ])
        .collect();
    assert_eq!(
        expected.difference(&names).copied().collect::<Vec<_>>(),
        Vec::<&str>::new()
    );
}
