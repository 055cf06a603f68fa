//! Ids, hvinfo and allocators: exact values, and randomized invariants.

use std::collections::BTreeSet;

use device_slots::*;
use serde_json::json;

const UUID: &str = "932df160-7a22-4067-a566-7e0ca8386133";

#[test]
fn disk_id_is_prefix_and_three_uuid_groups() {
    assert_eq!(
        DeviceId::for_device(DeviceKind::Disk, UUID)
            .unwrap()
            .as_str(),
        "disk-932df160-7a22-4067"
    );
}

#[test]
fn nic_id_is_prefix_and_three_uuid_groups() {
    assert_eq!(
        DeviceId::for_device(DeviceKind::Nic, UUID)
            .unwrap()
            .as_str(),
        "nic-932df160-7a22-4067"
    );
}

#[test]
fn bad_uuid_is_refused() {
    assert_eq!(
        DeviceId::for_device(DeviceKind::Disk, "932df160"),
        Err(SlotError::BadUuid("932df160".into()))
    );
}

#[test]
fn legacy_id_parses_with_kind_and_slot() {
    let id = DeviceId::parse("hotdisk-932df160-pci-5").unwrap();
    assert_eq!(
        (id.kind(), id.legacy_slot()),
        (Some(DeviceKind::Disk), Some(5))
    );
}

#[test]
fn new_style_id_has_no_legacy_slot() {
    let id = DeviceId::for_device(DeviceKind::Nic, UUID).unwrap();
    assert_eq!((id.kind(), id.legacy_slot()), (Some(DeviceKind::Nic), None));
}

#[test]
fn id_starting_with_a_digit_is_refused() {
    assert_eq!(
        DeviceId::parse("1disk"),
        Err(SlotError::BadId("1disk".into()))
    );
}

#[test]
fn pci_hvinfo_round_trips_in_ganetis_key_order() {
    let v = json!({"driver": "virtio-blk-pci", "id": "disk-932df160-7a22-4067", "bus": "pci.0", "addr": "0xc"});
    let info = HvInfo::from_json(&v).unwrap();
    assert_eq!(info.to_json().to_string(), v.to_string());
    assert_eq!(
        info.device_args(),
        "virtio-blk-pci,id=disk-932df160-7a22-4067,bus=pci.0,addr=0xc"
    );
}

#[test]
fn scsi_hvinfo_round_trips() {
    let v = json!({"driver": "scsi-hd", "id": "disk-932df160-7a22-4067", "bus": "scsi.0", "channel": 0, "scsi-id": 3, "lun": 0});
    let info = HvInfo::from_json(&v).unwrap();
    assert_eq!(info.to_json().to_string(), v.to_string());
    assert_eq!(
        info.device_args(),
        "scsi-hd,id=disk-932df160-7a22-4067,bus=scsi.0,channel=0,scsi-id=3,lun=0"
    );
}

#[test]
fn hvinfo_address_above_31_is_refused() {
    let v = json!({"driver": "e1000", "id": "nic-a", "bus": "pci.0", "addr": "0x20"});
    assert_eq!(
        HvInfo::from_json(&v),
        Err(SlotError::BadHvInfo("`0x20` is not a PCI slot".into()))
    );
}

#[test]
fn slot_hex_is_pythons() {
    assert_eq!(PciSlot::new(16).unwrap().hex(), "0x10");
    assert_eq!(PciSlot::parse_hex("0x0c").unwrap().get(), 12);
}

#[test]
fn ganetis_start_sequence_gets_ganetis_slots() {
    // disk/pv, disk/pv, nic/pv, nic/e1000, disk/scsi-hd, disk/ide, nic/ne2k_isa
    // gave 0xc, 0xd, 0xe, 0xf, scsi-id 0, 0x10, 0x11 in Ganeti.
    let mut pci = PciAllocator::new("pci.0", DEFAULT_PCI_RESERVATIONS).unwrap();
    let mut scsi = ScsiAllocator::new("scsi.0", DEFAULT_SCSI_TARGETS);
    let got: Vec<String> = vec![
        pci.take().unwrap().hex(),
        pci.take().unwrap().hex(),
        pci.take().unwrap().hex(),
        pci.take().unwrap().hex(),
        format!("scsi-id {}", scsi.take().unwrap().get()),
        pci.take().unwrap().hex(),
        pci.take().unwrap().hex(),
    ];
    assert_eq!(
        got,
        ["0xc", "0xd", "0xe", "0xf", "scsi-id 0", "0x10", "0x11"]
    );
}

#[test]
fn propose_does_not_take_the_slot() {
    let pci = PciAllocator::new("pci.0", 12).unwrap();
    assert_eq!(pci.propose(), pci.propose());
}

#[test]
fn pci_alloc_full_bus_returns_exhausted() {
    let mut pci = PciAllocator::new("pci.0", 12).unwrap();
    for _ in 0..20 {
        pci.take().unwrap();
    }
    assert_eq!(
        pci.take(),
        Err(SlotError::Exhausted {
            bus: "pci.0".into()
        })
    );
    assert_eq!(
        pci.take().unwrap_err().to_string(),
        "no free slot on bus pci.0"
    );
}

#[test]
fn scsi_alloc_full_bus_returns_exhausted() {
    let mut scsi = ScsiAllocator::new("scsi.0", 2);
    scsi.take().unwrap();
    scsi.take().unwrap();
    assert_eq!(
        scsi.take(),
        Err(SlotError::Exhausted {
            bus: "scsi.0".into()
        })
    );
}

#[test]
fn committing_a_reserved_slot_is_refused() {
    let mut pci = PciAllocator::new("pci.0", 12).unwrap();
    assert_eq!(
        pci.commit(PciSlot::new(3).unwrap()),
        Err(SlotError::Reserved {
            bus: "pci.0".into(),
            slot: 3
        })
    );
}

#[test]
fn committing_twice_is_refused() {
    let mut pci = PciAllocator::new("pci.0", 12).unwrap();
    let s = pci.propose().unwrap();
    pci.commit(s).unwrap();
    assert_eq!(
        pci.commit(s),
        Err(SlotError::InUse {
            bus: "pci.0".into(),
            slot: 12
        })
    );
}

#[test]
fn too_many_reservations_are_refused() {
    assert_eq!(
        PciAllocator::new("pci.0", 33),
        Err(SlotError::TooManyReserved {
            reserved: 33,
            max: 32
        })
    );
}

#[test]
fn reconcile_reports_and_marks_slots_qemu_placed_itself() {
    let mut pci = PciAllocator::new("pci.0", 12).unwrap();
    pci.mark_used(PciSlot::new(12).unwrap());
    let observed = [
        ObservedDevice {
            slot: 0,
            qdev_id: String::new(),
        },
        ObservedDevice {
            slot: 12,
            qdev_id: "disk-932df160-7a22-4067".into(),
        },
        ObservedDevice {
            slot: 13,
            qdev_id: "extra-rng".into(),
        },
    ];
    assert_eq!(
        pci.reconcile(&observed),
        [Unexpected {
            slot: PciSlot::new(13).unwrap(),
            qdev_id: "extra-rng".into()
        }]
    );
    assert_eq!(pci.propose().unwrap().hex(), "0xe");
}

#[test]
fn released_slot_is_reused_first() {
    let mut pci = PciAllocator::new("pci.0", 12).unwrap();
    let a = pci.take().unwrap();
    pci.take().unwrap();
    pci.release(a);
    assert_eq!(pci.take().unwrap(), a);
}

#[test]
fn q35_ports_are_stable_and_restorable() {
    let mut layout = PcieLayout::new(1).unwrap();
    let port = layout.add_port().unwrap();
    assert_eq!(
        port.device_args(),
        "pcie-root-port,id=rp1,bus=pcie.0,addr=0x1,chassis=1,slot=1"
    );
    let spares = layout.add_spares(2).unwrap();
    assert_eq!(
        spares.iter().map(RootPort::id).collect::<Vec<_>>(),
        ["rp2", "rp3"]
    );
    let mut again = PcieLayout::new(1).unwrap();
    assert_eq!(again.restore_port("rp1").unwrap(), port);
    assert_eq!(again.add_port().unwrap().id(), "rp2");
}

/// A tiny deterministic PRNG (xorshift64*), so the randomized tests need no
/// dependency and fail the same way every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_sequences_never_double_allocate_or_touch_reserved_slots() {
    for seed in 1..200u64 {
        let mut rng = Rng(seed);
        let reserved = (rng.next() % 33) as u8;
        let mut pci = PciAllocator::new("pci.0", reserved).unwrap();
        let mut held: BTreeSet<PciSlot> = BTreeSet::new();
        for _ in 0..200 {
            if rng.next().is_multiple_of(3) && !held.is_empty() {
                let victim = *held.iter().nth((rng.next() as usize) % held.len()).unwrap();
                pci.release(victim);
                held.remove(&victim);
            } else {
                match pci.take() {
                    Ok(slot) => {
                        assert!(
                            slot.get() >= reserved,
                            "seed {seed}: reserved slot {slot} handed out"
                        );
                        assert!(
                            held.insert(slot),
                            "seed {seed}: slot {slot} handed out twice"
                        );
                    }
                    Err(e) => {
                        assert_eq!(
                            e,
                            SlotError::Exhausted {
                                bus: "pci.0".into()
                            }
                        );
                        assert_eq!(held.len(), usize::from(PCI_SLOTS - reserved), "seed {seed}");
                    }
                }
            }
            assert_eq!(pci.free(), usize::from(PCI_SLOTS - reserved) - held.len());
        }
    }
}
