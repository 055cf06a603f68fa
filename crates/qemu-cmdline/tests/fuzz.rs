//! Fuzzing of storage URIs and QEMU help texts (bounded here; `cargo xtask
//! fuzz` runs long).

use qemu_cmdline::{QemuCaps, storage_uri};

#[test]
fn fuzz_storage_uris() {
    let seeds: Vec<Vec<u8>> = [
        "rbd:pool/image",
        "rbd://pool/image",
        "gluster://[2001:db8::1]:24007/vol/img",
        "gluster+tcp://host1,host2/vol/img",
        "nbd://192.0.2.1:10809/export",
        "nbd+unix:///export?socket=/run/nbd.sock",
        "iscsi://192.0.2.1:3260/iqn.2001-04.com.example:disk/1",
        "https://user:pw@example.invalid:8443/a/b.iso?x=1",
        "ftp://example.invalid/pub/boot.iso",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    testkit::fuzz("storage-uri", &seeds, |input| {
        let _ = storage_uri(&String::from_utf8_lossy(input));
    });
}

#[test]
fn fuzz_qemu_help_texts() {
    let seeds = testkit::seeds("fixtures/qemu/7.2", &["help.txt"]);
    assert!(!seeds.is_empty(), "no seeds");
    testkit::fuzz("qemu-help", &seeds, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(caps) = QemuCaps::from_help(&text, Some(&text), Some(&text)) {
            let _ = caps.features();
            let _ = caps.default_machine();
        }
    });
}
