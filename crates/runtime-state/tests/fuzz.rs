//! Fuzzing of runtime files as read from disk: Ganeti's every form and ours
//! (bounded here; `cargo xtask fuzz` runs long).

use std::path::Path;

use runtime_state::{Format, RuntimeFile, render};

#[test]
fn fuzz_runtime_files() {
    let seeds = testkit::seeds("fixtures/ganeti-runtime", &[".runtime"]);
    assert!(!seeds.is_empty(), "no seeds");
    testkit::fuzz("runtime-file", &seeds, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(file) = RuntimeFile::parse(Path::new("/run/x/conf/web1.runtime"), &text) {
            // What was read can be written back in both forms.
            let record = file.record();
            let _ = render(&record, Format::Ours);
            let _ = render(&record, Format::Ganeti);
        }
    });
}

#[test]
fn fuzz_runtime_file_trees() {
    let trees: Vec<serde_json::Value> = testkit::seeds("fixtures/ganeti-runtime", &[".runtime"])
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    assert!(!trees.is_empty(), "no seeds");
    let inputs: Vec<Vec<u8>> = (0..trees.len())
        .map(|i| vec![u8::try_from(i).unwrap_or(0)])
        .collect();
    testkit::fuzz("runtime-tree", &inputs, |input| {
        let Some((&pick, rest)) = input.split_first() else {
            return;
        };
        let tree = testkit::json_mutant(&trees[usize::from(pick) % trees.len()], rest);
        let text = tree.to_string();
        if let Ok(file) = RuntimeFile::parse(Path::new("/run/x/conf/web1.runtime"), &text) {
            let record = file.record();
            let _ = render(&record, Format::Ours);
            let _ = render(&record, Format::Ganeti);
        }
    });
}
