//! The model envelope: everything needed to use a trained model, in a versioned JSON document
//! that later kiln versions keep reading.
//!
//! Fitted parameters are kept in kiln's own plain shapes (coefficient lists, tree node arrays,
//! centroids), never as a library's serialized structs, so that upgrading linfa cannot make a
//! saved model unreadable, and prediction needs no ML library at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::preprocess::Preprocessing;
use super::tree::Tree;

/// The `format` field of every envelope.
pub const MODEL_FORMAT: &str = "kiln-model";

/// The newest envelope layout this kiln writes; it reads every layout up to this one.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// The media type of a model envelope.
pub const MODEL_MEDIA_TYPE: &str = "application/vnd.kiln.model+json";

/// A trained model with everything needed to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEnvelope {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// The envelope layout, at most [`MODEL_FORMAT_VERSION`].
    pub format_version: u32,
    /// The kiln that trained the model.
    pub kiln_version: String,
    /// The algorithm and its hyperparameters, as the task gave them.
    pub algorithm: serde_json::Value,
    /// What the model does.
    pub task: ModelTask,
    /// The feature columns, in the order the model reads them.
    pub features: Vec<String>,
    /// The target column (none for clustering).
    pub target: Option<String>,
    /// Class labels, by class index (classification only).
    #[serde(default)]
    pub classes: Vec<serde_json::Value>,
    /// How raw feature values become the model's inputs, when the training data was processed.
    #[serde(default)]
    pub preprocessing: Option<Preprocessing>,
    /// The training data: name, version, digest and size.
    pub training_data: TrainingData,
    /// When training ended (RFC 3339).
    pub trained_at: String,
    /// Numbers the training itself produced (iterations, tree depths, …).
    #[serde(default)]
    pub training_info: BTreeMap<String, serde_json::Value>,
    /// The fitted parameters.
    pub fitted: Fitted,
}

/// What kind of prediction a model makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelTask {
    /// A class, with probabilities where the model has them.
    Classification,
    /// A number.
    Regression,
    /// A cluster index.
    Clustering,
}

/// The dataset version a model was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingData {
    /// The dataset's name.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// The SHA-256 of its bytes.
    pub sha256: String,
    /// Rows trained on.
    pub rows: u64,
}

/// Fitted parameters, in kiln's own stable shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fitted {
    /// Logistic regression. Binary: one row of coefficients, the probability of class 1.
    /// Multinomial: one row per class, softmax over the scores.
    Logistic {
        /// Per score: one weight per feature.
        coefficients: Vec<Vec<f64>>,
        /// Per score: the intercept.
        intercepts: Vec<f64>,
    },
    /// Linear regression and elastic net.
    Linear {
        /// One weight per feature.
        coefficients: Vec<f64>,
        /// The intercept.
        intercept: f64,
    },
    /// One decision tree.
    Tree {
        /// The tree; leaves hold class probabilities or the mean.
        tree: Tree,
    },
    /// A random forest: the mean of its trees' leaf values.
    Forest {
        /// The trees.
        trees: Vec<Tree>,
    },
    /// Gaussian naive Bayes.
    NaiveBayes {
        /// Per class: its share of the training rows.
        priors: Vec<f64>,
        /// Per class, per feature: the mean.
        means: Vec<Vec<f64>>,
        /// Per class, per feature: the variance (smoothed).
        variances: Vec<Vec<f64>>,
    },
    /// k-means.
    KMeans {
        /// Per cluster: the centroid.
        centroids: Vec<Vec<f64>>,
    },
}

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The class index, the value, or the cluster index.
    pub value: f64,
    /// Class probabilities, by class index, when the model has them.
    pub probabilities: Option<Vec<f64>>,
}

/// Why an envelope cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The bytes are not an envelope.
    #[error("not a kiln model: {0}")]
    Unreadable(String),
    /// A newer kiln wrote it.
    #[error(
        "the model was saved in format version {found}; this kiln reads up to {known}: upgrade kiln"
    )]
    TooNew {
        /// The envelope's layout version.
        found: u32,
        /// The newest this kiln reads.
        known: u32,
    },
    /// Its parts do not fit together.
    #[error("the model is inconsistent: {0}")]
    Inconsistent(String),
}

/// The logistic function: the probability a score stands for.
pub(crate) fn sigmoid(score: f64) -> f64 {
    1.0 / (1.0 + (-score).exp())
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|score| (score - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|value| value / sum).collect()
}

fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best
}

/// The squared Euclidean distance between two points.
pub(crate) fn squared_distance(left: &[f64], right: &[f64]) -> f64 {
    left.iter().zip(right).map(|(a, b)| (a - b) * (a - b)).sum()
}

fn dot(weights: &[f64], row: &[f64]) -> f64 {
    weights
        .iter()
        .zip(row)
        .map(|(weight, value)| weight * value)
        .sum()
}

impl ModelEnvelope {
    /// Reads an envelope, refusing one a newer kiln wrote and one whose parts do not fit.
    pub fn from_json(bytes: &[u8]) -> Result<ModelEnvelope, ModelError> {
        // The version is checked before the whole document, so a newer layout is reported as
        // such rather than as whatever field it changed.
        #[derive(Deserialize)]
        struct Head {
            format: String,
            format_version: u32,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|error| ModelError::Unreadable(error.to_string()))?;
        if head.format != MODEL_FORMAT {
            return Err(ModelError::Unreadable(format!(
                "format is `{}`, not `{MODEL_FORMAT}`",
                head.format
            )));
        }
        if head.format_version > MODEL_FORMAT_VERSION {
            return Err(ModelError::TooNew {
                found: head.format_version,
                known: MODEL_FORMAT_VERSION,
            });
        }
        let envelope: ModelEnvelope = serde_json::from_slice(bytes)
            .map_err(|error| ModelError::Unreadable(error.to_string()))?;
        envelope.check()?;
        Ok(envelope)
    }

    /// The envelope as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of plain data always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), ModelError> {
        let features = self.features.len();
        let wrong = |what: String| Err(ModelError::Inconsistent(what));
        match &self.fitted {
            Fitted::Logistic {
                coefficients,
                intercepts,
            } => {
                if coefficients.len() != intercepts.len()
                    || coefficients.iter().any(|row| row.len() != features)
                {
                    return wrong(format!(
                        "logistic coefficients do not match {features} features"
                    ));
                }
                let scores = coefficients.len();
                let classes = self.classes.len();
                if !(scores == classes || (scores == 1 && classes == 2)) {
                    return wrong(format!("{scores} score rows for {classes} classes"));
                }
            }
            Fitted::Linear { coefficients, .. } if coefficients.len() != features => {
                return wrong(format!(
                    "{} coefficients for {features} features",
                    coefficients.len()
                ));
            }
            Fitted::NaiveBayes {
                priors,
                means,
                variances,
            } if priors.len() != self.classes.len()
                || means.len() != priors.len()
                || variances.len() != priors.len()
                || means
                    .iter()
                    .chain(variances)
                    .any(|row| row.len() != features) =>
            {
                return wrong(
                    "naive Bayes parameters do not match the classes and features".to_owned(),
                );
            }
            Fitted::KMeans { centroids } if centroids.iter().any(|row| row.len() != features) => {
                return wrong("centroids do not match the features".to_owned());
            }
            Fitted::Tree { tree } => check_tree(tree, features, &self.classes, self.task)?,
            Fitted::Forest { trees } => {
                for tree in trees {
                    check_tree(tree, features, &self.classes, self.task)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Predicts one row of feature values, in [`ModelEnvelope::features`] order, already
    /// preprocessed.
    pub fn predict_row(&self, row: &[f64]) -> Prediction {
        match &self.fitted {
            Fitted::Logistic {
                coefficients,
                intercepts,
            } => {
                let scores: Vec<f64> = coefficients
                    .iter()
                    .zip(intercepts)
                    .map(|(weights, intercept)| dot(weights, row) + intercept)
                    .collect();
                let probabilities = if scores.len() == 1 {
                    let positive = sigmoid(scores[0]);
                    vec![1.0 - positive, positive]
                } else {
                    softmax(&scores)
                };
                Prediction {
                    value: argmax(&probabilities) as f64,
                    probabilities: Some(probabilities),
                }
            }
            Fitted::Linear {
                coefficients,
                intercept,
            } => Prediction {
                value: dot(coefficients, row) + intercept,
                probabilities: None,
            },
            Fitted::Tree { tree } => self.leaf_prediction(tree.leaf(row).to_vec()),
            Fitted::Forest { trees } => {
                let mut sum: Vec<f64> = Vec::new();
                for tree in trees {
                    let leaf = tree.leaf(row);
                    if sum.is_empty() {
                        sum = vec![0.0; leaf.len()];
                    }
                    for (total, value) in sum.iter_mut().zip(leaf) {
                        *total += value;
                    }
                }
                let count = trees.len().max(1) as f64;
                self.leaf_prediction(sum.into_iter().map(|total| total / count).collect())
            }
            Fitted::NaiveBayes {
                priors,
                means,
                variances,
            } => {
                let log_likelihoods: Vec<f64> = priors
                    .iter()
                    .enumerate()
                    .map(|(class, prior)| {
                        let mut total = prior.ln();
                        for (feature, value) in row.iter().enumerate() {
                            let variance = variances[class][feature];
                            let difference = value - means[class][feature];
                            total -= 0.5
                                * ((2.0 * std::f64::consts::PI * variance).ln()
                                    + difference * difference / variance);
                        }
                        total
                    })
                    .collect();
                let probabilities = softmax(&log_likelihoods);
                Prediction {
                    value: argmax(&probabilities) as f64,
                    probabilities: Some(probabilities),
                }
            }
            Fitted::KMeans { centroids } => {
                let distances: Vec<f64> = centroids
                    .iter()
                    .map(|centroid| -squared_distance(centroid, row))
                    .collect();
                Prediction {
                    value: argmax(&distances) as f64,
                    probabilities: None,
                }
            }
        }
    }

    fn leaf_prediction(&self, leaf: Vec<f64>) -> Prediction {
        match self.task {
            ModelTask::Regression => Prediction {
                value: leaf.first().copied().unwrap_or(0.0),
                probabilities: None,
            },
            ModelTask::Classification | ModelTask::Clustering => Prediction {
                value: argmax(&leaf) as f64,
                probabilities: Some(leaf),
            },
        }
    }

    /// The label of a predicted class index, as the training data spelled it.
    pub fn label(&self, prediction: &Prediction) -> serde_json::Value {
        match self.task {
            ModelTask::Classification => self
                .classes
                .get(prediction.value as usize)
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            ModelTask::Regression => serde_json::json!(prediction.value),
            ModelTask::Clustering => serde_json::json!(prediction.value as u64),
        }
    }
}

fn check_tree(
    tree: &Tree,
    features: usize,
    classes: &[serde_json::Value],
    task: ModelTask,
) -> Result<(), ModelError> {
    let width = match task {
        ModelTask::Regression => 1,
        _ => classes.len(),
    };
    for (index, node) in tree.nodes.iter().enumerate() {
        let leaf = node.left == 0;
        let bad = if leaf {
            node.value.len() != width
        } else {
            node.feature >= features
                || node.left <= index
                || node.right <= index
                || node.left >= tree.nodes.len()
                || node.right >= tree.nodes.len()
        };
        if bad || tree.nodes.is_empty() {
            return Err(ModelError::Inconsistent(format!(
                "tree node {index} is malformed"
            )));
        }
    }
    Ok(())
}
