//! Network capabilities: default deny; allowlists of addresses and ports for outbound
//! connections and for listening, written `ADDR:PORTS` separated by commas, where
//! `ADDR` is `*`, an IP (`10.0.0.1`, `[::1]`), a CIDR (`10.0.0.0/8`, `[fd00::]/8`) or a
//! host name, and `PORTS` is `*`, `443` or `8000-8099`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddrPattern {
    Any,
    Cidr {
        net: IpAddr,
        prefix: u8,
    },
    /// Resolved to addresses when the instance starts (see `NetworkPolicy::resolve_hosts`).
    Host(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    pub addr: AddrPattern,
    pub ports: PortRange,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub connect: Vec<NetRule>,
    pub listen: Vec<NetRule>,
    pub name_lookup: bool,
    /// Outbound TCP connections and outgoing HTTP requests the container may make over its
    /// whole life (a sandbox profile's `max_network_requests`); `None`: no cap.
    #[serde(default)]
    pub request_cap: Option<u64>,
}

impl NetworkPolicy {
    /// Nothing is allowed: the guest has no network.
    pub fn is_closed(&self) -> bool {
        self.connect.is_empty() && self.listen.is_empty() && !self.name_lookup
    }

    pub fn allows_connect(&self, to: SocketAddr) -> bool {
        self.connect.iter().any(|r| r.matches(to))
    }

    /// Binding `addr` (port 0 is the kernel's choice, for an outbound socket).
    pub fn allows_bind(&self, addr: SocketAddr) -> bool {
        if addr.port() == 0 && addr.ip().is_unspecified() {
            return !self.connect.is_empty() || !self.listen.is_empty();
        }
        self.listen.iter().any(|r| r.matches(addr))
    }

    /// Listening on `addr`: the listen allowlist alone (no port-0 exception: a socket bound
    /// to an ephemeral port for an outbound connection may not listen on it). An unbound
    /// socket, which `listen` binds to an ephemeral port on every address, is asked as
    /// `0.0.0.0:0` (or `[::]:0`): only a rule for every address and every port allows it.
    pub fn allows_listen(&self, addr: SocketAddr) -> bool {
        self.listen.iter().any(|r| r.matches(addr))
    }

    /// Replace host names by the addresses they resolve to now (an unresolvable name
    /// allows nothing). Called in the instance process, which is in the pod's network.
    pub fn resolve_hosts(&mut self) {
        for rules in [&mut self.connect, &mut self.listen] {
            let mut resolved = Vec::new();
            rules.retain(|rule| {
                let AddrPattern::Host(name) = &rule.addr else {
                    return true;
                };
                match (name.as_str(), 0).to_socket_addrs() {
                    Ok(addrs) => resolved.extend(addrs.map(|a| NetRule {
                        addr: AddrPattern::Cidr {
                            net: a.ip(),
                            prefix: if a.is_ipv4() { 32 } else { 128 },
                        },
                        ports: rule.ports,
                    })),
                    Err(e) => log::warn!("network allowlist: cannot resolve {name}: {e}"),
                }
                false
            });
            rules.extend(resolved);
        }
    }
}

impl NetRule {
    /// Whether every address and port this rule allows is allowed by `outer` too. A host
    /// name is within the same name or `*` only: what it resolves to is not known yet.
    pub fn within(&self, outer: &NetRule) -> bool {
        let ports = outer.ports.first <= self.ports.first && self.ports.last <= outer.ports.last;
        ports
            && match (&self.addr, &outer.addr) {
                (_, AddrPattern::Any) => true,
                (AddrPattern::Host(a), AddrPattern::Host(b)) => a == b,
                (AddrPattern::Cidr { net, prefix }, AddrPattern::Cidr { net: o, prefix: op }) => {
                    prefix >= op && in_cidr(*net, *o, *op)
                }
                _ => false,
            }
    }

    fn matches(&self, to: SocketAddr) -> bool {
        let port_ok = (self.ports.first..=self.ports.last).contains(&to.port());
        port_ok
            && match &self.addr {
                AddrPattern::Any => true,
                AddrPattern::Cidr { net, prefix } => in_cidr(to.ip(), *net, *prefix),
                AddrPattern::Host(_) => false,
            }
    }
}

impl std::fmt::Display for NetRule {
    /// As written in an allowlist: `ADDR:PORTS`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.addr {
            AddrPattern::Any => write!(f, "*")?,
            AddrPattern::Host(name) => write!(f, "{name}")?,
            AddrPattern::Cidr { net, prefix } => {
                let full = if net.is_ipv4() { 32 } else { 128 };
                match (net, *prefix == full) {
                    (IpAddr::V4(v4), true) => write!(f, "{v4}")?,
                    (IpAddr::V6(v6), true) => write!(f, "[{v6}]")?,
                    (IpAddr::V4(v4), false) => write!(f, "{v4}/{prefix}")?,
                    (IpAddr::V6(v6), false) => write!(f, "[{v6}]/{prefix}")?,
                }
            }
        }
        match (self.ports.first, self.ports.last) {
            (0, u16::MAX) => write!(f, ":*"),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    // IPv4-mapped IPv6 addresses are matched as the IPv4 address they are.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parse an allowlist annotation; the error says what is wrong with which entry.
pub fn parse_rules(value: &str) -> Result<Vec<NetRule>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| parse_rule(entry).map_err(|why| format!("entry {entry:?}: {why}")))
        .collect()
}

fn parse_rule(entry: &str) -> Result<NetRule, String> {
    let (addr, ports) = entry
        .rsplit_once(':')
        .filter(|(a, _)| !a.is_empty())
        .ok_or("expected ADDR:PORTS")?;
    Ok(NetRule {
        addr: parse_addr(addr)?,
        ports: parse_ports(ports)?,
    })
}

fn parse_addr(addr: &str) -> Result<AddrPattern, String> {
    if addr == "*" {
        return Ok(AddrPattern::Any);
    }
    let (ip_part, prefix) = match addr.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (addr, None),
    };
    let ip_text = ip_part
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(ip_part);
    match ip_text.parse::<IpAddr>() {
        Ok(net) => {
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("bad prefix length /{p} (0..={max})"))?,
            };
            Ok(AddrPattern::Cidr { net, prefix })
        }
        Err(_) if prefix.is_some() => Err(format!("{ip_text:?} is not an IP address")),
        Err(_) if is_host_name(addr) => Ok(AddrPattern::Host(addr.to_ascii_lowercase())),
        Err(_) => Err(format!(
            "{addr:?} is neither an IP address, a CIDR nor a host name"
        )),
    }
}

fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn parse_ports(ports: &str) -> Result<PortRange, String> {
    if ports == "*" {
        return Ok(PortRange {
            first: 0,
            last: u16::MAX,
        });
    }
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if first > last {
        return Err(format!("empty port range {ports}"));
    }
    Ok(PortRange { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_rule_is_within_another_when_all_it_allows_is_allowed_there() {
        let r = |s: &str| parse_rules(s).unwrap().remove(0);
        assert!(r("10.1.0.0/16:443").within(&r("10.0.0.0/8:443")));
        assert!(r("10.1.2.3:443").within(&r("10.0.0.0/8:400-500")));
        assert!(r("api.example.com:443").within(&r("api.example.com:*")));
        assert!(r("api.example.com:443").within(&r("*:443")));
        assert!(!r("10.0.0.0/8:443").within(&r("10.1.0.0/16:443")));
        assert!(!r("10.1.2.3:443-444").within(&r("10.0.0.0/8:443")));
        assert!(!r("evil.example.com:443").within(&r("api.example.com:443")));
        assert!(!r("10.1.2.3:443").within(&r("api.example.com:443")));
        assert!(!r("*:443").within(&r("10.0.0.0/8:443")));
    }

    #[test]
    fn rules_print_as_written() {
        for s in [
            "*:*",
            "10.0.0.0/8:443",
            "1.2.3.4:80-90",
            "[::1]:8080",
            "[fd00::]/8:1",
            "a.b:5",
        ] {
            assert_eq!(parse_rules(s).unwrap()[0].to_string(), s);
        }
    }

    #[test]
    fn default_policy_denies_everything() {
        let p = NetworkPolicy::default();
        assert!(p.is_closed());
        assert!(!p.allows_connect(sa("1.1.1.1:443")));
        assert!(!p.allows_bind(sa("0.0.0.0:8080")));
        assert!(!p.allows_bind(sa("0.0.0.0:0")));
    }

    #[test]
    fn rules_match_cidrs_hosts_and_ports() {
        let p = NetworkPolicy {
            connect: parse_rules("10.0.0.0/8:443, [fd00::]/8:8000-8099, 127.0.0.1:*").unwrap(),
            listen: parse_rules("*:8080").unwrap(),
            name_lookup: false,
            request_cap: None,
        };
        assert!(p.allows_connect(sa("10.1.2.3:443")));
        assert!(!p.allows_connect(sa("10.1.2.3:80")));
        assert!(!p.allows_connect(sa("11.0.0.1:443")));
        assert!(p.allows_connect(sa("[fd12::1]:8050")));
        assert!(!p.allows_connect(sa("[fe80::1]:8050")));
        assert!(p.allows_connect(sa("127.0.0.1:1")));
        assert!(p.allows_connect(sa("[::ffff:127.0.0.1]:9")), "v4-mapped");
        assert!(p.allows_bind(sa("0.0.0.0:8080")));
        assert!(p.allows_bind(sa("0.0.0.0:0")), "implicit bind for outbound");
        assert!(!p.allows_bind(sa("0.0.0.0:8081")));
        assert!(p.allows_listen(sa("0.0.0.0:8080")));
        assert!(
            !p.allows_listen(sa("0.0.0.0:0")),
            "no port-0 exception for listening"
        );
        assert!(!p.allows_listen(sa("0.0.0.0:41000")));
    }

    #[test]
    fn host_names_are_kept_for_resolution() {
        let rules = parse_rules("API.example.com:443,localhost:80").unwrap();
        assert_eq!(rules[0].addr, AddrPattern::Host("api.example.com".into()));
        let mut p = NetworkPolicy {
            connect: rules,
            ..Default::default()
        };
        assert!(
            !p.allows_connect(sa("127.0.0.1:80")),
            "unresolved names allow nothing"
        );
        p.resolve_hosts();
        assert!(
            p.allows_connect(sa("127.0.0.1:80")),
            "localhost resolves here"
        );
        assert!(!p
            .connect
            .iter()
            .any(|r| matches!(r.addr, AddrPattern::Host(_))));
    }

    #[test]
    fn malformed_rules_are_rejected_with_the_entry() {
        for bad in [
            "10.0.0.0/33:443",
            "10.0.0.0/8",
            "10.0.0.0/8:70000",
            "10.0.0.0/8:90-80",
            "not_a_host!:80",
            ":80",
            "10.0.0.300/8:1",
        ] {
            let err = parse_rules(bad).unwrap_err();
            assert!(err.contains("entry"), "{bad}: {err}");
        }
    }
}
