//! One metric of a model across its versions, drawn as SVG on the server: a line through the
//! versions that recorded the metric, oldest on the left, each point a link to its version, the
//! production version marked.

use maud::{Markup, html};

use super::lineage::version_href;

const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 28.0;
const PLOT_WIDTH: f64 = 640.0;
const PLOT_HEIGHT: f64 = 180.0;
/// Space between the plot's edges and the first and last points, so a point and its
/// `production` mark stay clear of the y axis labels.
const X_INSET: f64 = 32.0;
/// At most this many version labels along the axis; past it every n-th is labelled (and the
/// production version always), so labels never overlap.
const MAX_LABELS: usize = 20;
/// The y axis is cut into about this many steps.
const Y_STEPS: f64 = 4.0;

/// One version's value of the metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    /// The version number.
    pub(crate) version: i64,
    /// Its value of the metric.
    pub(crate) value: f64,
}

/// A number for people: at most four decimals, without trailing zeros; very large or very small
/// numbers in scientific notation.
pub(crate) fn figure(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 || (magnitude > 0.0 && magnitude < 1e-3) {
        return format!("{value:.3e}");
    }
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// A step of 1, 2, 2.5 or 5 times a power of ten, close to `span / Y_STEPS`.
fn nice_step(span: f64) -> f64 {
    let raw = span / Y_STEPS;
    let power = 10f64.powf(raw.log10().floor());
    let mantissa = raw / power;
    let nice = if mantissa <= 1.0 {
        1.0
    } else if mantissa <= 2.0 {
        2.0
    } else if mantissa <= 2.5 {
        2.5
    } else if mantissa <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// The y axis: its bounds and ticks, on whole steps around the values.
fn y_axis(points: &[Point]) -> (f64, f64, Vec<f64>) {
    let low = points
        .iter()
        .map(|point| point.value)
        .fold(f64::MAX, f64::min);
    let high = points
        .iter()
        .map(|point| point.value)
        .fold(f64::MIN, f64::max);
    // One value, or all equal: open a band around it so the line sits in the middle.
    let span = if high > low {
        high - low
    } else {
        (low.abs() * 0.2).max(1e-6)
    };
    let step = nice_step(span);
    // The tolerance keeps a value that is a whole step (0.7 for 0.025) from being floored a
    // step lower by rounding in the division.
    let mut bottom = (low / step + 1e-9).floor() * step;
    let mut top = (high / step - 1e-9).ceil() * step;
    if top <= bottom {
        bottom -= step;
        top += step;
    }
    let count = ((top - bottom) / step).round() as usize;
    let ticks = (0..=count)
        .map(|index| bottom + index as f64 * step)
        .collect();
    (bottom, top, ticks)
}

/// The chart of `metric` over `points` (oldest version first), or `None` without points.
pub(crate) fn svg(
    name: &str,
    metric: &str,
    points: &[Point],
    production: Option<i64>,
) -> Option<Markup> {
    if points.is_empty() {
        return None;
    }
    let (bottom, top, ticks) = y_axis(points);
    let x = |index: usize| {
        if points.len() == 1 {
            LEFT + PLOT_WIDTH / 2.0
        } else {
            LEFT + X_INSET + index as f64 * (PLOT_WIDTH - 2.0 * X_INSET) / (points.len() - 1) as f64
        }
    };
    let y = |value: f64| TOP + (top - value) / (top - bottom) * PLOT_HEIGHT;
    let label_every = points.len().div_ceil(MAX_LABELS);
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(index, point)| format!("{:.1},{:.1}", x(index), y(point.value)))
        .collect();
    let width = LEFT + PLOT_WIDTH + RIGHT;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let axis_bottom = TOP + PLOT_HEIGHT;
    Some(html! {
        svg.metric-chart xmlns="http://www.w3.org/2000/svg" role="img"
            aria-label={ (metric) " of " (name) " by version" }
            width=(format!("{width:.0}")) height=(format!("{height:.0}"))
            viewBox=(format!("0 0 {width:.0} {height:.0}")) {
            g.axis {
                @for tick in &ticks {
                    @let tick_y = y(*tick);
                    line x1=(format!("{LEFT:.1}")) x2=(format!("{:.1}", LEFT + PLOT_WIDTH))
                        y1=(format!("{tick_y:.1}")) y2=(format!("{tick_y:.1}")) {}
                    text.y-label x=(format!("{:.1}", LEFT - 6.0)) y=(format!("{:.1}", tick_y + 4.0)) { (figure(*tick)) }
                }
                @for (index, point) in points.iter().enumerate() {
                    @if index % label_every == 0 || index + 1 == points.len() || production == Some(point.version) {
                        text.x-label x=(format!("{:.1}", x(index))) y=(format!("{:.1}", axis_bottom + 18.0)) { "v" (point.version) }
                    }
                }
            }
            @if points.len() > 1 {
                polyline.line points=(line.join(" ")) {}
            }
            @for (index, point) in points.iter().enumerate() {
                @let served = production == Some(point.version);
                @let point_x = x(index);
                @let point_y = y(point.value);
                a href=(version_href(name, point.version)) {
                    g class=(if served { "point production" } else { "point" }) {
                        title {
                            "v" (point.version) ": " (metric) " " (figure(point.value))
                            @if served { " (production)" }
                        }
                        circle cx=(format!("{point_x:.1}")) cy=(format!("{point_y:.1}")) r=(if served { "6" } else { "4" }) {}
                        @if served {
                            text.marker x=(format!("{point_x:.1}")) y=(format!("{:.1}", point_y - 10.0)) { "production" }
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Point, figure, svg, y_axis};

    fn points(values: &[(i64, f64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(version, value)| Point { version, value })
            .collect()
    }

    #[test]
    fn figures_read_naturally() {
        let shown: Vec<String> = [0.76, 1.0, 0.977_022_7, -0.0, 12.5, 0.000_12, 2.5e7]
            .into_iter()
            .map(figure)
            .collect();
        assert_eq!(
            shown,
            ["0.76", "1", "0.977", "0", "12.5", "1.200e-4", "2.500e7"]
        );
    }

    #[test]
    fn the_y_axis_covers_the_values_on_whole_steps() {
        let (bottom, top, ticks) = y_axis(&points(&[(1, 0.71), (2, 0.76), (3, 0.74)]));
        assert!(bottom <= 0.71 && top >= 0.76, "{bottom}..{top}");
        assert!(ticks.len() >= 3 && ticks.len() <= 7, "{ticks:?}");
        // One value alone still gets a band around it.
        let (bottom, top, _) = y_axis(&points(&[(1, 0.5)]));
        assert!(bottom < 0.5 && top > 0.5, "{bottom}..{top}");
        let (bottom, top, _) = y_axis(&points(&[(1, 0.0)]));
        assert!(bottom < 0.0 && top > 0.0, "{bottom}..{top}");
    }

    #[test]
    fn points_go_left_to_right_and_production_is_marked() {
        let chart = svg(
            "wq",
            "accuracy",
            &points(&[(1, 0.7), (2, 0.8), (3, 0.75)]),
            Some(2),
        )
        .unwrap()
        .into_string();
        // Oldest at the left, newest at the right, the highest value at the top.
        assert!(
            chart.contains(r#"points="96.0,206.0 384.0,26.0 672.0,116.0""#),
            "{chart}"
        );
        for label in [
            ">v1</text>",
            ">v2</text>",
            ">v3</text>",
            ">production</text>",
        ] {
            assert!(chart.contains(label), "missing {label} in {chart}");
        }
        assert!(chart.contains(r#"<a href="/artifacts/wq/2"><g class="point production">"#));
        assert_eq!(chart.matches("class=\"point production\"").count(), 1);
        assert!(svg("wq", "accuracy", &[], None).is_none());
    }

    #[test]
    fn many_versions_get_every_nth_label_and_production_always() {
        let many: Vec<(i64, f64)> = (1..=100).map(|version| (version, 0.5)).collect();
        let chart = svg("wq", "r2", &points(&many), Some(37))
            .unwrap()
            .into_string();
        let labels = chart.matches("class=\"x-label\"").count();
        assert!(labels <= 22, "{labels} labels");
        assert!(chart.contains(">v37</text>") && chart.contains(">v100</text>"));
    }
}
