//! `Idempotency-Key` on task creation (QUOTA.md item 6): reading the header, the
//! request's fingerprint, and the requests of this instance still in flight.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::ApiError;
use crate::domain::FieldError;
use crate::store::IdempotencyKey;

pub const HEADER: &str = "idempotency-key";

/// The request's `Idempotency-Key` header as sent, if any (only that header is taken
/// from the request, not a copy of all of them).
pub struct KeyHeader(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for KeyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(KeyHeader(parts.headers.get(HEADER).cloned()))
    }
}

/// The key of a request, if it sent one; 1 to 255 visible ASCII characters. The
/// fingerprint covers the route and the content, so the same key with another body (or
/// on the other create route) is told apart.
pub fn key(header: &KeyHeader, route: &str, content: &str) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = &header.0 else { return Ok(None) };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters").into());
    }
    let mut digest = Sha256::new();
    digest.update(route.as_bytes());
    digest.update([0]);
    digest.update(content.as_bytes());
    let key = String::from_utf8_lossy(bytes).into_owned();
    Ok(Some(IdempotencyKey { key, fingerprint: digest.finalize().into() }))
}

/// The (user, key) pairs being created by this instance right now. A repeat that
/// arrives meanwhile is answered 409 at once rather than queued behind the first.
/// Across instances the store's own check gives the same answer.
#[derive(Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<(Uuid, String)>>>);

/// Holds a key in flight until dropped.
pub struct Claim {
    registry: InFlight,
    entry: (Uuid, String),
}

impl InFlight {
    pub fn claim(&self, user_id: Uuid, key: &str) -> Option<Claim> {
        let entry = (user_id, key.to_owned());
        let fresh = self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.clone());
        fresh.then(|| Claim { registry: self.clone(), entry })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.registry.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> KeyHeader {
        KeyHeader(Some(value.parse().unwrap()))
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(key(&KeyHeader(None), "v1", "x").unwrap().is_none());
        assert!(key(&headers("abc-123_~"), "v1", "x").unwrap().is_some());
        assert!(key(&headers(&"k".repeat(255)), "v1", "x").unwrap().is_some());
        assert!(key(&headers(&"k".repeat(256)), "v1", "x").is_err());
        assert!(key(&headers("with space"), "v1", "x").is_err());
    }

    #[test]
    fn the_fingerprint_tells_bodies_and_routes_apart() {
        let a = key(&headers("k"), "v1", "x").unwrap().unwrap();
        assert_eq!(a.fingerprint, key(&headers("k"), "v1", "x").unwrap().unwrap().fingerprint);
        assert_ne!(a.fingerprint, key(&headers("k"), "v1", "y").unwrap().unwrap().fingerprint);
        assert_ne!(a.fingerprint, key(&headers("k"), "seed", "x").unwrap().unwrap().fingerprint);
    }

    #[test]
    fn a_claimed_key_is_free_again_once_the_claim_is_dropped() {
        let in_flight = InFlight::default();
        let user = Uuid::now_v7();
        let claim = in_flight.claim(user, "k");
        assert!(claim.is_some());
        assert!(in_flight.claim(user, "k").is_none());
        drop(claim);
        assert!(in_flight.claim(user, "k").is_some());
    }
}
