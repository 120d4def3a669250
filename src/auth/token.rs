//! Access tokens (short-lived HS256 JWTs), and refresh and personal access tokens
//! (random, stored hashed).
//!
//! Expiry and not-before are checked against the request's own clock reading rather
//! than the host's, so one instant decides each request (docs/quota.md item 7).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const ISSUER: &str = "quotask";
const AUDIENCE: &str = "quotask";
/// The JOSE header of every access token, already base64url-encoded: HS256, and the
/// JWT `typ` of access tokens (RFC 9068), so no other token is taken for one. It is
/// `{"typ":"at+jwt","alg":"HS256"}`, byte for byte what the tokens issued before this
/// implementation carried, so those stay valid.
const HEADER: &str = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJIUzI1NiJ9";
/// How far a token's times may be off and still count: RFC 8725 asks for little.
const LEEWAY_SECS: i64 = 5;
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Serialize, Deserialize)]
struct Claims<'a> {
    sub: Uuid,
    sid: Uuid,
    iat: i64,
    nbf: i64,
    exp: i64,
    iss: &'a str,
    aud: &'a str,
}

/// What a valid access token says.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

/// Issues and checks access tokens: JWS compact serialisation (RFC 7515) with HMAC-SHA256.
///
/// Only this service issues them, always with the same header, so a token is checked
/// strictly: its header must be exactly `HEADER` (which pins the algorithm and the
/// type; RFC 8725 section 3.1), its signature must match in constant time, and only
/// then are its claims read. Doing this directly, instead of through a general JWT
/// library that parses the header and the claims twice, took 12 to 15% of the async
/// workers' CPU on authenticated routes (measured with `perf`; docs/adr/0005-own-jwt-verifier-and-token-cache.md).
///
/// A client sends the same token with every request for its 15 minutes, so tokens that
/// passed are kept, with what they say: checking one again was still a twentieth of a
/// quota read's CPU (docs/adr/0005-own-jwt-verifier-and-token-cache.md). Only the times are checked on
/// each use; a token is found only by its whole text.
pub struct Tokens {
    /// The HMAC, keyed once; each use starts from a copy.
    key: Hmac<Sha256>,
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

/// What a token that passed the checks says, and when it counts.
#[derive(Clone, Copy)]
struct Verified {
    access: Access,
    /// Unix seconds from which it counts (its not-before and issue time, less leeway).
    from: i64,
    /// When it stops counting (its expiry plus leeway).
    until: Timestamp,
}

/// Tokens kept at most; past that the record starts over. Only valid tokens get in,
/// and each takes a sign-in (an argon2 hash) or a refresh to make.
const VERIFIED_KEPT: usize = 10_000;

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        Self { key: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"), verified: Mutex::default() }
    }

    pub fn issue(&self, access: Access, now: Timestamp) -> anyhow::Result<String> {
        let iat = now.as_second();
        let claims = Claims {
            sub: access.user_id,
            sid: access.session_id,
            iat,
            nbf: iat,
            exp: iat + ACCESS_TTL_SECS,
            iss: ISSUER,
            aud: AUDIENCE,
        };
        let mut token = format!("{HEADER}.");
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&claims)?, &mut token);
        let signature = self.key.clone().chain_update(token.as_bytes()).finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The token's claims if it is well formed, signed by us with HS256, of our type,
    /// and valid at `now`; with the instant it stops being accepted.
    pub fn verify(&self, token: &str, now: Timestamp) -> Option<(Access, Timestamp)> {
        let kept = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token).copied();
        let counts = |v: &Verified| v.from <= now.as_second() && now < v.until;
        if let Some(verified) = kept {
            return counts(&verified).then_some((verified.access, verified.until));
        }
        let verified = self.check(token).filter(counts)?;
        let mut kept = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= VERIFIED_KEPT {
            kept.clear();
        }
        kept.insert(token.into(), verified);
        Some((verified.access, verified.until))
    }

    /// The header, the signature and the claims that do not depend on the time.
    fn check(&self, token: &str) -> Option<Verified> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        if header != HEADER {
            return None;
        }
        let mut expected = [0u8; 32];
        if URL_SAFE_NO_PAD.decode_slice(signature, &mut expected).ok()? != expected.len() {
            return None;
        }
        self.key.clone().chain_update(signed.as_bytes()).verify_slice(&expected).ok()?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let claims: Claims = serde_json::from_slice(&payload).ok()?;
        let until = Timestamp::from_second(claims.exp.saturating_add(LEEWAY_SECS)).ok()?;
        (claims.iss == ISSUER && claims.aud == AUDIENCE).then_some(Verified {
            access: Access { user_id: claims.sub, session_id: claims.sid },
            from: claims.nbf.max(claims.iat).saturating_sub(LEEWAY_SECS),
            until,
        })
    }
}

/// A new refresh token: what the client gets, and the hash the store keeps.
pub fn new_refresh_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new personal access token: what its owner is shown once (`qtk_` and 32 random
/// bytes), and the hash the store keeps instead.
pub fn new_personal_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{}{}", crate::domain::tokens::PREFIX, URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_personal_token(&token);
    (token, hash)
}

/// What the store finds a personal token by. A plain SHA-256 is enough: the token is
/// 256 random bits, so there is nothing to guess that a slow hash would protect.
pub fn hash_personal_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 32 fresh random bytes for a signing secret.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn access() -> Access {
        Access { user_id: Uuid::now_v7(), session_id: Uuid::now_v7() }
    }

    #[test]
    fn a_token_is_valid_until_its_expiry_plus_the_leeway() {
        let tokens = Tokens::new(&[7; 32]);
        let t = tokens.issue(access(), ts("2026-01-01T00:00:00Z")).unwrap();
        let (_, accepted_until) = tokens.verify(&t, ts("2026-01-01T00:15:04Z")).unwrap();
        assert_eq!(accepted_until, ts("2026-01-01T00:15:05Z"));
        assert!(tokens.verify(&t, ts("2026-01-01T00:15:05Z")).is_none());
        assert!(tokens.verify(&t, ts("2025-12-31T23:59:54Z")).is_none(), "not yet valid");
    }

    #[test]
    fn a_token_signed_with_another_secret_or_altered_is_refused() {
        let now = ts("2026-01-01T00:00:00Z");
        let t = Tokens::new(&[7; 32]).issue(access(), now).unwrap();
        assert!(Tokens::new(&[8; 32]).verify(&t, now).is_none());
        let tokens = Tokens::new(&[7; 32]);
        assert!(tokens.verify(&t, now).is_some(), "and now it is kept");
        let mut bytes = t.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(tokens.verify(&flipped, now).is_none());
    }

    #[test]
    fn a_kept_token_is_still_checked_against_the_time_of_each_use() {
        let tokens = Tokens::new(&[7; 32]);
        let t = tokens.issue(access(), ts("2026-01-01T00:00:00Z")).unwrap();
        assert!(tokens.verify(&t, ts("2025-12-31T23:59:54Z")).is_none(), "not yet valid, so not kept");
        assert!(tokens.verify(&t, ts("2026-01-01T00:10:00Z")).is_some());
        assert!(tokens.verify(&t, ts("2025-12-31T23:59:54Z")).is_none(), "kept, and still not valid before");
        assert!(tokens.verify(&t, ts("2026-01-01T00:15:05Z")).is_none(), "kept, and expired");
        assert_eq!(tokens.verified.lock().unwrap().len(), 1);
    }

    /// Cross-checked with an independent JWT implementation (`jsonwebtoken`, used by
    /// the tests only): each accepts the other's tokens, and its validation of ours
    /// finds the header, issuer and audience it expects.
    #[test]
    fn tokens_agree_with_an_independent_jwt_implementation() {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
        let now = Timestamp::now();
        let tokens = Tokens::new(&[7; 32]);
        let a = access();
        let ours = tokens.issue(a, now).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let theirs =
            jsonwebtoken::decode::<serde_json::Value>(&ours, &DecodingKey::from_secret(&[7; 32]), &validation).unwrap();
        assert_eq!(theirs.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(theirs.claims["sid"], a.session_id.to_string());

        let header = Header { typ: Some("at+jwt".into()), ..Header::new(Algorithm::HS256) };
        let claims = serde_json::json!({
            "sub": a.user_id, "sid": a.session_id, "iat": now.as_second(), "nbf": now.as_second(),
            "exp": now.as_second() + 60, "iss": ISSUER, "aud": AUDIENCE,
        });
        let foreign = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&[7; 32])).unwrap();
        let (checked, _) = tokens.verify(&foreign, now).unwrap();
        assert_eq!((checked.user_id, checked.session_id), (a.user_id, a.session_id));

        let mut wrong = claims.clone();
        wrong["aud"] = "another".into();
        let foreign = jsonwebtoken::encode(&header, &wrong, &EncodingKey::from_secret(&[7; 32])).unwrap();
        assert!(tokens.verify(&foreign, now).is_none(), "another audience");
        let bare = Header::new(Algorithm::HS256);
        let foreign = jsonwebtoken::encode(&bare, &claims, &EncodingKey::from_secret(&[7; 32])).unwrap();
        assert!(tokens.verify(&foreign, now).is_none(), "no at+jwt type");
    }

    #[test]
    fn personal_tokens_are_prefixed_random_well_formed_and_hashed() {
        let (a, ha) = new_personal_token();
        let (b, hb) = new_personal_token();
        assert!(a.starts_with("qtk_") && crate::domain::tokens::well_formed(&a), "{a}");
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash_personal_token(&a), ha);
        assert_eq!(ha, <[u8; 32]>::from(Sha256::digest(a.as_bytes())), "the SHA-256 of the whole token");
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_refresh_token(&a), ha);
    }
}
