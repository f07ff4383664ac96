//! The seeded train/test split: the same seed gives the same split on every machine and in every
//! kiln version, because the shuffle is our own (a Fisher–Yates over SplitMix64), not a
//! library's whose stream may change.

use std::collections::BTreeMap;

use kiln_engine::TaskError;
use polars::prelude::{DataFrame, DataType, IdxCa, IdxSize, NamedFrom};
use schemars::JsonSchema;
use serde::Deserialize;

/// How to split.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// The share of rows that go to `test`, between 0 and 1 (exclusive).
    pub test_fraction: f64,
    /// The seed of the shuffle.
    #[serde(default)]
    pub seed: u64,
    /// Keep each value of this column in the same proportion in both parts.
    #[serde(default)]
    pub stratify: Option<String>,
}

/// SplitMix64: tiny, fast, and fixed forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `bound` (Lemire's multiply-shift; the bias is below 2^-32 for any
    /// table kiln will split).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next()) * bound as u128) >> 64) as usize
    }
}

fn shuffle(indices: &mut [IdxSize], random: &mut SplitMix64) {
    for last in (1..indices.len()).rev() {
        let pick = random.below(last + 1);
        indices.swap(last, pick);
    }
}

/// How many of `rows` go to test: rounded, and at least one row on each side when possible.
fn test_rows(rows: usize, fraction: f64) -> usize {
    let wanted = (rows as f64 * fraction).round() as usize;
    if rows >= 2 {
        wanted.clamp(1, rows - 1)
    } else {
        wanted.min(rows)
    }
}

/// The row indices of each part, each part in the original row order.
pub(crate) fn split_indices(
    rows: usize,
    groups: Option<Vec<String>>,
    spec: &SplitSpec,
) -> (Vec<IdxSize>, Vec<IdxSize>) {
    let mut random = SplitMix64(spec.seed);
    let mut by_group: BTreeMap<String, Vec<IdxSize>> = BTreeMap::new();
    match groups {
        Some(groups) => {
            for (row, group) in groups.into_iter().enumerate() {
                by_group.entry(group).or_default().push(row as IdxSize);
            }
        }
        None => {
            by_group.insert(String::new(), (0..rows as IdxSize).collect());
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for indices in by_group.values_mut() {
        shuffle(indices, &mut random);
        let cut = test_rows(indices.len(), spec.test_fraction);
        test.extend_from_slice(&indices[..cut]);
        train.extend_from_slice(&indices[cut..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Splits a frame into `(train, test)`.
pub(crate) fn split(
    frame: &DataFrame,
    spec: &SplitSpec,
) -> Result<(DataFrame, DataFrame), TaskError> {
    if !(spec.test_fraction > 0.0 && spec.test_fraction < 1.0) {
        return Err(TaskError::Permanent(format!(
            "`split.test_fraction` must be between 0 and 1, not {}",
            spec.test_fraction
        )));
    }
    let groups = match &spec.stratify {
        Some(name) => {
            let column = frame
                .column(name)
                .map_err(|_| TaskError::Permanent(format!("`split.stratify`: no column `{name}`")))?
                .cast(&DataType::String)
                .map_err(|error| TaskError::Permanent(format!("`split.stratify`: {error}")))?;
            let values = column
                .str()
                .map_err(|error| TaskError::Permanent(format!("`split.stratify`: {error}")))?;
            Some(
                values
                    .iter()
                    .map(|value| value.unwrap_or("null").to_owned())
                    .collect(),
            )
        }
        None => None,
    };
    let (train, test) = split_indices(frame.height(), groups, spec);
    let take = |indices: Vec<IdxSize>| {
        frame
            .take(&IdxCa::new("index".into(), indices))
            .map_err(|error| TaskError::Permanent(format!("splitting: {error}")))
    };
    Ok((take(train)?, take(test)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> SplitSpec {
        SplitSpec {
            test_fraction: 0.2,
            seed,
            stratify: None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_split_and_parts_cover_every_row_once() {
        let (train, test) = split_indices(100, None, &spec(42));
        assert_eq!((train.len(), test.len()), (80, 20));
        assert_eq!(
            split_indices(100, None, &spec(42)),
            (train.clone(), test.clone())
        );
        assert_ne!(split_indices(100, None, &spec(7)).1, test);
        let mut all: Vec<IdxSize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Pinned, so a change to the shuffle (which would change every user's split) is seen.
        expect_test::expect![
            "[0, 12, 13, 14, 29, 34, 35, 38, 48, 60, 61, 62, 64, 73, 77, 83, 88, 94, 95, 97]"
        ]
        .assert_eq(&format!("{test:?}"));
    }

    #[test]
    fn stratified_splits_keep_each_class_share() {
        let groups: Vec<String> = (0..100)
            .map(|row| if row % 10 < 3 { "a" } else { "b" }.to_owned())
            .collect();
        let (_, test) = split_indices(100, Some(groups.clone()), &spec(1));
        let in_a = test
            .iter()
            .filter(|row| groups[**row as usize] == "a")
            .count();
        assert_eq!((test.len(), in_a), (20, 6));
    }

    #[test]
    fn tiny_tables_keep_a_row_on_each_side() {
        assert_eq!(test_rows(2, 0.01), 1);
        assert_eq!(test_rows(2, 0.99), 1);
        assert_eq!(test_rows(1, 0.5), 1);
        assert_eq!(test_rows(0, 0.5), 0);
    }
}
