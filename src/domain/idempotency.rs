//! Safe retries of task creation (docs/quota.md, "Safe retries"): what an
//! `Idempotency-Key` may be, what makes a repeat the same request, and how long a key is
//! remembered. The stores keep keys; these rules decide what a kept key means.

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::FieldError;

/// How long a key is remembered after its first use: a repeat within it gets the first
/// answer again; after it, the key is forgotten and the request is a new one.
pub const WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// A client's key, with a digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: [u8; 32],
}

impl IdempotencyKey {
    /// The key of a request to `route` with `content`: 1 to 255 visible ASCII
    /// characters. The fingerprint covers the route and the content, so the same key
    /// with another body, or on the other create route, is told apart.
    pub fn parse(raw: &[u8], route: &str, content: &str) -> Result<Self, FieldError> {
        if raw.is_empty() || raw.len() > 255 || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
        }
        let mut digest = Sha256::new();
        digest.update(route.as_bytes());
        digest.update([0]);
        digest.update(content.as_bytes());
        let key = String::from_utf8_lossy(raw).into_owned();
        Ok(IdempotencyKey { key, fingerprint: digest.finalize().into() })
    }
}

/// Keys first used before this instant are forgotten (and may be pruned).
pub fn remembered_since(now: Timestamp) -> Timestamp {
    now.checked_sub(WINDOW).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(b"abc-123_~", "v1", "x").is_ok());
        assert!(IdempotencyKey::parse("k".repeat(255).as_bytes(), "v1", "x").is_ok());
        assert!(IdempotencyKey::parse(b"", "v1", "x").is_err());
        assert!(IdempotencyKey::parse("k".repeat(256).as_bytes(), "v1", "x").is_err());
        assert!(IdempotencyKey::parse(b"with space", "v1", "x").is_err());
        assert!(IdempotencyKey::parse("é".as_bytes(), "v1", "x").is_err());
    }

    #[test]
    fn the_fingerprint_tells_bodies_and_routes_apart() {
        let a = IdempotencyKey::parse(b"k", "v1", "x").unwrap();
        assert_eq!(a, IdempotencyKey::parse(b"k", "v1", "x").unwrap());
        assert_ne!(a.fingerprint, IdempotencyKey::parse(b"k", "v1", "y").unwrap().fingerprint);
        assert_ne!(a.fingerprint, IdempotencyKey::parse(b"k", "seed", "x").unwrap().fingerprint);
    }

    #[test]
    fn a_key_is_remembered_for_exactly_24_hours() {
        let now: Timestamp = "2026-03-08T12:00:00Z".parse().unwrap();
        assert_eq!(remembered_since(now), "2026-03-07T12:00:00Z".parse::<Timestamp>().unwrap());
    }
}
