//! Tap devices, links and bridges for QEMU guests' NICs.
//!
//! This crate will open tap devices through `/dev/net/tun` (vnet_hdr,
//! multiqueue, vhost-net descriptors), manage links, bridges, addresses and
//! routes through rtnetlink, and run NIC up/down scripts with Ganeti's
//! environment contract.
