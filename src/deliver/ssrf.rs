//! The SSRF guard of SPEC §8: which destination addresses are refused, and a
//! DNS resolver for the HTTP client that refuses names resolving to them.
//!
//! The classifier is pure. The resolver runs at connect time, so a name that
//! was public when an endpoint was saved and later points at a private
//! address is still refused. IP-literal URLs never reach a resolver; the
//! sender checks them with [`forbidden_class`] before every request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: [([u8; 4], u32, &str); 16] = [
        ([0, 0, 0, 0], 8, "unspecified"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "cgnat"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 169, 254], 32, "cloud-metadata"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "reserved"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, class)| *class)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d).
    if let Some(v4) = ip.to_ipv4() {
        return forbidden_v4(v4).or(Some("ipv4-embedded"));
    }
    // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return forbidden_v4(v4);
    }
    // 6to4 2002::/16 embeds an IPv4 address in segments 1-2.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return forbidden_v4(v4);
    }
    match seg[0] {
        s if s & 0xffc0 == 0xfe80 => Some("link-local"),
        s if s & 0xffc0 == 0xfec0 => Some("site-local"),
        s if s & 0xfe00 == 0xfc00 => Some("private"),
        s if s & 0xff00 == 0xff00 => Some("multicast"),
        0x2001 if seg[1] == 0x0db8 => Some("documentation"),
        0x0100 if seg[1..4] == [0, 0, 0] => Some("discard"),
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
        assert_eq!(class("10.0.0.1"), Some("private"));
        assert_eq!(class("172.16.0.1"), Some("private"));
        assert_eq!(class("172.31.255.255"), Some("private"));
        assert_eq!(class("192.168.1.1"), Some("private"));
        assert_eq!(class("169.254.169.254"), Some("cloud-metadata"));
        assert_eq!(class("169.254.1.1"), Some("link-local"));
        assert_eq!(class("100.64.0.1"), Some("cgnat"));
        assert_eq!(class("100.127.255.255"), Some("cgnat"));
        assert_eq!(class("100.100.100.200"), Some("cgnat"));
        assert_eq!(class("0.0.0.0"), Some("unspecified"));
        assert_eq!(class("224.0.0.1"), Some("multicast"));
        assert_eq!(class("255.255.255.255"), Some("broadcast"));
    }

    #[test]
    fn ipv4_public_addresses_pass() {
        assert_eq!(class("8.8.8.8"), None);
        assert_eq!(class("172.32.0.1"), None);
        assert_eq!(class("100.128.0.1"), None);
        assert_eq!(class("93.184.216.34"), None);
    }

    #[test]
    fn ipv6_ranges_are_refused() {
        assert_eq!(class("::1"), Some("loopback"));
        assert_eq!(class("::"), Some("unspecified"));
        assert_eq!(class("fe80::1"), Some("link-local"));
        assert_eq!(class("fd00:ec2::254"), Some("private"));
        assert_eq!(class("fc00::1"), Some("private"));
        assert_eq!(class("ff02::1"), Some("multicast"));
        assert_eq!(class("2001:db8::1"), Some("documentation"));
        assert_eq!(class("2606:4700::1111"), None);
    }

    #[test]
    fn ipv4_embedded_in_ipv6_is_unwrapped() {
        assert_eq!(class("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(class("::ffff:169.254.169.254"), Some("cloud-metadata"));
        assert_eq!(class("::ffff:10.1.2.3"), Some("private"));
        assert_eq!(class("64:ff9b::a00:1"), Some("private"));
        assert_eq!(class("2002:7f00:1::"), Some("loopback"));
        assert_eq!(class("::ffff:8.8.8.8"), Some("ipv4-embedded"));
    }

    #[test]
    fn one_bad_address_refuses_the_name() {
        let good: SocketAddr = "8.8.8.8:443".parse().unwrap();
        let bad: SocketAddr = "10.0.0.5:443".parse().unwrap();
        assert!(check_all("ok.example", &[good]).is_ok());
        let err = check_all("mixed.example", &[good, bad]).unwrap_err();
        assert_eq!(err.class, "private");
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
