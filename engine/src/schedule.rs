//! When a DAG runs: a 5-field crontab or a preset, evaluated in the DAG's own timezone.
//!
//! Evaluation is delegated to `croner`, which follows the Open Cron Pattern Specification for
//! daylight-saving changes: a wall-clock time that falls into a spring-forward gap runs once at
//! the first real instant after the gap, and a time that occurs twice in a fall-back overlap runs
//! once, at its first occurrence. Interval jobs (`*/30 * * * *`) keep their real-time spacing.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The presets accepted besides 5-field crontab expressions.
pub const PRESETS: [&str; 5] = ["@hourly", "@daily", "@weekly", "@monthly", "@yearly"];

/// A parsed cron schedule; it serializes back to the text it was written as.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

impl Schedule {
    /// Parses a 5-field crontab expression (`*/30 * * * *`) or one of [`PRESETS`].
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        let trimmed = expression.trim();
        if trimmed.starts_with('@') && !PRESETS.contains(&trimmed) && trimmed != "@annually" {
            return Err(format!(
                "unknown schedule preset `{trimmed}`; use one of {} or a 5-field crontab",
                PRESETS.join(", ")
            ));
        }
        if !trimmed.starts_with('@') {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 {
                return Err(format!(
                    "schedule `{trimmed}` has {fields} fields; a crontab needs 5 \
                     (minute hour day-of-month month day-of-week)"
                ));
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|error| format!("invalid schedule `{trimmed}`: {error}"))?;
        Ok(Schedule {
            expression: trimmed.to_owned(),
            cron,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `after`, as a wall-clock time in `timezone`.
    ///
    /// Returns `None` only for expressions that can never fire (such as `0 0 31 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>, timezone: Tz) -> Option<DateTime<Tz>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&timezone), false)
            .ok()
    }

    /// The last fire time at or before `at`, as a wall-clock time in `timezone`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>, timezone: Tz) -> Option<DateTime<Tz>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&timezone), true)
            .ok()
    }

    /// The last fire time strictly before `before`, as a wall-clock time in `timezone`.
    pub fn previous_before(&self, before: DateTime<Utc>, timezone: Tz) -> Option<DateTime<Tz>> {
        self.cron
            .find_previous_occurrence(&before.with_timezone(&timezone), false)
            .ok()
    }

    /// The next `count` fire times strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, timezone: Tz, count: usize) -> Vec<DateTime<Tz>> {
        let mut times = Vec::with_capacity(count);
        let mut cursor = after;
        while times.len() < count {
            let Some(next) = self.next_after(cursor, timezone) else {
                break;
            };
            cursor = next.with_timezone(&Utc);
            times.push(next);
        }
        times
    }

    /// A plain-English description, for the console and `kiln dags list`.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_tuple("Schedule")
            .field(&self.expression)
            .finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Schedule::parse(text)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expression)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses an IANA timezone name such as `Europe/Berlin`, with a message that says what is wrong.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown timezone `{name}`; use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders the next `count` fire times after `from` (RFC 3339, UTC input) for comparison.
    fn check(expression: &str, timezone: &str, from: &str, count: usize) -> String {
        let schedule = Schedule::parse(expression).unwrap();
        let tz = parse_timezone(timezone).unwrap();
        let from = DateTime::parse_from_rfc3339(from)
            .unwrap()
            .with_timezone(&Utc);
        schedule
            .upcoming(from, tz, count)
            .iter()
            .map(|time| time.to_rfc3339())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn berlin_spring_forward_runs_the_skipped_hour_once_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; a 02:30 daily job has no 02:30 that day.
        expect_test::expect![[r#"
            2026-03-28T02:30:00+01:00
            2026-03-29T03:00:00+02:00
            2026-03-30T02:30:00+02:00"#]]
        .assert_eq(&check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            3,
        ));
    }

    #[test]
    fn berlin_fall_back_runs_the_doubled_hour_once() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice but runs once.
        expect_test::expect![[r#"
            2026-10-24T02:30:00+02:00
            2026-10-25T02:30:00+02:00
            2026-10-26T02:30:00+01:00"#]]
        .assert_eq(&check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-23T12:00:00Z",
            3,
        ));
    }

    #[test]
    fn new_york_both_transitions() {
        // 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        expect_test::expect![[r#"
            2026-03-07T02:15:00-05:00
            2026-03-08T03:00:00-04:00
            2026-03-09T02:15:00-04:00"#]]
        .assert_eq(&check(
            "15 2 * * *",
            "America/New_York",
            "2026-03-06T12:00:00Z",
            3,
        ));
        expect_test::expect![[r#"
            2026-10-31T01:30:00-04:00
            2026-11-01T01:30:00-04:00
            2026-11-02T01:30:00-05:00"#]]
        .assert_eq(&check(
            "30 1 * * *",
            "America/New_York",
            "2026-10-30T12:00:00Z",
            3,
        ));
    }

    #[test]
    fn hourly_interval_keeps_real_time_spacing_across_fall_back() {
        // Every 30 minutes across the New York fall-back: the repeated hour is not skipped.
        let times = check(
            "*/30 * * * *",
            "America/New_York",
            "2026-11-01T04:45:00Z",
            6,
        );
        let instants: Vec<_> = times
            .lines()
            .map(|line| {
                DateTime::parse_from_rfc3339(line)
                    .unwrap()
                    .with_timezone(&Utc)
            })
            .collect();
        for pair in instants.windows(2) {
            assert_eq!((pair[1] - pair[0]).num_minutes(), 30, "{times}");
        }
    }

    #[test]
    fn monthly_at_month_ends_and_leap_day() {
        expect_test::expect![[r#"
            2028-02-01T00:00:00+00:00
            2028-03-01T00:00:00+00:00
            2028-04-01T00:00:00+00:00"#]]
        .assert_eq(&check("@monthly", "UTC", "2028-01-31T23:59:00Z", 3));
        expect_test::expect![[r#"
            2028-02-29T09:00:00+00:00
            2032-02-29T09:00:00+00:00"#]]
        .assert_eq(&check("0 9 29 2 *", "UTC", "2026-01-01T00:00:00Z", 2));
        expect_test::expect![[r#"
            2026-01-31T00:00:00+00:00
            2026-02-28T00:00:00+00:00
            2026-03-31T00:00:00+00:00"#]]
        .assert_eq(&check("0 0 L * *", "UTC", "2026-01-15T00:00:00Z", 3));
    }

    #[test]
    fn presets() {
        expect_test::expect![[r#"
            2026-01-01T01:00:00+00:00
            2026-01-02T00:00:00+00:00
            2026-01-04T00:00:00+00:00
            2026-02-01T00:00:00+00:00
            2027-01-01T00:00:00+00:00"#]]
        .assert_eq(
            &["@hourly", "@daily", "@weekly", "@monthly", "@yearly"]
                .iter()
                .map(|preset| check(preset, "UTC", "2026-01-01T00:00:00Z", 1))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        expect_test::expect![[r#"
            schedule `* * * *` has 4 fields; a crontab needs 5 (minute hour day-of-month month day-of-week)
            schedule `0 * * * * *` has 6 fields; a crontab needs 5 (minute hour day-of-month month day-of-week)
            unknown schedule preset `@fortnightly`; use one of @hourly, @daily, @weekly, @monthly, @yearly or a 5-field crontab"#]]
        .assert_eq(
            &["* * * *", "0 * * * * *", "@fortnightly"]
                .iter()
                .map(|text| Schedule::parse(text).unwrap_err())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        assert!(
            Schedule::parse("61 * * * *")
                .unwrap_err()
                .starts_with("invalid schedule `61 * * * *`")
        );
    }

    #[test]
    fn timezones() {
        assert_eq!(
            parse_timezone("Europe/Berlin"),
            Ok(chrono_tz::Europe::Berlin)
        );
        assert!(
            parse_timezone("Mars/Olympus")
                .unwrap_err()
                .contains("unknown timezone `Mars/Olympus`")
        );
    }
}
