//! VNC and SPICE options, with bind interfaces resolved to addresses.

use std::net::IpAddr;
use std::path::PathBuf;

use qemu_cmdline::{Opts, host_port};

use super::plan::{PlanEnv, PlanError};
use crate::spec::InstanceSpec;

fn resolve_bind(
    param: &'static str,
    value: &str,
    family: Option<u8>,
    env: &PlanEnv,
) -> Result<String, PlanError> {
    if value.parse::<IpAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let addrs = env.interfaces.get(value).cloned().unwrap_or_default();
    let pick = |v4: bool| {
        addrs
            .iter()
            .find(|a| a.is_ipv4() == v4)
            .map(IpAddr::to_string)
    };
    match family {
        Some(4) => pick(true),
        Some(6) => pick(false),
        _ => pick(true).or_else(|| pick(false)),
    }
    .ok_or_else(|| PlanError::NoBindAddress {
        param,
        interface: value.to_owned(),
    })
}

pub(super) fn vnc_opts(
    spec: &InstanceSpec,
    env: &PlanEnv,
    objects: &mut Vec<Opts>,
) -> Result<Opts, PlanError> {
    let hv = spec.hvparams();
    let bind = hv.vnc_bind_address();
    if bind.starts_with('/') {
        let path = PathBuf::from(bind).join(format!("{}.vnc", spec.name()));
        return Ok(Opts::new(&format!("unix:{}", path.display())));
    }
    let addr = resolve_bind("vnc_bind_address", bind, None, env)?;
    let port = spec
        .network_port()
        .ok_or(PlanError::NoNetworkPort("vnc_bind_address"))?;
    let display = i64::from(port) - 5900;
    // `0.0.0.0` is Ganeti's `:N`: QEMU then listens on IPv4 and IPv6.
    let listen = if addr == "0.0.0.0" {
        format!(":{display}")
    } else {
        host_port(&addr, display)
    };
    let mut o = Opts::new(&listen);
    if hv.vnc_tls() {
        let obj = if hv.vnc_x509_path().is_empty() {
            Opts::new("tls-creds-anon")
                .set("id", "vnctls0")
                .set("endpoint", "server")
        } else {
            Opts::new("tls-creds-x509")
                .set("id", "vnctls0")
                .set("endpoint", "server")
                .set("dir", hv.vnc_x509_path())
                .set("verify-peer", hv.vnc_x509_verify())
        };
        objects.push(obj);
        o.push("tls-creds", "vnctls0");
    }
    if !hv.vnc_password_file().is_empty() {
        o.push("password", true);
    }
    Ok(o)
}

pub(super) fn spice_opts(spec: &InstanceSpec, env: &PlanEnv) -> Result<Opts, PlanError> {
    let hv = spec.hvparams();
    let bind = hv.spice_bind();
    let is_interface = bind.parse::<IpAddr>().is_err();
    let family = match hv.spice_ip_version() {
        4 => Some(4),
        6 => Some(6),
        _ => None,
    };
    let addr = resolve_bind("spice_bind", bind, family, env)?;
    let port = spec
        .network_port()
        .ok_or(PlanError::NoNetworkPort("spice_bind"))?;
    let mut o = Opts::pairs().set("addr", addr.as_str());
    if hv.spice_use_tls() {
        let dir = env
            .spice_cert_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/ganeti"));
        o.push("tls-port", port);
        o.push(
            "x509-cacert-file",
            dir.join("spice-ca.pem").display().to_string(),
        );
        o.push("x509-key-file", dir.join("spice.pem").display().to_string());
        o.push(
            "x509-cert-file",
            dir.join("spice.pem").display().to_string(),
        );
        if !hv.spice_tls_ciphers().is_empty() {
            o.push("tls-ciphers", hv.spice_tls_ciphers());
        }
    } else {
        o.push("port", port);
    }
    if hv.spice_password_file().is_empty() {
        o.push("disable-ticketing", true);
    }
    if is_interface {
        let v6 = addr.contains(':');
        o.push(if v6 { "ipv6" } else { "ipv4" }, true);
    }
    if let Some(c) = hv.spice_image_compression() {
        o.push("image-compression", c.as_str());
    }
    if let Some(c) = hv.spice_jpeg_wan_compression() {
        o.push("jpeg-wan-compression", c.as_str());
    }
    if let Some(c) = hv.spice_zlib_glz_wan_compression() {
        o.push("zlib-glz-wan-compression", c.as_str());
    }
    if let Some(c) = hv.spice_streaming_video() {
        o.push("streaming-video", c.as_str());
    }
    if !hv.spice_playback_compression() {
        o.push("playback-compression", false);
    }
    if !hv.spice_use_vdagent() {
        o.push("agent-mouse", false);
    }
    Ok(o)
}
