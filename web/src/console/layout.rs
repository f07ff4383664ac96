//! The page shell and the small pieces every page shares: times, durations, state badges and
//! the colour legend, so a state looks the same on every page.

use chrono::SecondsFormat;
use kiln_engine::scheduler::to_datetime;
use kiln_engine::state::TaskState;
use kiln_engine::store::{Micros, TaskInstanceRecord};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::auth::{Role, Viewer};

/// The top-level section a page belongs to, highlighted in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Dags,
    Artifacts,
    Models,
    Workers,
}

/// htmx's settings: htmx 2's default response handling, with 422 swapped.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},{"code":"422","swap":true},{"code":"[45]..","swap":false,"error":true},{"code":"...","swap":false}]}"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx would otherwise add an inline style element, which the CSP forbids. A 422
            // answer (a form's input refused, naming the problem) is swapped in like a success,
            // so the problem shows where the answer would have; other errors are not swapped.
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · kiln" }
            link rel="stylesheet" href=(*assets::CSS_URL);
            script src=(assets::HTMX_URL) defer {}
            script src=(*assets::JS_URL) defer {}
        }
    }
}

/// A full page with the navigation bar and the state legend.
pub(crate) fn page(title: &str, viewer: &Viewer, section: Section, body: Markup) -> Markup {
    let current = |candidate: Section| (candidate == section).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/dags" { "kiln" }
                    nav {
                        a href="/dags" aria-current=[current(Section::Dags)] { "DAGs" }
                        a href="/artifacts" aria-current=[current(Section::Artifacts)] { "Artifacts" }
                        a href="/models" aria-current=[current(Section::Models)] { "Models" }
                        a href="/workers" aria-current=[current(Section::Workers)] { "Workers" }
                    }
                    span.spacer {}
                    @if viewer.role == Role::ReadOnly {
                        span.role { "read-only" }
                    }
                    @if viewer.logged_in {
                        form.inline method="post" action="/logout" {
                            (csrf_field(viewer))
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
                footer { (legend()) }
            }
        }
    }
}

/// A page without navigation: the login form and error pages.
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/dags" { "kiln" } }
                main { (body) }
            }
        }
    }
}

/// The hidden field every POST form needs.
pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A time in UTC, machine-readable for `console.js`, which rewrites it into the viewer's zone.
pub(crate) fn time(micros: Micros) -> Markup {
    let at = to_datetime(micros);
    html! {
        time datetime=(at.to_rfc3339_opts(SecondsFormat::Secs, true)) {
            (at.format("%Y-%m-%d %H:%M:%S UTC"))
        }
    }
}

/// A time, or a dash when there is none.
pub(crate) fn time_or_dash(micros: Option<Micros>) -> Markup {
    match micros {
        Some(micros) => time(micros),
        None => html! { "—" },
    }
}

/// A duration for people: `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub(crate) fn duration(micros: Micros) -> String {
    let micros = micros.max(0);
    let millis = micros / 1_000;
    let seconds = micros / 1_000_000;
    match seconds {
        0 => format!("{millis}ms"),
        1..60 => format!("{:.1}s", micros as f64 / 1e6),
        60..3_600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        3_600..86_400 => format!("{}h {:02}m", seconds / 3_600, (seconds % 3_600) / 60),
        _ => format!("{}d {:02}h", seconds / 86_400, (seconds % 86_400) / 3_600),
    }
}

/// A size for people, in binary units: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub(crate) fn bytes(size: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if size < 1024 {
        return format!("{size} B");
    }
    let mut value = size as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long something ran: until its end, or until `now` while it runs.
pub(crate) fn elapsed(start: Option<Micros>, end: Option<Micros>, now: Micros) -> String {
    match (start, end) {
        (Some(start), Some(end)) => duration(end - start),
        (Some(start), None) => format!("{} so far", duration(now - start)),
        _ => "—".to_owned(),
    }
}

/// Text cut to `chars` characters, with an ellipsis when cut (labels in drawings, whose full
/// text is in their tooltip).
pub(crate) fn shorten(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The CSS class of a state (task or run states share names, and so colours).
pub(crate) fn state_class(state: &str) -> String {
    format!("st-{state}")
}

/// A task's own tries, used of allowed, and the attempts the infrastructure lost, which use
/// none of them: `1 / 1`, or `1 / 1, 2 lost`.
pub(crate) fn tries(instance: &TaskInstanceRecord) -> String {
    let (used, allowed) = instance.own_tries();
    match instance.lost_attempts {
        0 => format!("{used} / {allowed}"),
        lost => format!("{used} / {allowed}, {lost} lost"),
    }
}

/// A state as a coloured label.
pub(crate) fn state_badge(state: &str) -> Markup {
    html! { span class={ "state " (state_class(state)) } { (state.replace('_', " ")) } }
}

/// Which colour means what.
pub(crate) fn legend() -> Markup {
    html! {
        ul.legend aria-label="State colours" {
            @for state in TaskState::ALL {
                li { span class={ "sq " (state_class(state.as_str())) } {} (state.as_str().replace('_', " ")) }
            }
            li { span class="sq st-none" {} "no run" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bytes, duration};

    #[test]
    fn sizes_read_naturally() {
        let shown: Vec<String> = [0, 1023, 1024, 1536, 20 * 1024 * 1024, u64::MAX]
            .into_iter()
            .map(bytes)
            .collect();
        assert_eq!(
            shown,
            [
                "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "20.0 MiB", "16.0 EiB"
            ]
        );
    }

    #[test]
    fn durations_read_naturally() {
        let shown: Vec<String> = [
            850_000,
            12_345_678,
            245_000_000,
            7_380_000_000,
            273_600_000_000,
        ]
        .into_iter()
        .map(duration)
        .collect();
        assert_eq!(shown, ["850ms", "12.3s", "4m 05s", "2h 03m", "3d 04h"]);
    }
}
