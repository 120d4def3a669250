//! Property tests (proptest, on stable) of the code that meets untrusted input or does
//! calendar arithmetic: request-body parsing, username canonicalisation, the day window
//! and zone changes. `PROPTEST_CASES=100000 cargo test --test properties` runs longer.

#![expect(clippy::unwrap_used, reason = "a test fails loudly at the first surprise")]

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use quotask::domain::{DayWindow, TaskContent, TimeZoneName, UserZone, Username};
use quotask::http::extract::parse_json;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

const ZONES: &[&str] = &[
    "UTC",
    "Pacific/Kiritimati",
    "Pacific/Niue",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "America/Havana",
    "America/Santiago",
    "Asia/Ho_Chi_Minh",
    "Europe/London",
    "Pacific/Apia",
    "Asia/Kathmandu",
    "America/Godthab",
];

fn zone() -> impl Strategy<Value = TimeZoneName> {
    proptest::sample::select(ZONES).prop_map(|z| TimeZoneName::parse(z).unwrap())
}

/// Instants from 1990 to 2060, to the microsecond.
fn instant() -> impl Strategy<Value = Timestamp> {
    (631_152_000_000_000i64..2_871_763_200_000_000).prop_map(|us| Timestamp::from_microsecond(us).unwrap())
}

/// `c` (pick 0), or a Cyrillic (1) or Greek (2) letter drawn like it, where there is one.
fn twin(c: char, pick: usize) -> char {
    let twins: &[char] = match c {
        'a' => &['а', 'α'],
        'c' => &['с', 'ϲ'],
        'e' => &['е'],
        'o' => &['о', 'ο'],
        'p' => &['р', 'ρ'],
        'x' => &['х'],
        'y' => &['у', 'γ'],
        _ => &[],
    };
    pick.checked_sub(1).and_then(|i| twins.get(i)).copied().unwrap_or(c)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the parsing is under test")]
struct Body {
    content: String,
    done: Option<bool>,
}

proptest! {
    #[test]
    fn any_bytes_parse_to_a_body_or_a_client_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse_json::<Body>(&bytes) {
            let status = e.parts().0.as_u16();
            prop_assert!(status == 400 || status == 422, "{status}");
        }
    }

    #[test]
    fn any_json_value_parses_to_a_body_or_a_client_error(text in "[\\[\\]{}\":,0-9a-z \\\\]{0,200}") {
        if let Err(e) = parse_json::<Body>(text.as_bytes()) {
            let status = e.parts().0.as_u16();
            prop_assert!(status == 400 || status == 422, "{status}");
        }
    }

    #[test]
    fn a_canonical_username_is_its_own_canonical_form(raw in "\\PC{0,40}") {
        if let Ok(name) = Username::parse(&raw) {
            let s = name.as_str();
            let again = Username::parse(s).unwrap();
            prop_assert_eq!(again.as_str(), s);
            prop_assert_eq!(s.nfc().collect::<String>(), s);
            prop_assert_eq!(s.to_lowercase(), s);
            prop_assert!(!s.chars().any(char::is_control));
            let len = s.chars().count();
            prop_assert!((3..=32).contains(&len));
        }
    }

    #[test]
    fn case_and_normal_form_never_make_two_names(raw in "[a-zA-Z\u{e9}\u{c9}\u{301}]{3,20}") {
        let upper = Username::parse(&raw.to_uppercase());
        let nfd = Username::parse(&raw.nfd().collect::<String>());
        if let (Ok(a), Ok(b)) = (upper, nfd) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn latin_letters_swapped_for_cyrillic_or_greek_twins_are_refused_or_look_the_same(
        real in "[aceopxy]{3,10}[a-z0-9]{0,3}",
        swaps in proptest::collection::vec(0usize..3, 13),
    ) {
        let fake: String = real.chars().zip(swaps).map(|(c, pick)| twin(c, pick)).collect();
        let real = Username::parse(&real).unwrap();
        if let Ok(fake) = Username::parse(&fake) {
            prop_assert_eq!(fake.skeleton(), real.skeleton(), "{:?} passes for {:?}", fake, real);
        }
    }

    #[test]
    fn task_content_is_accepted_exactly_when_the_rules_say(raw in "\\PC{0,30}|\\s{0,5}|.{0,3}\u{0}.{0,3}") {
        let valid = !raw.trim().is_empty() && !raw.contains('\0') && raw.chars().count() <= 10_000;
        prop_assert_eq!(TaskContent::parse(raw.clone()).is_ok(), valid);
    }

    #[test]
    fn every_instant_lies_in_its_days_window(zone in zone(), now in instant()) {
        let window = DayWindow::at(zone.tz(), now);
        prop_assert!(window.starts_at <= now && now < window.resets_at, "{window:?} {now}");
        prop_assert_eq!(window.day, now.to_zoned(zone.tz().clone()).date());
        let hours = window.resets_at.duration_since(window.starts_at).as_secs_f64() / 3600.0;
        prop_assert!((22.0..=26.0).contains(&hours) || zone.as_str() == "Pacific/Apia", "{hours} h");
        let secs = window.seconds_until_reset(now);
        prop_assert!(secs >= 1);
        prop_assert!(now + SignedDuration::from_secs(secs as i64) >= window.resets_at);
    }

    #[test]
    fn the_next_window_starts_where_this_one_ends(zone in zone(), now in instant()) {
        let window = DayWindow::at(zone.tz(), now);
        let next = DayWindow::at(zone.tz(), window.resets_at);
        prop_assert!(next.day > window.day);
        prop_assert_eq!(next.starts_at, window.resets_at);
        let last = DayWindow::at(zone.tz(), window.resets_at - SignedDuration::from_micros(1));
        prop_assert_eq!(last.day, window.day);
    }

    #[test]
    fn a_zone_change_never_shortens_the_current_day(from in zone(), to in zone(), now in instant(), later in 0i64..200_000) {
        let user = UserZone { current: from.clone(), pending: None };
        let changed = user.change_to(to, now);
        let before = user.window(now);
        // Until the old day ends, the old zone's day rules.
        let t = now + SignedDuration::from_secs(later);
        if t < before.resets_at {
            prop_assert_eq!(changed.window(t).day, before.day);
            prop_assert_eq!(changed.effective(t).as_str(), from.as_str());
        }
    }
}
