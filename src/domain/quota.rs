//! The quota's day: which local calendar day an instant falls on for a user, when that
//! day ends, and which zone rules at a given instant (docs/quota.md items 3, 4 and 7).

use jiff::{Timestamp, civil::Date, tz::TimeZone};

use super::limits::LimitInForce;
use super::{TimeZoneName, User, UserZone};

/// The local calendar day that contains `now`, with the instants it starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayWindow {
    pub day: Date,
    pub starts_at: Timestamp,
    pub resets_at: Timestamp,
}

impl DayWindow {
    /// The day of `now` in `tz`. A day starts at local midnight or, where the zone skips
    /// midnight, at the first instant that exists after it, so a day may last 23, 23.5,
    /// 24.5 or 25 hours.
    pub fn at(tz: &TimeZone, now: Timestamp) -> Self {
        let day = now.to_zoned(tz.clone()).date();
        Self { day, starts_at: start_of(day, tz), resets_at: start_of(day.tomorrow().unwrap_or(day), tz) }
    }

    /// Whole seconds from `now` until the reset, rounded up so that a client waiting
    /// that long always lands in the next day; never 0.
    pub fn seconds_until_reset(&self, now: Timestamp) -> u64 {
        let nanos = self.resets_at.as_nanosecond() - now.as_nanosecond();
        let secs = nanos.div_euclid(1_000_000_000) + i128::from(nanos.rem_euclid(1_000_000_000) > 0);
        u64::try_from(secs.max(1)).unwrap_or(u64::MAX)
    }
}

/// The first instant of `day` in `tz`. Midnight inside a gap resolves to the instant
/// just after the gap ("compatible" disambiguation), which is the first that exists.
fn start_of(day: Date, tz: &TimeZone) -> Timestamp {
    tz.to_ambiguous_timestamp(day.to_datetime(jiff::civil::Time::midnight()))
        .compatible()
        .unwrap_or_else(|_| day.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl UserZone {
    /// The zone that rules at `now`: a pending change counts once its instant has come.
    pub fn effective(&self, now: Timestamp) -> &TimeZoneName {
        match &self.pending {
            Some((zone, at)) if now >= *at => zone,
            _ => &self.current,
        }
    }

    /// The day window of `now` under the zone that rules then.
    pub fn window(&self, now: Timestamp) -> DayWindow {
        DayWindow::at(self.effective(now).tz(), now)
    }

    /// The settings after the user asks for `requested` at `now`. The change waits for
    /// the next local midnight of the zone ruling now, so that moving cannot start a
    /// fresh day early and mint quota. Asking for the ruling zone cancels a pending change.
    pub fn change_to(&self, requested: TimeZoneName, now: Timestamp) -> UserZone {
        let ruling = self.effective(now).clone();
        if requested == ruling {
            return UserZone { current: ruling, pending: None };
        }
        let at = DayWindow::at(ruling.tz(), now).resets_at;
        UserZone { current: ruling, pending: Some((requested, at)) }
    }
}

/// Whether `requested` more units fit a day of which `used` of `limit` are used: the
/// quota's one rule (docs/quota.md items 2 and 9), for single creates (1) and batches
/// alike. The PostgreSQL store states the same comparison in its statement, where it
/// must be evaluated under the row lock of the day's counter.
pub fn admits(limit: u32, used: u32, requested: u32) -> bool {
    u64::from(used) + u64::from(requested) <= u64::from(limit)
}

/// A user's limit in force on a local day and the units used on it, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayQuota {
    pub in_force: LimitInForce,
    pub used: u32,
}

/// What a user may still create today; what `GET /v1/me/quota` shows and what the
/// quota headers and the 429 problem document are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaStatus {
    /// The limit in force: `in_force.total()`.
    pub limit: u32,
    pub used: u32,
    pub window: DayWindow,
    pub timezone: TimeZoneName,
    /// Why the limit is what it is (docs/quota.md item 10).
    pub in_force: LimitInForce,
}

impl QuotaStatus {
    pub fn new(quota: DayQuota, window: DayWindow, timezone: TimeZoneName) -> Self {
        QuotaStatus { limit: quota.in_force.total(), used: quota.used, window, timezone, in_force: quota.in_force }
    }

    /// The status of `user` at `now`, given their quota on the day of `now`.
    pub fn of(user: &User, quota: DayQuota, now: Timestamp) -> Self {
        Self::new(quota, user.zone.window(now), user.zone.effective(now).clone())
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

#[cfg(test)]
mod tests;
