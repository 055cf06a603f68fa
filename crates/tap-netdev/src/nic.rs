//! NIC configuration: the native `bridged` and `routed` modes, and the
//! environment of Ganeti's NIC scripts.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::TapError;
use crate::name::TapName;
use crate::netlink::{Netlink, is_errno};
use crate::table::routing_table;

/// How a NIC reaches the network (Ganeti's `nicparams.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NicMode {
    /// The tap is a port of the bridge named by `link`.
    Bridged,
    /// The host routes the NIC's IP to the tap, in the table named by `link`.
    Routed,
    /// The tap is a port of the Open vSwitch named by `link` (script only).
    Openvswitch,
    /// An external provider sets the tap up (script only).
    Ext,
}

impl NicMode {
    /// Ganeti's spelling: `bridged`, `routed`, `openvswitch` or `ext`.
    pub fn as_str(self) -> &'static str {
        match self {
            NicMode::Bridged => "bridged",
            NicMode::Routed => "routed",
            NicMode::Openvswitch => "openvswitch",
            NicMode::Ext => "ext",
        }
    }
}

impl fmt::Display for NicMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Ganeti network a NIC is connected to (`nic.netinfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Network name.
    pub name: String,
    /// Network UUID.
    pub uuid: String,
    /// Network tags, in the order to list them.
    pub tags: Vec<String>,
    /// IPv4 subnet, e.g. `192.0.2.0/24`.
    pub subnet: Option<String>,
    /// IPv4 gateway.
    pub gateway: Option<String>,
    /// IPv6 subnet.
    pub subnet6: Option<String>,
    /// IPv6 gateway.
    pub gateway6: Option<String>,
    /// MAC prefix, e.g. `aa:00:00`.
    pub mac_prefix: Option<String>,
}

/// Everything about one NIC that configuring it needs: plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    /// The instance's name.
    pub instance: String,
    /// The instance's tags, in the order to list them.
    pub instance_tags: Vec<String>,
    /// The NIC's position among the instance's NICs.
    pub index: usize,
    /// The NIC's UUID.
    pub uuid: String,
    /// The NIC's name, if it has one.
    pub name: Option<String>,
    /// The NIC's MAC address, as Ganeti writes it (`aa:00:00:12:34:56`).
    pub mac: String,
    /// The NIC's mode.
    pub mode: NicMode,
    /// Bridge, routing table or switch, per mode; empty for none.
    pub link: String,
    /// The VLAN specification (`.100`, `:100:200`), `Some("")` when the
    /// nicparam is present but empty, `None` when absent.
    pub vlan: Option<String>,
    /// The NIC's IP address.
    pub ip: Option<IpAddr>,
    /// The network the NIC is connected to.
    pub network: Option<NetworkInfo>,
}

/// Where on a migration's target a NIC script's `up` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPhase {
    /// Before the incoming QEMU starts (`ext` NICs).
    Pre,
    /// After the migration finished (`routed` and `ext` NICs).
    Post,
}

/// What a NIC script is asked to do (`ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptAction {
    /// Set the NIC up, optionally as part of a migration.
    Up {
        /// `MIGRATION_PHASE`, on a migration's target only.
        migration: Option<MigrationPhase>,
    },
    /// Tear the NIC down.
    Down,
}

/// The directories Ganeti appends to the daemon's `PATH` for NIC scripts.
pub const SCRIPT_PATH_SUFFIX: &str = ":/sbin:/usr/sbin";

/// The variables Ganeti sets for a NIC script, sorted by name.
///
/// The script inherits the daemon's environment, with these added or
/// replaced: `PATH` is `base_path` (the daemon's `PATH`) plus
/// `:/sbin:/usr/sbin`, `LC_ALL` is `C`, and the rest follows the table of
/// Ganeti's `hv_base.ConfigureNIC`: `INSTANCE`, `MAC`, `MODE`, `INTERFACE`,
/// `INTERFACE_INDEX`, `INTERFACE_UUID`, `TAGS` and `ACTION` always; `IP`,
/// `INTERFACE_NAME` and `LINK` when set and non-empty; `VLAN` whenever the
/// nicparam is present, even empty; `BRIDGE` (= `LINK`) in bridged mode;
/// `NETWORK_*` with a network; `MIGRATION_PHASE` on a migration's target.
///
/// `INTERFACE` is the name as a string (`tap0`), which the script also gets
/// as its argument.
pub fn script_env(
    nic: &NicConfig,
    tap: &TapName,
    action: ScriptAction,
    base_path: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
    set("PATH", &format!("{base_path}{SCRIPT_PATH_SUFFIX}"));
    set("LC_ALL", "C");
    set("INSTANCE", &nic.instance);
    set("MAC", &nic.mac);
    set("MODE", nic.mode.as_str());
    set("INTERFACE", tap.as_str());
    set("INTERFACE_INDEX", &nic.index.to_string());
    set("INTERFACE_UUID", &nic.uuid);
    set("TAGS", &nic.instance_tags.join(" "));
    match action {
        ScriptAction::Up { migration } => {
            set("ACTION", "up");
            match migration {
                Some(MigrationPhase::Pre) => set("MIGRATION_PHASE", "pre"),
                Some(MigrationPhase::Post) => set("MIGRATION_PHASE", "post"),
                None => {}
            }
        }
        ScriptAction::Down => set("ACTION", "down"),
    }
    if let Some(ip) = nic.ip {
        set("IP", &ip.to_string());
    }
    if let Some(name) = nic.name.as_deref().filter(|n| !n.is_empty()) {
        set("INTERFACE_NAME", name);
    }
    if !nic.link.is_empty() {
        set("LINK", &nic.link);
    }
    if let Some(vlan) = &nic.vlan {
        set("VLAN", vlan);
    }
    if nic.mode == NicMode::Bridged {
        set("BRIDGE", &nic.link);
    }
    if let Some(net) = &nic.network {
        set("NETWORK_NAME", &net.name);
        set("NETWORK_UUID", &net.uuid);
        set("NETWORK_TAGS", &net.tags.join(" "));
        let optional = [
            ("NETWORK_SUBNET", &net.subnet),
            ("NETWORK_GATEWAY", &net.gateway),
            ("NETWORK_SUBNET6", &net.subnet6),
            ("NETWORK_GATEWAY6", &net.gateway6),
            ("NETWORK_MAC_PREFIX", &net.mac_prefix),
        ];
        for (key, value) in optional {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                set(key, value);
            }
        }
    }
    env.sort();
    env
}

/// Configures `tap` for `nic` without a script, as Ganeti's own scripts
/// would:
///
/// - `bridged`: give the tap a MAC starting with `fe` (so the bridge never
///   takes the tap's address), set it up, give it the bridge's MTU and
///   attach it to the bridge `link`. A non-empty VLAN is
///   [`TapError::VlanRequiresScript`].
/// - `routed`: set the tap up; with a table in `link` (a number or an
///   iproute2 name), replace any rule for the tap by "traffic from the tap
///   looks up that table"; add (replace) the host route to the NIC's IP
///   through the tap in that table (the main table without `link`); turn on
///   proxy ARP/NDP and forwarding on the tap.
/// - `openvswitch` and `ext`: [`TapError::ScriptRequired`].
pub async fn configure_native(
    netlink: &Netlink,
    nic: &NicConfig,
    tap: &TapName,
) -> Result<(), TapError> {
    let dev = tap.as_str();
    match nic.mode {
        NicMode::Bridged => {
            let bridge = bridge_of(nic)?;
            let link = netlink.link(dev).await?;
            if let Some(mut mac) = link.address.filter(|a| a.len() == 6) {
                mac[0] = 0xfe;
                netlink.set_address(dev, &mac).await?;
            }
            netlink.set_up(dev).await?;
            let mtu = netlink.link(bridge).await?.mtu;
            netlink.set_mtu(dev, mtu).await?;
            netlink.set_master(dev, bridge).await?;
            tracing::info!(tap = dev, bridge, mtu, "attached tap to bridge");
        }
        NicMode::Routed => {
            let ip = nic
                .ip
                .ok_or(TapError::RoutedWithoutIp { index: nic.index })?;
            let table = routing_table(&nic.link)?;
            netlink.set_up(dev).await?;
            if !nic.link.is_empty() {
                netlink.delete_iif_rules(dev).await?;
                netlink.add_iif_rule(dev, table, ip).await?;
            }
            netlink.replace_host_route(ip, dev, table).await?;
            let (family, proxy) = match ip {
                IpAddr::V4(_) => ("ipv4", "proxy_arp"),
                IpAddr::V6(_) => ("ipv6", "proxy_ndp"),
            };
            write_sysctl(family, dev, proxy)?;
            write_sysctl(family, dev, "forwarding")?;
            tracing::info!(tap = dev, %ip, table, "routed tap");
        }
        mode => {
            return Err(TapError::ScriptRequired {
                index: nic.index,
                mode,
            });
        }
    }
    Ok(())
}

/// Undoes [`configure_native`]. Call it only after QEMU has exited (the
/// guest must not see its network go away): `bridged` detaches the tap if
/// it still exists; `routed` deletes the host route if the tap still exists
/// and the rules for the tap (which outlive it, being matched by name).
/// A tap that is already gone is not an error.
pub async fn deconfigure_native(
    netlink: &Netlink,
    nic: &NicConfig,
    tap: &TapName,
) -> Result<(), TapError> {
    let dev = tap.as_str();
    match nic.mode {
        NicMode::Bridged => {
            if netlink.exists(dev).await? {
                netlink.no_master(dev).await?;
            }
        }
        NicMode::Routed => {
            let ip = nic
                .ip
                .ok_or(TapError::RoutedWithoutIp { index: nic.index })?;
            let table = routing_table(&nic.link)?;
            if netlink.exists(dev).await? {
                match netlink.delete_host_route(ip, dev, table).await {
                    Err(e) if is_errno(&e, &[nix::libc::ESRCH, nix::libc::ENOENT]) => {}
                    other => other?,
                }
            }
            netlink.delete_iif_rules(dev).await?;
        }
        mode => {
            return Err(TapError::ScriptRequired {
                index: nic.index,
                mode,
            });
        }
    }
    tracing::info!(tap = dev, mode = %nic.mode, "deconfigured tap");
    Ok(())
}

fn bridge_of(nic: &NicConfig) -> Result<&str, TapError> {
    if let Some(vlan) = nic.vlan.as_deref().filter(|v| !v.is_empty()) {
        return Err(TapError::VlanRequiresScript {
            index: nic.index,
            vlan: vlan.to_owned(),
        });
    }
    if nic.link.is_empty() {
        return Err(TapError::BridgedWithoutLink { index: nic.index });
    }
    Ok(&nic.link)
}

/// Writes `1` to `/proc/sys/net/<family>/conf/<dev>/<key>`, if the
/// interface has that family's sysctls (IPv6 may be disabled).
fn write_sysctl(family: &str, dev: &str, key: &str) -> Result<(), TapError> {
    let dir = PathBuf::from(format!("/proc/sys/net/{family}/conf/{dev}"));
    if !dir.is_dir() {
        tracing::debug!(path = %dir.display(), "no such sysctl directory");
        return Ok(());
    }
    let path = dir.join(key);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"1\n"))
        .map_err(|source| TapError::Sysctl { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(mode: NicMode) -> NicConfig {
        NicConfig {
            instance: "web1.example.com".to_owned(),
            instance_tags: vec!["prod".to_owned(), "web".to_owned()],
            index: 1,
            uuid: "6f9619ff-8b86-d011-b42d-00c04fc964ff".to_owned(),
            name: None,
            mac: "aa:00:00:12:34:56".to_owned(),
            mode,
            link: "br0".to_owned(),
            vlan: None,
            ip: None,
            network: None,
        }
    }

    fn tap() -> TapName {
        TapName::new("tap0").unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bridged_up_env_is_ganetis() {
        let env = script_env(
            &nic(NicMode::Bridged),
            &tap(),
            ScriptAction::Up { migration: None },
            "/usr/bin:/bin",
        );
        assert_eq!(
            env,
            pairs(&[
                ("ACTION", "up"),
                ("BRIDGE", "br0"),
                ("INSTANCE", "web1.example.com"),
                ("INTERFACE", "tap0"),
                ("INTERFACE_INDEX", "1"),
                ("INTERFACE_UUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
                ("LC_ALL", "C"),
                ("LINK", "br0"),
                ("MAC", "aa:00:00:12:34:56"),
                ("MODE", "bridged"),
                ("PATH", "/usr/bin:/bin:/sbin:/usr/sbin"),
                ("TAGS", "prod web"),
            ])
        );
    }

    #[test]
    fn routed_migration_post_env_has_ip_phase_and_no_bridge() {
        let routed = NicConfig {
            link: "100".to_owned(),
            ip: Some("192.0.2.10".parse().unwrap()),
            name: Some("eth-front".to_owned()),
            ..nic(NicMode::Routed)
        };
        let env = script_env(
            &routed,
            &tap(),
            ScriptAction::Up {
                migration: Some(MigrationPhase::Post),
            },
            "/bin",
        );
        assert_eq!(
            env,
            pairs(&[
                ("ACTION", "up"),
                ("INSTANCE", "web1.example.com"),
                ("INTERFACE", "tap0"),
                ("INTERFACE_INDEX", "1"),
                ("INTERFACE_NAME", "eth-front"),
                ("INTERFACE_UUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
                ("IP", "192.0.2.10"),
                ("LC_ALL", "C"),
                ("LINK", "100"),
                ("MAC", "aa:00:00:12:34:56"),
                ("MIGRATION_PHASE", "post"),
                ("MODE", "routed"),
                ("PATH", "/bin:/sbin:/usr/sbin"),
                ("TAGS", "prod web"),
            ])
        );
    }

    #[test]
    fn ext_migration_pre_sets_phase_pre() {
        let env = script_env(
            &nic(NicMode::Ext),
            &tap(),
            ScriptAction::Up {
                migration: Some(MigrationPhase::Pre),
            },
            "/bin",
        );
        assert!(env.contains(&("MIGRATION_PHASE".to_owned(), "pre".to_owned())));
        assert!(env.contains(&("MODE".to_owned(), "ext".to_owned())));
    }

    #[test]
    fn down_env_says_down() {
        let env = script_env(
            &nic(NicMode::Openvswitch),
            &tap(),
            ScriptAction::Down,
            "/bin",
        );
        assert!(env.contains(&("ACTION".to_owned(), "down".to_owned())));
        assert!(env.contains(&("MODE".to_owned(), "openvswitch".to_owned())));
    }

    #[test]
    fn empty_vlan_is_present_absent_vlan_is_not() {
        let with_empty = NicConfig {
            vlan: Some(String::new()),
            ..nic(NicMode::Openvswitch)
        };
        let env = script_env(&with_empty, &tap(), ScriptAction::Down, "/bin");
        assert!(env.contains(&("VLAN".to_owned(), String::new())));

        let without = nic(NicMode::Openvswitch);
        let env = script_env(&without, &tap(), ScriptAction::Down, "/bin");
        assert!(!env.iter().any(|(k, _)| k == "VLAN"));
    }

    #[test]
    fn empty_link_and_name_are_left_out_but_bridge_stays() {
        let bare = NicConfig {
            link: String::new(),
            name: Some(String::new()),
            ..nic(NicMode::Bridged)
        };
        let env = script_env(&bare, &tap(), ScriptAction::Down, "/bin");
        assert!(
            !env.iter()
                .any(|(k, _)| k == "LINK" || k == "INTERFACE_NAME")
        );
        assert!(env.contains(&("BRIDGE".to_owned(), String::new())));
    }

    #[test]
    fn network_info_adds_network_variables() {
        let with_net = NicConfig {
            network: Some(NetworkInfo {
                name: "front".to_owned(),
                uuid: "net-uuid".to_owned(),
                tags: vec!["a".to_owned(), "b".to_owned()],
                subnet: Some("192.0.2.0/24".to_owned()),
                gateway: Some("192.0.2.1".to_owned()),
                subnet6: None,
                gateway6: None,
                mac_prefix: Some("aa:00:00".to_owned()),
            }),
            ..nic(NicMode::Routed)
        };
        let env = script_env(&with_net, &tap(), ScriptAction::Down, "/bin");
        let network: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("NETWORK_"))
            .collect();
        assert_eq!(
            network,
            pairs(&[
                ("NETWORK_GATEWAY", "192.0.2.1"),
                ("NETWORK_MAC_PREFIX", "aa:00:00"),
                ("NETWORK_NAME", "front"),
                ("NETWORK_SUBNET", "192.0.2.0/24"),
                ("NETWORK_TAGS", "a b"),
                ("NETWORK_UUID", "net-uuid"),
            ])
        );
    }

    #[test]
    fn bridged_with_vlan_needs_a_script() {
        let tagged = NicConfig {
            vlan: Some(".100".to_owned()),
            ..nic(NicMode::Bridged)
        };
        assert!(matches!(
            bridge_of(&tagged),
            Err(TapError::VlanRequiresScript { index: 1, vlan }) if vlan == ".100"
        ));
    }

    #[test]
    fn bridged_without_link_is_an_error() {
        let bare = NicConfig {
            link: String::new(),
            vlan: Some(String::new()),
            ..nic(NicMode::Bridged)
        };
        assert!(matches!(
            bridge_of(&bare),
            Err(TapError::BridgedWithoutLink { index: 1 })
        ));
    }
}
