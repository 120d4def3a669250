//! The day window at every case docs/quota.md lists, with the clock injected.

use jiff::{SignedDuration, Timestamp, civil::date};

use super::*;

fn zone(name: &str) -> TimeZoneName {
    TimeZoneName::parse(name).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn window(name: &str, now: &str) -> DayWindow {
    DayWindow::at(zone(name).tz(), ts(now))
}

fn hours(w: &DayWindow) -> f64 {
    w.resets_at.duration_since(w.starts_at).as_secs_f64() / 3600.0
}

#[test]
fn kiritimati_day_ends_at_ten_utc() {
    let w = window("Pacific/Kiritimati", "2026-06-01T09:59:59Z");
    assert_eq!(w.day, date(2026, 6, 1));
    assert_eq!(w.resets_at, ts("2026-06-01T10:00:00Z"));
    assert_eq!(window("Pacific/Kiritimati", "2026-06-01T10:00:00Z").day, date(2026, 6, 2));
}

#[test]
fn niue_is_still_on_yesterday_when_utc_has_moved_on() {
    let w = window("Pacific/Niue", "2026-06-01T10:59:59Z");
    assert_eq!(w.day, date(2026, 5, 31));
    assert_eq!(w.resets_at, ts("2026-06-01T11:00:00Z"));
    assert_eq!(window("Pacific/Niue", "2026-06-01T11:00:00Z").day, date(2026, 6, 1));
}

#[test]
fn st_johns_day_turns_on_the_half_hour() {
    let w = window("America/St_Johns", "2026-01-15T03:29:59Z");
    assert_eq!(w.day, date(2026, 1, 14));
    assert_eq!(w.resets_at, ts("2026-01-15T03:30:00Z"));
    assert_eq!(w.seconds_until_reset(ts("2026-01-15T03:29:59Z")), 1);
}

#[test]
fn lord_howe_has_days_of_twenty_three_and_a_half_and_twenty_four_and_a_half_hours() {
    let spring = window("Australia/Lord_Howe", "2026-10-04T06:00:00Z");
    assert_eq!(spring.day, date(2026, 10, 4));
    assert_eq!(hours(&spring), 23.5);
    let autumn = window("Australia/Lord_Howe", "2026-04-05T06:00:00Z");
    assert_eq!(autumn.day, date(2026, 4, 5));
    assert_eq!(hours(&autumn), 24.5);
}

#[test]
fn havana_day_without_a_midnight_starts_at_one() {
    let w = window("America/Havana", "2026-03-08T12:00:00Z");
    assert_eq!(w.day, date(2026, 3, 8));
    // 01:00 CDT (UTC-4) is the first instant of the day.
    assert_eq!(w.starts_at, ts("2026-03-08T05:00:00Z"));
    assert_eq!(hours(&w), 23.0);
    let before = window("America/Havana", "2026-03-08T04:59:59Z");
    assert_eq!(before.day, date(2026, 3, 7));
    assert_eq!(before.resets_at, ts("2026-03-08T05:00:00Z"));
}

#[test]
fn santiago_day_without_a_midnight_starts_at_one() {
    let w = window("America/Santiago", "2026-09-06T12:00:00Z");
    assert_eq!(w.day, date(2026, 9, 6));
    assert_eq!(w.starts_at, ts("2026-09-06T04:00:00Z"));
    assert_eq!(hours(&w), 23.0);
}

#[test]
fn santiago_day_whose_last_hour_repeats_lasts_twenty_five_hours() {
    let w = window("America/Santiago", "2026-04-04T12:00:00Z");
    assert_eq!(w.day, date(2026, 4, 4));
    assert_eq!(w.starts_at, ts("2026-04-04T03:00:00Z"));
    assert_eq!(w.resets_at, ts("2026-04-05T04:00:00Z"));
    assert_eq!(hours(&w), 25.0);
    // Both passes through 23:30 local belong to the same day.
    assert_eq!(window("America/Santiago", "2026-04-05T02:30:00Z").day, date(2026, 4, 4));
    assert_eq!(window("America/Santiago", "2026-04-05T03:30:00Z").day, date(2026, 4, 4));
}

#[test]
fn seconds_until_reset_round_up_and_are_never_zero() {
    let w = window("UTC", "2026-01-01T23:59:59.5Z");
    assert_eq!(w.seconds_until_reset(ts("2026-01-01T23:59:59.5Z")), 1);
    assert_eq!(w.seconds_until_reset(ts("2026-01-01T00:00:00Z")), 86_400);
}

fn user_in(name: &str) -> UserZone {
    UserZone { current: zone(name), pending: None }
}

#[test]
fn a_zone_change_waits_for_the_old_zones_midnight() {
    let now = ts("2026-06-01T12:00:00Z");
    let changed = user_in("UTC").change_to(zone("Asia/Ho_Chi_Minh"), now);
    let at = ts("2026-06-02T00:00:00Z");
    assert_eq!(changed.pending, Some((zone("Asia/Ho_Chi_Minh"), at)));
    // Until then the old zone rules; at that instant the new one does.
    assert_eq!(changed.window(now).day, date(2026, 6, 1));
    assert_eq!(changed.window(at - SignedDuration::from_secs(1)).day, date(2026, 6, 1));
    assert_eq!(changed.effective(at).as_str(), "Asia/Ho_Chi_Minh");
    assert_eq!(changed.window(at).day, date(2026, 6, 2));
}

#[test]
fn moving_east_across_the_date_line_skips_a_day_and_never_restarts_one() {
    // Niue (UTC-11) to Kiritimati (UTC+14), asked for on Niue's 1 June.
    let now = ts("2026-06-01T20:00:00Z");
    let user = user_in("Pacific/Niue").change_to(zone("Pacific/Kiritimati"), now);
    assert_eq!(user.window(now).day, date(2026, 6, 1));
    let switch = ts("2026-06-02T11:00:00Z");
    assert_eq!(user.window(switch - SignedDuration::from_secs(1)).day, date(2026, 6, 1));
    // Niue's midnight is 01:00 on 3 June in Kiritimati: 2 June is skipped, not re-entered.
    assert_eq!(user.window(switch).day, date(2026, 6, 3));
}

#[test]
fn moving_west_across_the_date_line_reenters_a_day_already_counted() {
    // Kiritimati to Niue: the first Niue day after the switch has the date of a day
    // already spent in Kiritimati, so it shares that day's usage row and mints nothing.
    let now = ts("2026-06-01T05:00:00Z");
    let user = user_in("Pacific/Kiritimati").change_to(zone("Pacific/Niue"), now);
    assert_eq!(user.window(now).day, date(2026, 6, 1));
    let switch = ts("2026-06-01T10:00:00Z");
    assert_eq!(user.window(switch).day, date(2026, 5, 31));
}

#[test]
fn asking_for_the_ruling_zone_cancels_a_pending_change() {
    let now = ts("2026-06-01T12:00:00Z");
    let changed = user_in("UTC").change_to(zone("Europe/Paris"), now);
    let back = changed.change_to(zone("UTC"), now);
    assert_eq!(back.pending, None);
}

#[test]
fn quota_remaining_is_zero_when_the_limit_drops_below_usage() {
    let quota = DayQuota { in_force: crate::domain::LimitInForce::own(3), used: 5 };
    let status = QuotaStatus::new(quota, window("UTC", "2026-01-01T00:00:00Z"), zone("UTC"));
    assert_eq!(status.remaining(), 0);
}

#[test]
fn a_request_fits_when_what_is_used_plus_what_is_asked_stays_within_the_limit() {
    assert!(admits(10, 9, 1));
    assert!(!admits(10, 10, 1));
    assert!(admits(10, 0, 10));
    assert!(!admits(10, 1, 10));
    assert!(!admits(0, 0, 1));
    assert!(admits(0, 0, 0));
    // Counters past a lowered limit refuse everything, without overflow.
    assert!(!admits(3, 5, 1));
    assert!(!admits(u32::MAX, u32::MAX, u32::MAX));
}
