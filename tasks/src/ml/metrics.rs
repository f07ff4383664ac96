//! Scores of predictions against the truth: classification (accuracy, precision, recall, F1
//! macro and weighted, ROC AUC, log loss, confusion matrix) and regression (RMSE, MAE, R²).
//! Definitions follow scikit-learn's, so figures compare directly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Classification scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Share of rows predicted right.
    pub accuracy: f64,
    /// Unweighted mean of per-class precision.
    pub precision_macro: f64,
    /// Unweighted mean of per-class recall.
    pub recall_macro: f64,
    /// Unweighted mean of per-class F1.
    pub f1_macro: f64,
    /// Per-class precision weighted by class support.
    pub precision_weighted: f64,
    /// Per-class recall weighted by class support.
    pub recall_weighted: f64,
    /// Per-class F1 weighted by class support.
    pub f1_weighted: f64,
    /// Area under the ROC curve (binary; one-vs-rest macro mean for more classes), when the
    /// model gives probabilities.
    pub roc_auc: Option<f64>,
    /// Mean negative log-likelihood of the true class, when the model gives probabilities.
    pub log_loss: Option<f64>,
    /// `matrix[true][predicted]` row counts.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Regression scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

/// Scores classes. `probabilities[row][class]` when the model has them.
pub fn classification(
    truth: &[usize],
    predicted: &[usize],
    probabilities: Option<&[Vec<f64>]>,
    classes: usize,
) -> ClassificationMetrics {
    let rows = truth.len().max(1) as f64;
    let mut confusion = vec![vec![0u64; classes]; classes];
    for (actual, guess) in truth.iter().zip(predicted) {
        if *actual < classes && *guess < classes {
            confusion[*actual][*guess] += 1;
        }
    }
    let correct: u64 = (0..classes).map(|class| confusion[class][class]).sum();
    let mut per_class = Vec::with_capacity(classes);
    for (class, row) in confusion.iter().enumerate() {
        let true_positive = row[class] as f64;
        let predicted_as: u64 = confusion.iter().map(|counts| counts[class]).sum();
        let support: u64 = row.iter().sum();
        let precision = if predicted_as > 0 {
            true_positive / predicted_as as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            true_positive / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        per_class.push((precision, recall, f1, support as f64));
    }
    let macro_mean = |pick: fn(&(f64, f64, f64, f64)) -> f64| {
        per_class.iter().map(pick).sum::<f64>() / classes.max(1) as f64
    };
    let weighted_mean = |pick: fn(&(f64, f64, f64, f64)) -> f64| {
        per_class
            .iter()
            .map(|entry| pick(entry) * entry.3)
            .sum::<f64>()
            / rows
    };
    let (roc_auc, log_loss) = match probabilities {
        Some(probabilities) => (
            Some(roc_auc(truth, probabilities, classes)),
            Some(log_loss(truth, probabilities)),
        ),
        None => (None, None),
    };
    ClassificationMetrics {
        accuracy: correct as f64 / rows,
        precision_macro: macro_mean(|entry| entry.0),
        recall_macro: macro_mean(|entry| entry.1),
        f1_macro: macro_mean(|entry| entry.2),
        precision_weighted: weighted_mean(|entry| entry.0),
        recall_weighted: weighted_mean(|entry| entry.1),
        f1_weighted: weighted_mean(|entry| entry.2),
        roc_auc,
        log_loss,
        confusion_matrix: confusion,
    }
}

/// AUC of one class against the rest: the Mann–Whitney statistic, ties counted as half.
fn binary_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (positives, negatives) =
        positive.iter().fold(
            (0.0, 0.0),
            |(p, n), is| if *is { (p + 1.0, n) } else { (p, n + 1.0) },
        );
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Average ranks over ties.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let rank = (start + end) as f64 / 2.0 + 1.0;
        for index in &order[start..=end] {
            if positive[*index] {
                rank_sum += rank;
            }
        }
        start = end + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

fn roc_auc(truth: &[usize], probabilities: &[Vec<f64>], classes: usize) -> f64 {
    let score = |class: usize| -> Vec<f64> {
        probabilities
            .iter()
            .map(|row| row.get(class).copied().unwrap_or(0.0))
            .collect()
    };
    if classes == 2 {
        let positive: Vec<bool> = truth.iter().map(|class| *class == 1).collect();
        return binary_auc(&positive, &score(1)).unwrap_or(f64::NAN);
    }
    let aucs: Vec<f64> = (0..classes)
        .filter_map(|class| {
            let positive: Vec<bool> = truth.iter().map(|actual| *actual == class).collect();
            binary_auc(&positive, &score(class))
        })
        .collect();
    if aucs.is_empty() {
        f64::NAN
    } else {
        aucs.iter().sum::<f64>() / aucs.len() as f64
    }
}

fn log_loss(truth: &[usize], probabilities: &[Vec<f64>]) -> f64 {
    let epsilon = 1e-15;
    let total: f64 = truth
        .iter()
        .zip(probabilities)
        .map(|(class, row)| {
            -row.get(*class)
                .copied()
                .unwrap_or(0.0)
                .clamp(epsilon, 1.0 - epsilon)
                .ln()
        })
        .sum();
    total / truth.len().max(1) as f64
}

/// The points of a binary ROC curve, `(false positive rate, true positive rate)`.
pub fn roc_curve(truth: &[usize], scores: &[f64]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let positives = truth.iter().filter(|class| **class == 1).count().max(1) as f64;
    let negatives = truth.iter().filter(|class| **class != 1).count().max(1) as f64;
    let mut points = vec![(0.0, 0.0)];
    let (mut true_positives, mut false_positives) = (0.0, 0.0);
    for (position, index) in order.iter().enumerate() {
        if truth[*index] == 1 {
            true_positives += 1.0;
        } else {
            false_positives += 1.0;
        }
        let last_of_tie = order
            .get(position + 1)
            .is_none_or(|next| scores[*next] != scores[*index]);
        if last_of_tie {
            points.push((false_positives / negatives, true_positives / positives));
        }
    }
    points
}

/// Scores numbers.
pub fn regression(truth: &[f64], predicted: &[f64]) -> RegressionMetrics {
    let rows = truth.len().max(1) as f64;
    let mean = truth.iter().sum::<f64>() / rows;
    let (mut squared, mut absolute, mut total) = (0.0, 0.0, 0.0);
    for (actual, guess) in truth.iter().zip(predicted) {
        squared += (actual - guess) * (actual - guess);
        absolute += (actual - guess).abs();
        total += (actual - mean) * (actual - mean);
    }
    RegressionMetrics {
        rmse: (squared / rows).sqrt(),
        mae: absolute / rows,
        r2: if total > 0.0 {
            1.0 - squared / total
        } else {
            0.0
        },
    }
}

/// Named figures of a metrics record, for gates and comparisons.
pub fn figures(metrics: &serde_json::Value) -> BTreeMap<String, f64> {
    metrics
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| value.as_f64().map(|number| (name.clone(), number)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics_match_hand_computation() {
        // truth:     0 0 0 1 1 1 1 2
        // predicted: 0 0 1 1 1 1 0 2
        let truth = [0, 0, 0, 1, 1, 1, 1, 2];
        let predicted = [0, 0, 1, 1, 1, 1, 0, 2];
        let metrics = classification(&truth, &predicted, None, 3);
        assert_eq!(
            metrics.confusion_matrix,
            vec![vec![2, 1, 0], vec![1, 3, 0], vec![0, 0, 1]]
        );
        assert_eq!(metrics.accuracy, 6.0 / 8.0);
        // Precision: 2/3, 3/4, 1. Recall: 2/3, 3/4, 1.
        assert!((metrics.precision_macro - (2.0 / 3.0 + 0.75 + 1.0) / 3.0).abs() < 1e-12);
        assert!((metrics.f1_macro - (2.0 / 3.0 + 0.75 + 1.0) / 3.0).abs() < 1e-12);
        assert!((metrics.f1_weighted - (3.0 * 2.0 / 3.0 + 4.0 * 0.75 + 1.0) / 8.0).abs() < 1e-12);
        assert_eq!(metrics.roc_auc, None);
    }

    #[test]
    fn auc_and_log_loss_of_a_binary_model() {
        let truth = [0, 0, 1, 1];
        let probabilities = vec![
            vec![0.9, 0.1],
            vec![0.6, 0.4],
            vec![0.65, 0.35],
            vec![0.2, 0.8],
        ];
        let predicted = [0, 0, 0, 1];
        let metrics = classification(&truth, &predicted, Some(&probabilities), 2);
        // Positive scores 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered.
        assert_eq!(metrics.roc_auc, Some(0.75));
        let expected = -(0.9f64.ln() + 0.6f64.ln() + 0.35f64.ln() + 0.8f64.ln()) / 4.0;
        assert!((metrics.log_loss.unwrap() - expected).abs() < 1e-12);
        let curve = roc_curve(&truth, &[0.1, 0.4, 0.35, 0.8]);
        assert_eq!(
            curve,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn regression_metrics_match_hand_computation() {
        let metrics = regression(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 4.0, 2.0]);
        assert_eq!(metrics.mae, 0.75);
        assert!((metrics.rmse - (5.0f64 / 4.0).sqrt()).abs() < 1e-12);
        assert!((metrics.r2 - (1.0 - 5.0 / 5.0)).abs() < 1e-12);
    }
}
