//! The SSRF guard of SPEC §8: which destination addresses are refused, and a
//! DNS resolver for the HTTP client that refuses names resolving to them.
//!
//! The classifier is pure. The resolver runs at connect time, so a name that
//! was public when an endpoint was saved and later points at a private
//! address is still refused. IP-literal URLs never reach a resolver; the
//! sender checks them with [`forbidden_class`] before every request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub mod registry;

/// Why an address is refused, or `None` when it may be a destination.
///
/// An address is refused when the most specific block of IANA's IPv4 or
/// IPv6 Special-Purpose Address Registry holding it is not globally
/// reachable ([`registry`]; `N/A`, as for Teredo and 6to4, is not
/// reachable either); the class is that block's name (`private-use`,
/// `loopback`, `shared address space`, ...). Beyond the registries:
/// multicast (`224.0.0.0/4`, `ff00::/8`, in IANA's multicast registries
/// instead), the cloud metadata address `169.254.169.254` (named apart),
/// IPv4-compatible IPv6 addresses (`::a.b.c.d`, deprecated), and the IPv4
/// address inside an IPv4-mapped or NAT64 (`64:ff9b::/96`) address, which
/// is judged as IPv4.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                return Some("cloud-metadata");
            }
            if v4.is_multicast() {
                return Some("multicast");
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if seg[0] & 0xff00 == 0xff00 {
                return Some("multicast");
            }
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_class(IpAddr::V4(v4)).or(Some("ipv4-mapped"));
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 = Ipv4Addr::from(((u32::from(seg[6])) << 16) | u32::from(seg[7]));
                if let Some(class) = forbidden_class(IpAddr::V4(v4)) {
                    return Some(class);
                }
            }
            if seg[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
                return Some("ipv4-compatible");
            }
        }
    }
    match registry::block_of(ip) {
        Some(block) if !block.globally_reachable => Some(block.name.as_str()),
        _ => None,
    }
}

/// A refused destination, for errors and the DLQ's `hookstream-last-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {host} refused: {class} address {ip} (allow_private_destinations is off)")]
pub struct Refused {
    /// The name or literal of the URL.
    pub host: String,
    /// The offending address.
    pub ip: IpAddr,
    /// Its class (`loopback`, `private`, ...).
    pub class: &'static str,
}

/// Checks every address a name resolved to; one forbidden address refuses
/// the name (a DNS answer mixing public and private addresses is an attack).
pub fn check_all(host: &str, addrs: &[SocketAddr]) -> Result<(), Refused> {
    for addr in addrs {
        if let Some(class) = forbidden_class(addr.ip()) {
            return Err(Refused {
                host: host.to_string(),
                ip: addr.ip(),
                class,
            });
        }
    }
    Ok(())
}

/// reqwest resolver that applies [`check_all`] to every lookup.
#[derive(Debug, Default, Clone)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            check_all(&host, &addrs)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        forbidden_class(s.parse().unwrap())
    }

    #[test]
    fn ipv4_private_and_special_ranges_are_refused() {
        assert_eq!(class("127.0.0.1"), Some("loopback"));
        assert_eq!(class("127.255.255.254"), Some("loopback"));
        assert_eq!(class("10.0.0.1"), Some("private-use"));
        assert_eq!(class("172.16.0.1"), Some("private-use"));
        assert_eq!(class("172.31.255.255"), Some("private-use"));
        assert_eq!(class("192.168.1.1"), Some("private-use"));
        assert_eq!(class("169.254.169.254"), Some("cloud-metadata"));
        assert_eq!(class("169.254.1.1"), Some("link local"));
        assert_eq!(class("100.64.0.1"), Some("shared address space"));
        assert_eq!(class("100.127.255.255"), Some("shared address space"));
        assert_eq!(class("0.0.0.0"), Some("\"this host on this network\""));
        assert_eq!(class("0.1.2.3"), Some("\"this network\""));
        assert_eq!(class("224.0.0.1"), Some("multicast"));
        assert_eq!(class("239.255.255.250"), Some("multicast"));
        assert_eq!(class("255.255.255.255"), Some("limited broadcast"));
        assert_eq!(
            class("192.88.99.1"),
            Some("deprecated (6to4 relay anycast)")
        );
    }

    #[test]
    fn ipv4_public_addresses_pass() {
        assert_eq!(class("8.8.8.8"), None);
        assert_eq!(class("172.32.0.1"), None);
        assert_eq!(class("100.128.0.1"), None);
        assert_eq!(class("93.184.216.34"), None);
        assert_eq!(
            class("192.0.0.9"),
            None,
            "PCP anycast is globally reachable"
        );
        assert_eq!(class("192.31.196.1"), None, "AS112 is globally reachable");
    }

    #[test]
    fn ipv6_ranges_are_refused() {
        assert_eq!(class("::1"), Some("loopback"));
        assert_eq!(class("::"), Some("unspecified"));
        assert_eq!(class("fe80::1"), Some("link-local unicast"));
        assert_eq!(class("fd00:ec2::254"), Some("unique-local"));
        assert_eq!(class("fc00::1"), Some("unique-local"));
        assert_eq!(class("ff02::1"), Some("multicast"));
        assert_eq!(class("2001:db8::1"), Some("documentation"));
        assert_eq!(class("3fff::1"), Some("documentation"));
        assert_eq!(class("64:ff9b:1::a00:1"), Some("ipv4-ipv6 translat."));
        assert_eq!(class("2001::1"), Some("teredo"));
        assert_eq!(
            class("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            Some("teredo")
        );
        assert_eq!(class("2002:0808:0808::1"), Some("6to4"));
        assert_eq!(class("100::1"), Some("discard-only address block"));
        assert_eq!(class("5f00::1"), Some("segment routing (srv6) sids"));
        assert_eq!(class("2606:4700::1111"), None);
        assert_eq!(class("2001:4860:4860::8888"), None);
    }

    #[test]
    fn ipv4_embedded_in_ipv6_is_judged_as_ipv4() {
        assert_eq!(class("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(class("::ffff:169.254.169.254"), Some("cloud-metadata"));
        assert_eq!(class("::ffff:10.1.2.3"), Some("private-use"));
        assert_eq!(class("::ffff:8.8.8.8"), Some("ipv4-mapped"));
        assert_eq!(class("64:ff9b::a00:1"), Some("private-use"));
        assert_eq!(class("64:ff9b::808:808"), None, "NAT64 of a public address");
        assert_eq!(class("::a00:1"), Some("ipv4-compatible"));
    }

    #[test]
    fn every_registry_block_is_judged_by_its_globally_reachable_flag() {
        // Each block's first address and last address is refused exactly when the most
        // specific block holding it is not globally reachable.
        for text in [
            include_str!("iana-ipv4-special-registry.csv"),
            include_str!("iana-ipv6-special-registry.csv"),
        ] {
            for row in registry::parse(text) {
                let block = row.unwrap();
                let first = block.first();
                let owner = registry::block_of(first).unwrap();
                let refused = forbidden_class(first);
                let policy = matches!(
                    refused,
                    Some("multicast" | "cloud-metadata" | "ipv4-compatible" | "ipv4-mapped")
                ) || refused.is_some() && first.is_ipv6() && {
                    let seg = match first {
                        IpAddr::V6(v6) => v6.segments(),
                        IpAddr::V4(_) => [0; 8],
                    };
                    seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                };
                if !policy {
                    assert_eq!(
                        refused.is_some(),
                        !owner.globally_reachable,
                        "{first} in {} ({:?})",
                        owner.name,
                        refused
                    );
                }
            }
        }
    }

    #[test]
    fn one_bad_address_refuses_the_name() {
        let good: SocketAddr = "8.8.8.8:443".parse().unwrap();
        let bad: SocketAddr = "10.0.0.5:443".parse().unwrap();
        assert!(check_all("ok.example", &[good]).is_ok());
        let err = check_all("mixed.example", &[good, bad]).unwrap_err();
        assert_eq!(err.class, "private-use");
        assert!(err.to_string().contains("mixed.example"));
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match GuardedResolver.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
