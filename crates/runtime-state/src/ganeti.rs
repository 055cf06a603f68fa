//! Ganeti's runtime file: a one-line JSON array `[cmd, nics, hvparams, disks]`
//! (3 elements before Ganeti 2.10), read in all its historical forms with the
//! upgrade rules of `_upgrade_serialized_runtime`, and written back.
//!
//! Unlike Ganeti, the `disk_discard` normalisation and the `-chroot` removal
//! apply whether or not the argv has `-vnc` (Ganeti's indentation bug,
//! reference §11.5.1), and an old `x509=`/`x509verify=` without `tls` creates
//! no TLS object (old QEMU ignored them without `tls`; Ganeti creates an
//! object nothing references).

use serde_json::{Map, Value as Json, json};

use crate::record::{DiskRecord, HvInfo, NicRecord, Origin, RECORD_VERSION, RuntimeRecord};

/// A Ganeti runtime after the upgrade rules.
#[derive(Debug, Clone, PartialEq)]
pub struct GanetiRuntime {
    /// The argv; `-m`'s value is a JSON number.
    pub cmd: Vec<Json>,
    /// NIC dicts.
    pub nics: Vec<Map<String, Json>>,
    /// hvparams at start.
    pub hvparams: Map<String, Json>,
    /// `(disk dict, link, userspace uri)`.
    pub disks: Vec<(Map<String, Json>, Json, Json)>,
    /// The upgrade rules that changed something, in order.
    pub upgrades: Vec<&'static str>,
}

/// Why a value is not a Ganeti runtime.
pub(crate) type Invalid = String;

fn obj(v: &Json, what: &str) -> Result<Map<String, Json>, Invalid> {
    v.as_object()
        .cloned()
        .ok_or_else(|| format!("{what} is not an object"))
}

impl GanetiRuntime {
    /// Parses and upgrades; `new_uuid` gives UUIDs to pre-2.8 NICs.
    pub fn upgrade(
        value: &Json,
        new_uuid: &mut dyn FnMut() -> String,
    ) -> Result<GanetiRuntime, Invalid> {
        let parts = value.as_array().ok_or("not a JSON array")?;
        // Ganeti reads three or four elements and ignores any further ones
        // (a shared runtime file keeps our record in a fifth).
        if parts.len() < 3 {
            return Err(format!(
                "an array of {} elements (expected 3 or more)",
                parts.len()
            ));
        }
        let cmd = parts[0]
            .as_array()
            .ok_or("element 0 (the argv) is not an array")?
            .clone();
        let nics = parts[1]
            .as_array()
            .ok_or("element 1 (the NICs) is not an array")?
            .iter()
            .map(|n| obj(n, "a NIC"))
            .collect::<Result<Vec<_>, _>>()?;
        let hvparams = obj(&parts[2], "element 2 (the hvparams)")?;
        let mut upgrades = Vec::new();
        let disks = match parts.get(3) {
            None => {
                upgrades.push("3-element runtime: no disks element (pre-2.10)");
                Vec::new()
            }
            Some(d) => d
                .as_array()
                .ok_or("element 3 (the disks) is not an array")?
                .iter()
                .map(|entry| {
                    let e = entry
                        .as_array()
                        .filter(|e| e.len() == 3)
                        .ok_or("a disk entry is not [disk, link, uri]")?;
                    Ok((obj(&e[0], "a disk")?, e[1].clone(), e[2].clone()))
                })
                .collect::<Result<Vec<_>, Invalid>>()?,
        };
        let mut rt = GanetiRuntime {
            cmd,
            nics,
            hvparams,
            disks,
            upgrades,
        };
        rt.upgrade_devices(new_uuid);
        rt.upgrade_cmd();
        Ok(rt)
    }

    fn upgrade_devices(&mut self, new_uuid: &mut dyn FnMut() -> String) {
        let nic_type = self
            .hvparams
            .get("nic_type")
            .and_then(Json::as_str)
            .unwrap_or("paravirtual")
            .to_owned();
        let disk_type = self
            .hvparams
            .get("disk_type")
            .and_then(Json::as_str)
            .unwrap_or("paravirtual")
            .to_owned();
        for nic in &mut self.nics {
            if !nic.contains_key("uuid") {
                nic.insert("uuid".into(), Json::String(new_uuid()));
                self.upgrades
                    .push("NIC without uuid: uuid generated (pre-2.8)");
            }
            if legacy_hvinfo(nic, "nic", &nic_type) {
                self.upgrades.push("NIC `pci` slot: hvinfo derived");
            }
        }
        for (disk, _, _) in &mut self.disks {
            if legacy_hvinfo(disk, "disk", &disk_type) {
                self.upgrades.push("disk `pci` slot: hvinfo derived");
            }
        }
        let discard = self.hvparams.get("disk_discard").and_then(Json::as_str);
        if discard.is_some_and(|d| d != "ignore" && d != "unmap") {
            self.hvparams.insert("disk_discard".into(), json!("ignore"));
            self.upgrades
                .push("disk_discard not ignore/unmap: set to ignore");
        }
    }

    fn upgrade_cmd(&mut self) {
        let old = std::mem::take(&mut self.cmd);
        let mut out = Vec::with_capacity(old.len());
        let mut it = old.into_iter().peekable();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                Some("-localtime") => {
                    out.extend([json!("-rtc"), json!("base=localtime")]);
                    self.upgrades.push("-localtime: now -rtc base=localtime");
                }
                Some("-balloon") => {
                    let value = it
                        .next()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let device = match value.split_once(',') {
                        Some((_, args)) => format!("virtio-balloon,{args}"),
                        None => "virtio-balloon".to_owned(),
                    };
                    out.extend([json!("-device"), json!(device)]);
                    self.upgrades.push("-balloon: now -device virtio-balloon");
                }
                Some("-chroot") => {
                    it.next();
                    self.upgrades
                        .push("-chroot removed (chroot is re-rendered at start)");
                }
                Some("-vnc") => {
                    let value = it
                        .next()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let (object, vnc) = upgrade_vnc(&value);
                    if let Some(object) = object {
                        out.extend([json!("-object"), json!(object)]);
                        self.upgrades
                            .push("old -vnc TLS syntax: now -object tls-creds-…");
                    } else if vnc != value {
                        self.upgrades
                            .push("old -vnc x509 without tls: dropped (it never took effect)");
                    }
                    out.extend([json!("-vnc"), json!(vnc)]);
                }
                _ => out.push(arg),
            }
        }
        self.cmd = out;
    }

    /// Converts into our record model.
    pub fn to_record(&self) -> RuntimeRecord {
        let argv: Vec<String> = self
            .cmd
            .iter()
            .map(|a| match a {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let facts = crate::ArgvFacts::parse(&argv);
        let after = |flag: &str| {
            argv.iter()
                .position(|a| a == flag)
                .and_then(|i| argv.get(i + 1))
        };
        let machine = after("-machine").or_else(|| after("-M")).map(|m| {
            let first = m.split(',').next().unwrap_or_default();
            first.strip_prefix("type=").unwrap_or(first).to_owned()
        });
        let disks: Vec<DiskRecord> = self
            .disks
            .iter()
            .map(|(d, link, uri)| {
                let mut extra = d.clone();
                let take_str = |extra: &mut Map<String, Json>, k: &str| {
                    extra.remove(k).and_then(|v| v.as_str().map(str::to_owned))
                };
                let uuid = take_str(&mut extra, "uuid").unwrap_or_default();
                let name = take_str(&mut extra, "name");
                let mode = take_str(&mut extra, "mode").unwrap_or_else(|| "rw".into());
                let size = extra.remove("size").and_then(|v| v.as_u64());
                let hvinfo = extra
                    .remove("hvinfo")
                    .and_then(|h| serde_json::from_value(h).ok());
                DiskRecord {
                    uuid,
                    name,
                    size,
                    mode,
                    path: link.as_str().map(str::to_owned),
                    uri: uri.as_str().map(str::to_owned),
                    hvinfo,
                    extra,
                }
            })
            .collect();
        let nics: Vec<NicRecord> = self
            .nics
            .iter()
            .map(|n| {
                let mut extra = n.clone();
                let take_str = |extra: &mut Map<String, Json>, k: &str| {
                    extra.remove(k).and_then(|v| v.as_str().map(str::to_owned))
                };
                let nicparams = extra
                    .remove("nicparams")
                    .and_then(|p| p.as_object().cloned())
                    .unwrap_or_default();
                let param = |k: &str| nicparams.get(k).and_then(Json::as_str).map(str::to_owned);
                NicRecord {
                    uuid: take_str(&mut extra, "uuid").unwrap_or_default(),
                    mac: take_str(&mut extra, "mac"),
                    ip: take_str(&mut extra, "ip"),
                    name: take_str(&mut extra, "name"),
                    mode: param("mode"),
                    link: param("link"),
                    vlan: param("vlan"),
                    tap: None,
                    hvinfo: extra
                        .remove("hvinfo")
                        .and_then(|h| serde_json::from_value(h).ok()),
                    extra,
                }
            })
            .collect();
        let mut instance = Map::new();
        if let Some(name) = facts.name {
            instance.insert("name".into(), json!(name));
        }
        if let Some(uuid) = after("-uuid") {
            instance.insert("uuid".into(), json!(uuid));
        }
        if let Some(m) = facts.memory_mib {
            instance.insert("memory".into(), json!(m));
        }
        if let Some(v) = facts.vcpus {
            instance.insert("vcpus".into(), json!(v));
        }
        RuntimeRecord {
            version: RECORD_VERSION,
            origin: Origin::Ganeti,
            instance,
            hvparams: self.hvparams.clone(),
            machine,
            qemu: argv.first().map(|p| crate::record::QemuIdentity {
                path: p.clone(),
                version: None,
            }),
            argv,
            disks,
            nics,
            guest_argv: None,
            incomplete: false,
        }
    }
}

/// Ganeti's form of a record: the 4-element array, with `-m`'s value a number.
pub fn to_ganeti(record: &RuntimeRecord) -> Json {
    let mut cmd = Vec::with_capacity(record.argv.len());
    let mut after_m = false;
    for a in &record.argv {
        let number = after_m.then(|| a.parse::<u64>().ok()).flatten();
        cmd.push(number.map_or_else(|| json!(a), |n| json!(n)));
        after_m = a == "-m";
    }
    let nics: Vec<Json> = record
        .nics
        .iter()
        .map(|n| {
            let mut d = n.extra.clone();
            let mut put = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    d.insert(k.into(), json!(v));
                }
            };
            put("mac", &n.mac);
            put("ip", &n.ip);
            put("name", &n.name);
            let mut params = Map::new();
            for (k, v) in [("mode", &n.mode), ("link", &n.link), ("vlan", &n.vlan)] {
                if let Some(v) = v {
                    params.insert(k.into(), json!(v));
                }
            }
            d.insert("nicparams".into(), Json::Object(params));
            d.insert("uuid".into(), json!(n.uuid));
            if let Some(h) = &n.hvinfo {
                d.insert(
                    "hvinfo".into(),
                    serde_json::to_value(h).unwrap_or(Json::Null),
                );
            }
            Json::Object(d)
        })
        .collect();
    let disks: Vec<Json> = record
        .disks
        .iter()
        .map(|disk| {
            let mut d = disk.extra.clone();
            d.insert("mode".into(), json!(disk.mode));
            d.insert("uuid".into(), json!(disk.uuid));
            if let Some(n) = &disk.name {
                d.insert("name".into(), json!(n));
            }
            if let Some(s) = disk.size {
                d.insert("size".into(), json!(s));
            }
            if !d.contains_key("params") {
                let access = if disk.uri.is_some() {
                    "userspace"
                } else {
                    "kernelspace"
                };
                d.insert("params".into(), json!({"access": access}));
            }
            if let Some(h) = &disk.hvinfo {
                d.insert(
                    "hvinfo".into(),
                    serde_json::to_value(h).unwrap_or(Json::Null),
                );
            }
            json!([Json::Object(d), disk.path, disk.uri])
        })
        .collect();
    json!([cmd, nics, record.hvparams, disks])
}

/// Ganeti's `update_hvinfo`: derive `hvinfo` from a legacy `pci` slot.
/// Returns whether it did.
fn legacy_hvinfo(dev: &mut Map<String, Json>, kind: &str, hv_type: &str) -> bool {
    if dev.contains_key("hvinfo") {
        return false;
    }
    let Some(pci) = dev.remove("pci") else {
        dev.insert("hvinfo".into(), json!({}));
        return false;
    };
    let slot = pci.as_u64().unwrap_or(0);
    let driver = match (kind, hv_type) {
        ("nic", "paravirtual") => "virtio-net-pci",
        ("disk", "paravirtual") => "virtio-blk-pci",
        (_, other) => other,
    };
    let uuid = dev.get("uuid").and_then(Json::as_str).unwrap_or_default();
    let first = uuid.split('-').next().unwrap_or_default();
    let info = HvInfo {
        driver: driver.to_owned(),
        id: format!("hot{kind}-{first}-pci-{slot}"),
        bus: Some("pci.0".into()),
        addr: Some(format!("{slot:#x}")),
        channel: None,
        scsi_id: None,
        lun: None,
    };
    dev.insert(
        "hvinfo".into(),
        serde_json::to_value(info).unwrap_or(Json::Null),
    );
    true
}

/// Ganeti's `-vnc` TLS rewrite. Returns the `-object` value (when TLS was
/// asked for) and the new `-vnc` value.
fn upgrade_vnc(value: &str) -> (Option<String>, String) {
    let mut kept = Vec::new();
    let mut tls = false;
    let mut x509: Option<(String, bool)> = None;
    for arg in value.split(',') {
        if arg == "tls" {
            tls = true;
            kept.push("tls-creds=vnctls0".to_owned());
        } else if let Some(dir) = arg.strip_prefix("x509verify=") {
            x509 = Some((dir.to_owned(), true));
        } else if let Some(dir) = arg.strip_prefix("x509=") {
            x509 = Some((dir.to_owned(), false));
        } else {
            kept.push(arg.to_owned());
        }
    }
    let object = tls.then(|| match &x509 {
        Some((dir, verify)) => format!(
            "tls-creds-x509,id=vnctls0,endpoint=server,dir={dir},verify-peer={}",
            if *verify { "yes" } else { "no" }
        ),
        None => "tls-creds-anon,id=vnctls0,endpoint=server".to_owned(),
    });
    (object, kept.join(","))
}
