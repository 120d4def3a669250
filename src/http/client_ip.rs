//! Which address a request comes from, for sign-in throttling: the socket's peer,
//! unless that peer is a proxy the operator trusts (`QUOTASK_TRUSTED_PROXIES`, parsed in
//! `config`); then the `X-Forwarded-For` hops it appended are read from the right, past
//! every trusted hop. A client can write anything into the header, so only hops added by
//! trusted proxies are believed, and with no trusted proxies (the default) the header is
//! ignored.

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::config::TrustedProxies;
use crate::config::trusted_proxies::canonical;

/// The client's address: `peer`, or, when `peer` is trusted, the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy. A malformed hop stops
/// the walk at the last address a trusted proxy vouched for.
pub fn client(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let mut client = canonical(peer);
    if !proxies.trusts(client) {
        return client;
    }
    // Several headers count as one list, in order (RFC 9110, 5.3).
    let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let hops: Vec<&str> = hops.collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !proxies.trusts(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        assert_eq!(client(&none, ip("192.0.2.7"), &forwarded("1.2.3.4")), ip("192.0.2.7"));
        let proxies = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        assert_eq!(client(&proxies, ip("192.0.2.7"), &forwarded("1.2.3.4")), ip("192.0.2.7"));
    }

    #[test]
    fn a_trusted_peer_gives_the_right_most_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        // The client forged the first hop; the proxies appended the rest.
        let headers = forwarded("6.6.6.6, 198.51.100.9, 10.0.0.2");
        assert_eq!(client(&proxies, ip("127.0.0.1"), &headers), ip("198.51.100.9"));
        assert_eq!(client(&proxies, ip("127.0.0.1"), &forwarded("garbage, 10.0.0.3")), ip("10.0.0.3"));
        assert_eq!(client(&proxies, ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
    }
}
