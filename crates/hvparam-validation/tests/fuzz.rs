//! Fuzzing of hvparam values and CPU masks (bounded here; `cargo xtask
//! fuzz` runs long).

use hvparam_validation::{CpuMask, HvParams};

#[test]
fn fuzz_cpu_masks() {
    let seeds: Vec<Vec<u8>> = ["all", "0", "0-3", "1,3-5", "0:1-2:all", "0-1,3:2", ""]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    testkit::fuzz("cpu-mask", &seeds, |input| {
        let _ = CpuMask::parse(&String::from_utf8_lossy(input));
    });
}

#[test]
fn fuzz_hvparams() {
    let mut seeds = testkit::seeds("fixtures/plans", &[".json"]);
    seeds.push(br#"{"acpi": true, "cpu_mask": "0-1", "usb_devices": "tablet,mouse", "kvm_extra": "-device x,y=\"a b\""}"#.to_vec());
    testkit::fuzz("hvparams", &seeds, |input| {
        let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(input)
        else {
            return;
        };
        // A whole spec's hvparams, or the object itself.
        let map = match top.get("hvparams") {
            Some(serde_json::Value::Object(m)) => m.clone(),
            _ => top,
        };
        let (hv, _) = HvParams::parse_and_check(&map);
        let _ = hv.assess();
        let _ = hv.kvm_extra_args();
        let _ = hv.usb_device_list();
    });
}

#[test]
fn fuzz_hvparam_trees() {
    let trees: Vec<serde_json::Value> = testkit::seeds("fixtures/plans", &[".json"])
        .iter()
        .filter_map(|s| serde_json::from_slice::<serde_json::Value>(s).ok())
        .filter_map(|v| v.get("hvparams").cloned())
        .collect();
    assert!(!trees.is_empty(), "no seeds");
    let inputs: Vec<Vec<u8>> = (0..trees.len())
        .map(|i| vec![u8::try_from(i).unwrap_or(0)])
        .collect();
    testkit::fuzz("hvparam-tree", &inputs, |input| {
        let Some((&pick, rest)) = input.split_first() else {
            return;
        };
        let tree = testkit::json_mutant(&trees[usize::from(pick) % trees.len()], rest);
        if let serde_json::Value::Object(map) = tree {
            let (hv, _) = HvParams::parse_and_check(&map);
            let _ = hv.assess();
            let _ = hv.kvm_extra_args();
            let _ = hv.usb_device_list();
        }
    });
}
