//! The model envelope as files: a model saved by an earlier kiln (checked in, never rewritten)
//! still loads and predicts the same, every fitted shape round-trips, and what cannot be used
//! is refused with a reason.

use kiln_tasks::ml::model::{Fitted, ModelEnvelope, ModelError, ModelTask};
use kiln_tasks::ml::tree::{Node, Tree};

const SAVED_V1: &[u8] = include_bytes!("fixtures/logistic-v1.kiln-model.json");

#[test]
fn a_checked_in_v1_envelope_still_loads_and_predicts_the_same() {
    let model = ModelEnvelope::from_json(SAVED_V1).expect("a v1 envelope loads");
    assert_eq!(model.task, ModelTask::Classification);
    let preprocessing = model.preprocessing.clone().unwrap();
    let raw = serde_json::json!({ "alcohol": 13.0, "colour": "white" });
    let row = preprocessing
        .row(&model.features, raw.as_object().unwrap())
        .unwrap();
    assert_eq!(row, [1.5, 0.0, 1.0]);
    let prediction = model.predict_row(&row);
    // score = 2·1.5 + 0.5 + 0.25 = 3.75; P(1) = 1 / (1 + e^-3.75).
    let positive = 1.0 / (1.0 + (-3.75f64).exp());
    let probabilities = prediction.probabilities.clone().unwrap();
    assert!((probabilities[1] - positive).abs() < 1e-12);
    assert_eq!(model.label(&prediction), serde_json::json!(1));
}

fn envelope(fitted: Fitted, task: ModelTask, classes: Vec<serde_json::Value>) -> ModelEnvelope {
    let mut model = ModelEnvelope::from_json(SAVED_V1).unwrap();
    model.fitted = fitted;
    model.task = task;
    model.classes = classes;
    model.preprocessing = None;
    model
}

#[test]
fn every_fitted_shape_round_trips() {
    let leaf = |value: Vec<f64>| Node {
        feature: 0,
        threshold: 0.0,
        left: 0,
        right: 0,
        value,
    };
    let tree = Tree {
        nodes: vec![
            Node {
                feature: 0,
                threshold: 0.5,
                left: 1,
                right: 2,
                value: Vec::new(),
            },
            leaf(vec![0.9, 0.1]),
            leaf(vec![0.2, 0.8]),
        ],
    };
    let classes = vec![serde_json::json!("bad"), serde_json::json!("good")];
    let shapes = [
        envelope(
            Fitted::Tree { tree: tree.clone() },
            ModelTask::Classification,
            classes.clone(),
        ),
        envelope(
            Fitted::Forest {
                trees: vec![tree.clone(), tree],
            },
            ModelTask::Classification,
            classes.clone(),
        ),
        envelope(
            Fitted::NaiveBayes {
                priors: vec![0.5, 0.5],
                means: vec![vec![0.0; 3], vec![1.0; 3]],
                variances: vec![vec![1.0; 3], vec![1.0; 3]],
            },
            ModelTask::Classification,
            classes.clone(),
        ),
        envelope(
            Fitted::Linear {
                coefficients: vec![1.0, 2.0, 3.0],
                intercept: -1.0,
            },
            ModelTask::Regression,
            Vec::new(),
        ),
        envelope(
            Fitted::KMeans {
                centroids: vec![vec![0.0; 3], vec![5.0; 3]],
            },
            ModelTask::Clustering,
            Vec::new(),
        ),
    ];
    for model in shapes {
        let again = ModelEnvelope::from_json(&model.to_json()).unwrap();
        assert_eq!(again, model);
        let row = [0.9, 1.0, 1.0];
        assert_eq!(again.predict_row(&row), model.predict_row(&row));
    }
    let tree_model = envelope(
        Fitted::Tree {
            tree: Tree {
                nodes: vec![leaf(vec![0.3, 0.7])],
            },
        },
        ModelTask::Classification,
        classes,
    );
    let prediction = tree_model.predict_row(&[0.0, 0.0, 0.0]);
    assert_eq!(tree_model.label(&prediction), serde_json::json!("good"));
}

#[test]
fn unusable_envelopes_are_refused_with_a_reason() {
    let mut newer: serde_json::Value = serde_json::from_slice(SAVED_V1).unwrap();
    newer["format_version"] = serde_json::json!(7);
    assert_eq!(
        ModelEnvelope::from_json(newer.to_string().as_bytes()),
        Err(ModelError::TooNew { found: 7, known: 1 })
    );
    let mut broken: serde_json::Value = serde_json::from_slice(SAVED_V1).unwrap();
    broken["fitted"]["coefficients"] = serde_json::json!([[1.0]]);
    let error = ModelEnvelope::from_json(broken.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model is inconsistent: logistic coefficients do not match 3 features"
    );
    let error =
        ModelEnvelope::from_json(b"{\"format\": \"pickle\", \"format_version\": 1}").unwrap_err();
    assert_eq!(
        error.to_string(),
        "not a kiln model: format is `pickle`, not `kiln-model`"
    );
    assert!(matches!(
        ModelEnvelope::from_json(b"\x80\x04"),
        Err(ModelError::Unreadable(_))
    ));
}
