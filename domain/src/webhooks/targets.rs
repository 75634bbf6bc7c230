//! Where webhook deliveries may go. In development any `http(s)` URL; in production
//! (`LICENSING_ENV=production`) only `https` to hosts that resolve to public addresses: never
//! loopback, private, link-local (cloud metadata lives there), shared, multicast or reserved
//! ones, unless `WEBHOOK_ALLOW_PRIVATE_TARGETS=true`. The rules are applied when an endpoint is
//! created or changed and again by the sender on every connection, against DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::{Error, Result};

/// Longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// Which targets webhook deliveries may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetRules {
    /// Any `http` or `https` URL (development, or production with
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS=true`).
    #[default]
    AnyHost,
    /// `https` only, to public addresses only (production).
    PublicHttpsOnly,
}

impl TargetRules {
    /// The rules of a deployment: production is public-only unless private targets are allowed.
    #[must_use]
    pub fn for_deployment(production: bool, allow_private_targets: bool) -> Self {
        if production && !allow_private_targets {
            Self::PublicHttpsOnly
        } else {
            Self::AnyHost
        }
    }

    /// Whether a connection to `ip` is allowed.
    #[must_use]
    pub fn allows_ip(self, ip: IpAddr) -> bool {
        self == Self::AnyHost || is_public(ip)
    }

    /// Parses an endpoint URL and checks its shape against the rules: `http(s)`, a host, no
    /// credentials or fragment, at most 2,048 characters; under [`Self::PublicHttpsOnly`]
    /// `https` and, when the host is an address literal, a public one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming what is wrong.
    pub fn parse_url(self, text: &str) -> Result<Url> {
        let text = text.trim();
        if text.len() > MAX_URL_LEN {
            return Err(Error::InvalidInput(format!(
                "url must be at most {MAX_URL_LEN} characters"
            )));
        }
        let url = Url::parse(text).map_err(|e| Error::InvalidInput(format!("url is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self == Self::AnyHost => {}
            "http" => return Err(Error::InvalidInput("url must use https in production".into())),
            _ => return Err(Error::InvalidInput("url must start with https:// or http://".into())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::InvalidInput("url must not carry credentials".into()));
        }
        if url.fragment().is_some() {
            return Err(Error::InvalidInput("url must not have a #fragment".into()));
        }
        let literal = match url.host() {
            None => return Err(Error::InvalidInput("url must name a host".into())),
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        };
        if let Some(ip) = literal
            && !self.allows_ip(ip)
        {
            return Err(forbidden(ip));
        }
        Ok(url)
    }

    /// [`Self::parse_url`], then (under [`Self::PublicHttpsOnly`]) resolves the host and
    /// refuses it when any of its addresses is not public.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad URL, a host that does not resolve, or a forbidden address.
    pub async fn check_url(self, text: &str) -> Result<Url> {
        let url = self.parse_url(text)?;
        if self == Self::AnyHost {
            return Ok(url);
        }
        if let Some(Host::Domain(host)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let addresses = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| Error::InvalidInput(format!("url's host {host} does not resolve: {e}")))?;
            for address in addresses {
                if !self.allows_ip(address.ip()) {
                    return Err(forbidden(address.ip()));
                }
            }
        }
        Ok(url)
    }
}

fn forbidden(ip: IpAddr) -> Error {
    Error::InvalidInput(format!(
        "url points at {ip}, a loopback, private, link-local or reserved address; production only delivers to public addresses (WEBHOOK_ALLOW_PRIVATE_TARGETS=true allows it)"
    ))
}

/// Whether `ip` is a public unicast address: not loopback, unspecified, private, shared
/// (100.64/10), link-local (169.254/16: cloud metadata; fe80::/10), unique local (fc00::/7),
/// multicast, broadcast, documentation, benchmarking or reserved. IPv4 inside IPv6 (mapped,
/// compatible, NAT64) is judged as the IPv4 address it carries.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) carry an IPv4 address.
    if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || segments[0] == 0x2001 && segments[1] == 0x0db8)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        is_public(text.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn production_urls_are_https_to_public_literals() {
        let production = TargetRules::PublicHttpsOnly;
        assert!(production.parse_url("https://hooks.example.com/in").is_ok());
        assert!(production.parse_url("http://hooks.example.com/in").is_err());
        assert!(production.parse_url("https://127.0.0.1/in").is_err());
        assert!(production.parse_url("https://[::1]/in").is_err());
        assert!(production.parse_url("https://169.254.169.254/latest").is_err());
        assert!(production.parse_url("https://8.8.8.8/in").is_ok());
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        let any = TargetRules::AnyHost;
        assert!(any.parse_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(any.parse_url("ftp://example.com").is_err());
        assert!(any.parse_url("https://user:pw@example.com").is_err());
        assert!(any.parse_url("https://").is_err());
        assert!(any.parse_url("https://example.com/#x").is_err());
        assert!(
            any.parse_url(&format!("https://example.com/{}", "a".repeat(3000)))
                .is_err()
        );
    }

    #[tokio::test]
    async fn production_refuses_names_that_resolve_to_loopback() {
        assert!(
            TargetRules::PublicHttpsOnly
                .check_url("https://localhost/in")
                .await
                .is_err()
        );
        assert!(TargetRules::AnyHost.check_url("http://localhost/in").await.is_ok());
    }
}
