//! Logistic regression fitted by L-BFGS (argmin) on scikit-learn's objective: the mean log loss
//! plus `1 / (2 C n)` times the squared weights (intercepts unpenalised), binary or multinomial.
//!
//! linfa-logistic minimises the same function but evaluates loss and gradient separately, each
//! through freshly allocated ndarray temporaries on one core; at a million rows that made it
//! 2.7 times slower than scikit-learn. Here one pass over the row-major matrix gives both, split
//! across cores, and the line search's second question at the same point is answered from the
//! first.

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use kiln_engine::TaskError;
use ndarray::Array1;

use super::fit::Training;
use super::model::sigmoid;

/// How many past steps L-BFGS remembers (scipy's default `maxcor`, which scikit-learn keeps).
const MEMORY: usize = 10;

/// A fitted logistic regression in kiln's model shape.
#[derive(Debug)]
pub struct LogisticFit {
    /// Per score: one weight per feature.
    pub coefficients: Vec<Vec<f64>>,
    /// Per score: the intercept.
    pub intercepts: Vec<f64>,
    /// L-BFGS iterations run.
    pub iterations: u64,
    /// The objective at the answer.
    pub loss: f64,
}

/// The objective over one training set.
struct Objective<'a> {
    x: &'a [f64],
    labels: &'a [usize],
    features: usize,
    /// One score for binary (class 1's), one per class for multinomial.
    scores: usize,
    /// `1 / (C n)`: the L2 strength on the mean loss.
    penalty: f64,
    threads: usize,
    /// The last point asked about, with its loss and gradient: the line search asks for the
    /// cost and then the gradient at the same point.
    last: Mutex<Option<Evaluated>>,
}

/// The objective at one point.
struct Evaluated {
    at: Array1<f64>,
    loss: f64,
    gradient: Array1<f64>,
}

impl Objective<'_> {
    /// The width of one score's parameters: the weights, then the intercept.
    fn width(&self) -> usize {
        self.features + 1
    }

    fn evaluate(&self, parameters: &Array1<f64>) -> (f64, Array1<f64>) {
        if let Ok(last) = self.last.lock()
            && let Some(last) = last.as_ref()
            && last.at == *parameters
        {
            return (last.loss, last.gradient.clone());
        }
        let weights = parameters.as_slice().map_or_else(
            || parameters.iter().copied().collect::<Vec<_>>(),
            <[f64]>::to_vec,
        );
        let rows = self.labels.len();
        let partials = super::in_parts(&mut vec![(); rows], self.threads, |range, _| {
            self.partial(&weights, range)
        });
        let count = rows as f64;
        let mut loss = 0.0;
        let mut gradient = vec![0.0; weights.len()];
        for (part_loss, part_gradient) in partials {
            loss += part_loss;
            for (total, value) in gradient.iter_mut().zip(part_gradient) {
                *total += value;
            }
        }
        loss /= count;
        for value in &mut gradient {
            *value /= count;
        }
        let width = self.width();
        for score in 0..self.scores {
            let range = score * width..score * width + self.features;
            for (slot, weight) in gradient[range.clone()].iter_mut().zip(&weights[range]) {
                loss += 0.5 * self.penalty * weight * weight;
                *slot += self.penalty * weight;
            }
        }
        let gradient = Array1::from(gradient);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Evaluated {
                at: parameters.clone(),
                loss,
                gradient: gradient.clone(),
            });
        }
        (loss, gradient)
    }

    /// The summed loss and gradient over some rows, unpenalised.
    fn partial(&self, weights: &[f64], rows: std::ops::Range<usize>) -> (f64, Vec<f64>) {
        let width = self.width();
        let mut loss = 0.0;
        let mut gradient = vec![0.0; weights.len()];
        let mut scores = vec![0.0; self.scores];
        for row in rows {
            let values = &self.x[row * self.features..(row + 1) * self.features];
            for (score, slot) in scores.iter_mut().enumerate() {
                let own = &weights[score * width..(score + 1) * width];
                *slot = dot(&own[..self.features], values) + own[self.features];
            }
            let label = self.labels[row];
            if self.scores == 1 {
                let score = scores[0];
                let positive = label == 1;
                // log(1 + e^score) − y·score, without overflow for large |score|.
                loss += log_one_plus_exp(score) - if positive { score } else { 0.0 };
                scores[0] = sigmoid(score) - if positive { 1.0 } else { 0.0 };
            } else {
                let largest = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut total = 0.0;
                for slot in scores.iter_mut() {
                    *slot = (*slot - largest).exp();
                    total += *slot;
                }
                // log Σ e^z − z_label, with the largest score taken out first.
                loss += total.ln() - scores[label].ln();
                for slot in scores.iter_mut() {
                    *slot /= total;
                }
                scores[label] -= 1.0;
            }
            // `scores` now holds each score's residual: the gradient of the row's loss.
            for (score, residual) in scores.iter().enumerate() {
                let own = &mut gradient[score * width..(score + 1) * width];
                for (slot, value) in own[..self.features].iter_mut().zip(values) {
                    *slot += residual * value;
                }
                own[self.features] += residual;
            }
        }
        (loss, gradient)
    }
}

impl CostFunction for Objective<'_> {
    type Param = Array1<f64>;
    type Output = f64;

    fn cost(&self, parameters: &Array1<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.evaluate(parameters).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;

    fn gradient(&self, parameters: &Array1<f64>) -> Result<Array1<f64>, argmin::core::Error> {
        Ok(self.evaluate(parameters).1)
    }
}

fn dot(left: &[f64], right: &[f64]) -> f64 {
    // Four running sums let the compiler keep them in vector registers.
    let mut sums = [0.0; 4];
    let mut left_chunks = left.chunks_exact(4);
    let mut right_chunks = right.chunks_exact(4);
    for (a, b) in left_chunks.by_ref().zip(right_chunks.by_ref()) {
        for ((sum, x), y) in sums.iter_mut().zip(a).zip(b) {
            *sum += x * y;
        }
    }
    let tail: f64 = left_chunks
        .remainder()
        .iter()
        .zip(right_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

fn log_one_plus_exp(score: f64) -> f64 {
    if score > 0.0 {
        score + (-score).exp().ln_1p()
    } else {
        score.exp().ln_1p()
    }
}

/// Fits a logistic regression with inverse regularization `c`, stopping when the gradient's
/// norm falls below `tolerance` (scikit-learn's `tol`) or after `max_iterations`.
pub fn fit_logistic(
    data: &Training<'_>,
    labels: &[usize],
    c: f64,
    max_iterations: u64,
    tolerance: f64,
) -> Result<LogisticFit, TaskError> {
    if c <= 0.0 || !c.is_finite() {
        return Err(TaskError::Permanent(
            "`c` must be a positive number".to_owned(),
        ));
    }
    if tolerance < 0.0 || !tolerance.is_finite() {
        return Err(TaskError::Permanent(
            "`tolerance` must be a number of at least 0".to_owned(),
        ));
    }
    let mut seen = vec![false; data.classes.max(2)];
    for label in labels {
        if let Some(slot) = seen.get_mut(*label) {
            *slot = true;
        }
    }
    if seen.iter().filter(|present| **present).count() < 2 {
        return Err(TaskError::Permanent(
            "logistic regression needs rows of at least two classes in the training data"
                .to_owned(),
        ));
    }
    let scores = if data.classes <= 2 { 1 } else { data.classes };
    let threads = super::threads_for(data.rows);
    let objective = Objective {
        x: data.x,
        labels,
        features: data.features,
        scores,
        penalty: 1.0 / (c * data.rows as f64),
        threads,
        last: Mutex::new(None),
    };
    let failed = |error: argmin::core::Error| {
        TaskError::Permanent(format!("logistic regression failed to fit: {error}"))
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), MEMORY)
        .with_tolerance_grad(tolerance)
        .map_err(failed)?
        // scipy's `ftol` as scikit-learn sets it: stop once a step no longer lowers the loss
        // by more than rounding would.
        .with_tolerance_cost(64.0 * f64::EPSILON)
        .map_err(failed)?;
    let start = Array1::zeros(scores * (data.features + 1));
    let result = Executor::new(objective, solver)
        .configure(|state| state.param(start).max_iters(max_iterations))
        .run()
        .map_err(failed)?;
    let state = result.state();
    let parameters = state
        .get_best_param()
        .ok_or_else(|| TaskError::Permanent("logistic regression found no answer".to_owned()))?;
    let width = data.features + 1;
    let (coefficients, intercepts) = (0..scores)
        .map(|score| {
            let own = parameters.slice(ndarray::s![score * width..(score + 1) * width]);
            (
                own.iter().take(data.features).copied().collect(),
                own[data.features],
            )
        })
        .unzip();
    Ok(LogisticFit {
        coefficients,
        intercepts,
        iterations: state.get_iter(),
        loss: state.get_best_cost(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn training<'a>(
        x: &'a [f64],
        labels: &'a [usize],
        features: usize,
        classes: usize,
    ) -> Training<'a> {
        Training {
            x,
            rows: labels.len(),
            features,
            labels: Some(labels),
            classes,
            values: None,
            seed: 0,
        }
    }

    /// The loss and gradient at a point, worked by hand: two rows, one feature, weights
    /// `w = 1`, `b = 0`, C = 1 (penalty 1 / (C n) = 0.5).
    #[test]
    fn loss_and_gradient_match_the_hand_worked_figures() {
        let x = [2.0, -1.0];
        let labels = [1, 1];
        let objective = Objective {
            x: &x,
            labels: &labels,
            features: 1,
            scores: 1,
            penalty: 0.5,
            threads: 1,
            last: Mutex::new(None),
        };
        let (loss, gradient) = objective.evaluate(&Array1::from(vec![1.0, 0.0]));
        // Scores 2 and −1, both of class 1: losses ln(1 + e^−2) and ln(1 + e^1).
        let expected_loss =
            ((1.0 + (-2.0f64).exp()).ln() + (1.0 + 1.0f64.exp()).ln()) / 2.0 + 0.5 * 0.5;
        assert!(
            (loss - expected_loss).abs() < 1e-12,
            "{loss} vs {expected_loss}"
        );
        // Residuals σ(2) − 1 and σ(−1) − 1, times the feature, averaged; plus 0.5 · w.
        let (first, second) = (sigmoid(2.0) - 1.0, sigmoid(-1.0) - 1.0);
        // Features 2 and −1.
        let expected_weight = (first * 2.0 - second) / 2.0 + 0.5;
        let expected_intercept = (first + second) / 2.0;
        assert!((gradient[0] - expected_weight).abs() < 1e-12);
        assert!((gradient[1] - expected_intercept).abs() < 1e-12);
    }

    #[test]
    fn threads_split_the_rows_without_changing_the_answer() {
        let rows = 1000;
        let x: Vec<f64> = (0..rows * 2)
            .map(|index| ((index * 7919) % 101) as f64 / 50.0 - 1.0)
            .collect();
        let labels: Vec<usize> = (0..rows).map(|row| (row * 31) % 3).collect();
        let at = Array1::from(
            (0..9)
                .map(|index| index as f64 / 10.0 - 0.4)
                .collect::<Vec<_>>(),
        );
        let answers: Vec<(f64, Array1<f64>)> = [1, 3]
            .into_iter()
            .map(|threads| {
                Objective {
                    x: &x,
                    labels: &labels,
                    features: 2,
                    scores: 3,
                    penalty: 0.001,
                    threads,
                    last: Mutex::new(None),
                }
                .evaluate(&at)
            })
            .collect();
        assert!((answers[0].0 - answers[1].0).abs() < 1e-12);
        for (one, other) in answers[0].1.iter().zip(&answers[1].1) {
            assert!((one - other).abs() < 1e-12);
        }
    }

    /// At the answer the penalised gradient vanishes: for every weight, the mean residual times
    /// the feature equals −w / (C n).
    #[test]
    fn the_fit_is_a_stationary_point_of_the_penalised_loss() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let labels = [0, 0, 1, 0, 1, 1];
        let data = training(&x, &labels, 1, 2);
        let fit = fit_logistic(&data, &labels, 1.0, 100, 1e-10).expect("fits");
        let (weight, intercept) = (fit.coefficients[0][0], fit.intercepts[0]);
        let residuals: Vec<f64> = x
            .iter()
            .zip(labels)
            .map(|(value, label)| sigmoid(weight * value + intercept) - label as f64)
            .collect();
        let mean_residual = residuals.iter().sum::<f64>() / 6.0;
        let weighted: f64 = residuals.iter().zip(x).map(|(r, v)| r * v).sum::<f64>() / 6.0;
        assert!(mean_residual.abs() < 1e-8, "{mean_residual}");
        assert!(
            (weighted + weight / 6.0).abs() < 1e-8,
            "{weighted} vs {weight}"
        );
        assert!(weight > 0.0);
    }

    #[test]
    fn one_class_is_refused_with_a_reason() {
        let x = [0.0, 1.0];
        let labels = [1, 1];
        let error = fit_logistic(&training(&x, &labels, 1, 2), &labels, 1.0, 100, 1e-4)
            .expect_err("one class");
        assert!(
            error.to_string().contains("at least two classes"),
            "{error}"
        );
    }
}
