//! Node-level manager for QEMU/KVM virtual machines.
