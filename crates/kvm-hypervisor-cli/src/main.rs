//! The `kvm-hypervisor` command.
fn main() {}
