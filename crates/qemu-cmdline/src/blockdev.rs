//! `-blockdev` nodes: nested options, flattened to QEMU's dotted keyval form
//! (lists too, commas escaped) or rendered as JSON; and the storage URIs of
//! userspace disks parsed into blockdev `file` nodes.

use serde_json::{Map, Value as Json, json};

use crate::CmdlineError;
use crate::opts::escape;

/// A `-blockdev` node: a JSON object of QEMU's `BlockdevOptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Blockdev(Map<String, Json>);

impl Blockdev {
    /// A node from a JSON object.
    pub fn new(value: Json) -> Result<Blockdev, CmdlineError> {
        match value {
            Json::Object(m) => Ok(Blockdev(m)),
            other => Err(CmdlineError::BadBlockdev(format!("not an object: {other}"))),
        }
    }

    /// The node name.
    pub fn node_name(&self) -> Option<&str> {
        self.0.get("node-name").and_then(Json::as_str)
    }

    /// The options as JSON.
    pub fn as_json(&self) -> &Map<String, Json> {
        &self.0
    }

    /// QEMU's dotted keyval form: nested keys joined with `.`, list items as
    /// `key.N`, booleans `on`/`off`, nulls left out, commas in values doubled.
    pub fn to_keyval(&self) -> String {
        let mut out = Vec::new();
        flatten("", &Json::Object(self.0.clone()), &mut out);
        out.join(",")
    }

    /// Compact JSON, which `-blockdev` accepts as well.
    pub fn to_json_arg(&self) -> String {
        Json::Object(self.0.clone()).to_string()
    }
}

fn flatten(prefix: &str, v: &Json, out: &mut Vec<String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                flatten(&key(k), v, out);
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), item, out);
            }
        }
        Json::Null => {}
        Json::Bool(b) => out.push(format!("{prefix}={}", if *b { "on" } else { "off" })),
        Json::Number(n) => out.push(format!("{prefix}={n}")),
        Json::String(s) => out.push(format!("{prefix}={}", escape(s))),
    }
}

/// Splits `host[:port]` or `[v6addr][:port]`.
fn host_port(s: &str) -> Result<(String, Option<String>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed `[` in host")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after `]`")?.to_owned()),
        };
        return Ok((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_owned(), Some(p.to_owned()))),
        Some(_) => Err("an IPv6 host must be in brackets".into()),
        None => Ok((s.to_owned(), None)),
    }
}

fn check_port(p: &str) -> Result<(), String> {
    p.parse::<u16>()
        .map(|_| ())
        .map_err(|_| format!("`{p}` is not a port"))
}

/// Parses a userspace disk URI into the blockdev `file` node QEMU needs.
///
/// Understood: `rbd:pool[/namespace]/image[@snap][:id=user][:conf=file]`,
/// `gluster[+tcp|+unix]://[host[:port]]/volume/path[?socket=path]` (IPv6 hosts
/// in brackets), `nbd[+unix]://[host[:port]]/export[?socket=path]`,
/// `iscsi://host[:port]/target/lun`, and `http`, `https`, `ftp`, `ftps` URLs.
/// Wider than Ganeti's regexes (reference §11.5.3): pool and image names may
/// hold any character but `/`, `@` and `:`.
pub fn storage_uri(uri: &str) -> Result<Json, CmdlineError> {
    let bad = |why: String| CmdlineError::BadStorageUri {
        uri: uri.to_owned(),
        why,
    };
    if let Some(rest) = uri.strip_prefix("rbd:") {
        return rbd(rest).map_err(bad);
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad("no `scheme://` or `rbd:` prefix".into()))?;
    let (path_part, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let socket = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("socket=")));
    let (authority, path) = match path_part.split_once('/') {
        Some((a, p)) => (a, p),
        None => (path_part, ""),
    };
    match scheme {
        "http" | "https" | "ftp" | "ftps" => Ok(json!({"driver": scheme, "url": uri})),
        "gluster" | "gluster+tcp" | "gluster+unix" => {
            let (volume, file) = path
                .split_once('/')
                .ok_or_else(|| bad("expected /volume/path".into()))?;
            if volume.is_empty() || file.is_empty() {
                return Err(bad("expected /volume/path".into()));
            }
            let server = if scheme == "gluster+unix" {
                json!({"type": "unix", "path": socket.ok_or_else(|| bad("gluster+unix needs ?socket=".into()))?})
            } else {
                let (host, port) = host_port(authority).map_err(bad)?;
                if host.is_empty() {
                    return Err(bad("no host".into()));
                }
                let port = port.unwrap_or_else(|| "24007".into());
                check_port(&port).map_err(bad)?;
                json!({"type": "inet", "host": host, "port": port})
            };
            Ok(json!({"driver": "gluster", "volume": volume, "path": file, "server": [server]}))
        }
        "nbd" | "nbd+tcp" | "nbd+unix" => {
            let server = if scheme == "nbd+unix" {
                json!({"type": "unix", "path": socket.ok_or_else(|| bad("nbd+unix needs ?socket=".into()))?})
            } else {
                let (host, port) = host_port(authority).map_err(bad)?;
                let port = port.unwrap_or_else(|| "10809".into());
                check_port(&port).map_err(bad)?;
                json!({"type": "inet", "host": host, "port": port})
            };
            let mut node = json!({"driver": "nbd", "server": server});
            if !path.is_empty() {
                node["export"] = json!(path);
            }
            Ok(node)
        }
        "iscsi" => {
            let (host, port) = host_port(authority).map_err(bad)?;
            let (target, lun) = path
                .rsplit_once('/')
                .ok_or_else(|| bad("expected /target/lun".into()))?;
            let lun: u32 = lun
                .parse()
                .map_err(|_| bad(format!("`{lun}` is not a LUN")))?;
            let portal = match port {
                Some(p) if host.contains(':') => format!("[{host}]:{p}"),
                Some(p) => format!("{host}:{p}"),
                None => host,
            };
            Ok(
                json!({"driver": "iscsi", "transport": "tcp", "portal": portal, "target": target, "lun": lun}),
            )
        }
        other => Err(bad(format!("unsupported scheme `{other}`"))),
    }
}

fn rbd(rest: &str) -> Result<Json, String> {
    let mut parts = rest.split(':');
    let location = parts.next().unwrap_or_default();
    let (location, snap) = match location.split_once('@') {
        Some((l, s)) => (l, Some(s)),
        None => (location, None),
    };
    let segments: Vec<&str> = location.split('/').collect();
    let (pool, namespace, image) = match segments.as_slice() {
        [pool, image] => (*pool, None, *image),
        [pool, ns, image] => (*pool, Some(*ns), *image),
        _ => return Err("expected pool/image or pool/namespace/image".into()),
    };
    if pool.is_empty() || image.is_empty() {
        return Err("empty pool or image name".into());
    }
    let mut node = json!({"driver": "rbd", "pool": pool, "image": image});
    if let Some(ns) = namespace {
        node["namespace"] = json!(ns);
    }
    if let Some(s) = snap {
        node["snapshot"] = json!(s);
    }
    for opt in parts {
        match opt.split_once('=') {
            Some(("id", user)) => node["user"] = json!(user),
            Some(("conf", file)) => node["conf"] = json!(file),
            _ => {
                return Err(format!(
                    "unsupported rbd option `{opt}` (id= and conf= are)"
                ));
            }
        }
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_and_lists_flatten() {
        let b = Blockdev::new(json!({
            "driver": "raw", "node-name": "d0", "cache": {"direct": true, "no-flush": false},
            "file": {"driver": "gluster", "volume": "v", "path": "a,b", "server": [{"type": "inet", "host": "h", "port": "24007"}]},
            "skipped": null
        })).unwrap();
        assert_eq!(
            b.to_keyval(),
            "driver=raw,node-name=d0,cache.direct=on,cache.no-flush=off,file.driver=gluster,file.volume=v,file.path=a,,b,file.server.0.type=inet,file.server.0.host=h,file.server.0.port=24007"
        );
    }

    #[test]
    fn rbd_with_dash_uppercase_and_user() {
        assert_eq!(
            storage_uri("rbd:my-pool/Image.Disk0@snap1:id=admin").unwrap(),
            json!({"driver": "rbd", "pool": "my-pool", "image": "Image.Disk0", "snapshot": "snap1", "user": "admin"})
        );
    }

    #[test]
    fn rbd_unknown_option_is_refused() {
        assert_eq!(
            storage_uri("rbd:p/i:mon_host=x").unwrap_err().to_string(),
            "`rbd:p/i:mon_host=x` is not a usable storage URI: unsupported rbd option `mon_host=x` (id= and conf= are)"
        );
    }

    #[test]
    fn gluster_ipv6_host_in_brackets() {
        assert_eq!(
            storage_uri("gluster://[2001:db8::1]:24008/vol/dir/disk.img").unwrap(),
            json!({"driver": "gluster", "volume": "vol", "path": "dir/disk.img",
                   "server": [{"type": "inet", "host": "2001:db8::1", "port": "24008"}]})
        );
    }

    #[test]
    fn nbd_unix_socket() {
        assert_eq!(
            storage_uri("nbd+unix:///exp?socket=/run/nbd.sock").unwrap(),
            json!({"driver": "nbd", "server": {"type": "unix", "path": "/run/nbd.sock"}, "export": "exp"})
        );
    }

    #[test]
    fn ftp_gets_the_ftp_driver_unlike_ganeti() {
        assert_eq!(
            storage_uri("ftp://h/x.iso").unwrap(),
            json!({"driver": "ftp", "url": "ftp://h/x.iso"})
        );
    }

    #[test]
    fn iscsi_target_and_lun() {
        assert_eq!(
            storage_uri("iscsi://192.0.2.5:3260/iqn.2001-04.com.example:storage/1").unwrap(),
            json!({"driver": "iscsi", "transport": "tcp", "portal": "192.0.2.5:3260", "target": "iqn.2001-04.com.example:storage", "lun": 1})
        );
    }

    #[test]
    fn unknown_scheme_is_refused() {
        assert!(matches!(
            storage_uri("sheepdog://x/y"),
            Err(CmdlineError::BadStorageUri { .. })
        ));
    }
}
