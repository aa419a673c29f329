//! UTC calendar days: the unit history is kept in.
//!
//! A [`Day`] is stored and sent as its number of days since 0001-01-01
//! (chrono's "days from the common era"), so keys sort by date, and read and
//! written by people as `YYYY-MM-DD`.

use std::{fmt, time::SystemTime};

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

/// One UTC calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NaiveDate);

/// A date that is not `YYYY-MM-DD`, or not a real day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a date: use YYYY-MM-DD")]
pub struct InvalidDay(pub String);

impl Day {
    /// The UTC day `time` falls on.
    pub fn of(time: SystemTime) -> Self {
        Self(DateTime::<Utc>::from(time).date_naive())
    }

    /// Today, in UTC.
    pub fn today() -> Self {
        Self::of(SystemTime::now())
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Self, InvalidDay> {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Self)
            .map_err(|_| InvalidDay(text.chars().take(32).collect()))
    }

    /// Days since 0001-01-01 (that day is 1): the stored and wire form.
    pub fn number(self) -> i32 {
        self.0.num_days_from_ce()
    }

    /// The day numbered `number` (see [`Day::number`]), if it is one.
    pub fn from_number(number: i32) -> Option<Self> {
        NaiveDate::from_num_days_from_ce_opt(number).map(Self)
    }

    /// The day `days` before this one (saturating at the calendar's start).
    pub fn minus(self, days: u32) -> Self {
        Self(
            self.0
                .checked_sub_days(Days::new(days.into()))
                .unwrap_or(NaiveDate::MIN),
        )
    }

    /// The day after this one (saturating at the calendar's end).
    pub fn next(self) -> Self {
        Self(self.0.succ_opt().unwrap_or(NaiveDate::MAX))
    }

    /// Every day from `self` to `last`, both included (none if `last` is earlier).
    pub fn through(self, last: Day) -> impl Iterator<Item = Day> {
        self.0.iter_days().take_while(move |day| *day <= last.0).map(Self)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn parses_and_prints_iso_dates() {
        let day = Day::parse("2026-11-30").expect("valid");
        assert_eq!(day.to_string(), "2026-11-30");
        assert_eq!(Day::from_number(day.number()), Some(day));
        assert_eq!(day.next().to_string(), "2026-12-01");
        assert_eq!(day.minus(30).to_string(), "2026-10-31");
    }

    #[test]
    fn refuses_what_is_not_a_day() {
        for text in ["2026-02-30", "2026-13-01", "30.11.2026", "", "2026-11-30x", "today"] {
            assert!(Day::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn days_are_utc() {
        let late = UNIX_EPOCH + Duration::from_secs(86_400 - 1);
        assert_eq!(Day::of(late).to_string(), "1970-01-01");
        assert_eq!(Day::of(late + Duration::from_secs(1)).to_string(), "1970-01-02");
    }

    #[test]
    fn ranges_include_both_ends() {
        let first = Day::parse("2026-02-27").expect("valid");
        let last = Day::parse("2026-03-02").expect("valid");
        let days: Vec<String> = first.through(last).map(|day| day.to_string()).collect();
        assert_eq!(days, ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]);
        assert_eq!(last.through(first).count(), 0);
    }
}
