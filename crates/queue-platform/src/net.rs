//! Who the client is. Behind proxies the TCP peer is the last proxy, not the client, and
//! `X-Forwarded-For` is written partly by the client (anything it likes) and partly by the
//! proxies it went through (each appends the address it saw). [`TrustedNetworks`] names the
//! proxies whose word counts (CIDRs from config); [`TrustedNetworks::client_ip`] walks the chain
//! from the right, past trusted proxies only, so the first address no trusted party would have
//! written is never believed. [`limit_key`] is what per-client limits count by: an IPv6 host
//! usually owns a whole /64 and can pick any address in it, so IPv6 addresses count by /64.
//!
//! The rule (docs/configuration.md, "Client addresses"):
//! 1. The TCP peer not trusted: the peer is the client; `X-Forwarded-For` is ignored.
//! 2. Otherwise walk `X-Forwarded-For` (every header line, every comma-separated entry) from the
//!    right: trusted addresses are skipped; the first untrusted one is the client.
//! 3. Every address trusted: the left-most one (the farthest hop we know of).
//! 4. An entry that is not an IP address ends the walk: the client is the last address the walk
//!    reached (the nearest hop a trusted proxy vouched for). The walk never steps over garbage
//!    to believe what lies left of it, which the client may have written.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// A list of networks (CIDRs; a bare address is its own /32 or /128) trusted for something:
/// proxies whose `X-Forwarded-For` is believed, peers whose `traceparent` is continued.
/// In config: an array of strings, `["10.0.0.0/8", "127.0.0.1", "::1"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedNetworks(Vec<IpNet>);

impl TrustedNetworks {
    /// Nothing trusted.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// This host: `127.0.0.0/8` and `::1`.
    pub fn loopback() -> Self {
        Self(vec![LOOPBACK_V4, LOOPBACK_V6])
    }

    /// Parses config entries; the error names the entry and why it is refused.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries.iter().map(|e| parse_entry(e.as_ref())).collect::<Result<Vec<_>, _>>().map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as configured.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` is in one of the networks. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`,
    /// what a dual-stack socket reports for an IPv4 peer) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer` carrying the `X-Forwarded-For` header lines
    /// `forwarded_for` (in the order received), by the rule in the module docs.
    pub fn client_ip<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let lines: Vec<&[u8]> = forwarded_for.into_iter().collect();
        let mut reached = peer;
        for line in lines.iter().rev() {
            // A line that is not text is as good as an unparsable entry.
            let Ok(line) = std::str::from_utf8(line) else { return reached };
            for entry in line.rsplit(',') {
                let Some(ip) = parse_forwarded(entry) else { return reached };
                if !self.contains(ip) {
                    return ip;
                }
                reached = ip;
            }
        }
        reached
    }
}

/// The address per-client limits count by: an IPv4 address as it is, an IPv6 address by its
/// /64 (one host usually has a whole /64 to pick addresses from), an IPv4-mapped IPv6 address
/// as the IPv4 address.
pub fn limit_ip(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// [`limit_ip`] as the text key of a stored counter: `192.0.2.7`, `2001:db8:1:2::/64`.
pub fn limit_key(ip: IpAddr) -> String {
    match limit_ip(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(prefix) => format!("{prefix}/64"),
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`, as some load balancers write them). Anything else (`unknown`, an
/// obfuscated identifier, garbage) is `None`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    IpAddr::from_str(entry).or_else(|_| SocketAddr::from_str(entry).map(|s| s.ip())).ok().map(|ip| ip.to_canonical())
}

/// One config entry: `a.b.c.d/n`, `x::y/n`, or a bare address. A network with host bits set
/// (`10.0.0.1/8`) is refused: it is most likely a typo for something narrower or wider.
fn parse_entry(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    if text.contains('/') {
        let n = IpNet::from_str(text)
            .map_err(|_| format!("`{entry}` is not a CIDR network (e.g. `10.0.0.0/8`, `fd00::/8`)"))?;
        if n.trunc() != n {
            return Err(format!("`{entry}` has host bits set; the network is `{}`", n.trunc()));
        }
        Ok(n)
    } else {
        IpAddr::from_str(text)
            .map(|ip| IpNet::from(ip.to_canonical()))
            .map_err(|_| format!("`{entry}` is not an IP address or CIDR network (e.g. `10.0.0.7`, `10.0.0.0/8`)"))
    }
}

const LOOPBACK_V4: IpNet = IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8));
const LOOPBACK_V6: IpNet = IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128));

impl<'de> serde::Deserialize<'de> for TrustedNetworks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = TrustedNetworks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of IP addresses and CIDR networks, e.g. [\"10.0.0.0/8\", \"::1\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrustedNetworks, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    out.push(parse_entry(&entry).map_err(de::Error::custom)?);
                }
                Ok(TrustedNetworks(out))
            }
        }
        d.deserialize_seq(Entries)
    }
}

impl Serialize for TrustedNetworks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| n.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(entries: &[&str]) -> TrustedNetworks {
        TrustedNetworks::parse(entries).expect("valid entries")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn client(t: &TrustedNetworks, peer: &str, lines: &[&str]) -> IpAddr {
        t.client_ip(ip(peer), lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn cidrs_and_bare_addresses_parse_and_match() {
        let t = nets(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"]);
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("11.0.0.1")));
        // What a dual-stack socket reports for an IPv4 peer.
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(TrustedNetworks::loopback().contains(ip("127.0.0.2")));
        assert!(!TrustedNetworks::none().contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_clear_config_errors() {
        for (entry, says) in [
            ("10.0.0.0/33", "is not a CIDR network"),
            ("10.0.0/8", "is not a CIDR network"),
            ("localhost", "is not an IP address or CIDR network"),
            ("10.0.0.1/8", "has host bits set; the network is `10.0.0.0/8`"),
            ("", "is not an IP address"),
        ] {
            let e = TrustedNetworks::parse(&[entry]).expect_err(entry);
            assert!(e.contains(says), "{entry}: {e}");
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct C {
            trusted_proxies: TrustedNetworks,
        }
        let ok: C = toml::from_str(r#"trusted_proxies = ["10.0.0.0/8", "::1"]"#).expect("valid");
        assert_eq!(ok.trusted_proxies, nets(&["10.0.0.0/8", "::1"]));
        let e = toml::from_str::<C>(r#"trusted_proxies = ["10.0.0.0/8", "10.1.0.0/33"]"#).expect_err("invalid");
        assert!(e.to_string().contains("`10.1.0.0/33` is not a CIDR network"), "{e}");
        let e = toml::from_str::<C>(r#"trusted_proxies = "10.0.0.0/8""#).expect_err("not an array");
        assert!(e.to_string().contains("an array of IP addresses and CIDR networks"), "{e}");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client(&t, "203.0.113.9", &["198.51.100.1"]), ip("203.0.113.9"));
        assert_eq!(client(&TrustedNetworks::none(), "10.0.0.1", &["198.51.100.1"]), ip("10.0.0.1"));
    }

    #[test]
    fn spoofed_left_entries_are_ignored() {
        // The client (203.0.113.9) sent `X-Forwarded-For: 1.2.3.4, 5.6.7.8`; the load balancer
        // (10.0.0.5) appended what it saw.
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client(&t, "10.0.0.5", &["1.2.3.4, 5.6.7.8, 203.0.113.9"]), ip("203.0.113.9"));
        // Also when the forged part comes as header lines of its own.
        assert_eq!(client(&t, "10.0.0.5", &["1.2.3.4", "5.6.7.8", "203.0.113.9"]), ip("203.0.113.9"));
        // A forged entry inside the trusted range cannot hide the real client either.
        assert_eq!(client(&t, "10.0.0.5", &["10.9.9.9, 203.0.113.9"]), ip("203.0.113.9"));
    }

    #[test]
    fn chains_of_trusted_proxies_are_walked() {
        // client → CDN (192.0.2.10) → load balancer (10.0.0.5) → us
        let t = nets(&["10.0.0.0/8", "192.0.2.0/24"]);
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9, 192.0.2.10"]), ip("203.0.113.9"));
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9", "192.0.2.10"]), ip("203.0.113.9"));
        // Without the CDN in the list, the CDN is the client (right-most untrusted).
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9, 192.0.2.10"]), ip("192.0.2.10"));
    }

    #[test]
    fn all_trusted_gives_the_left_most_and_no_header_gives_the_peer() {
        let t = nets(&["127.0.0.0/8"]);
        assert_eq!(client(&t, "127.0.0.1", &["127.0.0.2"]), ip("127.0.0.2"));
        assert_eq!(client(&t, "127.0.0.1", &["127.0.0.3, 127.0.0.2"]), ip("127.0.0.3"));
        assert_eq!(client(&t, "127.0.0.1", &[]), ip("127.0.0.1"));
    }

    #[test]
    fn garbage_ends_the_walk_at_the_last_vouched_address() {
        let t = nets(&["10.0.0.0/8"]);
        // Garbage right of a real client is never stepped over.
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9, unknown"]), ip("10.0.0.5"));
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9, bogus, 10.0.0.6"]), ip("10.0.0.6"));
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9, "]), ip("10.0.0.5"));
        // Garbage left of the client does not matter.
        assert_eq!(client(&t, "10.0.0.5", &["bogus, 203.0.113.9"]), ip("203.0.113.9"));
        // Ports, as some balancers write them, are fine.
        assert_eq!(client(&t, "10.0.0.5", &["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(client(&t, "10.0.0.5", &["[2001:db8::9]:4711"]), ip("2001:db8::9"));
        // Bytes that are not text are garbage too.
        assert_eq!(t.client_ip(ip("10.0.0.5"), [&b"\xff\xfe"[..]]), ip("10.0.0.5"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client(&t, "::ffff:10.0.0.5", &["::ffff:203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.9")), "203.0.113.9");
    }

    #[test]
    fn limit_keys_group_ipv6_by_64_and_keep_ipv4() {
        assert_eq!(limit_key(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(limit_key(ip("203.0.113.10")), "203.0.113.10");
        let a = limit_key(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), a, "one /64, one key");
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), a, "the next /64 is another client");
        assert_eq!(limit_key(ip("::1")), "::/64");
    }
}
