//! One entry of `system.backups.restore_host_allowlist`: what a restore's `download_url`
//! may reach although it is private. A leaf, so that the config can check entries and the
//! restore can apply them without either importing the other.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use url::Host;

/// One entry of `system.backups.restore_host_allowlist`, parsed with [`FromStr`].
///
/// A `Host` entry matches that exact host name (case-insensitive, a trailing dot
/// ignored, no wildcards) and then allows every address it resolves to. An `Ip` or
/// `Net` entry allows that address or range whatever name led to it; IPv4-mapped IPv6
/// addresses match their IPv4 form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum AllowEntry {
    /// A host name, stored in lowercase ASCII (IDNA) form without a trailing dot.
    Host(String),
    /// A single address.
    Ip(IpAddr),
    /// A CIDR range, stored with its host bits cleared.
    Net(IpNet),
}

/// An allowlist entry that is neither a host name, an IP address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid restore_host_allowlist entry {0:?}: expected a host name, an IP address or a CIDR range"
)]
pub struct InvalidAllowEntry(pub String);

impl TryFrom<String> for AllowEntry {
    type Error = InvalidAllowEntry;

    /// What the config's deserializer calls: the same rules as [`FromStr`].
    fn try_from(entry: String) -> Result<Self, Self::Error> {
        entry.parse()
    }
}

impl FromStr for AllowEntry {
    type Err = InvalidAllowEntry;

    /// Parses `10.0.0.0/8`, `fd00::/8`, `192.168.1.5`, `::1`, `[::1]` or
    /// `minio.internal`. Ports, paths, schemes and wildcards are refused rather than
    /// silently never matching.
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidAllowEntry(entry.to_owned());
        let trimmed = entry.trim();
        if trimmed.contains('/') {
            return trimmed
                .parse::<IpNet>()
                .map(|net| AllowEntry::Net(net.trunc()))
                .map_err(|_| invalid());
        }
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(AllowEntry::Ip(ip));
        }
        if trimmed.contains('*') {
            return Err(invalid());
        }
        match Host::parse(trimmed).map_err(|_| invalid())? {
            Host::Ipv4(ip) => Ok(AllowEntry::Ip(ip.into())),
            Host::Ipv6(ip) => Ok(AllowEntry::Ip(ip.into())),
            Host::Domain(name) => {
                let name = name.trim_end_matches('.');
                if name.is_empty() {
                    Err(invalid())
                } else {
                    Ok(AllowEntry::Host(name.to_owned()))
                }
            }
        }
    }
}

impl AllowEntry {
    /// Whether this entry names `host`.
    pub(crate) fn allows_host(&self, host: &str) -> bool {
        matches!(self, AllowEntry::Host(name) if name.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    /// Whether this entry covers `ip`.
    pub(crate) fn allows_ip(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        match self {
            AllowEntry::Host(_) => false,
            AllowEntry::Ip(allowed) => allowed.to_canonical() == canonical,
            AllowEntry::Net(net) => net.contains(&canonical) || net.contains(&ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse() {
        let parse = |s: &str| s.parse::<AllowEntry>();
        assert_eq!(
            parse("10.0.0.0/8"),
            Ok(AllowEntry::Net("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            parse("10.1.2.3/8"),
            Ok(AllowEntry::Net("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            parse("fd00::/8"),
            Ok(AllowEntry::Net("fd00::/8".parse().unwrap()))
        );
        assert_eq!(
            parse(" 192.168.1.5 "),
            Ok(AllowEntry::Ip("192.168.1.5".parse().unwrap()))
        );
        assert_eq!(parse("::1"), Ok(AllowEntry::Ip("::1".parse().unwrap())));
        assert_eq!(parse("[::1]"), Ok(AllowEntry::Ip("::1".parse().unwrap())));
        assert_eq!(
            parse("MinIO.Internal."),
            Ok(AllowEntry::Host("minio.internal".to_owned()))
        );
        for bad in [
            "",
            " ",
            ".",
            "minio.lan:9000",
            "http://minio.lan",
            "10.0.0.0/33",
            "*.example.com",
            "a b",
        ] {
            assert_eq!(
                parse(bad),
                Err(InvalidAllowEntry(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn allow_entries_match() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let host: AllowEntry = "minio.internal".parse().unwrap();
        assert!(host.allows_host("MINIO.internal."));
        assert!(!host.allows_host("evil-minio.internal"));
        assert!(!host.allows_ip(ip("10.0.0.1")));
        let single: AllowEntry = "10.0.0.5".parse().unwrap();
        assert!(single.allows_ip(ip("10.0.0.5")));
        assert!(single.allows_ip(ip("::ffff:10.0.0.5")));
        assert!(!single.allows_ip(ip("10.0.0.6")));
        assert!(!single.allows_host("10.0.0.5"));
        let net: AllowEntry = "172.16.0.0/12".parse().unwrap();
        assert!(net.allows_ip(ip("172.31.255.255")));
        assert!(net.allows_ip(ip("::ffff:172.20.0.1")));
        assert!(!net.allows_ip(ip("172.32.0.0")));
        let net6: AllowEntry = "fd00::/8".parse().unwrap();
        assert!(net6.allows_ip(ip("fd12::1")));
        assert!(!net6.allows_ip(ip("fe80::1")));
    }
}
