//! A disk: its block node and its guest device.

use std::path::{Path, PathBuf};

use device_slots::{DeviceId, Placement};
use qemu_cmdline::Blockdev;
use qmp_protocol::BlockdevAdd;
use runtime_state::DiskRecord;
use serde_json::{Map, Value as Json, json};

use super::{Device, DeviceError, state_hvinfo};
use crate::hvparams::{DiskAio, DiskCache, DiskType, HvParams};
use crate::spec::{DiskMode, DiskSource, DiskSpec};

/// The QEMU driver of disks of `disk_type` (virtio-blk for the types that
/// name no QEMU device, which validation refuses anyway).
pub fn disk_driver(disk_type: DiskType) -> &'static str {
    disk_type.qemu_driver().unwrap_or("virtio-blk-pci")
}

/// A kernelspace disk that hotplug opens and passes to QEMU with `add-fd`
/// (at a cold start QEMU opens the path itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDisk {
    /// The path.
    pub path: PathBuf,
    /// Opened read-only (mode `ro`).
    pub read_only: bool,
    /// Opened with `O_DIRECT` (the cache mode bypasses the host cache).
    pub direct: bool,
}

/// One disk of an instance, as QEMU and the runtime record see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskDevice {
    device: Device,
    node: Map<String, Json>,
    open: Option<OpenDisk>,
    record: DiskRecord,
}

/// The cache a disk gets: `disk_cache`, except on shared storage, where
/// Ganeti forces `none` so a migration cannot corrupt the disk.
pub fn effective_cache(disk: &DiskSpec, hv: &HvParams) -> DiskCache {
    if disk.shared_storage() {
        DiskCache::None
    } else {
        hv.disk_cache()
    }
}

/// `(device write-cache, cache.direct, cache.no-flush)` of a `disk_cache`.
fn cache_settings(cache: DiskCache) -> (bool, bool, bool) {
    match cache {
        DiskCache::None => (true, true, false),
        DiskCache::Writethrough => (false, false, false),
        _ => (true, false, false),
    }
}

impl DiskDevice {
    /// Builds the disk `disk` with QEMU id `id` at `placement`.
    /// `block_devices` are the kernelspace paths that are block devices
    /// (others are files); `boot` makes it the first boot device.
    pub fn new(
        disk: &DiskSpec,
        hv: &HvParams,
        id: DeviceId,
        placement: Placement,
        block_devices: &[PathBuf],
        boot: bool,
    ) -> Result<DiskDevice, DeviceError> {
        let (write_cache, direct, no_flush) = cache_settings(effective_cache(disk, hv));
        let read_only = disk.mode() == DiskMode::Ro;
        let (file, open) = match disk.source() {
            DiskSource::Path(p) => {
                let (file, o_direct) = file_node(hv, p, block_devices.contains(p), direct);
                let open = OpenDisk {
                    path: p.clone(),
                    read_only,
                    direct: o_direct,
                };
                (file, Some(open))
            }
            DiskSource::Uri(u) => {
                let file =
                    qemu_cmdline::storage_uri(u).map_err(|source| DeviceError::StorageUri {
                        uuid: disk.uuid().to_string(),
                        source,
                    })?;
                (file, None)
            }
        };
        let mut node = Map::new();
        node.insert("driver".into(), json!("raw"));
        node.insert("node-name".into(), json!(id.as_str()));
        // Ganeti 3.0's `default` is QEMU's default, `ignore`.
        let discard = match hv.disk_discard() {
            Some(crate::hvparams::DiskDiscard::Unmap) => "unmap",
            _ => "ignore",
        };
        node.insert("discard".into(), json!(discard));
        node.insert(
            "cache".into(),
            json!({"direct": direct, "no-flush": no_flush}),
        );
        node.insert("file".into(), file);
        if read_only {
            node.insert("read-only".into(), json!(true));
        }
        // Hot-added disks too (Ganeti forgets it there, reference §11.3.3).
        node.insert("auto-read-only".into(), json!(false));

        let driver = disk_driver(hv.disk_type());
        let mut device = Device::new(driver, id.clone(), placement).with("drive", id.as_str());
        // scsi-generic passes commands through and has no write cache.
        if driver != "scsi-generic" {
            device = device.with("write-cache", if write_cache { "on" } else { "off" });
        }
        if boot {
            device = device.with("bootindex", 1u8);
        }
        let record = DiskRecord {
            uuid: disk.uuid().to_string(),
            name: disk.name().map(str::to_owned),
            size: disk.size_mib(),
            mode: if read_only { "ro" } else { "rw" }.into(),
            path: match disk.source() {
                DiskSource::Path(p) => Some(p.display().to_string()),
                DiskSource::Uri(_) => None,
            },
            uri: match disk.source() {
                DiskSource::Uri(u) => Some(u.clone()),
                DiskSource::Path(_) => None,
            },
            hvinfo: state_hvinfo(&device.hvinfo()),
            extra: dev_type_extra(disk),
        };
        Ok(DiskDevice {
            device,
            node,
            open,
            record,
        })
    }

    /// The guest device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The file hotplug opens and passes (kernelspace disks), if any.
    pub fn open(&self) -> Option<&OpenDisk> {
        self.open.as_ref()
    }

    /// The record entry.
    pub fn record(&self) -> &DiskRecord {
        &self.record
    }

    /// The block node as a `-blockdev` argument.
    pub fn blockdev(&self) -> Result<Blockdev, DeviceError> {
        Blockdev::new(Json::Object(self.node.clone())).map_err(|source| DeviceError::StorageUri {
            uuid: self.record.uuid.clone(),
            source,
        })
    }

    /// The block node as `blockdev-add` arguments; with `fdset`, the file is
    /// `/dev/fdset/N` (a descriptor passed with `add-fd`).
    pub fn blockdev_add(&self, fdset: Option<i64>) -> BlockdevAdd {
        let mut add = BlockdevAdd::new("raw", self.device.id().as_str());
        for (k, v) in &self.node {
            if k == "driver" || k == "node-name" {
                continue;
            }
            let mut v = v.clone();
            if let (Some(set), "file") = (fdset, k.as_str()) {
                v["filename"] = json!(format!("/dev/fdset/{set}"));
            }
            add = add.property(k.as_str(), v);
        }
        add
    }
}

/// The `file` node of a kernelspace disk, and whether it bypasses the host
/// cache (`O_DIRECT` when hotplug opens it).
fn file_node(hv: &HvParams, path: &Path, block_device: bool, direct: bool) -> (Json, bool) {
    let kind = if block_device { "host_device" } else { "file" };
    let mut f = json!({"driver": kind, "filename": path.display().to_string()});
    let mut o_direct = direct;
    if let Some(aio) = hv.disk_aio() {
        f["aio"] = json!(aio.as_str());
        if aio == DiskAio::Native {
            f["cache"] = json!({"direct": true});
            o_direct = true;
        }
    }
    (f, o_direct)
}

/// Ganeti's runtime keeps each disk's `dev_type`; ours does when it is not
/// the default.
fn dev_type_extra(disk: &DiskSpec) -> Map<String, Json> {
    let mut extra = Map::new();
    if disk.dev_type() != "plain" {
        extra.insert("dev_type".into(), json!(disk.dev_type()));
    }
    extra
}
