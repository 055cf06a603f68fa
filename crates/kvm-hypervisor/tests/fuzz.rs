//! Fuzzing of instance specs, JSON and TOML (bounded here; `cargo xtask
//! fuzz` runs long).

use kvm_hypervisor::spec::InstanceSpec;

#[test]
fn fuzz_instance_specs_json() {
    let mut seeds = testkit::seeds("fixtures/specs", &[".json"]);
    seeds.extend(testkit::seeds("fixtures/plans", &[".json"]));
    testkit::fuzz("spec-json", &seeds, |input| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) {
            let _ = InstanceSpec::from_value(&v);
        }
    });
}

#[test]
fn fuzz_instance_specs_toml() {
    let seeds = testkit::seeds("fixtures/specs", &[".toml"]);
    assert!(!seeds.is_empty(), "no seeds");
    testkit::fuzz("spec-toml", &seeds, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(v) = toml::from_str::<serde_json::Value>(&text) {
            let _ = InstanceSpec::from_value(&v);
        }
    });
}

#[test]
fn fuzz_instance_spec_trees() {
    let mut seeds = testkit::seeds("fixtures/specs", &[".json"]);
    seeds.extend(testkit::seeds("fixtures/plans", &[".json"]));
    let trees: Vec<serde_json::Value> = seeds
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    assert!(!trees.is_empty(), "no seeds");
    // The first byte picks the seed tree, the rest mutates it.
    let inputs: Vec<Vec<u8>> = (0..trees.len())
        .map(|i| vec![u8::try_from(i).unwrap_or(0)])
        .collect();
    testkit::fuzz("spec-tree", &inputs, |input| {
        let Some((&pick, rest)) = input.split_first() else {
            return;
        };
        let tree = testkit::json_mutant(&trees[usize::from(pick) % trees.len()], rest);
        let _ = InstanceSpec::from_value(&tree);
    });
}
