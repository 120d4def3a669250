//! Plans, boosts and limits that adapt: which limit is in force for a user on a local
//! day and why (docs/quota.md item 10), what a plan, a boost and an adaptive rule may
//! be, and when the rule changes a user's limit. Both stores state `base_limit` in SQL
//! where it must be read inside the quota's atomic step; the rest they call as is.

use std::sync::Arc;

use jiff::civil::Date;

use super::FieldError;
use super::input::DailyLimit;

/// Where a user's limit (before boosts) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// An administrator set the user's own limit.
    User,
    /// The user's plan's limit.
    Plan,
    /// The user's plan adapts, and this is what it adapted to for this user.
    Adapted,
    /// The default the user got at sign-up (`QUOTASK_DEFAULT_DAILY_LIMIT` then).
    Default,
}

impl LimitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSource::User => "user",
            LimitSource::Plan => "plan",
            LimitSource::Adapted => "adapted",
            LimitSource::Default => "default",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(LimitSource::User),
            "plan" => Some(LimitSource::Plan),
            "adapted" => Some(LimitSource::Adapted),
            "default" => Some(LimitSource::Default),
            _ => None,
        }
    }
}

/// The limit in force for a user on one local day, and why: the base limit, where it
/// comes from, the plan (if any) and the extra units of the boosts covering the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInForce {
    pub base: u32,
    pub source: LimitSource,
    pub plan: Option<Arc<str>>,
    pub boost: u32,
}

impl LimitInForce {
    /// A limit of `base` from the user's own setting, with no plan and no boost.
    pub fn own(base: u32) -> Self {
        LimitInForce { base, source: LimitSource::User, plan: None, boost: 0 }
    }

    /// What the quota compares the day's use with.
    pub fn total(&self) -> u32 {
        self.base.saturating_add(self.boost)
    }
}

/// The most a day's boosts count for, so that no sum of boosts overflows a count; far
/// above any limit (1,000,000) plus any sensible boost.
pub const MAX_BOOST_TOTAL: u32 = 1_000_000_000;

/// A user's stored limit settings, as the stores read them from the user's row and plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// `users.daily_limit`: the user's own limit if `limit_is_own`, else the default
    /// they got at sign-up.
    pub stored: u32,
    pub limit_is_own: bool,
    /// The plan's name and limit, and whether it adapts.
    pub plan: Option<(Arc<str>, u32, bool)>,
    /// The adaptive result for this user: `limit` from local day `from` on, `before`
    /// (none: the plan's) on earlier days.
    pub adapted: Option<Adapted>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapted {
    pub limit: u32,
    pub from: Date,
    pub before: Option<u32>,
}

impl Adapted {
    /// The adapted limit on local `day`, if any: a change never reaches a day before
    /// the one it was decided for.
    pub fn on(&self, day: Date) -> Option<u32> {
        if day >= self.from { Some(self.limit) } else { self.before }
    }
}

/// The base limit (before boosts) on local `day`, and where it comes from: the user's own
/// limit, else the limit their adaptive plan adapted to for them, else their plan's,
/// else the default they got at sign-up. The stores' SQL states the same order where the
/// create must read it in its atomic step (`limit_in_force` in each store's tasks.rs).
pub fn base_limit(settings: &LimitSettings, day: Date) -> (u32, LimitSource) {
    if settings.limit_is_own {
        return (settings.stored, LimitSource::User);
    }
    match &settings.plan {
        None => (settings.stored, LimitSource::Default),
        Some((_, plan_limit, adapts)) => match settings.adapted.filter(|_| *adapts).and_then(|a| a.on(day)) {
            Some(adapted) => (adapted, LimitSource::Adapted),
            None => (*plan_limit, LimitSource::Plan),
        },
    }
}

/// `base_limit` with the boosts of the day: the limit in force.
pub fn limit_in_force(settings: &LimitSettings, day: Date, boost: u64) -> LimitInForce {
    let (base, source) = base_limit(settings, day);
    LimitInForce {
        base,
        source,
        plan: settings.plan.as_ref().map(|(name, _, _)| name.clone()),
        boost: u32::try_from(boost.min(u64::from(MAX_BOOST_TOTAL))).unwrap_or(MAX_BOOST_TOTAL),
    }
}

/// A plan's name: 1 to 64 lowercase ASCII letters, digits, `_`, `-` or `.`, starting
/// with a letter or digit (it appears in paths: `/v1/admin/plans/{name}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanName(String);

impl PlanName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = (1..=64).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "name",
                "must be 1 to 64 lowercase letters, digits, '_', '-' or '.', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plan's adaptive rule: after `after_days_at_limit` local days in a row on which the
/// user used their whole limit, the limit rises by `step` (up to `max`); after
/// `after_idle_days` days in a row without a task, it falls by `step` (down to `min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapt {
    pub step: u32,
    pub after_days_at_limit: u32,
    pub max: u32,
    pub after_idle_days: u32,
    pub min: u32,
}

/// Users the adaptive rule looks at in one write: a million users are looked at in
/// short steps, each holding the database (on SQLite, the writer) briefly.
pub const ADAPT_BATCH: u32 = 200;

/// The longest run of days the rule may wait for: a year.
pub const MAX_ADAPT_DAYS: i64 = 366;

impl Adapt {
    /// Checks a rule as a client sent it.
    pub fn parse(
        step: i64,
        after_days_at_limit: i64,
        max: i64,
        after_idle_days: i64,
        min: i64,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let limit = |raw: i64, errors: &mut Vec<FieldError>| match DailyLimit::parse(raw) {
            Ok(l) => l.get(),
            Err(_) => {
                errors.push(FieldError::new("adapt", "step, max and min must be whole numbers from 0 to 1000000"));
                0
            }
        };
        let days = |raw: i64, errors: &mut Vec<FieldError>| match u32::try_from(raw) {
            Ok(n) if (1..=MAX_ADAPT_DAYS).contains(&raw) => n,
            _ => {
                errors.push(FieldError::new(
                    "adapt",
                    format!("after_days_at_limit and after_idle_days must be whole numbers from 1 to {MAX_ADAPT_DAYS}"),
                ));
                1
            }
        };
        let adapt = Adapt {
            step: limit(step, &mut errors),
            after_days_at_limit: days(after_days_at_limit, &mut errors),
            max: limit(max, &mut errors),
            after_idle_days: days(after_idle_days, &mut errors),
            min: limit(min, &mut errors),
        };
        if errors.is_empty() && adapt.step == 0 {
            errors.push(FieldError::new("adapt", "step must be at least 1"));
        }
        if errors.is_empty() && adapt.min > adapt.max {
            errors.push(FieldError::new("adapt", "min must not be above max"));
        }
        errors.dedup_by(|a, b| a.message == b.message);
        if errors.is_empty() { Ok(adapt) } else { Err(errors) }
    }

    /// The days of history the rule needs to decide.
    pub fn days_needed(&self) -> u32 {
        self.after_days_at_limit.max(self.after_idle_days)
    }
}

/// One complete local day of a user, as the adaptive rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRecord {
    pub used: u32,
    /// The limit in force that day (with its boosts), as it stands when the rule looks.
    pub limit: u32,
}

impl DayRecord {
    /// The user used their whole limit: at least one task, and nothing left.
    pub fn at_limit(&self) -> bool {
        self.used > 0 && self.used >= self.limit
    }
}

/// What the adaptive rule decides for a user whose base limit is `current`, given their
/// complete days since the last change (oldest first, the day before the deciding day
/// last; days before the user existed or before the last change are left out): a new
/// base limit, or none. Rising wins over falling (they cannot both hold on the same days
/// anyway: a day at its limit had a task).
pub fn adapt_decision(rule: &Adapt, current: u32, days: &[DayRecord]) -> Option<u32> {
    let last = |n: u32| days.len().checked_sub(n as usize).map(|from| &days[from..]);
    if let Some(run) = last(rule.after_days_at_limit)
        && run.iter().all(DayRecord::at_limit)
    {
        let target = current.saturating_add(rule.step).min(rule.max);
        if target > current {
            return Some(target);
        }
    }
    if let Some(run) = last(rule.after_idle_days)
        && run.iter().all(|d| d.used == 0)
    {
        let target = current.saturating_sub(rule.step).max(rule.min);
        if target < current {
            return Some(target);
        }
    }
    None
}

/// The first of the complete local days before `today` the rule looks at, for a user
/// who signed up on local day `signed_up`: at most the rule's longest run back, never
/// before the sign-up day nor before the user's adapted limit began (a change starts
/// the count afresh). `None` when there is no such day.
pub fn history_start(settings: &LimitSettings, rule: &Adapt, today: Date, signed_up: Date) -> Option<Date> {
    let mut first = today.checked_sub(jiff::Span::new().days(i64::from(rule.days_needed()))).ok()?.max(signed_up);
    if let Some(adapted) = &settings.adapted {
        first = first.max(adapted.from);
    }
    (first < today).then_some(first)
}

/// The days from `first` to the day before `today`, oldest first, each with its use
/// (`used`) and its limit in force as the settings and the `boosts` (extra, first day,
/// last day) stand now.
pub fn records(
    settings: &LimitSettings,
    first: Date,
    today: Date,
    used: impl Fn(Date) -> u32,
    boosts: &[(u32, Date, Date)],
) -> Vec<DayRecord> {
    let mut out = Vec::new();
    let mut day = first;
    while day < today {
        let boost: u64 = boosts.iter().filter(|(_, f, t)| *f <= day && day <= *t).map(|(e, _, _)| u64::from(*e)).sum();
        out.push(DayRecord { used: used(day), limit: limit_in_force(settings, day, boost).total() });
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    out
}

/// A change the adaptive rule made to a user's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptChange {
    pub old: u32,
    pub new: u32,
    /// The first local day it applies to: the day after the deciding day, which keeps
    /// the limit it started with.
    pub from: Date,
    /// The adapted limit of the days before `from` (none: the plan's).
    pub before: Option<u32>,
}

/// What the rule decides for a user on their local day `today`, given `days` (from
/// `history_start` and `records`).
pub fn adapt_change(settings: &LimitSettings, rule: &Adapt, today: Date, days: &[DayRecord]) -> Option<AdaptChange> {
    let from = today.tomorrow().ok()?;
    let (old, _) = base_limit(settings, from);
    let new = adapt_decision(rule, old, days)?;
    let (today_base, today_source) = base_limit(settings, today);
    let before = (today_source == LimitSource::Adapted).then_some(today_base);
    Some(AdaptChange { old, new, from, before })
}

/// A boost as an administrator asks for it: `extra` units on every local day from
/// `from` to `to`, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBoost {
    pub extra: u32,
    pub from: Date,
    pub to: Date,
    pub reason: String,
}

/// The longest a boost may last, in days.
pub const MAX_BOOST_DAYS: i64 = 366;
/// The most characters a boost's reason may have.
pub const MAX_REASON_CHARS: usize = 500;

impl NewBoost {
    pub fn parse(extra: i64, from: &str, to: &str, reason: String) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let extra = match u32::try_from(extra) {
            Ok(n) if (1..=DailyLimit::MAX).contains(&extra) => n,
            _ => {
                errors.push(FieldError::new("extra", "must be a whole number from 1 to 1000000"));
                0
            }
        };
        let day = |raw: &str, field: &'static str, errors: &mut Vec<FieldError>| {
            let parsed = (raw.len() == 10).then(|| raw.parse::<Date>().ok()).flatten().filter(|d| d.year() >= 1970);
            if parsed.is_none() {
                errors.push(FieldError::new(field, "must be a date from 1970-01-01 on, YYYY-MM-DD"));
            }
            parsed
        };
        let (from, to) = (day(from, "from", &mut errors), day(to, "to", &mut errors));
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                errors.push(FieldError::new("to", "must not be before from"));
            } else if (to - from).get_days() >= MAX_BOOST_DAYS as i32 {
                errors.push(FieldError::new("to", format!("a boost may cover at most {MAX_BOOST_DAYS} days")));
            }
        }
        if reason.contains('\0') || reason.chars().count() > MAX_REASON_CHARS {
            errors
                .push(FieldError::new("reason", format!("must be at most {MAX_REASON_CHARS} characters, without NUL")));
        }
        match (errors.is_empty(), from, to) {
            (true, Some(from), Some(to)) => Ok(NewBoost { extra, from, to, reason }),
            _ => Err(errors),
        }
    }
}

/// A boost as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boost {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub extra: u32,
    pub from: Date,
    pub to: Date,
    pub reason: String,
    pub actor_id: Option<uuid::Uuid>,
    pub created_at: jiff::Timestamp,
}

impl Boost {
    /// How the audit trail names it.
    pub fn describe(&self) -> String {
        let reason = if self.reason.is_empty() { String::new() } else { format!(" ({})", self.reason) };
        format!("+{} from {} to {}{reason} [{}]", self.extra, self.from, self.to, self.id)
    }
}

/// A plan as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub daily_limit: u32,
    pub adapt: Option<Adapt>,
    pub created_at: jiff::Timestamp,
}

/// An administrator's change to a plan; every field set is audited.
pub struct PlanChanges {
    pub daily_limit: Option<u32>,
    /// `Some(None)` removes the rule.
    pub adapt: Option<Option<Adapt>>,
}

/// How the audit trail shows a rule.
pub fn describe_adapt(adapt: Option<&Adapt>) -> String {
    match adapt {
        None => "none".to_owned(),
        Some(a) => format!(
            "step {} after {} days at limit up to {}, after {} idle days down to {}",
            a.step, a.after_days_at_limit, a.max, a.after_idle_days, a.min
        ),
    }
}

impl PlanChanges {
    /// What the plan audit trail records when these changes are made to `before`.
    pub fn audit(&self, before: &Plan) -> Vec<super::AuditChange> {
        let mut changes = Vec::new();
        if let Some(limit) = self.daily_limit {
            changes.push(super::AuditChange {
                field: "daily_limit",
                old_value: before.daily_limit.to_string(),
                new_value: limit.to_string(),
            });
        }
        if let Some(adapt) = &self.adapt {
            changes.push(super::AuditChange {
                field: "adapt",
                old_value: describe_adapt(before.adapt.as_ref()),
                new_value: describe_adapt(adapt.as_ref()),
            });
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;

    fn plan(limit: u32, adapts: bool) -> Option<(Arc<str>, u32, bool)> {
        Some((Arc::from("basic"), limit, adapts))
    }

    #[test]
    fn the_own_limit_wins_then_the_adapted_then_the_plans_then_the_default() {
        let day = date(2026, 6, 10);
        let mut s = LimitSettings { stored: 5, limit_is_own: false, plan: None, adapted: None };
        assert_eq!(base_limit(&s, day), (5, LimitSource::Default));
        s.plan = plan(20, true);
        assert_eq!(base_limit(&s, day), (20, LimitSource::Plan));
        s.adapted = Some(Adapted { limit: 25, from: day, before: None });
        assert_eq!(base_limit(&s, day), (25, LimitSource::Adapted));
        assert_eq!(base_limit(&s, date(2026, 6, 9)), (20, LimitSource::Plan), "not before the day it starts");
        s.adapted = Some(Adapted { limit: 30, from: day, before: Some(25) });
        assert_eq!(base_limit(&s, date(2026, 6, 9)), (25, LimitSource::Adapted));
        s.plan = plan(20, false);
        assert_eq!(base_limit(&s, day), (20, LimitSource::Plan), "a plan that no longer adapts ignores the result");
        s.limit_is_own = true;
        assert_eq!(base_limit(&s, day), (5, LimitSource::User));
    }

    #[test]
    fn boosts_add_to_the_base_and_never_overflow() {
        let s = LimitSettings { stored: 1_000_000, limit_is_own: true, plan: None, adapted: None };
        let l = limit_in_force(&s, date(2026, 1, 1), 3);
        assert_eq!((l.base, l.boost, l.total()), (1_000_000, 3, 1_000_003));
        let l = limit_in_force(&s, date(2026, 1, 1), u64::MAX);
        assert_eq!(l.total(), 1_000_000 + MAX_BOOST_TOTAL);
    }

    #[test]
    fn plan_names_are_lowercase_path_safe_words() {
        for good in ["basic", "pro-2026", "a", "team_x.y"] {
            assert!(PlanName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Basic", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(PlanName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn boosts_are_checked() {
        let ok = NewBoost::parse(3, "2026-06-01", "2026-06-03", "launch".into()).unwrap();
        assert_eq!((ok.extra, ok.from, ok.to), (3, date(2026, 6, 1), date(2026, 6, 3)));
        assert!(NewBoost::parse(1, "2026-06-01", "2026-06-01", String::new()).is_ok(), "one day");
        assert!(NewBoost::parse(1, "2026-01-01", "2026-12-31", String::new()).is_ok(), "365 days");
        let field = |r: Result<NewBoost, Vec<FieldError>>| r.unwrap_err()[0].field;
        assert_eq!(field(NewBoost::parse(0, "2026-06-01", "2026-06-01", String::new())), "extra");
        assert_eq!(field(NewBoost::parse(1_000_001, "2026-06-01", "2026-06-01", String::new())), "extra");
        assert_eq!(field(NewBoost::parse(1, "2026-06-02", "2026-06-01", String::new())), "to");
        assert_eq!(field(NewBoost::parse(1, "2026-01-01", "2027-01-02", String::new())), "to");
        assert_eq!(field(NewBoost::parse(1, "2026-6-1", "2026-06-01", String::new())), "from");
        assert_eq!(field(NewBoost::parse(1, "2026-06-01", "tomorrow", String::new())), "to");
        assert_eq!(field(NewBoost::parse(1, "0000-06-01", "2026-06-01", String::new())), "from");
        assert_eq!(field(NewBoost::parse(1, "2026-06-01", "2026-06-01", "x".repeat(501))), "reason");
    }

    #[test]
    fn adaptive_rules_are_checked() {
        assert!(Adapt::parse(1, 3, 10, 7, 1).is_ok());
        assert!(Adapt::parse(0, 3, 10, 7, 1).is_err(), "no step");
        assert!(Adapt::parse(1, 0, 10, 7, 1).is_err(), "no days");
        assert!(Adapt::parse(1, 3, 10, 367, 1).is_err(), "over a year");
        assert!(Adapt::parse(1, 3, 1, 7, 2).is_err(), "min above max");
        assert!(Adapt::parse(1, 3, 1_000_001, 7, 2).is_err());
    }

    fn days(list: &[(u32, u32)]) -> Vec<DayRecord> {
        list.iter().map(|&(used, limit)| DayRecord { used, limit }).collect()
    }

    #[test]
    fn a_run_of_days_at_the_limit_raises_it_by_a_step_up_to_max() {
        let rule = Adapt { step: 2, after_days_at_limit: 3, max: 13, after_idle_days: 5, min: 4 };
        assert_eq!(adapt_decision(&rule, 10, &days(&[(10, 10), (10, 10), (10, 10)])), Some(12));
        assert_eq!(adapt_decision(&rule, 12, &days(&[(12, 12), (12, 12), (13, 12)])), Some(13), "capped at max");
        assert_eq!(adapt_decision(&rule, 13, &days(&[(13, 13), (13, 13), (13, 13)])), None, "at max already");
        assert_eq!(adapt_decision(&rule, 10, &days(&[(10, 10), (9, 10), (10, 10)])), None, "not in a row");
        assert_eq!(adapt_decision(&rule, 10, &days(&[(10, 10), (10, 10)])), None, "too few days");
        assert_eq!(
            adapt_decision(&rule, 10, &days(&[(1, 10), (10, 10), (10, 10), (10, 10)])),
            Some(12),
            "the last run"
        );
        assert_eq!(adapt_decision(&rule, 10, &days(&[(10, 10), (10, 10), (11, 12)])), None, "boosted day not used up");
        assert_eq!(adapt_decision(&rule, 0, &days(&[(0, 0), (0, 0), (0, 0)])), None, "a limit of 0 is never used up");
    }

    #[test]
    fn a_change_starts_tomorrow_and_today_keeps_its_limit() {
        let rule = Adapt { step: 5, after_days_at_limit: 2, max: 100, after_idle_days: 3, min: 5 };
        let today = date(2026, 6, 10);
        let mut s = LimitSettings { stored: 5, limit_is_own: false, plan: plan(10, true), adapted: None };
        let start = history_start(&s, &rule, today, date(2026, 1, 1)).unwrap();
        assert_eq!(start, date(2026, 6, 7), "three days back, the longest run");
        let days = records(&s, start, today, |d| if d.day() >= 8 { 10 } else { 0 }, &[]);
        assert_eq!(days.len(), 3);
        let change = adapt_change(&s, &rule, today, &days).unwrap();
        assert_eq!(change, AdaptChange { old: 10, new: 15, from: date(2026, 6, 11), before: None });
        s.adapted = Some(Adapted { limit: change.new, from: change.from, before: change.before });
        assert_eq!(base_limit(&s, today), (10, LimitSource::Plan), "today keeps its limit");
        assert_eq!(base_limit(&s, change.from), (15, LimitSource::Adapted));
        assert_eq!(history_start(&s, &rule, date(2026, 6, 11), date(2026, 1, 1)), None, "the count starts afresh");
        assert_eq!(history_start(&s, &rule, date(2026, 6, 12), date(2026, 1, 1)), Some(date(2026, 6, 11)));
        assert_eq!(history_start(&s, &rule, today, today), None, "signed up today");
    }

    #[test]
    fn a_boosted_day_counts_at_limit_only_when_the_boost_is_used_too() {
        let s = LimitSettings { stored: 5, limit_is_own: false, plan: None, adapted: None };
        let boosts = [(3, date(2026, 6, 2), date(2026, 6, 2))];
        let days = records(&s, date(2026, 6, 1), date(2026, 6, 4), |_| 5, &boosts);
        let at: Vec<bool> = days.iter().map(DayRecord::at_limit).collect();
        assert_eq!(at, [true, false, true]);
    }

    #[test]
    fn a_run_of_idle_days_lowers_it_by_a_step_down_to_min() {
        let rule = Adapt { step: 2, after_days_at_limit: 3, max: 13, after_idle_days: 2, min: 4 };
        assert_eq!(adapt_decision(&rule, 10, &days(&[(3, 10), (0, 10), (0, 10)])), Some(8));
        assert_eq!(adapt_decision(&rule, 5, &days(&[(0, 5), (0, 5)])), Some(4), "floored at min");
        assert_eq!(adapt_decision(&rule, 4, &days(&[(0, 4), (0, 4)])), None, "at min already");
        assert_eq!(adapt_decision(&rule, 10, &days(&[(0, 10), (1, 10)])), None, "a task yesterday");
        assert_eq!(adapt_decision(&rule, 10, &days(&[(0, 10)])), None, "too few days");
        assert_eq!(adapt_decision(&rule, 20, &days(&[(0, 20), (0, 20)])), Some(18), "above max, one step down");
    }
}
