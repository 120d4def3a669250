//! Access tokens (short-lived HS256 JWTs) and refresh tokens (random, stored hashed).
//!
//! Expiry and not-before are checked against the request's own clock reading rather
//! than the host's, so one instant decides each request (QUOTA.md item 7).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const ISSUER: &str = "quotask";
const AUDIENCE: &str = "quotask";
/// The JWT `typ` of access tokens (RFC 9068), so no other token is taken for one.
const TYP: &str = "at+jwt";
/// How far a token's times may be off and still count: RFC 8725 asks for little.
const LEEWAY_SECS: i64 = 5;
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    sid: Uuid,
    iat: i64,
    nbf: i64,
    exp: i64,
    iss: String,
    aud: String,
}

/// What a valid access token says.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Checked below against the request's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn issue(&self, access: Access, now: Timestamp) -> anyhow::Result<String> {
        let iat = now.as_second();
        let claims = Claims {
            sub: access.user_id,
            sid: access.session_id,
            iat,
            nbf: iat,
            exp: iat + ACCESS_TTL_SECS,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let header = Header { typ: Some(TYP.into()), ..Header::new(Algorithm::HS256) };
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The token's claims if it is well formed, signed by us with HS256, of our type,
    /// and valid at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Option<Access> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 || header.typ.as_deref() != Some(TYP) {
            return None;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?.claims;
        let now = now.as_second();
        let current =
            claims.nbf - LEEWAY_SECS <= now && now < claims.exp + LEEWAY_SECS && claims.iat - LEEWAY_SECS <= now;
        current.then_some(Access { user_id: claims.sub, session_id: claims.sid })
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
        assert!(tokens.verify(&t, ts("2026-01-01T00:15:04Z")).is_some());
        assert!(tokens.verify(&t, ts("2026-01-01T00:15:05Z")).is_none());
        assert!(tokens.verify(&t, ts("2025-12-31T23:59:54Z")).is_none(), "not yet valid");
    }

    #[test]
    fn a_token_signed_with_another_secret_or_altered_is_refused() {
        let now = ts("2026-01-01T00:00:00Z");
        let t = Tokens::new(&[7; 32]).issue(access(), now).unwrap();
        assert!(Tokens::new(&[8; 32]).verify(&t, now).is_none());
        let mut bytes = t.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(Tokens::new(&[7; 32]).verify(&flipped, now).is_none());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_refresh_token(&a), ha);
    }
}
