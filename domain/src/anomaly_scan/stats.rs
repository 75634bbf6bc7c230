//! Robust statistics for the anomaly detectors: the median, the median absolute deviation
//! (MAD) and the modified z-score `0.6745 · (x − median) / MAD` (Iglewicz and Hoaglin), which a
//! few outliers in the history do not drag along the way a mean and a standard deviation would.

use serde::{Deserialize, Serialize};

/// The scale factor that makes the MAD comparable to a standard deviation.
const MAD_SCALE: f64 = 0.6745;

/// What a history looks like: its median, its MAD and how many values it had.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The middle value.
    pub median: f64,
    /// The median of the distances from the median.
    pub mad: f64,
    /// How many values.
    pub n: usize,
}

impl Summary {
    /// The summary of `values`; `None` for no values.
    #[must_use]
    pub fn of(values: &[f64]) -> Option<Self> {
        let median = median(values)?;
        let deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        let mad = self::median(&deviations)?;
        Some(Self {
            median,
            mad,
            n: values.len(),
        })
    }

    /// The modified z-score of `x`; `None` when the MAD is zero (a flat history says
    /// nothing about how far is far).
    #[must_use]
    pub fn modified_z(&self, x: f64) -> Option<f64> {
        (self.mad > 0.0).then(|| MAD_SCALE * (x - self.median) / self.mad)
    }
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` for no
/// values.
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((sorted.get(mid - 1)? + sorted.get(mid)?) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn the_mad_ignores_one_outlier() {
        let s = Summary::of(&[10.0, 11.0, 9.0, 10.0, 1000.0]).unwrap_or_else(|| panic!("values"));
        assert_eq!(s.median, 10.0);
        assert_eq!(s.mad, 1.0);
        assert_eq!(s.n, 5);
    }

    #[test]
    fn the_modified_z_score() {
        let s = Summary {
            median: 100.0,
            mad: 10.0,
            n: 4,
        };
        let z = s.modified_z(200.0).unwrap_or_else(|| panic!("mad > 0"));
        assert!((z - 6.745).abs() < 1e-9, "{z}");
        assert!(s.modified_z(90.0).is_some_and(|z| z < 0.0));
    }

    #[test]
    fn a_flat_history_has_no_score() {
        let s = Summary::of(&[5.0, 5.0, 5.0, 5.0]).unwrap_or_else(|| panic!("values"));
        assert_eq!(s.mad, 0.0);
        assert_eq!(s.modified_z(500.0), None);
    }
}
