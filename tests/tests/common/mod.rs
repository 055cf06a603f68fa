//! What the workspace-wide tests share.

use std::process::Command;

/// `cargo metadata --format-version 1 --offline EXTRA…` of the workspace,
/// parsed.
pub(crate) fn cargo_metadata(extra: &[&str]) -> serde_json::Value {
    #[allow(clippy::disallowed_methods)] // a test driver runs `cargo metadata`
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata is JSON")
}
