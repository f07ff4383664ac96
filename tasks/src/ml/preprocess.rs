//! What `process` learnt from its training rows (standardization and one-hot categories), and
//! how serving applies it to raw feature values, so a served model sees exactly what it was
//! trained on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Learnt transformations, as `process` writes them to its `scaler` output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Column to `(mean, standard deviation)`.
    #[serde(default)]
    pub standardize: BTreeMap<String, (f64, f64)>,
    /// Column to its categories, in output order; column `c` became `c=value` columns.
    #[serde(default)]
    pub one_hot: BTreeMap<String, Vec<String>>,
}

/// One raw input a served model asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawFeature {
    /// Its name.
    pub name: String,
    /// `number`, or `category` for a one-hot encoded column.
    pub kind: &'static str,
}

impl Preprocessing {
    /// The raw inputs a model with these features needs, in order: a one-hot column stands for
    /// all its `c=value` features.
    pub fn raw_features(&self, features: &[String]) -> Vec<RawFeature> {
        let mut raw: Vec<RawFeature> = Vec::new();
        for feature in features {
            let (name, kind) = match self.one_hot_source(feature) {
                Some(source) => (source.to_owned(), "category"),
                None => (feature.clone(), "number"),
            };
            if !raw.iter().any(|seen| seen.name == name) {
                raw.push(RawFeature { name, kind });
            }
        }
        raw
    }

    fn one_hot_source<'a>(&'a self, feature: &str) -> Option<&'a str> {
        let (source, category) = feature.split_once('=')?;
        let (name, categories) = self.one_hot.get_key_value(source)?;
        categories
            .iter()
            .any(|known| known == category)
            .then_some(name.as_str())
    }

    /// The model's input vector from raw values by raw feature name. A missing feature, an
    /// extra one, or a value of the wrong type is an error that names it.
    pub fn row(
        &self,
        features: &[String],
        raw: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<f64>, String> {
        let wanted = self.raw_features(features);
        if let Some(extra) = raw
            .keys()
            .find(|key| !wanted.iter().any(|feature| &feature.name == *key))
        {
            return Err(format!("unknown feature `{extra}`"));
        }
        let mut row = Vec::with_capacity(features.len());
        for feature in features {
            if let Some(source) = self.one_hot_source(feature) {
                let value = raw
                    .get(source)
                    .ok_or_else(|| format!("missing feature `{source}`"))?;
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Number(number) => number.to_string(),
                    serde_json::Value::Bool(flag) => flag.to_string(),
                    _ => {
                        return Err(format!(
                            "feature `{source}` must be a category (text or number), not {value}"
                        ));
                    }
                };
                let category = &feature[source.len() + 1..];
                row.push(if text == category { 1.0 } else { 0.0 });
                continue;
            }
            let value = raw
                .get(feature)
                .ok_or_else(|| format!("missing feature `{feature}`"))?;
            let number = match value {
                serde_json::Value::Number(number) => number.as_f64(),
                serde_json::Value::Bool(flag) => Some(f64::from(u8::from(*flag))),
                _ => None,
            }
            .ok_or_else(|| format!("feature `{feature}` must be a number, not {value}"))?;
            row.push(match self.standardize.get(feature) {
                Some((mean, std)) => (number - mean) / std,
                None => number,
            });
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocessing() -> Preprocessing {
        Preprocessing {
            standardize: BTreeMap::from([("alcohol".to_owned(), (10.0, 2.0))]),
            one_hot: BTreeMap::from([(
                "colour".to_owned(),
                vec!["red".to_owned(), "white".to_owned()],
            )]),
        }
    }

    fn features() -> Vec<String> {
        ["alcohol", "colour=red", "colour=white", "ph"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn raw_values_become_the_trained_inputs() {
        let raw = serde_json::json!({ "alcohol": 13.0, "colour": "white", "ph": 3.2 });
        let row = preprocessing()
            .row(&features(), raw.as_object().unwrap())
            .unwrap();
        assert_eq!(row, [1.5, 0.0, 1.0, 3.2]);
        let names: Vec<String> = preprocessing()
            .raw_features(&features())
            .into_iter()
            .map(|feature| format!("{}:{}", feature.name, feature.kind))
            .collect();
        assert_eq!(names, ["alcohol:number", "colour:category", "ph:number"]);
    }

    #[test]
    fn bad_rows_name_the_feature() {
        let check = |raw: serde_json::Value| {
            preprocessing()
                .row(&features(), raw.as_object().unwrap())
                .unwrap_err()
        };
        assert_eq!(
            check(serde_json::json!({ "alcohol": 1, "colour": "red" })),
            "missing feature `ph`"
        );
        assert_eq!(
            check(serde_json::json!({ "alcohol": 1, "colour": "red", "ph": 3, "sugar": 1 })),
            "unknown feature `sugar`"
        );
        assert_eq!(
            check(serde_json::json!({ "alcohol": "lots", "colour": "red", "ph": 3 })),
            "feature `alcohol` must be a number, not \"lots\""
        );
    }
}
