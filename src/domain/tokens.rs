//! Personal access tokens (docs/api.md, "Personal access tokens"): what one looks like,
//! its scopes, name and expiry, when its last use is worth recording, and what each kind
//! of credential may do. The secret itself is made and hashed in `auth`.

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use super::FieldError;

/// Every personal token starts with this, so that secret scanners can find leaked ones
/// and a request's token can be told from an access token without decoding it.
pub const PREFIX: &str = "qtk_";
/// The part after the prefix: 32 random bytes in unpadded base64url.
pub const SECRET_CHARS: usize = 43;
/// Tokens one user may hold at a time (expired ones count until deleted): a token
/// costs no password hash to make, so this is what bounds the rows one account can add.
pub const MAX_PER_USER: u32 = 50;
/// A token's `last_used_at` is recorded at most this often: a token used on every
/// request would otherwise cost a write per request.
pub const LAST_USE_RESOLUTION: SignedDuration = SignedDuration::from_secs(60);

/// Whether `bearer` is meant as a personal token (rather than an access token).
pub fn is_personal(bearer: &str) -> bool {
    bearer.starts_with(PREFIX)
}

/// Whether `bearer` has the exact shape of a token this service issues; one that does
/// not cannot be stored, and is refused without a lookup.
pub fn well_formed(bearer: &str) -> bool {
    bearer.strip_prefix(PREFIX).is_some_and(|secret| {
        secret.len() == SECRET_CHARS && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// What a personal token may be used for; each names the routes it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Reading tasks: `GET /v1/tasks`, `GET /v1/tasks/{id}`.
    TasksRead,
    /// Creating, changing and deleting tasks (`POST /v1/tasks`, `PATCH` and `DELETE
    /// /v1/tasks/{id}`, and the seed's `POST /task`).
    TasksWrite,
    /// `GET /v1/me/quota`.
    QuotaRead,
    /// `GET /v1/events`.
    EventsRead,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::TasksRead, Scope::TasksWrite, Scope::QuotaRead, Scope::EventsRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TasksRead => "tasks:read",
            Scope::TasksWrite => "tasks:write",
            Scope::QuotaRead => "quota:read",
            Scope::EventsRead => "events:read",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// The scopes a client asks for: at least one, each known; a repeat counts once.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, FieldError> {
        if names.is_empty() {
            return Err(FieldError::new("scopes", "must name at least one scope"));
        }
        let mut scopes = Scopes::default();
        for name in names {
            let name = name.as_ref();
            let scope = Scope::parse(name).ok_or_else(|| {
                let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                FieldError::new("scopes", format!("{name:?} is not a scope; the scopes are {}", known.join(", ")))
            })?;
            scopes.0 |= scope.bit();
        }
        Ok(scopes)
    }

    /// As the store keeps them: the names, space-separated (as OAuth writes a scope).
    pub fn to_stored(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    /// What `to_stored` wrote; `None` if it names something that is not a scope.
    pub fn from_stored(text: &str) -> Option<Self> {
        text.split_whitespace().try_fold(Scopes::default(), |set, name| Some(Scopes(set.0 | Scope::parse(name)?.bit())))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes in the order of `Scope::ALL`.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// A token's name, for its owner to tell tokens apart: 1 to 100 characters, not only
/// white space, no control characters (it is shown in lists and on the web page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| Err(FieldError::new("name", m));
        if raw.trim().is_empty() {
            return err("must not be empty");
        }
        if raw.chars().any(char::is_control) {
            return err("must not contain control characters");
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return err("must be at most 100 characters");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The expiry a client asks for, an RFC 3339 instant that must be later than `now`;
/// none means the token lasts until it is deleted.
pub fn parse_expiry(raw: Option<&str>, now: Timestamp) -> Result<Option<Timestamp>, FieldError> {
    let Some(raw) = raw else { return Ok(None) };
    let not_an_instant = || FieldError::new("expires_at", "must be an RFC 3339 instant, e.g. 2026-12-31T23:59:59Z");
    if !rfc3339_shape(raw) {
        return Err(not_an_instant());
    }
    let at: Timestamp = raw.parse().map_err(|_| not_an_instant())?;
    if at <= now {
        return Err(FieldError::new("expires_at", "must be in the future"));
    }
    Ok(Some(at))
}

/// Whether `raw` has the shape of an RFC 3339 `date-time` (section 5.6), the format the
/// API document gives `expires_at`: jiff's parser also takes other ISO 8601 spellings
/// (a space for the `T`, no colons), which the document does not promise.
fn rfc3339_shape(raw: &str) -> bool {
    let b = raw.as_bytes();
    let digits = |from: usize, to: usize| b.get(from..to).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let date_time = digits(0, 4)
        && at(4, b"-")
        && digits(5, 7)
        && at(7, b"-")
        && digits(8, 10)
        && at(10, b"Tt")
        && digits(11, 13)
        && at(13, b":")
        && digits(14, 16)
        && at(16, b":")
        && digits(17, 19);
    if !date_time {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// A personal token as kept: everything but the secret, of which only a hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalToken {
    pub id: Uuid,
    pub name: String,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl PersonalToken {
    /// Whether the token is still accepted at `now` (a deleted one is not found at all).
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Whether a use at `now` is worth recording, the last recorded being `last`.
pub fn last_use_due(last: Option<Timestamp>, now: Timestamp) -> bool {
    last.is_none_or(|last| now.duration_since(last) >= LAST_USE_RESOLUTION)
}

/// How a request proved who it speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An access token of a signed-in session.
    Session { session_id: Uuid },
    /// A personal access token, good for its scopes only.
    Personal { token_id: Uuid, scopes: Scopes },
}

/// What a route asks of the credential it is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A signed-in session, or a personal token with this scope.
    Scope(Scope),
    /// A signed-in session only: the account itself (password, zone, sign-out), its
    /// tokens and administration are never reachable with a personal token, so that a
    /// leaked token cannot be turned into lasting control of the account.
    Session,
}

impl Credential {
    /// Whether this credential may be used where `need` is asked: a session anywhere,
    /// a personal token only on the routes of its scopes.
    pub fn allows(&self, need: Need) -> bool {
        match (self, need) {
            (Credential::Session { .. }, _) => true,
            (Credential::Personal { scopes, .. }, Need::Scope(scope)) => scopes.contains(scope),
            (Credential::Personal { .. }, Need::Session) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_exact_shape_of_an_issued_token_is_well_formed() {
        let secret = "A".repeat(SECRET_CHARS);
        assert!(well_formed(&format!("qtk_{secret}")));
        assert!(well_formed(&format!("qtk_{}-_9z", "a".repeat(SECRET_CHARS - 4))));
        assert!(!well_formed(&format!("qtk_{secret}A")), "too long");
        assert!(!well_formed(&format!("qtk_{}", &secret[1..])), "too short");
        assert!(!well_formed(&format!("qtk_{}+", &secret[1..])), "not base64url");
        assert!(!well_formed(&format!("QTK_{secret}")));
        assert!(is_personal("qtk_x") && !well_formed("qtk_x"));
        assert!(!is_personal("eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJIUzI1NiJ9.e30.sig"));
    }

    #[test]
    fn scopes_are_known_names_at_least_one_and_round_trip_through_the_store() {
        let scopes = Scopes::parse(&["quota:read", "tasks:write", "quota:read"]).unwrap();
        assert!(scopes.contains(Scope::TasksWrite) && scopes.contains(Scope::QuotaRead));
        assert!(!scopes.contains(Scope::TasksRead) && !scopes.contains(Scope::EventsRead));
        assert_eq!(scopes.to_stored(), "tasks:write quota:read");
        assert_eq!(Scopes::from_stored(&scopes.to_stored()), Some(scopes));
        let all = Scopes::parse(&Scope::ALL.map(Scope::as_str)).unwrap();
        assert_eq!(all.iter().collect::<Vec<_>>(), Scope::ALL);

        assert_eq!(Scopes::parse::<&str>(&[]).unwrap_err().field, "scopes");
        assert!(Scopes::parse(&["tasks:read", "admin"]).unwrap_err().message.contains("\"admin\""));
        assert!(Scopes::parse(&["Tasks:Read"]).is_err(), "names are exact");
        assert_eq!(Scopes::from_stored("tasks:read admin"), None);
    }

    #[test]
    fn a_name_is_1_to_100_characters_not_blank_and_without_controls() {
        assert!(TokenName::parse("cron on the NAS").is_ok());
        assert!(TokenName::parse(&"é".repeat(100)).is_ok());
        assert!(TokenName::parse(&"é".repeat(101)).is_err());
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse(" \t ").is_err());
        assert!(TokenName::parse("two\nlines").is_err());
        assert!(TokenName::parse("bell\u{7}").is_err());
    }

    #[test]
    fn an_expiry_is_an_instant_after_now() {
        let now = at("2026-06-15T12:00:00Z");
        assert_eq!(parse_expiry(None, now), Ok(None));
        assert_eq!(parse_expiry(Some("2026-06-15T14:00:01+02:00"), now), Ok(Some(at("2026-06-15T12:00:01Z"))));
        assert_eq!(parse_expiry(Some("2026-06-15T12:00:00Z"), now).unwrap_err().message, "must be in the future");
        assert!(parse_expiry(Some("2020-01-01T00:00:00Z"), now).is_err());
        assert!(parse_expiry(Some("tomorrow"), now).is_err());
        assert!(parse_expiry(Some("2026-07-01"), now).is_err(), "a day is not an instant");
        for other_iso_8601 in
            ["2026-07-01 12:00:00Z", "20260701T120000Z", "2026-07-01T12:00:00+0200", "2026-07-01T12:00Z"]
        {
            assert!(parse_expiry(Some(other_iso_8601), now).is_err(), "{other_iso_8601}");
        }
        for rfc_3339 in ["2026-07-01t12:00:00z", "2026-07-01T12:00:00.123456789-03:30", "2026-07-01T12:00:00.5Z"] {
            assert!(parse_expiry(Some(rfc_3339), now).is_ok(), "{rfc_3339}");
        }
        assert!(parse_expiry(Some("2026-02-30T12:00:00Z"), now).is_err(), "no such day");
    }

    #[test]
    fn a_token_is_live_until_its_expiry_and_forever_without_one() {
        let now = at("2026-06-15T12:00:00Z");
        let token = |expires_at| PersonalToken {
            id: Uuid::nil(),
            name: "t".into(),
            scopes: Scopes::default(),
            created_at: now,
            expires_at,
            last_used_at: None,
        };
        assert!(token(None).is_live(at("2100-01-01T00:00:00Z")));
        assert!(token(Some(at("2026-06-15T12:00:01Z"))).is_live(now));
        assert!(!token(Some(now)).is_live(now));
    }

    #[test]
    fn a_use_is_recorded_at_most_once_a_minute() {
        let last = at("2026-06-15T12:00:00Z");
        assert!(last_use_due(None, last));
        assert!(!last_use_due(Some(last), at("2026-06-15T12:00:59Z")));
        assert!(last_use_due(Some(last), at("2026-06-15T12:01:00Z")));
        assert!(!last_use_due(Some(last), at("2026-06-15T11:59:00Z")), "a clock behind the last use");
    }

    #[test]
    fn a_session_may_do_anything_and_a_personal_token_only_what_its_scopes_name() {
        let session = Credential::Session { session_id: Uuid::nil() };
        let token = Credential::Personal { token_id: Uuid::nil(), scopes: Scopes::parse(&["tasks:read"]).unwrap() };
        assert!(session.allows(Need::Session));
        assert!(Scope::ALL.iter().all(|s| session.allows(Need::Scope(*s))));
        assert!(!token.allows(Need::Session));
        assert!(token.allows(Need::Scope(Scope::TasksRead)));
        for scope in [Scope::TasksWrite, Scope::QuotaRead, Scope::EventsRead] {
            assert!(!token.allows(Need::Scope(scope)), "{scope:?}");
        }
    }
}
