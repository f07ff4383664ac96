//! Cron schedules in words, for the common shapes ("every day at 00:00 UTC"); anything more
//! intricate is shown as the expression itself, which is exact where a paraphrase could mislead.

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A schedule in words, in `timezone`; the expression when its shape is not a simple one.
pub(crate) fn describe(expression: &str, timezone: &str) -> String {
    let expanded = match expression.trim() {
        "@hourly" => "0 * * * *",
        "@daily" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other => other,
    };
    words(expanded, timezone).unwrap_or_else(|| expression.trim().to_owned())
}

fn number(field: &str, max: u32) -> Option<u32> {
    field.parse::<u32>().ok().filter(|value| *value <= max)
}

/// `*/N` with N > 1.
fn step(field: &str) -> Option<u32> {
    field
        .strip_prefix("*/")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n > 1)
}

fn day_name(field: &str) -> Option<&'static str> {
    if let Some(index) = number(field, 7) {
        return DAYS.get(index as usize % 7).copied();
    }
    let lower = field.to_ascii_lowercase();
    DAYS.iter()
        .find(|day| day[..3].eq_ignore_ascii_case(&lower))
        .copied()
}

fn days(field: &str) -> Option<String> {
    if matches!(field, "1-5" | "mon-fri" | "MON-FRI") {
        return Some("every weekday (Monday to Friday)".to_owned());
    }
    if matches!(field, "0,6" | "6,0" | "sat,sun" | "SAT,SUN") {
        return Some("every Saturday and Sunday".to_owned());
    }
    let names: Option<Vec<&str>> = field.split(',').map(day_name).collect();
    let names = names?;
    Some(format!("every {}", join(&names)))
}

fn join(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn ordinal(day: u32) -> String {
    let suffix = match (day % 10, day % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{day}{suffix}")
}

fn words(expression: &str, timezone: &str) -> Option<String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, day_of_month, month, day_of_week] = fields.as_slice() else {
        return None;
    };
    let any_day = *day_of_month == "*" && *month == "*" && *day_of_week == "*";
    if any_day && *hour == "*" {
        if *minute == "*" {
            return Some("every minute".to_owned());
        }
        if let Some(every) = step(minute) {
            return Some(format!("every {every} minutes"));
        }
        let minute = number(minute, 59)?;
        return Some(if minute == 0 {
            "every hour, on the hour".to_owned()
        } else {
            format!("every hour at {minute} minutes past")
        });
    }
    let minute = number(minute, 59)?;
    if any_day && let Some(every) = step(hour) {
        return Some(format!("every {every} hours at minute {minute}"));
    }
    let hours: Option<Vec<u32>> = hour.split(',').map(|hour| number(hour, 23)).collect();
    let times: Vec<String> = hours?
        .into_iter()
        .map(|hour| format!("{hour:02}:{minute:02}"))
        .collect();
    let times: Vec<&str> = times.iter().map(String::as_str).collect();
    let at = format!("at {} {timezone}", join(&times));
    match (*day_of_month, *month, *day_of_week) {
        ("*", "*", "*") => Some(format!("every day {at}")),
        ("*", "*", weekdays) => Some(format!("{} {at}", days(weekdays)?)),
        (day, "*", "*") => {
            let day = number(day, 31).filter(|day| *day >= 1)?;
            Some(format!("on the {} of every month {at}", ordinal(day)))
        }
        (day, month, "*") => {
            let day = number(day, 31).filter(|day| *day >= 1)?;
            let month = number(month, 12).filter(|month| *month >= 1)?;
            let name = MONTHS[(month - 1) as usize];
            Some(format!("every year on {day} {name} {at}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    fn check(expressions: &[&str], expected: Expect) {
        let described: Vec<String> = expressions
            .iter()
            .map(|expression| format!("{expression} → {}", super::describe(expression, "UTC")))
            .collect();
        expected.assert_eq(&described.join("\n"));
    }

    #[test]
    fn presets_and_simple_shapes_are_words() {
        check(
            &[
                "@hourly",
                "@daily",
                "@weekly",
                "@monthly",
                "@yearly",
                "* * * * *",
                "*/30 * * * *",
                "15 * * * *",
                "5 */6 * * *",
                "30 9 * * *",
                "0 9,17 * * *",
                "0 8 * * 1-5",
                "0 8 * * mon",
                "0 8 * * 1,3,5",
                "0 0 2 * *",
                "0 0 21 * *",
                "0 12 25 12 *",
            ],
            expect![[r#"
                @hourly → every hour, on the hour
                @daily → every day at 00:00 UTC
                @weekly → every Sunday at 00:00 UTC
                @monthly → on the 1st of every month at 00:00 UTC
                @yearly → every year on 1 January at 00:00 UTC
                * * * * * → every minute
                */30 * * * * → every 30 minutes
                15 * * * * → every hour at 15 minutes past
                5 */6 * * * → every 6 hours at minute 5
                30 9 * * * → every day at 09:30 UTC
                0 9,17 * * * → every day at 09:00 and 17:00 UTC
                0 8 * * 1-5 → every weekday (Monday to Friday) at 08:00 UTC
                0 8 * * mon → every Monday at 08:00 UTC
                0 8 * * 1,3,5 → every Monday, Wednesday and Friday at 08:00 UTC
                0 0 2 * * → on the 2nd of every month at 00:00 UTC
                0 0 21 * * → on the 21st of every month at 00:00 UTC
                0 12 25 12 * → every year on 25 December at 12:00 UTC"#]],
        );
    }

    #[test]
    fn other_shapes_stay_expressions() {
        check(
            &[
                "0-30/5 9-17 * * *",
                "0 0 1 * 1",
                "0 0 L * *",
                "*/15 9 * * *",
            ],
            expect![[r#"
                0-30/5 9-17 * * * → 0-30/5 9-17 * * *
                0 0 1 * 1 → 0 0 1 * 1
                0 0 L * * → 0 0 L * *
                */15 9 * * * → */15 9 * * *"#]],
        );
    }
}
