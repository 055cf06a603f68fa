//! Links, bridges, addresses, routes and rules through rtnetlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{IpVersion, LinkBridge, LinkUnspec, RouteMessageBuilder};

use crate::error::TapError;

/// A handle on the kernel's routing netlink, for the network namespace of
/// the thread that called [`Netlink::new`].
///
/// Every method names the interface it works on; errors carry the operation
/// and that name.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// One interface as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The MTU.
    pub mtu: u32,
    /// The index of the bridge (or other controller) it is attached to.
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Its hardware address, if it has one.
    pub address: Option<Vec<u8>>,
}

/// One route of a routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination.
    pub destination: IpAddr,
    /// The destination's prefix length (32 or 128 for a host route).
    pub prefix_len: u8,
    /// The outgoing interface's index.
    pub oif: Option<u32>,
}

/// One policy routing rule that sends traffic to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The input interface the rule matches (`ip rule add dev …`).
    pub iif: Option<String>,
    /// The table it looks up.
    pub table: u32,
    /// Whether it is an IPv6 rule.
    pub ipv6: bool,
}

impl Netlink {
    /// Opens an rtnetlink socket and spawns its connection task on the
    /// current tokio runtime (so this must be called inside one).
    pub fn new() -> Result<Netlink, TapError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(TapError::NetlinkSocket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The interface named `name`, or [`TapError::NoSuchLink`].
    pub async fn link(&self, name: &str) -> Result<Link, TapError> {
        let msg = self.link_message(name).await?;
        let mut link = Link {
            index: msg.header.index,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            address: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Controller(index) => link.master = Some(index),
                LinkAttribute::Address(address) => link.address = Some(address),
                _ => {}
            }
        }
        Ok(link)
    }

    /// Whether an interface named `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, TapError> {
        match self.link_message(name).await {
            Ok(_) => Ok(true),
            Err(TapError::NoSuchLink { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets `name` administratively up.
    pub async fn set_up(&self, name: &str) -> Result<(), TapError> {
        let index = self.link(name).await?.index;
        self.set(
            LinkUnspec::new_with_index(index).up().build(),
            "set up",
            name,
        )
        .await
    }

    /// Sets the MTU of `name`.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), TapError> {
        let index = self.link(name).await?.index;
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set(msg, &format!("set mtu {mtu}"), name).await
    }

    /// Sets the hardware address of `name`.
    pub async fn set_address(&self, name: &str, address: &[u8]) -> Result<(), TapError> {
        let index = self.link(name).await?.index;
        let msg = LinkUnspec::new_with_index(index)
            .address(address.to_vec())
            .build();
        self.set(msg, "set address", name).await
    }

    /// Attaches `name` to the bridge `bridge`.
    pub async fn set_master(&self, name: &str, bridge: &str) -> Result<(), TapError> {
        let master = self.link(bridge).await?.index;
        let index = self.link(name).await?.index;
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.set(msg, &format!("attach to {bridge}"), name).await
    }

    /// Detaches `name` from its bridge.
    pub async fn no_master(&self, name: &str) -> Result<(), TapError> {
        let index = self.link(name).await?.index;
        let msg = LinkUnspec::new_with_index(index).nocontroller().build();
        self.set(msg, "detach from bridge", name).await
    }

    /// Creates the bridge `name`, up.
    pub async fn create_bridge(&self, name: &str) -> Result<(), TapError> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(netlink_error("create bridge", name))
    }

    /// Deletes the interface `name`.
    pub async fn delete_link(&self, name: &str) -> Result<(), TapError> {
        let index = self.link(name).await?.index;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(netlink_error("delete", name))
    }

    /// Adds `address/prefix_len` to `name`.
    pub async fn add_address(
        &self,
        name: &str,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), TapError> {
        let index = self.link(name).await?.index;
        self.handle
            .address()
            .add(index, address, prefix_len)
            .execute()
            .await
            .map_err(netlink_error(
                &format!("add address {address}/{prefix_len}"),
                name,
            ))
    }

    /// Adds or replaces the host route (`/32` or `/128`) to `destination`
    /// through `dev` in `table`, like
    /// `ip route replace <destination> table <table> proto static dev <dev>`.
    pub async fn replace_host_route(
        &self,
        destination: IpAddr,
        dev: &str,
        table: u32,
    ) -> Result<(), TapError> {
        let index = self.link(dev).await?.index;
        self.handle
            .route()
            .add(host_route(destination, index, table))
            .replace()
            .execute()
            .await
            .map_err(netlink_error(
                &format!("add route to {destination} in table {table}"),
                dev,
            ))
    }

    /// Deletes the host route to `destination` through `dev` in `table`.
    pub async fn delete_host_route(
        &self,
        destination: IpAddr,
        dev: &str,
        table: u32,
    ) -> Result<(), TapError> {
        let index = self.link(dev).await?.index;
        self.handle
            .route()
            .del(host_route(destination, index, table))
            .execute()
            .await
            .map_err(netlink_error(
                &format!("delete route to {destination} in table {table}"),
                dev,
            ))
    }

    /// The IPv4 and IPv6 routes of `table`.
    pub async fn routes(&self, table: u32) -> Result<Vec<Route>, TapError> {
        let mut routes = Vec::new();
        let dumps = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for dump in dumps {
            let mut stream = self.handle.route().get(dump).execute();
            while let Some(msg) = stream
                .try_next()
                .await
                .map_err(netlink_error("list routes", &format!("table {table}")))?
            {
                if route_table(&msg) == table {
                    routes.extend(route_of(&msg));
                }
            }
        }
        Ok(routes)
    }

    /// Adds the rule "traffic coming in on `iif` looks up `table`" for the
    /// address family of `family`, like `ip rule add dev <iif> table <table>`.
    pub async fn add_iif_rule(
        &self,
        iif: &str,
        table: u32,
        family: IpAddr,
    ) -> Result<(), TapError> {
        let request = self
            .handle
            .rule()
            .add()
            .input_interface(iif.to_owned())
            .table_id(table)
            .action(RuleAction::ToTable);
        let result = match family {
            IpAddr::V4(_) => request.v4().execute().await,
            IpAddr::V6(_) => request.v6().execute().await,
        };
        result.map_err(netlink_error(&format!("add rule to table {table}"), iif))
    }

    /// Deletes every rule matching input interface `iif`, like looping on
    /// `ip rule del dev <iif>`. Returns how many were deleted.
    pub async fn delete_iif_rules(&self, iif: &str) -> Result<usize, TapError> {
        let mut deleted = 0;
        for msg in self.rule_messages().await? {
            if rule_of(&msg).iif.as_deref() == Some(iif) {
                self.handle
                    .rule()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(netlink_error("delete rule", iif))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Every IPv4 and IPv6 policy routing rule.
    pub async fn rules(&self) -> Result<Vec<Rule>, TapError> {
        Ok(self.rule_messages().await?.iter().map(rule_of).collect())
    }

    async fn rule_messages(&self) -> Result<Vec<RuleMessage>, TapError> {
        let mut rules = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let batch: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(netlink_error("list rules", "all"))?;
            rules.extend(batch);
        }
        Ok(rules)
    }

    async fn link_message(&self, name: &str) -> Result<LinkMessage, TapError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(TapError::NoSuchLink {
                name: name.to_owned(),
            }),
            Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Err(TapError::NoSuchLink {
                name: name.to_owned(),
            }),
            Err(e) => Err(netlink_error("look up", name)(e)),
        }
    }

    async fn set(&self, msg: LinkMessage, op: &str, name: &str) -> Result<(), TapError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(netlink_error(op, name))
    }
}

/// The errno of a kernel refusal, if that is what `e` is.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Whether `e` is a [`TapError::Netlink`] with one of `codes`.
pub(crate) fn is_errno(e: &TapError, codes: &[i32]) -> bool {
    match e {
        TapError::Netlink { source, .. } => errno(source).is_some_and(|c| codes.contains(&c)),
        _ => false,
    }
}

fn netlink_error<'a>(op: &'a str, name: &'a str) -> impl FnOnce(rtnetlink::Error) -> TapError + 'a {
    move |source| TapError::Netlink {
        op: op.to_owned(),
        name: name.to_owned(),
        source,
    }
}

/// A static, link-scoped host route through interface `index`.
fn host_route(destination: IpAddr, index: u32, table: u32) -> RouteMessage {
    match destination {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .output_interface(index)
            .table_id(table)
            .protocol(RouteProtocol::Static)
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .output_interface(index)
            .table_id(table)
            .protocol(RouteProtocol::Static)
            .scope(RouteScope::Link)
            .build(),
    }
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_of(msg: &RouteMessage) -> Option<Route> {
    let mut destination = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                destination = Some(IpAddr::V4(*a))
            }
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                destination = Some(IpAddr::V6(*a))
            }
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let destination = match (destination, msg.header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    Some(Route {
        destination,
        prefix_len: msg.header.destination_prefix_length,
        oif,
    })
}

fn rule_of(msg: &RuleMessage) -> Rule {
    let mut rule = Rule {
        iif: None,
        table: u32::from(msg.header.table),
        ipv6: msg.header.family == AddressFamily::Inet6,
    };
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Iifname(name) => rule.iif = Some(name.clone()),
            RuleAttribute::Table(table) => rule.table = *table,
            _ => {}
        }
    }
    rule
}
