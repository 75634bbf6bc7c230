//! Which address a request comes from: the socket's peer, unless that peer is one of the
//! operator's trusted reverse proxies (`TRUSTED_PROXIES`), in which case the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Off by default: a header a
//! client can write never picks its address (it would get a fresh rate-limit budget per
//! request).

use std::net::IpAddr;

use ipnet::IpNet;

/// The trusted reverse proxies: addresses and networks (`10.0.0.5`, `10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Reads a comma-separated list of IP addresses and CIDR networks; empty = none.
    ///
    /// # Errors
    /// An entry that is neither.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an IP address or CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with these `X-Forwarded-For` header
    /// values (in the order received): `peer` unless it is trusted; then, walking the entries
    /// from the right, the first one that is not trusted (or the last readable one, when every
    /// entry is trusted or one does not parse).
    #[must_use]
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn off_by_default_the_header_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("127.0.0.1"), ["10.0.0.1"].into_iter()), ip("127.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_entry_behind_a_trusted_peer() {
        let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        // A client's own X-Forwarded-For entries are on the left; the proxies append on the right.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), ["6.6.6.6, 203.0.113.9", "10.1.2.3"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client(ip("198.51.100.1"), ["203.0.113.9"].into_iter()),
            ip("198.51.100.1"),
            "an untrusted peer is the client, whatever it claims"
        );
        assert_eq!(trusted.client(ip("127.0.0.1"), std::iter::empty()), ip("127.0.0.1"));
        assert_eq!(
            trusted.client(ip("127.0.0.1"), ["garbage, 10.0.0.7"].into_iter()),
            ip("10.0.0.7"),
            "every entry trusted up to one that does not parse: the last readable"
        );
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), ["[2001:db8::1]:443"].into_iter()),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn parse_refuses_what_is_not_an_address() {
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/8,::1").is_ok());
        assert!(TrustedProxies::parse("10.0.0.0/8, proxy.local").is_err());
    }
}
