//! A run's Gantt chart, drawn as SVG on the server: one row per task that has started, a pale
//! bar for the time it waited in the queue and a coloured one for its latest attempt.

use kiln_engine::store::{Micros, TaskInstanceRecord};
use maud::{Markup, html};

use super::layout::{duration, shorten, state_class};

const LABEL_WIDTH: f64 = 190.0;
const PLOT_WIDTH: f64 = 720.0;
const ROW_HEIGHT: f64 = 20.0;
const AXIS_HEIGHT: f64 = 22.0;
/// Task ids longer than this are cut in the label column (the bar's tooltip has the full id).
const LABEL_CHARS: usize = 26;
/// Tick spacings to choose from, in seconds: the smallest that gives at most eight ticks wins.
const TICK_STEPS: [i64; 17] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400,
];

/// The chart, or `None` when no task has started yet.
pub(crate) fn svg(run_id: i64, tasks: &[TaskInstanceRecord], now: Micros) -> Option<Markup> {
    let started: Vec<&TaskInstanceRecord> = tasks
        .iter()
        .filter(|task| task.started_at.is_some())
        .collect();
    let first = started
        .iter()
        .filter_map(|task| task.queued_at.or(task.started_at))
        .chain(started.iter().filter_map(|task| task.started_at))
        .min()?;
    let last = started
        .iter()
        .map(|task| task.ended_at.unwrap_or(now))
        .max()
        .unwrap_or(now)
        .max(first + 1_000_000);
    let span = (last - first) as f64;
    let x = |at: Micros| LABEL_WIDTH + (at - first).max(0) as f64 / span * PLOT_WIDTH;
    let step = TICK_STEPS
        .iter()
        .copied()
        .find(|step| (last - first) / (step * 1_000_000) <= 8)
        .unwrap_or(86_400);
    let ticks: Vec<i64> = (0..)
        .map(|n| n * step * 1_000_000)
        .take_while(|offset| first + offset <= last)
        .collect();
    let height = AXIS_HEIGHT + started.len() as f64 * ROW_HEIGHT;
    let width = LABEL_WIDTH + PLOT_WIDTH + 10.0;
    Some(html! {
        svg.gantt xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Gantt chart of the run's tasks"
            width=(format!("{width:.0}")) height=(format!("{height:.0}"))
            viewBox=(format!("0 0 {width:.0} {height:.0}")) {
            g.axis {
                @for offset in &ticks {
                    @let tick_x = x(first + offset);
                    line x1=(format!("{tick_x:.1}")) x2=(format!("{tick_x:.1}")) y1="16" y2=(format!("{height:.0}")) {}
                    text x=(format!("{tick_x:.1}")) y="12" { "+" (duration(*offset)) }
                }
            }
            @for (row, task) in started.iter().enumerate() {
                @let top = AXIS_HEIGHT + row as f64 * ROW_HEIGHT;
                @let start = task.started_at.unwrap_or(first);
                @let end = task.ended_at.unwrap_or(now).max(start);
                a href={ "/runs/" (run_id) "/tasks/" (task.task_id) } {
                    g class={ "bar " (state_class(task.state.as_str())) } {
                        title {
                            (task.task_id) ": " (task.state.as_str().replace('_', " "))
                            ", try " (task.try_number) ", " (duration(end - start))
                        }
                        text.label x="4" y=(format!("{:.1}", top + 14.0)) { (shorten(&task.task_id, LABEL_CHARS)) }
                        @if let Some(queued) = task.queued_at.filter(|queued| *queued < start) {
                            rect.wait x=(format!("{:.1}", x(queued))) y=(format!("{:.1}", top + 4.0))
                                width=(format!("{:.1}", (x(start) - x(queued)).max(1.0))) height="12" {}
                        }
                        rect x=(format!("{:.1}", x(start))) y=(format!("{:.1}", top + 3.0))
                            width=(format!("{:.1}", (x(end) - x(start)).max(2.0))) height="14" rx="2" {}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use kiln_engine::state::TaskState;
    use kiln_engine::store::TaskInstanceRecord;

    fn task(task_id: &str, state: TaskState, times: (i64, Option<i64>)) -> TaskInstanceRecord {
        TaskInstanceRecord {
            id: 1,
            run_id: 7,
            task_id: task_id.to_owned(),
            state,
            try_number: 1,
            max_tries: 1,
            lost_attempts: 0,
            max_lost_attempts: 3,
            priority: 0,
            queue: "default".to_owned(),
            worker_id: None,
            lease_expires_at: None,
            next_retry_at: None,
            fence: 1,
            queued_at: Some(times.0),
            started_at: Some(times.0),
            ended_at: times.1,
            error: None,
            summary: None,
        }
    }

    #[test]
    fn bars_are_placed_on_a_shared_time_axis() {
        let seconds = |s: i64| s * 1_000_000;
        let tasks = [
            task("first", TaskState::Success, (0, Some(seconds(10)))),
            task("second", TaskState::Running, (seconds(10), None)),
            TaskInstanceRecord {
                started_at: None,
                ..task("waiting", TaskState::Scheduled, (0, None))
            },
        ];
        let chart = super::svg(7, &tasks, seconds(20)).unwrap().into_string();
        // 20 s across 720 px after a 190 px label column: 0 s at 190, 10 s at 550.
        assert!(
            chart.contains(r#"<rect x="190.0" y="25.0" width="360.0""#),
            "{chart}"
        );
        assert!(
            chart.contains(r#"<rect x="550.0" y="45.0" width="360.0""#),
            "{chart}"
        );
        assert!(
            chart.contains(">+10.0s<") && chart.contains(">+0ms<"),
            "{chart}"
        );
        assert!(
            !chart.contains("waiting"),
            "a task that has not started has no row"
        );
        assert!(super::svg(7, &tasks[2..], seconds(20)).is_none());
    }
}
