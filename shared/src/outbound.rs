//! Where metasync may connect on a tenant's behalf: the one outbound host policy, used by the
//! API when a resource is registered or changed and by workers right before they dial.
//!
//! A host is checked in two steps:
//! 1. [`check_host_syntax`]: one host name or one IP literal, nothing else (no Unix-socket path,
//!    no list of hosts, no port inside it; `::1` and `[::1]` are IPv6 literals, not a host with
//!    a port).
//! 2. [`HostPolicy::resolve`]: the name is resolved once, through a [`Resolver`], and every
//!    address it resolves to must be allowed; the caller then connects to one of those checked
//!    addresses (never resolving the name again), so DNS rebinding cannot slip past.
//!
//! Denied by default: loopback in every spelling, the unspecified address, link-local (which
//! holds the cloud metadata services), multicast, broadcast, documentation and reserved ranges,
//! and the metadata services' names. Private ranges (RFC 1918, `100.64.0.0/10`, `fc00::/7`) and
//! loopback are allowed only when a configured CIDR (`METASYNC_OUTBOUND_ALLOW`) includes them.
//! IPv4-mapped and -compatible IPv6 addresses are judged as the IPv4 address they carry.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;

/// Why a host may not be dialled. The message is the same for every host of a class, so a
/// refusal tells a tenant nothing about the network behind the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not one host name or IP literal.
    #[error(
        "`host` must be one host name or IP address, without a port, a path or a list of hosts"
    )]
    Syntax,
    /// A host with its port (`db:5432`, `[::1]:5432`): the port has a field of its own.
    #[error("`host` must not contain a port: give the host alone and the port in `port`")]
    HostWithPort,
    /// Resolves to (or is) an address the outbound policy does not allow.
    #[error("the host is refused by the outbound policy (METASYNC_OUTBOUND_ALLOW)")]
    Refused,
    /// The name did not resolve.
    #[error("the host name does not resolve")]
    Unresolved,
}

/// Names that reach cloud metadata services, refused whatever they resolve to.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "metadata.platformequinix.com",
];

/// Checks that `host` is one host name or one IP literal.
pub fn check_host_syntax(host: &str) -> Result<(), PolicyError> {
    let bare = strip_brackets(host);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    // A DNS name: labels of letters, digits, `-` and `_`, separated by dots (a trailing dot is
    // the root). Anything else (`/run/postgresql`, `a,b`, `h:5432`, `[::1]:5432`, spaces,
    // `%`-encoded or Unicode) is not one host.
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(valid_label) {
        Ok(())
    } else if has_port(host) {
        Err(PolicyError::HostWithPort)
    } else {
        Err(PolicyError::Syntax)
    }
}

/// Whether `host` is a valid host followed by `:port` (an IPv6 literal then in brackets).
fn has_port(host: &str) -> bool {
    let Some((before, port)) = host.rsplit_once(':') else {
        return false;
    };
    let port_like = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let host_like = match before.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !before.contains(':') && check_host_syntax(before).is_ok(),
    };
    port_like && host_like
}

fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Resolves host names. Production uses the system resolver; tests use a static map, so no
/// test ever sends a DNS query off the machine.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    /// Every address `host` resolves to (empty when it does not resolve).
    fn resolve<'a>(&'a self, host: &'a str) -> Resolution<'a>;
}

/// What a [`Resolver`] answers, eventually.
pub type Resolution<'a> = Pin<Box<dyn Future<Output = Vec<IpAddr>> + Send + 'a>>;

/// The operating system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Resolution<'a> {
        Box::pin(async move {
            match tokio::net::lookup_host((host, 0)).await {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(_) => Vec::new(),
            }
        })
    }
}

/// A fixed map of names to addresses; every other name does not resolve.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver(pub Vec<(String, Vec<IpAddr>)>);

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Resolution<'a> {
        let found = self
            .0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map(|(_, addrs)| addrs.clone())
            .unwrap_or_default();
        Box::pin(std::future::ready(found))
    }
}

/// The policy: the allowlist of otherwise-denied ranges, and the resolver.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    allow: Vec<IpNet>,
    resolver: Arc<dyn Resolver>,
}

impl HostPolicy {
    /// A policy that allows the public internet plus the CIDRs in `allow`, resolving through
    /// `resolver`.
    pub fn new(allow: Vec<IpNet>, resolver: Arc<dyn Resolver>) -> Self {
        Self { allow, resolver }
    }

    /// Parses `METASYNC_OUTBOUND_ALLOW`: comma-separated CIDRs (or single addresses).
    pub fn parse_allowlist(text: &str) -> Result<Vec<IpNet>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                IpNet::from_str(item)
                    .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{item:?} is not a CIDR (e.g. 10.0.0.0/8, ::1/128)"))
            })
            .collect()
    }

    /// Whether `addr` may be dialled.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        if self.allow.iter().any(|net| net.contains(&addr)) {
            return true;
        }
        is_public(addr)
    }

    /// Checks `host` and resolves it once; every address must be allowed. The caller connects
    /// to one of the returned addresses, never to the name.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, PolicyError> {
        check_host_syntax(host)?;
        let bare = strip_brackets(host);
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(PolicyError::Refused);
        }
        let addrs = match bare.parse::<IpAddr>() {
            Ok(addr) => vec![addr],
            Err(_) => self.resolver.resolve(&name).await,
        };
        if addrs.is_empty() {
            return Err(PolicyError::Unresolved);
        }
        if addrs.iter().all(|a| self.allows(*a)) {
            Ok(addrs.into_iter().map(canonical).collect())
        } else {
            Err(PolicyError::Refused)
        }
    }

    /// [`HostPolicy::resolve`] for registration: a name that does not resolve here is accepted
    /// (the workers' network may know it), anything that resolves to a denied address is not.
    pub async fn check_registration(&self, host: &str) -> Result<(), PolicyError> {
        match self.resolve(host).await {
            Ok(_) | Err(PolicyError::Unresolved) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The first allowed address of `host` with `port`, to connect to.
    pub async fn connect_address(&self, host: &str, port: u16) -> Result<SocketAddr, PolicyError> {
        let addrs = self.resolve(host).await?;
        addrs
            .first()
            .map(|ip| SocketAddr::new(*ip, port))
            .ok_or(PolicyError::Unresolved)
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) addresses as the IPv4
/// address they carry, so no IPv6 spelling of a denied IPv4 address passes.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                if segments[..6].iter().all(|s| *s == 0)
                    && !v6.is_loopback()
                    && !v6.is_unspecified()
                {
                    let o = v6.octets();
                    IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
                } else {
                    IpAddr::V6(v6)
                }
            }
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0 // "this network"
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local (fc00::/7)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: may reach any IPv4 address
                || s[0] == 0x2002 // 6to4: embeds an IPv4 address
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)) // AWS metadata
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &str) -> HostPolicy {
        let resolver = StaticResolver(vec![
            (
                "localhost".into(),
                vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            ),
            (
                "db.example.test".into(),
                vec!["93.184.215.14".parse().unwrap()],
            ),
            (
                "rebind.example.test".into(),
                vec![
                    "93.184.215.14".parse().unwrap(),
                    "10.1.2.3".parse().unwrap(),
                ],
            ),
            ("2130706433".into(), vec!["127.0.0.1".parse().unwrap()]),
            ("0x7f000001".into(), vec!["127.0.0.1".parse().unwrap()]),
            ("127.1".into(), vec!["127.0.0.1".parse().unwrap()]),
        ]);
        HostPolicy::new(
            HostPolicy::parse_allowlist(allow).unwrap(),
            Arc::new(resolver),
        )
    }

    #[tokio::test]
    async fn loopback_and_its_every_spelling_are_refused_by_default() {
        let p = policy("");
        for host in [
            "127.0.0.1",
            "127.255.255.254",
            "localhost",
            "LOCALHOST.",
            "::1",
            "[::1]",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
            "::127.0.0.1",
            "2130706433",
            "0x7f000001",
            "127.1",
        ] {
            assert_eq!(p.resolve(host).await, Err(PolicyError::Refused), "{host}");
        }
    }

    #[tokio::test]
    async fn private_link_local_metadata_and_odd_ranges_are_refused_unless_allowed() {
        let p = policy("");
        for host in [
            "10.0.0.5",
            "172.16.3.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "0.1.2.3",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "metadata.google.internal",
            "instance-data",
            "rebind.example.test",
        ] {
            assert_eq!(p.resolve(host).await, Err(PolicyError::Refused), "{host}");
        }
        // Public addresses and names are fine; unknown names do not resolve.
        assert!(p.resolve("93.184.215.14").await.is_ok());
        assert!(
            p.resolve("2606:2800:21f:cb07:6820:80da:af6b:8b2c")
                .await
                .is_ok()
        );
        assert_eq!(
            p.resolve("db.example.test").await.unwrap(),
            vec!["93.184.215.14".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            p.resolve("nowhere.example.test").await,
            Err(PolicyError::Unresolved)
        );
        assert!(p.check_registration("nowhere.example.test").await.is_ok());
    }

    #[tokio::test]
    async fn the_allowlist_opens_exactly_its_ranges() {
        let p = policy("127.0.0.0/8, ::1/128, 10.1.0.0/16");
        for host in [
            "127.0.0.1",
            "localhost",
            "::1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "rebind.example.test",
        ] {
            assert!(p.resolve(host).await.is_ok(), "{host}");
        }
        for host in [
            "10.2.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "metadata.google.internal",
        ] {
            assert_eq!(p.resolve(host).await, Err(PolicyError::Refused), "{host}");
        }
        assert!(HostPolicy::parse_allowlist("10.0.0.0/33").is_err());
        assert!(HostPolicy::parse_allowlist("localhost").is_err());
    }

    #[test]
    fn only_one_host_is_a_host() {
        for good in [
            "db",
            "db.internal",
            "db-1.eu.example.com.",
            "10.0.0.1",
            "::1",
            "[::1]",
            "fe80::1",
        ] {
            assert_eq!(check_host_syntax(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/var/run/postgresql",
            "@/tmp/sock",
            "a,b",
            "h:",
            "[::1]:",
            "h:port",
            "h:123456",
            "a/b:5432",
            "db internal",
            "db\n",
            "ex%61mple.com",
            "éxample.com",
            "-db",
            "db..internal",
            "postgres://db",
            "host=db",
            &"a".repeat(64),
        ] {
            assert_eq!(check_host_syntax(bad), Err(PolicyError::Syntax), "{bad:?}");
        }
        // A port in the host gets a message that says where the port goes.
        for with_port in ["h:5432", "db.internal:3306", "[::1]:5432", "10.0.0.1:5432"] {
            assert_eq!(
                check_host_syntax(with_port),
                Err(PolicyError::HostWithPort),
                "{with_port:?}"
            );
        }
        assert!(PolicyError::HostWithPort.to_string().contains("in `port`"));
    }
}
