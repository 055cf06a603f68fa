//! The instance spec: one file (JSON or TOML) describing one instance.
//!
//! Parsing is strict and reports every problem at once, each naming its field
//! (`disks[1].uuid`, `hvparams.boot_order`). Missing `uuid`s and `mac`s are
//! generated and reported as [`Generated`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::hvparams::{self, HvParams};

pub use crate::state::MAX_NAME_LEN;

/// The MAC prefix of generated addresses, as Ganeti's default.
pub const GENERATED_MAC_PREFIX: [u8; 3] = [0xaa, 0x00, 0x00];

/// An instance name that is safe as a file name and in QEMU's argv.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct InstanceName(String);

impl InstanceName {
    /// Accepts a host-name-like string: letters, digits, `.`, `-` and `_`,
    /// starting with a letter or digit, at most [`MAX_NAME_LEN`] bytes.
    pub fn new(name: &str) -> Result<InstanceName, SpecReason> {
        let reason = crate::state::name_problem(name);
        match reason {
            None => Ok(InstanceName(name.to_owned())),
            Some(why) => Err(SpecReason::BadName {
                name: name.to_owned(),
                why,
            }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unicast Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// Parses `aa:00:00:11:22:33` (either case); refuses multicast and all-zero addresses.
    pub fn parse(s: &str) -> Result<MacAddr, SpecReason> {
        let bad = |why| SpecReason::BadMac {
            value: s.to_owned(),
            why,
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6
            || parts
                .iter()
                .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad("expected six hex pairs separated by `:`"));
        }
        let mut bytes = [0u8; 6];
        for (b, p) in bytes.iter_mut().zip(&parts) {
            *b = u8::from_str_radix(p, 16).map_err(|_| bad("not hexadecimal"))?;
        }
        if bytes[0] & 1 == 1 {
            return Err(bad("a multicast address cannot be a NIC's address"));
        }
        if bytes == [0; 6] {
            return Err(bad("the all-zero address is not usable"));
        }
        Ok(MacAddr(bytes))
    }

    /// A random address with Ganeti's `aa:00:00` prefix.
    pub fn generate() -> MacAddr {
        let r = Uuid::new_v4();
        let r = r.as_bytes();
        let [a, b, c] = GENERATED_MAC_PREFIX;
        MacAddr([a, b, c, r[0], r[1], r[2]])
    }

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a disk's data is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskSource {
    /// A block device or file opened by the host kernel (`access: kernelspace`).
    Path(PathBuf),
    /// A URI QEMU opens itself (`access: userspace`), e.g. `rbd:pool/image`.
    Uri(String),
}

/// Whether the guest may write to a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// Read-write.
    Rw,
    /// Read-only.
    Ro,
}

/// One disk of an instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpec {
    uuid: Uuid,
    name: Option<String>,
    source: DiskSource,
    mode: DiskMode,
    size_mib: Option<u64>,
    dev_type: &'static str,
}

impl DiskSpec {
    /// The disk's UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
    /// Its name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// Where its data is.
    pub fn source(&self) -> &DiskSource {
        &self.source
    }
    /// Read-write or read-only.
    pub fn mode(&self) -> DiskMode {
        self.mode
    }
    /// Its size in MiB, when given.
    pub fn size_mib(&self) -> Option<u64> {
        self.size_mib
    }

    /// Ganeti's disk template (`plain` when not given).
    pub fn dev_type(&self) -> &'static str {
        self.dev_type
    }

    /// Whether the disk lives on storage other nodes see at the same time
    /// (Ganeti's `DTS_EXT_MIRROR` without `rbd`): Ganeti forces its cache
    /// to `none` so a migration cannot corrupt it.
    pub fn shared_storage(&self) -> bool {
        matches!(
            self.dev_type,
            "blockdev" | "ext" | "sharedfile" | "gluster" | "diskless"
        )
    }
}

/// How a NIC reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NicMode {
    /// The tap joins the bridge named by `link`.
    Bridged,
    /// The host routes the NIC's IP to the tap, in the table named by `link`.
    Routed,
    /// The tap joins the Open vSwitch named by `link`.
    Openvswitch,
    /// An external provider sets the tap up (the node's NIC script, as
    /// Ganeti's `network/ext/` scripts).
    Ext,
}

/// One NIC of an instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NicSpec {
    uuid: Uuid,
    mac: MacAddr,
    name: Option<String>,
    mode: NicMode,
    link: String,
    vlan: String,
    ip: Option<IpAddr>,
}

impl NicSpec {
    /// The NIC's UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
    /// Its MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }
    /// Its name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// How it reaches the network.
    pub fn mode(&self) -> NicMode {
        self.mode
    }
    /// The bridge, routing table or switch, per mode.
    pub fn link(&self) -> &str {
        &self.link
    }
    /// VLAN specification as Ganeti spells it (`.100`, `:100,200`), or empty.
    pub fn vlan(&self) -> &str {
        &self.vlan
    }
    /// Its IP address, if any.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

/// A validated instance spec.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstanceSpec {
    name: InstanceName,
    uuid: Uuid,
    memory: u64,
    min_memory: u64,
    vcpus: u32,
    network_port: Option<u16>,
    #[serde(serialize_with = "serialize_overrides")]
    hvparams: HvParams,
    disks: Vec<DiskSpec>,
    nics: Vec<NicSpec>,
}

fn serialize_overrides<S: serde::Serializer>(p: &HvParams, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&p.overrides(), s)
}

impl InstanceSpec {
    /// The instance's name.
    pub fn name(&self) -> &InstanceName {
        &self.name
    }
    /// Its UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
    /// Maximum memory in MiB (Ganeti's maxmem).
    pub fn memory(&self) -> u64 {
        self.memory
    }
    /// Minimum memory in MiB (Ganeti's minmem), the balloon target.
    pub fn min_memory(&self) -> u64 {
        self.min_memory
    }
    /// The number of vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }
    /// The VNC/SPICE port, if any.
    pub fn network_port(&self) -> Option<u16> {
        self.network_port
    }
    /// The hvparams, defaults filled in.
    pub fn hvparams(&self) -> &HvParams {
        &self.hvparams
    }
    /// The disks, in order.
    pub fn disks(&self) -> &[DiskSpec] {
        &self.disks
    }
    /// The NICs, in order.
    pub fn nics(&self) -> &[NicSpec] {
        &self.nics
    }

    /// Reads a spec file; the format follows the extension (`.json` or `.toml`).
    pub fn load(path: &Path) -> Result<Loaded, SpecError> {
        let value = InstanceSpec::load_value(path)?;
        InstanceSpec::from_value(&value).map_err(SpecError::Invalid)
    }

    /// Reads a spec file (JSON or TOML, by extension) as JSON, without
    /// checking it.
    pub fn load_value(path: &Path) -> Result<Json, SpecError> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("toml") => Format::Toml,
            _ => {
                return Err(SpecError::UnknownFormat {
                    path: path.to_owned(),
                });
            }
        };
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value = match format {
            Format::Json => serde_json::from_str::<Json>(&text).map_err(|e| e.to_string()),
            Format::Toml => toml::from_str::<Json>(&text).map_err(|e| e.to_string()),
        }
        .map_err(|message| SpecError::Syntax {
            path: path.to_owned(),
            message,
        })?;
        Ok(value)
    }

    /// Builds a spec from parsed JSON (or TOML converted to JSON).
    pub fn from_value(value: &Json) -> Result<Loaded, SpecProblems> {
        let mut cx = Cx::default();
        let spec = cx.instance(value);
        match spec {
            Some(spec) if cx.problems.is_empty() => Ok(Loaded {
                spec,
                generated: cx.generated,
            }),
            _ => Err(SpecProblems(cx.problems)),
        }
    }
}

enum Format {
    Json,
    Toml,
}

/// A parsed spec and what was generated for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The spec.
    pub spec: InstanceSpec,
    /// Values that were missing and generated, in field order.
    pub generated: Vec<Generated>,
}

/// A value the spec left out and that was generated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Generated {
    /// The field, e.g. `nics[0].mac`.
    pub field: String,
    /// The generated value.
    pub value: String,
}

/// One problem with a spec field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The field, e.g. `disks[1].uuid` or `hvparams.acpi`.
    pub field: String,
    /// What is wrong.
    pub reason: SpecReason,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The reasons a spec field can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecReason {
    /// Not a field of the spec.
    #[error("unknown field{}", suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownField {
        /// The closest known field name.
        suggestion: Option<&'static str>,
    },
    /// A required field is absent.
    #[error("is required")]
    Missing,
    /// The JSON type is wrong.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// An unsafe instance name.
    #[error("`{name}` is not a usable instance name: it {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why not.
        why: &'static str,
    },
    /// Not a UUID.
    #[error("`{0}` is not a UUID")]
    BadUuid(String),
    /// The same UUID twice.
    #[error("duplicate UUID {uuid}, also used by {first}")]
    DuplicateUuid {
        /// The UUID.
        uuid: Uuid,
        /// The field that used it first.
        first: String,
    },
    /// Two devices whose UUIDs share the first three groups: Ganeti's QEMU
    /// id keeps only those, so QEMU would see one id twice.
    #[error(
        "its QEMU id {id} is also {first}'s (QEMU ids keep only the first three groups of a UUID)"
    )]
    DeviceIdCollision {
        /// The id.
        id: String,
        /// The field of the first device with it.
        first: String,
    },
    /// Not a usable MAC address.
    #[error("`{value}` is not a usable MAC address: {why}")]
    BadMac {
        /// The value.
        value: String,
        /// Why not.
        why: &'static str,
    },
    /// The same value twice where values must be unique.
    #[error("duplicate {what} `{value}`, also used by {first}")]
    Duplicate {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
        /// The field that used it first.
        first: String,
    },
    /// An integer outside its range.
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange {
        /// The value.
        value: i64,
        /// Lowest accepted.
        min: i64,
        /// Highest accepted.
        max: i64,
    },
    /// `min_memory` above `memory`.
    #[error("{min} MiB is more than memory ({max} MiB)")]
    MinAboveMax {
        /// min_memory.
        min: u64,
        /// memory.
        max: u64,
    },
    /// A string outside its set.
    #[error("`{value}` is not one of: {}", allowed.join(", "))]
    NotInSet {
        /// The value.
        value: String,
        /// The allowed values.
        allowed: &'static [&'static str],
    },
    /// A disk with both `path` and `uri`, or neither.
    #[error("a disk needs exactly one of `path` (kernelspace) and `uri` (userspace)")]
    DiskSource,
    /// `access` does not match the source given.
    #[error("`{access}` access needs `{needs}`")]
    AccessMismatch {
        /// The access given.
        access: &'static str,
        /// The source field it needs.
        needs: &'static str,
    },
    /// Not a normalized absolute path.
    #[error("`{0}` is not a normalized absolute path")]
    NotAbsolutePath(String),
    /// Not a URI of the form `scheme:rest`.
    #[error("`{0}` is not a storage URI such as `rbd:pool/image` or `gluster://host/volume/path`")]
    BadUri(String),
    /// Not an IP address.
    #[error("`{0}` is not an IP address")]
    BadIp(String),
    /// A malformed VLAN.
    #[error("`{0}` is not a VLAN specification such as `.100` or `:100,200`")]
    BadVlan(String),
    /// A required-by-another-field value is absent.
    #[error("is required when {0}")]
    RequiredBy(&'static str),
    /// VNC display number underflow.
    #[error("{0} gives no VNC display: VNC ports start above 5900")]
    VncPortTooLow(u16),
    /// A per-vCPU CPU mask of the wrong length.
    #[error("has {entries} per-vCPU entries but the instance has {vcpus} vCPUs")]
    CpuMaskEntries {
        /// Entries in the mask.
        entries: usize,
        /// vcpus.
        vcpus: u32,
    },
    /// `boot_order` names a kind of device the instance does not have.
    #[error("booting from `{0}` needs {1}")]
    NoBootDevice(&'static str, &'static str),
    /// An hvparam problem.
    #[error("{0}")]
    HvParam(hvparams::ProblemKind),
}

/// Every problem with a spec, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecProblems(pub Vec<SpecProblem>);

impl fmt::Display for SpecProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a spec file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The extension is neither `.json` nor `.toml`.
    #[error("{}: a spec file must end in .json or .toml", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON/TOML.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The spec is invalid.
    #[error("invalid instance spec: {0}")]
    Invalid(SpecProblems),
}

const TOP_FIELDS: &[&str] = &[
    "name",
    "uuid",
    "memory",
    "min_memory",
    "vcpus",
    "network_port",
    "hvparams",
    "disks",
    "nics",
];
const DISK_FIELDS: &[&str] = &[
    "uuid", "name", "path", "uri", "access", "mode", "size", "dev_type",
];

/// Ganeti's disk templates (`dev_type`).
pub const DEV_TYPES: &[&str] = &[
    "plain",
    "drbd",
    "file",
    "sharedfile",
    "blockdev",
    "rbd",
    "ext",
    "gluster",
    "diskless",
];
const NIC_FIELDS: &[&str] = &["uuid", "mac", "name", "mode", "link", "vlan", "ip"];
const DISK_ACCESS: &[&str] = &["kernelspace", "userspace"];
const DISK_MODES: &[&str] = &["rw", "ro"];
const NIC_MODES: &[&str] = &["bridged", "routed", "openvswitch", "ext"];

/// The JSON Schema (draft 2020-12) of an instance spec, made from the
/// parser's own field lists, allowed values and bounds, and from every
/// hvparam's definition: editors can check a spec as it is typed. The
/// parser stays the judge (cross-field rules, host facts).
pub fn spec_schema() -> Json {
    use serde_json::json;
    let hv: serde_json::Map<String, Json> = crate::hvparams::params()
        .iter()
        .map(|p| {
            let mut s = match p.kind() {
                crate::hvparams::Kind::Bool => json!({"type": "boolean"}),
                crate::hvparams::Kind::Int => json!({"type": "integer"}),
                crate::hvparams::Kind::String => json!({"type": "string"}),
            };
            if !p.allowed().is_empty() && p.kind() == crate::hvparams::Kind::String {
                let mut values: Vec<&str> = p.allowed().to_vec();
                if !p.required() {
                    values.push("");
                }
                s["enum"] = json!(values);
            }
            s["default"] = p.default_value();
            s["description"] = json!(p.doc());
            (p.name().to_owned(), s)
        })
        .collect();
    let uuid = json!({"type": "string", "format": "uuid"});
    let disk = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "uuid": uuid,
            "name": {"type": "string"},
            "path": {"type": "string", "description": "a block device or file (kernelspace access)"},
            "uri": {"type": "string", "description": "a storage URI QEMU opens itself (userspace access)"},
            "access": {"enum": DISK_ACCESS},
            "mode": {"enum": DISK_MODES, "default": "rw"},
            "size": {"type": "integer", "minimum": 1, "description": "MiB"},
            "dev_type": {"enum": DEV_TYPES},
        },
        "oneOf": [{"required": ["path"]}, {"required": ["uri"]}],
    });
    let nic = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "uuid": uuid,
            "mac": {"type": "string", "pattern": "^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"},
            "name": {"type": "string"},
            "mode": {"enum": NIC_MODES, "default": "bridged"},
            "link": {"type": "string"},
            "vlan": {"type": "string"},
            "ip": {"type": "string"},
        },
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kvm-hypervisor instance spec",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "memory", "vcpus"],
        "properties": {
            "name": {"type": "string", "maxLength": crate::state::MAX_NAME_LEN},
            "uuid": uuid,
            "memory": {"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "MiB"},
            "min_memory": {"type": "integer", "minimum": 1, "description": "MiB, the balloon's floor"},
            "vcpus": {"type": "integer", "minimum": 1, "maximum": 1024},
            "network_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "hvparams": {"type": "object", "additionalProperties": false, "properties": hv},
            "disks": {"type": "array", "items": disk},
            "nics": {"type": "array", "items": nic},
        },
    })
}

fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) => format!("string {s:?}"),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

/// Parsing context: collects problems and generated values.
#[derive(Default)]
struct Cx {
    problems: Vec<SpecProblem>,
    generated: Vec<Generated>,
    uuids: BTreeMap<Uuid, String>,
    device_ids: BTreeMap<String, String>,
}

impl Cx {
    fn push(&mut self, field: impl Into<String>, reason: SpecReason) {
        self.problems.push(SpecProblem {
            field: field.into(),
            reason,
        });
    }

    fn object<'v>(
        &mut self,
        field: &str,
        v: &'v Json,
        known: &'static [&'static str],
    ) -> Option<&'v Map<String, Json>> {
        let Some(obj) = v.as_object() else {
            self.push(
                field,
                SpecReason::WrongType {
                    expected: "an object",
                    found: describe(v),
                },
            );
            return None;
        };
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                let suggestion = known
                    .iter()
                    .map(|k| (strsim::normalized_damerau_levenshtein(key, k), *k))
                    .filter(|(s, _)| *s >= 0.6)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, k)| k);
                self.push(join(field, key), SpecReason::UnknownField { suggestion });
            }
        }
        Some(obj)
    }

    fn string<'v>(&mut self, field: &str, v: Option<&'v Json>, required: bool) -> Option<&'v str> {
        match v {
            None | Some(Json::Null) => {
                if required {
                    self.push(field, SpecReason::Missing);
                }
                None
            }
            Some(Json::String(s)) => Some(s),
            Some(other) => {
                self.push(
                    field,
                    SpecReason::WrongType {
                        expected: "a string",
                        found: describe(other),
                    },
                );
                None
            }
        }
    }

    fn int(
        &mut self,
        field: &str,
        v: Option<&Json>,
        required: bool,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        match v {
            None | Some(Json::Null) => {
                if required {
                    self.push(field, SpecReason::Missing);
                }
                None
            }
            Some(j) => match j.as_i64() {
                Some(n) if (min..=max).contains(&n) => Some(n),
                Some(n) => {
                    self.push(field, SpecReason::OutOfRange { value: n, min, max });
                    None
                }
                None => {
                    self.push(
                        field,
                        SpecReason::WrongType {
                            expected: "an integer",
                            found: describe(j),
                        },
                    );
                    None
                }
            },
        }
    }

    fn choice<T: Copy>(
        &mut self,
        field: &str,
        v: Option<&Json>,
        options: &[(&'static str, T)],
        allowed: &'static [&'static str],
    ) -> Option<T> {
        let s = self.string(field, v, false)?;
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, t)) => Some(*t),
            None => {
                self.push(
                    field,
                    SpecReason::NotInSet {
                        value: s.to_owned(),
                        allowed,
                    },
                );
                None
            }
        }
    }

    fn uuid(&mut self, field: &str, v: Option<&Json>) -> Option<Uuid> {
        let uuid = match self.string(&join(field, "uuid"), v, false) {
            Some(s) => match Uuid::try_parse(s) {
                Ok(u) if s.len() == 36 => u,
                _ => {
                    self.push(join(field, "uuid"), SpecReason::BadUuid(s.to_owned()));
                    return None;
                }
            },
            None if v.is_some_and(|v| !v.is_null()) => return None,
            None => {
                let u = Uuid::new_v4();
                self.generated.push(Generated {
                    field: join(field, "uuid"),
                    value: u.to_string(),
                });
                u
            }
        };
        let here = join(field, "uuid");
        if let Some(first) = self.uuids.get(&uuid) {
            let first = first.clone();
            self.push(here, SpecReason::DuplicateUuid { uuid, first });
            return Some(uuid);
        }
        self.uuids.insert(uuid, here.clone());
        // Ganeti's QEMU ids keep only the first three groups of a UUID.
        let kind = if field.starts_with("disks[") {
            Some("disk")
        } else if field.starts_with("nics[") {
            Some("nic")
        } else {
            None
        };
        if let Some(kind) = kind {
            let text = uuid.hyphenated().to_string();
            let id = format!("{kind}-{}", &text[..18]);
            match self.device_ids.get(&id) {
                Some(first) => {
                    let first = first.clone();
                    self.push(here, SpecReason::DeviceIdCollision { id, first });
                }
                None => {
                    self.device_ids.insert(id, here);
                }
            }
        }
        Some(uuid)
    }

    fn instance(&mut self, v: &Json) -> Option<InstanceSpec> {
        let obj = self.object("", v, TOP_FIELDS)?;
        let name = self
            .string("name", obj.get("name"), true)
            .and_then(|n| InstanceName::new(n).map_err(|r| self.push("name", r)).ok());
        let uuid = self.uuid("", obj.get("uuid"));
        let memory = self.int("memory", obj.get("memory"), true, 1, i64::from(u32::MAX));
        let min_memory = self.int(
            "min_memory",
            obj.get("min_memory"),
            false,
            1,
            i64::from(u32::MAX),
        );
        let vcpus = self.int("vcpus", obj.get("vcpus"), true, 1, 1024);
        let network_port = self.int("network_port", obj.get("network_port"), false, 1, 65535);
        let hvparams = self.hvparams(obj.get("hvparams"));
        let disks = self.list("disks", obj.get("disks"), Cx::disk);
        let nics = self.list("nics", obj.get("nics"), Cx::nic);

        let (memory, vcpus) = (memory? as u64, vcpus? as u32);
        let min_memory = min_memory.map_or(memory, |m| m as u64);
        if min_memory > memory {
            self.push(
                "min_memory",
                SpecReason::MinAboveMax {
                    min: min_memory,
                    max: memory,
                },
            );
        }
        let network_port = network_port.map(|p| p as u16);
        let hv = hvparams?;
        self.cross_checks(&hv, vcpus, network_port, disks.as_deref(), nics.as_deref());
        Some(InstanceSpec {
            name: name?,
            uuid: uuid?,
            memory,
            min_memory,
            vcpus,
            network_port,
            hvparams: hv,
            disks: disks?,
            nics: nics?,
        })
    }

    fn hvparams(&mut self, v: Option<&Json>) -> Option<HvParams> {
        let empty = Map::new();
        let map = match v {
            None | Some(Json::Null) => &empty,
            Some(Json::Object(m)) => m,
            Some(other) => {
                self.push(
                    "hvparams",
                    SpecReason::WrongType {
                        expected: "an object",
                        found: describe(other),
                    },
                );
                return None;
            }
        };
        let (params, problems) = HvParams::parse_and_check(map);
        for p in problems {
            self.push(
                format!("hvparams.{}", p.param()),
                SpecReason::HvParam(p.kind().clone()),
            );
        }
        Some(params)
    }

    fn list<T>(
        &mut self,
        field: &str,
        v: Option<&Json>,
        item: fn(&mut Cx, &str, &Json) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = match v {
            None | Some(Json::Null) => return Some(Vec::new()),
            Some(Json::Array(items)) => items,
            Some(other) => {
                self.push(
                    field,
                    SpecReason::WrongType {
                        expected: "an array",
                        found: describe(other),
                    },
                );
                return None;
            }
        };
        let parsed: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, it)| item(self, &format!("{field}[{i}]"), it))
            .collect();
        parsed.into_iter().collect()
    }

    fn disk(&mut self, field: &str, v: &Json) -> Option<DiskSpec> {
        let obj = self.object(field, v, DISK_FIELDS)?;
        let uuid = self.uuid(field, obj.get("uuid"));
        let name = self
            .string(&join(field, "name"), obj.get("name"), false)
            .map(str::to_owned);
        let path = self.string(&join(field, "path"), obj.get("path"), false);
        let uri = self.string(&join(field, "uri"), obj.get("uri"), false);
        let access = self.choice(
            &join(field, "access"),
            obj.get("access"),
            &[("kernelspace", "kernelspace"), ("userspace", "userspace")],
            DISK_ACCESS,
        );
        let mode = self
            .choice(
                &join(field, "mode"),
                obj.get("mode"),
                &[("rw", DiskMode::Rw), ("ro", DiskMode::Ro)],
                DISK_MODES,
            )
            .unwrap_or(DiskMode::Rw);
        let size_mib = self
            .int(&join(field, "size"), obj.get("size"), false, 1, i64::MAX)
            .map(|s| s as u64);
        let dev_types: Vec<(&'static str, &'static str)> =
            DEV_TYPES.iter().map(|t| (*t, *t)).collect();
        let dev_type = self
            .choice(
                &join(field, "dev_type"),
                obj.get("dev_type"),
                &dev_types,
                DEV_TYPES,
            )
            .unwrap_or("plain");
        let source = match (path, uri) {
            (Some(p), None) => {
                if access == Some("userspace") {
                    self.push(
                        join(field, "access"),
                        SpecReason::AccessMismatch {
                            access: "userspace",
                            needs: "uri",
                        },
                    );
                }
                if !hvparams::is_norm_abs_path(p) {
                    self.push(
                        join(field, "path"),
                        SpecReason::NotAbsolutePath(p.to_owned()),
                    );
                    return None;
                }
                DiskSource::Path(PathBuf::from(p))
            }
            (None, Some(u)) => {
                if access == Some("kernelspace") {
                    self.push(
                        join(field, "access"),
                        SpecReason::AccessMismatch {
                            access: "kernelspace",
                            needs: "path",
                        },
                    );
                }
                let scheme_ok = u.split_once(':').is_some_and(|(scheme, rest)| {
                    !scheme.is_empty()
                        && !rest.is_empty()
                        && scheme
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
                });
                if !scheme_ok {
                    self.push(join(field, "uri"), SpecReason::BadUri(u.to_owned()));
                    return None;
                }
                DiskSource::Uri(u.to_owned())
            }
            _ => {
                self.push(field, SpecReason::DiskSource);
                return None;
            }
        };
        Some(DiskSpec {
            uuid: uuid?,
            name,
            source,
            mode,
            size_mib,
            dev_type,
        })
    }

    fn nic(&mut self, field: &str, v: &Json) -> Option<NicSpec> {
        let obj = self.object(field, v, NIC_FIELDS)?;
        let uuid = self.uuid(field, obj.get("uuid"));
        let mac = match self.string(&join(field, "mac"), obj.get("mac"), false) {
            Some(s) => MacAddr::parse(s)
                .map_err(|r| self.push(join(field, "mac"), r))
                .ok(),
            None if obj.get("mac").is_some_and(|v| !v.is_null()) => None,
            None => {
                let mac = MacAddr::generate();
                self.generated.push(Generated {
                    field: join(field, "mac"),
                    value: mac.to_string(),
                });
                Some(mac)
            }
        };
        let name = self
            .string(&join(field, "name"), obj.get("name"), false)
            .map(str::to_owned);
        let mode = self
            .choice(
                &join(field, "mode"),
                obj.get("mode"),
                &[
                    ("bridged", NicMode::Bridged),
                    ("routed", NicMode::Routed),
                    ("openvswitch", NicMode::Openvswitch),
                    ("ext", NicMode::Ext),
                ],
                NIC_MODES,
            )
            .unwrap_or(NicMode::Bridged);
        let link = self
            .string(&join(field, "link"), obj.get("link"), false)
            .unwrap_or_default()
            .to_owned();
        if link.is_empty() && mode != NicMode::Routed {
            self.push(
                join(field, "link"),
                SpecReason::RequiredBy(if mode == NicMode::Bridged {
                    "mode is `bridged`"
                } else {
                    "mode is `openvswitch`"
                }),
            );
        }
        let vlan = self
            .string(&join(field, "vlan"), obj.get("vlan"), false)
            .unwrap_or_default()
            .to_owned();
        if !vlan.is_empty() && !is_vlan(&vlan) {
            self.push(join(field, "vlan"), SpecReason::BadVlan(vlan.clone()));
        }
        let ip = match self.string(&join(field, "ip"), obj.get("ip"), false) {
            Some("") | None => None,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.push(join(field, "ip"), SpecReason::BadIp(s.to_owned()));
                    None
                }
            },
        };
        if mode == NicMode::Routed && ip.is_none() {
            self.push(
                join(field, "ip"),
                SpecReason::RequiredBy("mode is `routed`"),
            );
        }
        Some(NicSpec {
            uuid: uuid?,
            mac: mac?,
            name,
            mode,
            link,
            vlan,
            ip,
        })
    }

    fn cross_checks(
        &mut self,
        hv: &HvParams,
        vcpus: u32,
        port: Option<u16>,
        disks: Option<&[DiskSpec]>,
        nics: Option<&[NicSpec]>,
    ) {
        if let Some(hvparams::CpuMask::PerVcpu(entries)) = hv.cpu_mask_parsed()
            && entries.len() != vcpus as usize
        {
            self.push(
                "hvparams.cpu_mask",
                SpecReason::CpuMaskEntries {
                    entries: entries.len(),
                    vcpus,
                },
            );
        }
        let vnc = hv.vnc_bind_address();
        let needs_port = (!vnc.is_empty() && !vnc.starts_with('/')) || !hv.spice_bind().is_empty();
        match port {
            None if needs_port => self.push(
                "network_port",
                SpecReason::RequiredBy("VNC or SPICE listens on a network address"),
            ),
            Some(p) if !vnc.is_empty() && !vnc.starts_with('/') && p <= 5900 => {
                self.push("network_port", SpecReason::VncPortTooLow(p))
            }
            _ => {}
        }
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (i, d) in disks.unwrap_or_default().iter().enumerate() {
            if let Some(n) = d.name() {
                self.unique(&mut names, "disk name", n, format!("disks[{i}].name"));
            }
        }
        let mut nic_names: BTreeMap<String, String> = BTreeMap::new();
        let mut macs: BTreeMap<String, String> = BTreeMap::new();
        let mut ips: BTreeMap<String, String> = BTreeMap::new();
        for (i, n) in nics.unwrap_or_default().iter().enumerate() {
            if let Some(ip) = n.ip() {
                self.unique(
                    &mut ips,
                    "IP address",
                    &ip.to_string(),
                    format!("nics[{i}].ip"),
                );
            }
            if let Some(name) = n.name() {
                self.unique(&mut nic_names, "NIC name", name, format!("nics[{i}].name"));
            }
            self.unique(
                &mut macs,
                "MAC address",
                &n.mac().to_string(),
                format!("nics[{i}].mac"),
            );
        }
        let bootable_nic = nics.is_some_and(|n| !n.is_empty());
        if hv.kernel_path().is_empty()
            && hv.boot_order() == hvparams::BootOrder::Network
            && !bootable_nic
        {
            self.push(
                "hvparams.boot_order",
                SpecReason::NoBootDevice("network", "a NIC"),
            );
        }
    }

    fn unique(
        &mut self,
        seen: &mut BTreeMap<String, String>,
        what: &'static str,
        value: &str,
        field: String,
    ) {
        if let Some(first) = seen.get(value) {
            let first = first.clone();
            self.push(
                field,
                SpecReason::Duplicate {
                    what,
                    value: value.to_owned(),
                    first,
                },
            );
        } else {
            seen.insert(value.to_owned(), field);
        }
    }
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

fn is_vlan(v: &str) -> bool {
    let body = v.strip_prefix(['.', ':']).unwrap_or(v);
    !body.is_empty()
        && body.split([',', ':']).all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u16>().is_ok_and(|id| (1..4095).contains(&id))
        })
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    fn keys(v: &Json) -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_schema_has_the_parsers_fields_and_every_hvparam() {
        let s = spec_schema();
        assert_eq!(keys(&s["properties"]), sorted(TOP_FIELDS));
        assert_eq!(
            keys(&s["properties"]["disks"]["items"]["properties"]),
            sorted(DISK_FIELDS)
        );
        assert_eq!(
            keys(&s["properties"]["nics"]["items"]["properties"]),
            sorted(NIC_FIELDS)
        );
        let names: Vec<&str> = crate::hvparams::params().iter().map(|p| p.name()).collect();
        assert_eq!(
            keys(&s["properties"]["hvparams"]["properties"]),
            sorted(&names)
        );
    }

    #[test]
    fn every_value_the_schema_allows_for_an_hvparam_the_parser_takes() {
        let s = spec_schema();
        let params = s["properties"]["hvparams"]["properties"].clone();
        for (name, p) in params.as_object().into_iter().flatten() {
            for value in p["enum"].as_array().into_iter().flatten() {
                let mut map = serde_json::Map::new();
                map.insert(name.clone(), value.clone());
                let (_, problems) = crate::hvparams::HvParams::parse(&map);
                assert!(
                    problems.iter().all(|pr| pr.param() != name),
                    "{name} = {value}: {problems:?}"
                );
            }
            // The default is a value of its declared type.
            let ok = match p["type"].as_str() {
                Some("boolean") => p["default"].is_boolean(),
                Some("integer") => p["default"].is_i64() || p["default"].is_u64(),
                _ => p["default"].is_string(),
            };
            assert!(ok, "{name}'s default {}", p["default"]);
        }
    }
}
