//! The SSRF guard: a service's URL may name a host that resolves to the hub's own network —
//! loopback, link-local (cloud metadata at 169.254.169.254), private ranges. Deliveries to such
//! addresses are refused unless an allowlist (`dispatcher.allow_networks`) permits them.
//!
//! The dispatcher checks the **resolved** addresses at connection time (HTTP and SOAP through
//! the client's resolver, AMQP before connecting), so a public name that resolves to a private
//! address is caught as well. The api checks a service's address when it is saved, to warn
//! that deliveries will be refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error(
        "{host} resolves to {addr}, a {kind} address; add it to dispatcher.allow_networks to permit it"
    )]
    Refused {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    allow: Vec<IpNet>,
}

impl SsrfGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        SsrfGuard { allow }
    }

    /// Why `addr` may not be reached, or `None` when it may.
    pub fn refusal(&self, addr: IpAddr) -> Option<&'static str> {
        let addr = canonical(addr);
        if self.allow.iter().any(|net| net.contains(&addr)) {
            return None;
        }
        restricted_kind(addr)
    }

    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), SsrfError> {
        match self.refusal(addr) {
            None => Ok(()),
            Some(kind) => Err(SsrfError::Refused {
                host: host.to_owned(),
                addr,
                kind,
            }),
        }
    }

    /// Resolves `host` and keeps the addresses that may be reached; an error when none may.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsrfError> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| SsrfError::Resolve {
                host: host.to_owned(),
                message: e.to_string(),
            })?
            .collect();
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match self.check(host, addr.ip()) {
                Ok(()) => true,
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(refused)) => Err(refused),
            (true, None) => Err(SsrfError::Resolve {
                host: host.to_owned(),
                message: "no addresses".to_owned(),
            }),
        }
    }
}

/// IPv6 addresses that carry an IPv4 address are checked as that address: IPv4-mapped
/// (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`, deprecated but still parsed) and
/// NAT64's well-known prefix (`64:ff9b::10.0.0.1`, which a NAT64 gateway forwards to IPv4).
fn canonical(addr: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = addr else {
        return addr;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let segments = v6.segments();
    let [.., a, b, c, d] = v6.octets();
    let compatible = segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        addr
    }
}

fn restricted_kind(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(addr: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = addr.octets();
    if addr.is_loopback() {
        Some("loopback")
    } else if addr.is_link_local() {
        Some("link-local")
    } else if addr.is_private() {
        Some("private")
    } else if addr.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if addr.is_broadcast() || addr.is_multicast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn restricted_v6(addr: Ipv6Addr) -> Option<&'static str> {
    let first = addr.segments()[0];
    if addr.is_loopback() {
        Some("loopback")
    } else if addr.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if addr.is_multicast() {
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn refuses_internal_addresses_by_default() {
        let guard = SsrfGuard::default();
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            // Found by the URL-form tests: IPv4-compatible and NAT64 forms slipped through.
            ("::127.0.0.1", "loopback"),
            ("::169.254.169.254", "link-local"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::10.0.0.1", "private"),
        ] {
            assert_eq!(guard.refusal(ip(addr)), Some(kind), "{addr}");
        }
        for addr in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "100.128.0.1",
            "64:ff9b::93.184.216.34",
        ] {
            assert_eq!(guard.refusal(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn the_allowlist_permits_networks() {
        let guard = SsrfGuard::new(vec![
            "127.0.0.0/8".parse().expect("net"),
            "10.20.0.0/16".parse().expect("net"),
        ]);
        assert_eq!(guard.refusal(ip("127.0.0.1")), None);
        assert_eq!(guard.refusal(ip("::ffff:127.0.0.1")), None);
        assert_eq!(guard.refusal(ip("10.20.1.1")), None);
        assert_eq!(guard.refusal(ip("10.21.1.1")), Some("private"));
        assert_eq!(guard.refusal(ip("::1")), Some("loopback"));
    }

    #[tokio::test]
    async fn resolution_is_checked() {
        let guard = SsrfGuard::default();
        let refused = guard.resolve("localhost", 80).await.expect_err("loopback");
        assert!(
            refused.to_string().contains("dispatcher.allow_networks"),
            "{refused}"
        );
        let allowed = SsrfGuard::new(vec!["127.0.0.0/8".parse().expect("net")]);
        let addrs = allowed.resolve("127.0.0.1", 80).await.expect("allowed");
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
    }
}
