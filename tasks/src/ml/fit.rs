//! The algorithms `train` offers, their hyperparameters, and fitting each into kiln's own
//! parameter shapes: linfa for linear and elastic-net regression; kiln's own for logistic
//! regression (L-BFGS from argmin, `logistic.rs`), k-means (`kmeans.rs`), trees, forests and
//! naive Bayes (`tree.rs`), where linfa was several times slower than scikit-learn or kept its
//! fitted parameters private.

use std::collections::BTreeMap;

use kiln_engine::TaskError;
use linfa::Dataset;
use linfa::prelude::Fit;
use ndarray::{Array1, Array2};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{Fitted, ModelTask};
use super::tree::{Sorted, Target, TreeSettings, grow, grow_forest};

/// An algorithm and its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Algorithm {
    /// Logistic regression with an L2 penalty (binary, or multinomial for more classes).
    LogisticRegression {
        /// Inverse regularization strength, as scikit-learn's `C`.
        #[serde(default = "one")]
        c: f64,
        /// The most L-BFGS iterations.
        #[serde(default = "hundred")]
        max_iterations: u64,
        /// Stop when the gradient of the mean loss is this small (scikit-learn's `tol`).
        #[serde(default = "small")]
        tolerance: f64,
    },
    /// Ordinary least squares.
    LinearRegression {},
    /// Linear regression with L1 and L2 penalties.
    ElasticNet {
        /// Penalty strength.
        #[serde(default = "one")]
        alpha: f64,
        /// Share of L1 in the penalty, 0 to 1.
        #[serde(default = "half")]
        l1_ratio: f64,
        /// The most coordinate-descent iterations.
        #[serde(default = "thousand")]
        max_iterations: u32,
        /// Convergence tolerance.
        #[serde(default = "small")]
        tolerance: f64,
    },
    /// A CART decision tree (Gini for classes, squared error for numbers).
    DecisionTree {
        /// The deepest a leaf may be; unlimited when left out.
        #[serde(default)]
        max_depth: Option<usize>,
        /// Nodes with fewer rows are not split.
        #[serde(default = "two")]
        min_samples_split: usize,
        /// No leaf has fewer rows.
        #[serde(default = "one_usize")]
        min_samples_leaf: usize,
    },
    /// A random forest: bootstrapped trees, candidate features drawn at every split.
    RandomForest {
        /// How many trees.
        #[serde(default = "hundred_usize")]
        trees: usize,
        /// The deepest a leaf may be; unlimited when left out.
        #[serde(default)]
        max_depth: Option<usize>,
        /// Candidate features per split: `sqrt` (default for classes), `all` (default for
        /// numbers), or a count.
        #[serde(default)]
        max_features: Option<MaxFeatures>,
        /// Nodes with fewer rows are not split.
        #[serde(default = "two")]
        min_samples_split: usize,
        /// No leaf has fewer rows.
        #[serde(default = "one_usize")]
        min_samples_leaf: usize,
        /// Draw each tree's rows with replacement.
        #[serde(default = "yes")]
        bootstrap: bool,
    },
    /// Gaussian naive Bayes.
    GaussianNb {
        /// Added to every variance, as a share of the largest feature variance.
        #[serde(default = "tiny")]
        var_smoothing: f64,
    },
    /// k-means clustering (k-means++ start).
    KMeans {
        /// How many clusters.
        clusters: usize,
        /// The most Lloyd iterations per run.
        #[serde(default = "three_hundred")]
        max_iterations: u64,
        /// Stop when the centroids' squared movement in one iteration, summed, is at most
        /// this times the data's mean feature variance (scikit-learn's `tol`).
        #[serde(default = "small")]
        tolerance: f64,
        /// Runs from different starts; the best is kept.
        #[serde(default = "one_usize")]
        runs: usize,
    },
}

/// Candidate features per split of a forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MaxFeatures {
    /// `sqrt` or `all`.
    Named(FeatureShare),
    /// A count.
    Count(usize),
}

/// Named shares of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeatureShare {
    /// The square root of the feature count.
    Sqrt,
    /// Every feature.
    All,
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn small() -> f64 {
    1e-4
}
fn tiny() -> f64 {
    1e-9
}
fn hundred() -> u64 {
    100
}
fn three_hundred() -> u64 {
    300
}
fn thousand() -> u32 {
    1000
}
fn two() -> usize {
    2
}
fn one_usize() -> usize {
    1
}
fn hundred_usize() -> usize {
    100
}
fn yes() -> bool {
    true
}

/// The deepest any kiln tree grows, so that a tree left unlimited still ends.
const DEPTH_LIMIT: usize = 64;

impl Algorithm {
    /// What the algorithm predicts, for a target of the given nature (`None`: no target).
    pub fn task(&self, numeric_target: Option<bool>) -> Result<ModelTask, TaskError> {
        let needs_target = |task| match numeric_target {
            Some(_) => Ok(task),
            None => Err(TaskError::Permanent(
                "this algorithm needs a `target` column".to_owned(),
            )),
        };
        match self {
            Algorithm::LogisticRegression { .. } | Algorithm::GaussianNb { .. } => {
                needs_target(ModelTask::Classification)
            }
            Algorithm::LinearRegression {} | Algorithm::ElasticNet { .. } => match numeric_target {
                Some(true) => Ok(ModelTask::Regression),
                Some(false) => Err(TaskError::Permanent(
                    "linear models need a numeric (float) target".to_owned(),
                )),
                None => needs_target(ModelTask::Regression),
            },
            Algorithm::DecisionTree { .. } | Algorithm::RandomForest { .. } => match numeric_target
            {
                Some(true) => Ok(ModelTask::Regression),
                Some(false) => Ok(ModelTask::Classification),
                None => needs_target(ModelTask::Classification),
            },
            Algorithm::KMeans { .. } => Ok(ModelTask::Clustering),
        }
    }
}

/// The training data, ready for fitting.
pub struct Training<'a> {
    /// `rows × features`, row-major.
    pub x: &'a [f64],
    /// Rows.
    pub rows: usize,
    /// Features.
    pub features: usize,
    /// Class indices (classification).
    pub labels: Option<&'a [usize]>,
    /// How many classes (classification).
    pub classes: usize,
    /// Target numbers (regression).
    pub values: Option<&'a [f64]>,
    /// The seed for everything random.
    pub seed: u64,
}

fn matrix(data: &Training<'_>) -> Result<Array2<f64>, TaskError> {
    Array2::from_shape_vec((data.rows, data.features), data.x.to_vec())
        .map_err(|error| TaskError::Permanent(format!("bad training matrix: {error}")))
}

/// The mean over features of each feature's variance (population), one pass over the rows.
pub(crate) fn mean_variance(data: &Training<'_>) -> f64 {
    if data.rows == 0 || data.features == 0 {
        return 0.0;
    }
    let mut sums = vec![0.0; data.features];
    let mut squares = vec![0.0; data.features];
    for row in data.x.chunks_exact(data.features) {
        for ((sum, square), value) in sums.iter_mut().zip(&mut squares).zip(row) {
            *sum += value;
            *square += value * value;
        }
    }
    let rows = data.rows as f64;
    let total: f64 = sums
        .iter()
        .zip(&squares)
        .map(|(sum, square)| (square / rows - (sum / rows).powi(2)).max(0.0))
        .sum();
    total / data.features as f64
}

fn labels<'a>(data: &Training<'a>) -> Result<&'a [usize], TaskError> {
    data.labels
        .ok_or_else(|| TaskError::Permanent("this algorithm needs class labels".to_owned()))
}

fn values<'a>(data: &Training<'a>) -> Result<&'a [f64], TaskError> {
    data.values
        .ok_or_else(|| TaskError::Permanent("this algorithm needs a numeric target".to_owned()))
}

/// Fits an algorithm; answers the parameters and notes about the fit.
pub fn fit(
    algorithm: &Algorithm,
    task: ModelTask,
    data: &Training<'_>,
) -> Result<(Fitted, BTreeMap<String, serde_json::Value>), TaskError> {
    let mut info = BTreeMap::new();
    if data.rows == 0 {
        return Err(TaskError::Permanent(
            "the training data has no rows".to_owned(),
        ));
    }
    let fitted = match algorithm {
        Algorithm::LogisticRegression {
            c,
            max_iterations,
            tolerance,
        } => {
            let fit = super::logistic::fit_logistic(
                data,
                labels(data)?,
                *c,
                *max_iterations,
                *tolerance,
            )?;
            info.insert("iterations".to_owned(), serde_json::json!(fit.iterations));
            info.insert("loss".to_owned(), serde_json::json!(fit.loss));
            Fitted::Logistic {
                coefficients: fit.coefficients,
                intercepts: fit.intercepts,
            }
        }
        Algorithm::LinearRegression {} => {
            let dataset = Dataset::new(matrix(data)?, Array1::from(values(data)?.to_vec()));
            let model = linfa_linear::LinearRegression::new()
                .fit(&dataset)
                .map_err(|error| {
                    TaskError::Permanent(format!("linear regression failed to fit: {error}"))
                })?;
            Fitted::Linear {
                coefficients: model.params().to_vec(),
                intercept: model.intercept(),
            }
        }
        Algorithm::ElasticNet {
            alpha,
            l1_ratio,
            max_iterations,
            tolerance,
        } => {
            let dataset = Dataset::new(matrix(data)?, Array1::from(values(data)?.to_vec()));
            let model = linfa_elasticnet::ElasticNet::params()
                .penalty(*alpha)
                .l1_ratio(*l1_ratio)
                .max_iterations(*max_iterations)
                .tolerance(*tolerance)
                .fit(&dataset)
                .map_err(|error| {
                    TaskError::Permanent(format!("elastic net failed to fit: {error}"))
                })?;
            Fitted::Linear {
                coefficients: model.hyperplane().to_vec(),
                intercept: model.intercept(),
            }
        }
        Algorithm::DecisionTree {
            max_depth,
            min_samples_split,
            min_samples_leaf,
        } => {
            let settings = TreeSettings {
                max_depth: max_depth.unwrap_or(DEPTH_LIMIT).min(DEPTH_LIMIT),
                min_samples_split: *min_samples_split,
                min_samples_leaf: *min_samples_leaf,
                max_features: None,
                seed: data.seed,
            };
            let target = tree_target(task, data)?;
            let sorted = Sorted::new(data.x, data.rows, data.features);
            let tree = grow(
                data.x,
                data.features,
                &sorted,
                target,
                &vec![1.0; data.rows],
                &settings,
            );
            info.insert("depth".to_owned(), serde_json::json!(tree.depth()));
            info.insert("nodes".to_owned(), serde_json::json!(tree.nodes.len()));
            Fitted::Tree { tree }
        }
        Algorithm::RandomForest {
            trees,
            max_depth,
            max_features,
            min_samples_split,
            min_samples_leaf,
            bootstrap,
        } => {
            let candidates = match max_features {
                Some(MaxFeatures::Count(count)) => (*count).clamp(1, data.features),
                Some(MaxFeatures::Named(FeatureShare::All)) => data.features,
                Some(MaxFeatures::Named(FeatureShare::Sqrt)) => sqrt_features(data.features),
                None if task == ModelTask::Regression => data.features,
                None => sqrt_features(data.features),
            };
            let settings = TreeSettings {
                max_depth: max_depth.unwrap_or(DEPTH_LIMIT).min(DEPTH_LIMIT),
                min_samples_split: *min_samples_split,
                min_samples_leaf: *min_samples_leaf,
                max_features: Some(candidates),
                seed: data.seed,
            };
            if *trees == 0 {
                return Err(TaskError::Permanent(
                    "a forest needs at least one tree".to_owned(),
                ));
            }
            let target = tree_target(task, data)?;
            let trees = grow_forest(data.x, data.features, target, *trees, *bootstrap, &settings);
            info.insert(
                "features_per_split".to_owned(),
                serde_json::json!(candidates),
            );
            info.insert(
                "max_depth_reached".to_owned(),
                serde_json::json!(
                    trees
                        .iter()
                        .map(super::tree::Tree::depth)
                        .max()
                        .unwrap_or(0)
                ),
            );
            Fitted::Forest { trees }
        }
        Algorithm::GaussianNb { var_smoothing } => naive_bayes(data, *var_smoothing)?,
        Algorithm::KMeans {
            clusters,
            max_iterations,
            tolerance,
            runs,
        } => {
            let fit = super::kmeans::fit_k_means(
                data,
                &super::kmeans::KMeansSettings {
                    clusters: *clusters,
                    max_iterations: *max_iterations,
                    tolerance: *tolerance,
                    runs: *runs,
                },
            )?;
            info.insert("iterations".to_owned(), serde_json::json!(fit.iterations));
            info.insert("inertia".to_owned(), serde_json::json!(fit.inertia));
            Fitted::KMeans {
                centroids: fit.centroids,
            }
        }
    };
    Ok((fitted, info))
}

fn sqrt_features(features: usize) -> usize {
    ((features as f64).sqrt().floor() as usize).max(1)
}

fn tree_target<'a>(task: ModelTask, data: &Training<'a>) -> Result<Target<'a>, TaskError> {
    Ok(match task {
        ModelTask::Regression => Target::Values(values(data)?),
        _ => Target::Classes {
            labels: labels(data)?,
            classes: data.classes,
        },
    })
}

fn naive_bayes(data: &Training<'_>, var_smoothing: f64) -> Result<Fitted, TaskError> {
    let labels = labels(data)?;
    let (classes, features) = (data.classes, data.features);
    let mut counts = vec![0.0f64; classes];
    let mut means = vec![vec![0.0; features]; classes];
    let mut variances = vec![vec![0.0; features]; classes];
    for (row, class) in labels.iter().enumerate() {
        counts[*class] += 1.0;
        let values = &data.x[row * features..(row + 1) * features];
        for (mean, value) in means[*class].iter_mut().zip(values) {
            *mean += value;
        }
    }
    for (class_means, count) in means.iter_mut().zip(&counts) {
        for mean in class_means {
            *mean /= count.max(1.0);
        }
    }
    for (row, class) in labels.iter().enumerate() {
        let values = &data.x[row * features..(row + 1) * features];
        for ((variance, mean), value) in
            variances[*class].iter_mut().zip(&means[*class]).zip(values)
        {
            *variance += (value - mean) * (value - mean);
        }
    }
    for (class_variances, count) in variances.iter_mut().zip(&counts) {
        for variance in class_variances {
            *variance /= count.max(1.0);
        }
    }
    // scikit-learn's smoothing: a share of the largest variance of any feature over all rows,
    // here from the per-class figures by the law of total variance (the mean of the class
    // variances plus the variance of the class means) instead of another pass over the rows.
    let rows = data.rows as f64;
    let mut largest: f64 = 0.0;
    for feature in 0..features {
        let mean: f64 = means
            .iter()
            .zip(&counts)
            .map(|(class_means, count)| count * class_means[feature])
            .sum::<f64>()
            / rows;
        let variance: f64 = means
            .iter()
            .zip(&variances)
            .zip(&counts)
            .map(|((class_means, class_variances), count)| {
                let offset = class_means[feature] - mean;
                count * (class_variances[feature] + offset * offset)
            })
            .sum::<f64>()
            / rows;
        largest = largest.max(variance);
    }
    let epsilon = var_smoothing * largest.max(f64::MIN_POSITIVE);
    for class_variances in &mut variances {
        for variance in class_variances {
            *variance += epsilon;
        }
    }
    let priors = counts
        .iter()
        .map(|count| count / data.rows as f64)
        .collect();
    Ok(Fitted::NaiveBayes {
        priors,
        means,
        variances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_variance_is_the_mean_of_the_population_variances() {
        // Feature 1: 1, 3 (variance 1); feature 2: 2, 6 (variance 4).
        let x = [1.0, 2.0, 3.0, 6.0];
        let data = Training {
            x: &x,
            rows: 2,
            features: 2,
            labels: None,
            classes: 0,
            values: None,
            seed: 0,
        };
        assert!((mean_variance(&data) - 2.5).abs() < 1e-12);
    }

    /// Class 0: 0 and 2 (mean 1, variance 1); class 1: 10 and 14 (mean 12, variance 4). All
    /// four: mean 6.5, variance 75 − 42.25 = 32.75, which `var_smoothing = 1` adds to each.
    #[test]
    fn naive_bayes_smooths_by_the_variance_over_all_rows() {
        let x = [0.0, 2.0, 10.0, 14.0];
        let labels = [0, 0, 1, 1];
        let data = Training {
            x: &x,
            rows: 4,
            features: 1,
            labels: Some(&labels),
            classes: 2,
            values: None,
            seed: 0,
        };
        let Fitted::NaiveBayes {
            means, variances, ..
        } = naive_bayes(&data, 1.0).expect("fits")
        else {
            panic!("not naive Bayes");
        };
        assert_eq!(means, [[1.0], [12.0]]);
        assert_eq!(variances, [[33.75], [36.75]]);
    }
}
