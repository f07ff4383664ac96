//! The prediction form of a model's page: generated from the served version's raw features,
//! posted back to the console, and answered through the same code as the API's predict.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_engine::store::ModelRecord;
use kiln_tasks::ml::preprocess::{Preprocessing, RawFeature};
use maud::{Markup, html};

use super::ConsoleState;
use super::auth::Viewer;
use super::error::ConsoleError;
use super::extract::{HtmlForm, HtmlPath};
use super::layout::csrf_field;
use super::lineage::version_href;
use super::metric_chart::figure;
use super::models::{DetailView, detail_page, model_href, model_or_404};
use crate::serving::{RowError, ServeError, ServedModel, predict_rows};
use crate::wire::PredictResponse;

/// The prediction form's inputs are named `feature.<name>`, so a feature called `csrf` cannot
/// collide with the form's token.
const FIELD_PREFIX: &str = "feature.";

/// A prediction or a class label as text: strings without their quotes, numbers readable.
fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(whole), _) => whole.to_string(),
            (None, Some(float)) => figure(float),
            (None, None) => number.to_string(),
        },
        other => other.to_string(),
    }
}

/// What a prediction form submission came to.
pub(super) enum Outcome {
    Answer(PredictResponse),
    /// The input was refused, the message naming the feature.
    Problem(String),
}

/// The raw inputs the served model takes, and its preprocessing (for the known categories).
fn raw_features(model: &ServedModel) -> (Vec<RawFeature>, Preprocessing) {
    let preprocessing = model.envelope.preprocessing.clone().unwrap_or_default();
    let features = preprocessing.raw_features(&model.envelope.features);
    (features, preprocessing)
}

/// The form to try a prediction, generated from the served model's raw features: a number
/// input per number, a text input (suggesting the known categories) per category. It posts to
/// the console, which answers a fragment htmx swaps in below it, or the whole page without JS.
fn prediction_form(
    viewer: &Viewer,
    name: &str,
    model: &ServedModel,
    values: Option<&BTreeMap<String, String>>,
) -> Markup {
    let (features, preprocessing) = raw_features(model);
    let action = format!("{}/predict", model_href(name));
    html! {
        p.muted {
            "Predictions come from "
            a href=(version_href(name, model.version.version)) { "version " (model.version.version) }
            ", the version served in production."
        }
        form.params.predict method="post" action=(action) hx-post=(action)
            hx-target="#prediction-result" hx-swap="outerHTML" {
            (csrf_field(viewer))
            @for (index, feature) in features.iter().enumerate() {
                @let field = format!("{FIELD_PREFIX}{}", feature.name);
                @let value = values.and_then(|values| values.get(&feature.name)).map_or("", String::as_str);
                label.param {
                    span { span.name { (feature.name) } " " span.param-type { (feature.kind) } }
                    @if let Some(categories) = preprocessing.one_hot.get(&feature.name) {
                        @let list = format!("categories-{index}");
                        input type="text" name=(field) value=(value) list=(list) required;
                        datalist id=(list) {
                            @for category in categories { option value=(category) {} }
                        }
                    } @else {
                        input type="number" step="any" name=(field) value=(value) required;
                    }
                }
            }
            button.primary type="submit" { "Predict" }
        }
    }
}

/// The answer to the prediction form (or why there is none): the fragment htmx swaps in.
fn prediction_result(name: &str, outcome: Option<&Outcome>) -> Markup {
    html! {
        div #prediction-result aria-live="polite" {
            @match outcome {
                None => {},
                Some(Outcome::Problem(problem)) => p.problem role="alert" { (problem) },
                Some(Outcome::Answer(answer)) => {
                    @let predicted = answer.predictions.first().unwrap_or(&serde_json::Value::Null);
                    @let probabilities = answer.probabilities.as_ref().and_then(|rows| rows.first());
                    dl.facts.prediction {
                        dt { "Prediction" }
                        dd { strong.predicted { (value_text(predicted)) } }
                        dt { "Answered by" }
                        dd { a href=(version_href(name, answer.version)) { "version " (answer.version) } }
                    }
                    @if let Some(probabilities) = probabilities {
                        table.probabilities {
                            thead { tr { th { "Class" } th { "Probability" } th {} } }
                            tbody {
                                @for (index, probability) in probabilities.iter().enumerate() {
                                    @let class = answer.classes.as_ref().and_then(|classes| classes.get(index));
                                    @let label = class.map_or_else(|| format!("cluster {index}"), value_text);
                                    tr aria-current=[(class == Some(predicted)).then_some("true")] {
                                        td { (label) }
                                        td.number { (format!("{probability:.4}")) }
                                        td { meter min="0" max="1" value=(probability) {} }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// The prediction section: the form and its result, or why a prediction cannot be tried.
pub(super) async fn prediction_section(
    state: &ConsoleState,
    viewer: &Viewer,
    record: &ModelRecord,
    prediction: Option<&(BTreeMap<String, String>, Outcome)>,
) -> Markup {
    let name = &record.name;
    if record.production.is_none() {
        return html! {
            p.muted {
                "No version of " (name) " is in production, so there is no model to try a prediction on. "
                "Promote a version to serve it."
            }
        };
    }
    match state.production_model(name).await {
        Ok(model) => html! {
            (prediction_form(viewer, name, &model, prediction.map(|(values, _)| values)))
            (prediction_result(name, prediction.map(|(_, outcome)| outcome)))
        },
        Err(ServeError::NotFound(message) | ServeError::Unavailable(message)) => html! {
            p.problem { "The production version cannot be served: " (message) "." }
        },
    }
}

/// The submitted feature values by feature name, and the row they make: numbers for number
/// features, text for categories. A value that is not a number is passed on as text, and an
/// empty one left out, so the shared prediction code names the feature in its refusal.
fn form_row(
    features: &[RawFeature],
    form: &[(String, String)],
) -> (
    BTreeMap<String, String>,
    serde_json::Map<String, serde_json::Value>,
) {
    let values: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(field, value)| {
            field
                .strip_prefix(FIELD_PREFIX)
                .map(|name| (name.to_owned(), value.clone()))
        })
        .collect();
    let mut row = serde_json::Map::new();
    for (name, text) in &values {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let is_number = features
            .iter()
            .any(|feature| feature.name == *name && feature.kind == "number");
        let number = is_number
            .then(|| text.parse::<f64>().ok())
            .flatten()
            .and_then(serde_json::Number::from_f64);
        let value = match number {
            Some(number) => serde_json::Value::Number(number),
            None => serde_json::Value::String(text.to_owned()),
        };
        row.insert(name.clone(), value);
    }
    (values, row)
}

/// Answers the prediction form with the served model, through the same code as the API's
/// predict: a fragment for htmx, the whole page otherwise. Refused input is a 422 naming the
/// feature. Open to read-only logins too, as a prediction changes nothing.
pub(crate) async fn predict(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(name): HtmlPath<String>,
    headers: HeaderMap,
    HtmlForm(form): HtmlForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    model_or_404(&state, &name).await?;
    let model = state
        .production_model(&name)
        .await
        .map_err(|error| match error {
            // The model exists, so what is missing is a production version.
            ServeError::NotFound(message) => ConsoleError::Conflict(message),
            ServeError::Unavailable(message) => ConsoleError::Unavailable(message),
        })?;
    let (features, _) = raw_features(&model);
    let (values, row) = form_row(&features, &form);
    let (status, outcome) = match predict_rows(&model, std::slice::from_ref(&row)) {
        Ok(answer) => (StatusCode::OK, Outcome::Answer(answer)),
        // One row, so its index says nothing: the problem alone names the feature.
        Err(RowError { problem, .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Outcome::Problem(problem))
        }
    };
    if headers.contains_key("hx-request") {
        return Ok((status, prediction_result(&name, Some(&outcome))).into_response());
    }
    let view = DetailView {
        prediction: Some((values, outcome)),
        ..DetailView::default()
    };
    let page = detail_page(&state, &viewer, &name, view).await?;
    Ok((status, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_become_a_typed_row() {
        let features = [
            RawFeature {
                name: "alcohol".to_owned(),
                kind: "number",
            },
            RawFeature {
                name: "colour".to_owned(),
                kind: "category",
            },
        ];
        let field = |name: &str, value: &str| (format!("{FIELD_PREFIX}{name}"), value.to_owned());
        let form = [
            ("csrf".to_owned(), "token".to_owned()),
            field("alcohol", " 13 "),
            field("colour", "white"),
        ];
        let (_, row) = form_row(&features, &form);
        assert_eq!(
            serde_json::Value::Object(row),
            serde_json::json!({ "alcohol": 13.0, "colour": "white" })
        );
        let form = [
            field("alcohol", "high"),
            field("colour", ""),
            field("sugar", "1"),
        ];
        let (values, row) = form_row(&features, &form);
        assert_eq!(values["alcohol"], "high");
        assert_eq!(
            serde_json::Value::Object(row),
            serde_json::json!({ "alcohol": "high", "sugar": "1" })
        );
        let (_, row) = form_row(&features, &[field("alcohol", "1e400")]);
        assert_eq!(
            row["alcohol"], "1e400",
            "not a finite number: left for the check"
        );
    }
}
