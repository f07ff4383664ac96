//! Evaluation charts as SVG (plotters): a confusion matrix, a ROC curve, residuals.

use plotters::prelude::*;

/// One chart's SVG text, or why it could not be drawn.
type Svg = Result<String, String>;

fn drawn<E: std::fmt::Display>(error: E) -> String {
    format!("drawing a chart failed: {error}")
}

/// A confusion matrix as a heat map: true class down, predicted class across.
pub fn confusion_matrix(title: &str, matrix: &[Vec<u64>], labels: &[String]) -> Svg {
    let mut svg = String::new();
    {
        let classes = matrix.len().max(1);
        let root = SVGBackend::with_string(&mut svg, (480, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(drawn)?;
        let most = matrix.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0..classes, 0..classes)
            .map_err(drawn)?;
        let label = |index: &usize| labels.get(*index).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(classes)
            .y_labels(classes)
            .x_label_formatter(&label)
            .y_label_formatter(&label)
            .draw()
            .map_err(drawn)?;
        for (actual, row) in matrix.iter().enumerate() {
            for (predicted, count) in row.iter().enumerate() {
                // Rows are drawn top-down, so the first class is at the top.
                let y = classes - 1 - actual;
                let shade = (*count as f64 / most * 200.0) as u8;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(predicted, y), (predicted + 1, y + 1)],
                        RGBColor(255 - shade, 255 - shade / 2, 255).filled(),
                    )))
                    .map_err(drawn)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (predicted, y + 1),
                        ("sans-serif", 16).into_font(),
                    )))
                    .map_err(drawn)?;
            }
        }
        root.present().map_err(drawn)?;
    }
    Ok(svg)
}

/// ROC curves, one per model, with the diagonal for reference.
pub fn roc_curves(title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> Svg {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (480, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(drawn)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(drawn)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .draw()
            .map_err(drawn)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(drawn)?;
        for (index, (name, points)) in curves.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(drawn)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(drawn)?;
        root.present().map_err(drawn)?;
    }
    Ok(svg)
}

/// Residuals (truth − prediction) against predictions.
pub fn residuals(title: &str, predicted: &[f64], truth: &[f64]) -> Svg {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (480, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(drawn)?;
        let residuals: Vec<(f64, f64)> = predicted
            .iter()
            .zip(truth)
            .map(|(guess, actual)| (*guess, actual - guess))
            .collect();
        let (low, high) = residuals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), (x, _)| {
                (low.min(*x), high.max(*x))
            });
        let spread = residuals
            .iter()
            .map(|(_, residual)| residual.abs())
            .fold(0.0, f64::max)
            .max(1e-9);
        let (low, high) = if low < high {
            (low, high)
        } else {
            (low - 1.0, low + 1.0)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(low..high, -spread..spread)
            .map_err(drawn)?;
        chart
            .configure_mesh()
            .x_desc("predicted")
            .y_desc("residual")
            .draw()
            .map_err(drawn)?;
        // Thousands of points say no more than a sample of them, and keep the file small.
        let step = (residuals.len() / 2000).max(1);
        chart
            .draw_series(
                residuals
                    .iter()
                    .step_by(step)
                    .map(|point| Circle::new(*point, 2, BLUE.mix(0.5).filled())),
            )
            .map_err(drawn)?;
        root.present().map_err(drawn)?;
    }
    Ok(svg)
}
