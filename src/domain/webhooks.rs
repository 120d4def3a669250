//! Webhooks' rules: which events exist and what each carries, which destinations are
//! refused (loopback, private, link-local, metadata: no request forgery into the
//! network quotask runs in), how a delivery is signed (Standard Webhooks), and when a
//! failed delivery is tried again or given up. The service does the I/O (DNS, HTTP);
//! the stores keep the outbox.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use jiff::{SignedDuration, Timestamp, civil::Date};
use sha2::Sha256;
use uuid::Uuid;

use super::FieldError;
use super::model::{Task, TaskView};

/// Webhooks one user may hold; one more is refused with 409.
pub const MAX_PER_USER: u32 = 10;
/// Longest URL taken.
pub const MAX_URL_LEN: usize = 2000;
/// What a secret starts with; base64 of `SECRET_BYTES` random bytes follows.
pub const SECRET_PREFIX: &str = "whsec_";
pub const SECRET_BYTES: usize = 24;

/// After a failed attempt `n` (1-based), the next comes `RETRY_DELAYS[n - 1]` later;
/// after the last, the event is given up and its webhook disabled. In all 27 h 35 min:
/// a receiver down for up to a day still gets everything.
pub const RETRY_DELAYS: [SignedDuration; 7] = [
    SignedDuration::from_secs(5),
    SignedDuration::from_mins(5),
    SignedDuration::from_mins(30),
    SignedDuration::from_hours(2),
    SignedDuration::from_hours(5),
    SignedDuration::from_hours(10),
    SignedDuration::from_hours(10),
];

/// How long a claimed event is this instance's alone. An attempt takes at most
/// `DELIVERY_TIMEOUT`, so the lease outlives it; an instance that dies holding a lease
/// delays the event by at most this much.
pub const LEASE: SignedDuration = SignedDuration::from_secs(60);
/// Connecting to a receiver, and the whole attempt.
pub const CONNECT_TIMEOUT: SignedDuration = SignedDuration::from_secs(5);
pub const DELIVERY_TIMEOUT: SignedDuration = SignedDuration::from_secs(15);

/// What a webhook can be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    TaskCreated,
    TaskUpdated,
    TaskDeleted,
    /// The create (single or batch) that used the last unit of the user's day.
    QuotaExhausted,
}

impl EventType {
    pub const ALL: [EventType; 4] =
        [EventType::TaskCreated, EventType::TaskUpdated, EventType::TaskDeleted, EventType::QuotaExhausted];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskCreated => "task.created",
            EventType::TaskUpdated => "task.updated",
            EventType::TaskDeleted => "task.deleted",
            EventType::QuotaExhausted => "quota.exhausted",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The events a webhook asked for: at least one, each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventTypes(u8);

impl EventTypes {
    /// The events named in `names` (a repeat counts once); names an unknown one.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<EventTypes, FieldError> {
        let mut set = EventTypes::default();
        for name in names {
            let event = EventType::parse(name.as_ref()).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
                FieldError::new("events", format!("unknown event {:?}; known: {}", name.as_ref(), known.join(", ")))
            })?;
            set.0 |= 1 << event as u8;
        }
        if set.0 == 0 {
            return Err(FieldError::new("events", "must name at least one event"));
        }
        Ok(set)
    }

    pub fn contains(self, event: EventType) -> bool {
        self.0 & (1 << event as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = EventType> {
        EventType::ALL.into_iter().filter(move |e| self.contains(*e))
    }

    /// As the stores keep it: the names separated by spaces, with a space on each side,
    /// so that `like '% name %'` finds a name in SQL.
    pub fn to_stored(self) -> String {
        let names: Vec<&str> = self.iter().map(EventType::as_str).collect();
        format!(" {} ", names.join(" "))
    }

    pub fn from_stored(text: &str) -> Option<EventTypes> {
        let names: Vec<&str> = text.split_whitespace().collect();
        EventTypes::parse(&names).ok()
    }
}

/// A webhook as kept: where to, what for, the secret it is signed with.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub events: EventTypes,
    pub secret: String,
    pub created_at: Timestamp,
    /// Set when an event could not be delivered for the whole retry schedule; nothing
    /// more is sent to it.
    pub disabled: bool,
}

/// One event of one webhook, for the delivery log.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: Timestamp,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// None once delivered or given up.
    pub next_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    /// Every attempt, oldest first.
    pub log: Vec<Attempt>,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Timestamp,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did (no answer, refused destination, status not 2xx).
    pub error: Option<String>,
}

/// An event claimed for delivery, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub event_id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub secret: String,
    pub event_type: String,
    pub occurred_at: Timestamp,
    /// The event's `data`, JSON.
    pub data: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of an attempt, for the store to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(Timestamp),
    /// The schedule is spent: the event is given up and its webhook disabled.
    GiveUp,
}

/// After attempt number `attempt` (1-based) at `now`, which succeeded or not.
pub fn next_after(attempt: u32, succeeded: bool, now: Timestamp) -> Next {
    if succeeded {
        return Next::Delivered;
    }
    match RETRY_DELAYS.get(attempt.saturating_sub(1) as usize) {
        Some(delay) => Next::RetryAt(now.checked_add(*delay).unwrap_or(now)),
        None => Next::GiveUp,
    }
}

/// An event's `data` for a task created or updated: the task as clients see it.
pub fn task_data(task: &Task) -> String {
    serde_json::to_string(&TaskView::from(task.clone())).unwrap_or_default()
}

/// An event's `data` for a deleted task.
pub fn deleted_data(id: Uuid) -> String {
    serde_json::json!({ "id": id.to_string() }).to_string()
}

/// An event's `data` for `quota.exhausted`: the local day and its limit, all used.
/// (The PostgreSQL create builds the same object in its statement.)
pub fn exhausted_data(day: Date, limit: u32) -> String {
    serde_json::json!({ "day": day.to_string(), "limit": limit, "used": limit }).to_string()
}

/// Whether a create of `requested` units, admitted with `used` of `limit` before it,
/// used the day's last unit.
pub fn exhausts(limit: u32, used: u32, requested: u32) -> bool {
    used.saturating_add(requested) >= limit
}

/// The body sent: `{"type", "timestamp", "data"}`.
pub fn body(event_type: &str, occurred_at: Timestamp, data: &str) -> String {
    let data: serde_json::Value = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
    serde_json::json!({ "type": event_type, "timestamp": occurred_at.to_string(), "data": data }).to_string()
}

/// The key of a secret: the base64 after `whsec_`.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// A secret made of `random` bytes.
pub fn new_secret(random: &[u8; SECRET_BYTES]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(random))
}

/// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`,
/// keyed with the secret's key (the Standard Webhooks specification).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A webhook's URL: `http` or `https`, with a host, at most `MAX_URL_LEN` long.
#[derive(Debug, Clone)]
pub struct WebhookUrl(url::Url);

/// Where a URL's host points, before any DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<WebhookUrl, FieldError> {
        let bad = |why: &str| FieldError::new("url", why.to_owned());
        if raw.len() > MAX_URL_LEN {
            return Err(bad("must be at most 2000 characters"));
        }
        let url = url::Url::parse(raw).map_err(|_| bad("must be an absolute http or https URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must use http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry a user name or password"));
        }
        match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => {}
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {}
            _ => return Err(bad("must name a host")),
        }
        Ok(WebhookUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn host(&self) -> Host {
        match self.0.host() {
            Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => Host::Name(name.to_owned()),
            None => Host::Name(String::new()),
        }
    }

    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }
}

/// Whether a destination at `ip` is refused: loopback, private, link-local (which
/// holds the cloud metadata address 169.254.169.254), unspecified, multicast,
/// broadcast, shared (CGNAT) and reserved ranges, and IPv6 forms that carry such an
/// IPv4 address (mapped, compatible, NAT64).
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => is_refused_v6(v6),
    }
}

fn is_refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        // Shared address space (CGNAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Reserved, 240.0.0.0/4.
        || a >= 240
}

fn is_refused_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = || Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_refused_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) carry an IPv4 address.
    if segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_refused_v4(embedded_v4());
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_refused_v4(embedded_v4());
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local, fc00::/7.
        || (segments[0] & 0xfe00) == 0xfc00
        // Link-local, fe80::/10, and the deprecated site-local fec0::/10.
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_matches_the_standard_webhooks_test_vectors() {
        // From the Standard Webhooks reference libraries' tests (Go `TestWebhookSign`,
        // Rust `test_sign`).
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let key = secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_new_secret_is_whsec_and_base64_of_its_bytes() {
        let secret = new_secret(&[7; SECRET_BYTES]);
        assert!(secret.starts_with("whsec_"));
        assert_eq!(secret_key(&secret).unwrap(), [7; SECRET_BYTES]);
    }

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_refused() {
        for refused in [
            "127.0.0.1",
            "127.255.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_refused(refused.parse().unwrap()), "{refused} should be refused");
        }
        for allowed in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_refused(allowed.parse().unwrap()), "{allowed} should be allowed");
        }
    }

    #[test]
    fn a_url_must_be_http_or_https_with_a_host() {
        assert!(WebhookUrl::parse("https://example.com/hook").is_ok());
        assert_eq!(WebhookUrl::parse("http://10.0.0.1:8080/x").unwrap().host(), Host::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(WebhookUrl::parse("http://[::1]/").unwrap().host(), Host::Ip("::1".parse().unwrap()));
        for bad in ["ftp://example.com/", "file:///etc/passwd", "example.com", "https://user:pw@example.com/", ""] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(WebhookUrl::parse(&format!("https://example.com/{}", "a".repeat(2000))).is_err());
    }

    #[test]
    fn retries_span_more_than_a_day_then_give_up() {
        let total: SignedDuration = RETRY_DELAYS.iter().copied().fold(SignedDuration::ZERO, |a, b| a + b);
        assert!(total >= SignedDuration::from_hours(24), "{total:?}");
        let now: Timestamp = "2026-06-15T12:00:00Z".parse().unwrap();
        assert_eq!(next_after(1, false, now), Next::RetryAt(now + SignedDuration::from_secs(5)));
        assert_eq!(next_after(3, true, now), Next::Delivered);
        assert_eq!(next_after(7, false, now), Next::RetryAt(now + SignedDuration::from_hours(10)));
        assert_eq!(next_after(8, false, now), Next::GiveUp);
    }

    #[test]
    fn events_parse_once_each_and_round_trip_through_storage() {
        let events = EventTypes::parse(&["task.created", "quota.exhausted", "task.created"]).unwrap();
        assert_eq!(events.iter().collect::<Vec<_>>(), [EventType::TaskCreated, EventType::QuotaExhausted]);
        assert_eq!(events.to_stored(), " task.created quota.exhausted ");
        assert_eq!(EventTypes::from_stored(&events.to_stored()), Some(events));
        assert!(EventTypes::parse::<&str>(&[]).is_err());
        assert!(EventTypes::parse(&["task.exploded"]).is_err());
    }

    #[test]
    fn the_create_that_uses_the_last_unit_exhausts_the_day() {
        assert!(exhausts(5, 4, 1));
        assert!(!exhausts(5, 3, 1));
        assert!(exhausts(5, 2, 3));
    }
}
