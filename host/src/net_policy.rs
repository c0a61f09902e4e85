//! What a restore download may reach (server-side request forgery policy): only public
//! unicast addresses, plus what `system.backups.restore_host_allowlist` names. A leaf: the
//! HTTP client in `restore::fetch` plugs [`check_url`] into its redirect policy and
//! [`GuardedResolver`] in as its resolver, so every hop is checked on the addresses it
//! actually connects to (no DNS rebinding between a check and the connect).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::allowlist::AllowEntry;

/// Why a URL or an address may not be fetched; the payload says what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The URL has no host or carries credentials; the payload says which.
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    /// The URL's scheme (the payload) is not `http` or `https`.
    #[error("unsupported scheme {0:?}")]
    UnsupportedScheme(String),
    /// The host name or IP address (the payload) may not be connected to.
    #[error("{0} is a blocked address")]
    BlockedAddress(String),
}

/// A [`Resolve`] for the HTTP client: resolves host names and keeps only the addresses
/// the policy lets through, so the client connects to nothing but a checked address.
pub struct GuardedResolver {
    /// Hosts, addresses and ranges let through although they are not public.
    allowlist: Arc<[AllowEntry]>,
}

impl GuardedResolver {
    /// A resolver that lets through public addresses and what `allowlist` names.
    pub fn new(allowlist: Arc<[AllowEntry]>) -> Self {
        GuardedResolver { allowlist }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowlist = Arc::clone(&self.allowlist);
        Box::pin(async move {
            let host = name.as_str();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            if resolved.is_empty() {
                return Err(format!("{host} resolved to no address").into());
            }
            let host_allowed = allowlist.iter().any(|entry| entry.allows_host(host));
            let kept: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| {
                    if host_allowed {
                        return true;
                    }
                    let refusal = refusal(addr.ip(), &allowlist);
                    if let Some(reason) = refusal {
                        tracing::warn!(host, ip = %addr.ip(), reason, "refusing a restore download address");
                    }
                    refusal.is_none()
                })
                .collect();
            if kept.is_empty() {
                return Err(Refused::BlockedAddress(host.to_owned()).into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Checks what can be checked on the URL alone: scheme, host, credentials and, for a
/// literal IP (which bypasses the resolver), the address.
pub fn check_url(url: &Url, allowlist: &[AllowEntry]) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::UnsupportedScheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::InvalidUrl(
            "credentials in the URL are not accepted".to_owned(),
        ));
    }
    let ip = match url.host() {
        None => return Err(Refused::InvalidUrl("the URL has no host".to_owned())),
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    match refusal(ip, allowlist) {
        None => Ok(()),
        Some(reason) => {
            tracing::warn!(%ip, reason, "refusing a restore download address");
            Err(Refused::BlockedAddress(ip.to_string()))
        }
    }
}

/// Why `ip` may not be connected to, or `None` when it is public or allow-listed.
fn refusal(ip: IpAddr, allowlist: &[AllowEntry]) -> Option<&'static str> {
    let reason = blocked_reason(ip)?;
    if allowlist.iter().any(|entry| entry.allows_ip(ip)) {
        None
    } else {
        Some(reason)
    }
}

/// Classifies an address: `Some(reason)` for anything that is not a public unicast
/// address, `None` otherwise.
fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => blocked_reason_v4(ip),
        IpAddr::V6(ip) => blocked_reason_v6(ip),
    }
}

fn blocked_reason_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified (this network)",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared address space (CGNAT)",
        (127, ..) => "loopback",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn blocked_reason_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_reason_v4(v4);
    }
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    Some(match ip.segments() {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return blocked_reason_v4(embedded(high, low)),
        [0x2002, high, low, ..] => return blocked_reason_v4(embedded(high, low)),
        [0x64, 0xff9b, 1, ..] => "NAT64 local use",
        [0x2001, 0xdb8, ..] | [0x3fff, 0..=0x0fff, ..] => "documentation",
        [0x2001, 0..=0x01ff, ..] => "IETF protocol assignments (Teredo, benchmarking)",
        [0xfc00..=0xfdff, ..] => "private (unique local)",
        [0xfe80..=0xfebf, ..] => "link-local",
        [0xfec0..=0xfeff, ..] => "site-local",
        [0xff00..=0xffff, ..] => "multicast",
        [0x2000..=0x3fff, ..] => return None,
        _ => "reserved (outside global unicast)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_classification() {
        let blocked = [
            ("0.0.0.0", "unspecified (this network)"),
            ("0.1.2.3", "unspecified (this network)"),
            ("10.0.0.0", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.0", "shared address space (CGNAT)"),
            ("100.127.255.255", "shared address space (CGNAT)"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.0", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.1.1", "private"),
            ("198.18.0.0", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified (this network)"),
            ("::127.0.0.1", "reserved (outside global unicast)"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b:1::1", "NAT64 local use"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a9fe:a9fe::", "link-local"),
            (
                "2001::1",
                "IETF protocol assignments (Teredo, benchmarking)",
            ),
            (
                "2001:2::1",
                "IETF protocol assignments (Teredo, benchmarking)",
            ),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("100::1", "reserved (outside global unicast)"),
            ("fc00::1", "private (unique local)"),
            ("fd00:ec2::254", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("4000::1", "reserved (outside global unicast)"),
        ];
        for (ip, reason) in blocked {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(blocked_reason(parsed), Some(reason), "{ip}");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "3ffe::1",
        ];
        for ip in public {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(blocked_reason(parsed), None, "{ip}");
        }
    }
}
