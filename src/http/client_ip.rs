//! Which client a request comes from, for throttling: the socket's peer, unless that
//! peer is a proxy the operator trusts (`QUOTASK_TRUSTED_PROXIES`, parsed in `config`);
//! then the `X-Forwarded-For` items the proxies appended name it.
//!
//! Each proxy appends the address it received the request from, so the list is read
//! from the right (several headers count as one list, in order: RFC 9110, 5.3), one item
//! at a time:
//!
//! - the address of a trusted proxy: it vouches for the item on its left; read on;
//! - any other address (with or without a port): the client; stop;
//! - an item that is not an address (a byte that is not ASCII, `unknown`, an obfuscated
//!   name, nothing): the trusted proxy on its right could not name its peer, so nothing
//!   further left can be believed. The client is that proxy, the last address read;
//! - no items left: every hop was a trusted proxy; the client is the left-most of them.
//!
//! Only the items trusted proxies appended are believed; whatever a client wrote itself
//! stays on the left of the address its first proxy appended, which is read first. Each
//! item is parsed on its own, so junk a client sends does not hide that address: a
//! single bad byte never charges a client's attempts to the proxy that all users behind
//! it share. With no trusted proxies (the default) the header is never read.
//!
//! The key counted for a client is its IPv4 address, or the /64 network of its IPv6
//! address: one IPv6 subscriber usually holds a whole /64 and could otherwise take a new
//! address for every attempt. An IPv4-mapped address (`::ffff:192.0.2.1`) is its IPv4
//! address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::TrustedProxies;
use crate::config::trusted_proxies::canonical;

/// The address of the client of a request that came from `peer`, by the rule above.
pub fn client_address(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let mut client = canonical(peer);
    if !proxies.trusts(client) {
        return client;
    }
    let values: Vec<&[u8]> = headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()).collect();
    let items = values.iter().rev().flat_map(|value| value.rsplit(|b| *b == b','));
    for item in items {
        let Some(ip) = parse_item(item) else { break };
        client = ip;
        if !proxies.trusts(client) {
            break;
        }
    }
    client
}

/// The key sign-in attempts from this request are counted under: the client's address
/// (`client_address`), an IPv6 one reduced to its /64 network.
pub fn client_key(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    key_of(client_address(proxies, peer, headers))
}

/// An IPv4 address as is; an IPv6 address as its /64 network (the rest zeroed).
pub fn key_of(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` item: an address, possibly with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`) or in brackets, as some proxies write them.
fn parse_item(item: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(item).ok()?.trim_matches([' ', '\t']);
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr.ip(),
            Err(_) => text.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?.into(),
        },
    };
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8", "fd00::/8"]).unwrap()
    }

    fn client(peer: &str, values: &[&[u8]]) -> IpAddr {
        client_address(&proxies(), ip(peer), &forwarded(values))
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        assert_eq!(client_address(&none, ip("192.0.2.7"), &forwarded(&[b"1.2.3.4"])), ip("192.0.2.7"));
        assert_eq!(client("192.0.2.7", &[b"1.2.3.4"]), ip("192.0.2.7"));
    }

    #[test]
    fn a_trusted_peer_gives_the_right_most_address_that_is_not_a_trusted_proxy() {
        // The client forged the first item; the proxies appended the rest.
        assert_eq!(client("127.0.0.1", &[b"6.6.6.6, 198.51.100.9, 10.0.0.2"]), ip("198.51.100.9"));
        assert_eq!(client("127.0.0.1", &[b"6.6.6.6", b"198.51.100.9", b"10.0.0.2"]), ip("198.51.100.9"));
        assert_eq!(client("127.0.0.1", &[b"10.0.0.9,10.0.0.2"]), ip("10.0.0.9"), "all proxies: the left-most");
        assert_eq!(client_address(&proxies(), ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
    }

    #[test]
    fn junk_left_of_the_clients_address_does_not_hide_it() {
        for junk in [&b"\xff\xfe"[..], b"garbage", b"", b"1.2.3", b"\xc3\xa9, 300.1.1.1, ,"] {
            let mut value = junk.to_vec();
            value.extend_from_slice(b", 198.51.100.9");
            assert_eq!(client("127.0.0.1", &[&value]), ip("198.51.100.9"), "{junk:?}");
            assert_eq!(client("127.0.0.1", &[junk, b"198.51.100.9, 10.0.0.1"]), ip("198.51.100.9"), "{junk:?}");
        }
    }

    #[test]
    fn an_item_that_is_not_an_address_ends_the_walk_at_the_proxy_on_its_right() {
        assert_eq!(client("127.0.0.1", &[b"6.6.6.6, unknown, 10.0.0.3"]), ip("10.0.0.3"));
        assert_eq!(client("127.0.0.1", &[b"6.6.6.6, \xff, 10.0.0.3"]), ip("10.0.0.3"));
        assert_eq!(client("127.0.0.1", &[b"6.6.6.6, _hidden"]), ip("127.0.0.1"));
        assert_eq!(client("127.0.0.1", &[b"6.6.6.6", b""]), ip("127.0.0.1"));
    }

    #[test]
    fn items_with_ports_brackets_spaces_or_mapped_addresses_are_read() {
        assert_eq!(client("127.0.0.1", &[b"198.51.100.9:4711"]), ip("198.51.100.9"));
        assert_eq!(client("127.0.0.1", &[b"[2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(client("127.0.0.1", &[b"[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(client("127.0.0.1", &[b" \t198.51.100.9 "]), ip("198.51.100.9"));
        assert_eq!(client("127.0.0.1", &[b"198.51.100.9, ::ffff:10.1.2.3"]), ip("198.51.100.9"));
        assert_eq!(client("::ffff:127.0.0.1", &[b"::ffff:198.51.100.9"]), ip("198.51.100.9"));
        assert_eq!(client("fd00::1", &[b"2001:db8::7"]), ip("2001:db8::7"));
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_network_and_an_ipv4_one_by_its_address() {
        assert_eq!(key_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(key_of(ip("2001:db8:1:2::1")), key_of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(key_of(ip("2001:db8:1:2::1")), key_of(ip("2001:db8:1:3::1")));
        assert_eq!(key_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(key_of(ip("192.0.2.1")), ip("192.0.2.1"));
        let none = TrustedProxies::default();
        assert_eq!(client_key(&none, ip("2001:db8::1:2:3:4"), &HeaderMap::new()), ip("2001:db8::"));
        assert_eq!(client_key(&proxies(), ip("127.0.0.1"), &forwarded(&[b"2001:db8:5:6:7::8"])), ip("2001:db8:5:6::"));
    }
}
