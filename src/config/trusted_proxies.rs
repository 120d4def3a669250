//! The `QUOTASK_TRUSTED_PROXIES` setting: the address ranges whose `X-Forwarded-For` is
//! believed. How a request's header is then read is the HTTP layer's business
//! (`http::client_ip`); this is only the parsed setting.

use std::net::IpAddr;

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let written: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an address or CIDR range"))?;
        let max = if written.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: bad prefix length"))?,
        };
        // Addresses are compared in their IPv4 form when they have one (`contains`), so an
        // IPv4-mapped range (`::ffff:10.0.0.0/104`) is kept as the IPv4 range it names.
        let network = canonical(written);
        let prefix = match (written, network) {
            (IpAddr::V6(_), IpAddr::V4(_)) => {
                prefix.checked_sub(96).ok_or_else(|| format!("{text:?}: reaches beyond the IPv4-mapped range"))?
            }
            _ => prefix,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u128::from(u32::from(net)) << 96, u128::from(u32::from(ip)) << 96, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(u128::from(net), u128::from(ip), self.prefix),
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
    a & mask == b & mask
}

/// An IPv4 address seen through a dual-stack socket or written by a dual-stack proxy
/// (`::ffff:10.0.0.1`) is that IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` is believed; empty by default.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses a list of addresses and ranges (`QUOTASK_TRUSTED_PROXIES`, comma-separated).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        items
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether no proxy is trusted (the default): `X-Forwarded-For` is then never read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("::ffff:10.0.0.1").unwrap().contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::ffff:10.0.0.0/104").unwrap().contains(ip("10.200.0.1")));
        assert!(!Cidr::parse("::ffff:10.0.0.0/104").unwrap().contains(ip("11.0.0.1")));
        assert!(Cidr::parse("::ffff:10.0.0.0/8").is_err(), "a mapped range shorter than /96");
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_list_is_parsed_item_by_item_and_blank_items_are_skipped() {
        let proxies = TrustedProxies::parse(&["127.0.0.1", " ", "10.0.0.0/8 "]).unwrap();
        assert!(proxies.trusts(ip("10.3.2.1")) && proxies.trusts(ip("127.0.0.1")));
        assert!(!proxies.trusts(ip("127.0.0.2")));
        assert!(TrustedProxies::parse(&["127.0.0.1", "nope"]).unwrap_err().contains("nope"));
        assert!(TrustedProxies::default().is_empty());
    }
}
