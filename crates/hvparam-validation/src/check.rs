//! `check`: syntax and cross-parameter rules that need nothing but the values
//! (Ganeti's `CheckParameterSyntax` and `check_*`).

use std::net::IpAddr;

use crate::enums::*;
use crate::params::{HvParams, Rule, params};
use crate::problem::{Problem, ProblemKind};
use crate::{CpuMask, Kind};

/// The serial speeds Ganeti accepts (`VALID_SERIAL_SPEEDS`).
pub const SERIAL_SPEEDS: &[u32] = &[
    75, 110, 300, 600, 1200, 1800, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200,
    230400, 345600, 460800,
];

/// The parameters that need `spice_bind` (Ganeti's `_SPICE_ADDITIONAL_PARAMS`).
const SPICE_ADDITIONAL: &[&str] = &[
    "spice_ip_version",
    "spice_password_file",
    "spice_image_compression",
    "spice_jpeg_wan_compression",
    "spice_zlib_glz_wan_compression",
    "spice_streaming_video",
    "spice_use_tls",
];

/// Whether `p` is what Python's `os.path.normpath(p) == p and isabs(p)`
/// accepts (Ganeti's `IsNormAbsPath`).
pub fn is_norm_abs_path(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    !p.contains('\0')
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

pub(crate) fn is_url(p: &str) -> bool {
    ["http://", "https://", "ftp://", "ftps://"]
        .iter()
        .any(|scheme| p.starts_with(scheme))
}

/// Whether `name` can be a Linux network interface name (`dev_valid_name`).
pub(crate) fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

fn is_migration_cap(item: &str) -> bool {
    !item.is_empty()
        && item
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl HvParams {
    /// Syntax of every parameter and every cross-parameter rule, without
    /// looking at the host. Returns every problem, sorted.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for def in params() {
            let Some(value) = self.get_json(def.name()) else {
                continue;
            };
            if def.kind() == Kind::String {
                let s = value.as_str().unwrap_or_default();
                if s.is_empty() {
                    if def.required() {
                        out.push(Problem::new(def.name(), ProblemKind::Required));
                    }
                    continue;
                }
                if let Some(kind) = check_str(def.rule(), s) {
                    out.push(Problem::new(def.name(), kind));
                }
            } else if def.kind() == Kind::Int
                && let Some(kind) = value.as_i64().and_then(|v| check_int(def.rule(), v))
            {
                out.push(Problem::new(def.name(), kind));
            }
        }
        self.check_never_starts(&mut out);
        self.check_boot(&mut out);
        self.check_security_model(&mut out);
        self.check_console(&mut out);
        self.check_vnc(&mut out);
        self.check_spice(&mut out);
        self.check_disk_cache(&mut out);
        crate::problem::Problems::sorted(out).into_vec()
    }

    fn check_never_starts(&self, out: &mut Vec<Problem>) {
        if self.disk_type().qemu_driver().is_none() {
            out.push(Problem::new(
                "disk_type",
                ProblemKind::NeverStarts {
                    value: self.disk_type().to_string(),
                    reason: "QEMU has no disk device of that name",
                },
            ));
        }
        if let Some(t) = self.cdrom_disk_type()
            && !matches!(t, DiskType::Ide | DiskType::Paravirtual | DiskType::ScsiCd)
        {
            out.push(Problem::new(
                "cdrom_disk_type",
                ProblemKind::NeverStarts {
                    value: t.to_string(),
                    reason: "a CD-ROM can only be ide, paravirtual or scsi-cd",
                },
            ));
        }
    }

    fn check_boot(&self, out: &mut Vec<Problem>) {
        let no_kernel = self.kernel_path().is_empty();
        if no_kernel && self.boot_order() == BootOrder::Cdrom && self.cdrom_image_path().is_empty()
        {
            out.push(Problem::new(
                "boot_order",
                ProblemKind::BootDeviceMissing {
                    device: "cdrom",
                    needs: "cdrom_image_path",
                },
            ));
        }
        if no_kernel
            && self.boot_order() == BootOrder::Floppy
            && self.floppy_image_path().is_empty()
        {
            out.push(Problem::new(
                "boot_order",
                ProblemKind::BootDeviceMissing {
                    device: "floppy",
                    needs: "floppy_image_path",
                },
            ));
        }
        if !no_kernel && self.root_path().is_empty() {
            out.push(Problem::new(
                "root_path",
                ProblemKind::RequiredBy {
                    because: "kernel_path is set",
                },
            ));
        }
    }

    fn check_security_model(&self, out: &mut Vec<Problem>) {
        match self.security_model() {
            SecurityModel::User if self.security_domain().is_empty() => out.push(Problem::new(
                "security_domain",
                ProblemKind::RequiredBy {
                    because: "security_model is `user`",
                },
            )),
            SecurityModel::None | SecurityModel::Pool if !self.security_domain().is_empty() => out
                .push(Problem::new(
                    "security_domain",
                    ProblemKind::ForbiddenBy {
                        because: "security_model is `none` or `pool`",
                    },
                )),
            _ => {}
        }
    }

    fn check_console(&self, out: &mut Vec<Problem>) {
        let speed = self.serial_speed();
        let valid = u32::try_from(speed).is_ok_and(|s| SERIAL_SPEEDS.contains(&s));
        if self.serial_console() && !valid {
            out.push(Problem::new(
                "serial_speed",
                ProblemKind::SerialSpeed { value: speed },
            ));
        }
    }

    fn check_vnc(&self, out: &mut Vec<Problem>) {
        if self.vnc_x509_verify() && self.vnc_x509_path().is_empty() {
            out.push(Problem::new(
                "vnc_x509_path",
                ProblemKind::RequiredBy {
                    because: "vnc_x509_verify is true",
                },
            ));
        }
    }

    fn check_spice(&self, out: &mut Vec<Problem>) {
        if self.spice_bind().is_empty() {
            for name in SPICE_ADDITIONAL {
                let set = self.get_json(name).is_some_and(|v| match v {
                    serde_json::Value::Bool(b) => b,
                    serde_json::Value::Number(n) => n.as_i64() != Some(0),
                    serde_json::Value::String(s) => !s.is_empty(),
                    _ => false,
                });
                if set {
                    out.push(Problem::new(
                        name,
                        ProblemKind::ForbiddenBy {
                            because: "spice_bind is empty",
                        },
                    ));
                }
            }
            return;
        }
        if !self.vnc_bind_address().is_empty() {
            out.push(Problem::new(
                "spice_bind",
                ProblemKind::ForbiddenBy {
                    because: "vnc_bind_address is set (VNC and SPICE are exclusive)",
                },
            ));
        }
        let version = self.spice_ip_version();
        if let Ok(ip) = self.spice_bind().parse::<IpAddr>() {
            let family = if ip.is_ipv4() { 4 } else { 6 };
            if version != 0 && version != i64::from(family) {
                out.push(Problem::new(
                    "spice_ip_version",
                    ProblemKind::SpiceIpFamily {
                        address: self.spice_bind().to_owned(),
                        family,
                        version,
                    },
                ));
            }
        }
    }

    fn check_disk_cache(&self, out: &mut Vec<Problem>) {
        if self.disk_aio() == Some(DiskAio::Native) && self.disk_cache() != DiskCache::None {
            out.push(Problem::new(
                "disk_cache",
                ProblemKind::ForbiddenBy {
                    because: "disk_aio is `native`, which needs disk_cache `none`",
                },
            ));
        }
    }

    /// The parsed `cpu_mask`; `None` when it is malformed (see [`HvParams::check`]).
    pub fn cpu_mask_parsed(&self) -> Option<CpuMask> {
        CpuMask::parse(self.cpu_mask()).ok()
    }

    /// `usb_devices` split into device names, on commas and whitespace alike.
    pub fn usb_device_list(&self) -> Vec<&str> {
        self.usb_devices()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The QEMU device driver of each `usb_devices` item: Ganeti's short
    /// names (`tablet`, `mouse`, `keyboard`) mapped, others as written.
    pub fn usb_device_drivers(&self) -> Vec<&str> {
        self.usb_device_list()
            .into_iter()
            .map(|item| match item {
                "tablet" => "usb-tablet",
                "mouse" => "usb-mouse",
                "keyboard" => "usb-kbd",
                other => other,
            })
            .collect()
    }

    /// `kvm_extra` split into arguments as by a shell; `None` when malformed.
    pub fn kvm_extra_args(&self) -> Option<Vec<String>> {
        shlex::split(self.kvm_extra())
    }

    /// `migration_caps` split into capability names.
    pub fn migration_cap_list(&self) -> Vec<&str> {
        self.migration_caps()
            .split(':')
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn check_str(rule: Rule, s: &str) -> Option<ProblemKind> {
    let value = || s.to_owned();
    match rule {
        Rule::File | Rule::Dir if !is_norm_abs_path(s) => {
            Some(ProblemKind::NotAbsolutePath { value: value() })
        }
        Rule::FileOrUrl if !is_norm_abs_path(s) && !is_url(s) => {
            Some(ProblemKind::NotPathOrUrl { value: value() })
        }
        Rule::CpuMask => CpuMask::parse(s).err().map(|reason| ProblemKind::CpuMask {
            value: value(),
            reason,
        }),
        Rule::VncBind
            if s.parse::<IpAddr>().is_err() && !is_interface_name(s) && !is_norm_abs_path(s) =>
        {
            Some(ProblemKind::BindAddress {
                value: value(),
                expected: "an IP address, a network interface name or an absolute path",
            })
        }
        Rule::SpiceBind if s.parse::<IpAddr>().is_err() && !is_interface_name(s) => {
            Some(ProblemKind::BindAddress {
                value: value(),
                expected: "an IP address or a network interface name",
            })
        }
        Rule::ShellWords if shlex::split(s).is_none() => {
            Some(ProblemKind::ShellWords { value: value() })
        }
        Rule::MigrationCaps => s
            .split(':')
            .find(|item| !is_migration_cap(item))
            .map(|item| ProblemKind::MigrationCap {
                item: item.to_owned(),
            }),
        _ => None,
    }
}

fn check_int(rule: Rule, v: i64) -> Option<ProblemKind> {
    match rule {
        Rule::Port if !(1..=65535).contains(&v) => Some(ProblemKind::OutOfRange {
            value: v,
            min: 1,
            max: 65535,
        }),
        Rule::NonNegative if v < 0 => Some(ProblemKind::Negative { value: v }),
        Rule::Range { min, max } if !(min..=max).contains(&v) => {
            Some(ProblemKind::OutOfRange { value: v, min, max })
        }
        Rule::IntIn(allowed) if !allowed.contains(&v) => {
            Some(ProblemKind::IntNotInSet { value: v, allowed })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_absolute_paths() {
        assert!(is_norm_abs_path("/"));
        assert!(is_norm_abs_path("/usr/bin/kvm"));
        assert!(!is_norm_abs_path("usr/bin/kvm"));
        assert!(!is_norm_abs_path("/usr//bin"));
        assert!(!is_norm_abs_path("/usr/bin/"));
        assert!(!is_norm_abs_path("/usr/./bin"));
        assert!(!is_norm_abs_path("/usr/../bin"));
        assert!(!is_norm_abs_path(""));
    }

    #[test]
    fn interface_names_follow_the_kernel_rule() {
        assert!(is_interface_name("eth0"));
        assert!(is_interface_name("br-lan.100"));
        assert!(!is_interface_name("averyveryverylong0"));
        assert!(!is_interface_name("eth 0"));
        assert!(!is_interface_name("eth/0"));
        assert!(!is_interface_name(".."));
    }
}
