//! The age basis of the centile curves: a cubic B-spline on `ln(1 + age)`.
//!
//! The logarithmic axis gives the first two years, where the brain grows fastest, as much room
//! as the following fifteen (Brain Charts models age on a log scale for the same reason);
//! interior knots sit at quantiles of the training ages, so knots follow the data. Beyond the
//! training range the basis is held at its boundary value: a curve is never extrapolated.

use serde::{Deserialize, Serialize};

/// Degree of the spline pieces.
const DEGREE: usize = 3;

/// A cubic B-spline basis over age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeBasis {
    /// Lowest and highest `ln(1 + age)` the basis covers (the training range).
    pub boundary: (f64, f64),
    /// Interior knots on the `ln(1 + age)` axis, increasing.
    pub interior: Vec<f64>,
}

impl AgeBasis {
    /// A basis with `interior_knots` knots at quantiles of `ages` (years).
    ///
    /// Panics on an empty `ages` (the callers check the training table first).
    pub fn from_ages(ages: &[f64], interior_knots: usize) -> Self {
        let mut axis: Vec<f64> = ages.iter().map(|&a| age_axis(a)).collect();
        axis.sort_by(f64::total_cmp);
        let low = axis[0];
        let high = axis[axis.len() - 1].max(low + 1e-6);
        let mut interior = Vec::with_capacity(interior_knots);
        for k in 1..=interior_knots {
            let q = k as f64 / (interior_knots + 1) as f64;
            let position = q * (axis.len() - 1) as f64;
            let (below, fraction) = (position.floor() as usize, position.fract());
            let above = (below + 1).min(axis.len() - 1);
            let knot = axis[below] + fraction * (axis[above] - axis[below]);
            // Ties (many subjects of one age) would make a knot coincide with its neighbour.
            let previous = interior.last().copied().unwrap_or(low);
            if knot > previous + 1e-6 && knot < high - 1e-6 {
                interior.push(knot);
            }
        }
        AgeBasis { boundary: (low, high), interior }
    }

    /// Number of basis functions.
    pub fn len(&self) -> usize {
        self.interior.len() + DEGREE + 1
    }

    /// Always false: a basis has at least `DEGREE + 1` functions.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `age` lies inside the training range.
    pub fn covers(&self, age: f64) -> bool {
        let u = age_axis(age);
        u >= self.boundary.0 - 1e-9 && u <= self.boundary.1 + 1e-9
    }

    /// The basis functions at `age` (years); they are non-negative and sum to one.
    pub fn evaluate(&self, age: f64) -> Vec<f64> {
        let u = age_axis(age).clamp(self.boundary.0, self.boundary.1);
        let knots = self.knot_vector();
        let n = self.len();
        // Cox–de Boor recursion from degree 0 upwards.
        let span_count = knots.len() - 1;
        let mut values = vec![0.0; span_count];
        let last_span = knots.len() - DEGREE - 2;
        let span = if u >= self.boundary.1 {
            last_span
        } else {
            (DEGREE..=last_span).find(|&i| u >= knots[i] && u < knots[i + 1]).unwrap_or(last_span)
        };
        values[span] = 1.0;
        for degree in 1..=DEGREE {
            for i in 0..span_count - degree {
                let left_width = knots[i + degree] - knots[i];
                let right_width = knots[i + degree + 1] - knots[i + 1];
                let left = if left_width > 0.0 { (u - knots[i]) / left_width * values[i] } else { 0.0 };
                let right = if right_width > 0.0 {
                    (knots[i + degree + 1] - u) / right_width * values[i + 1]
                } else {
                    0.0
                };
                values[i] = left + right;
            }
        }
        values.truncate(n);
        values
    }

    /// Boundary knots repeated `DEGREE + 1` times around the interior knots.
    fn knot_vector(&self) -> Vec<f64> {
        let mut knots = vec![self.boundary.0; DEGREE + 1];
        knots.extend_from_slice(&self.interior);
        knots.extend(std::iter::repeat_n(self.boundary.1, DEGREE + 1));
        knots
    }
}

/// The axis the spline lives on.
fn age_axis(age_years: f64) -> f64 {
    (1.0 + age_years.max(0.0)).ln()
}

/// Second-order difference penalty `DᵀD` for `n` coefficients (a P-spline roughness penalty).
pub fn second_difference_penalty(n: usize) -> Vec<Vec<f64>> {
    let mut penalty = vec![vec![0.0; n]; n];
    for row in 0..n.saturating_sub(2) {
        let d = [(row, 1.0), (row + 1, -2.0), (row + 2, 1.0)];
        for &(i, a) in &d {
            for &(j, b) in &d {
                penalty[i][j] += a * b;
            }
        }
    }
    penalty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis() -> AgeBasis {
        let ages: Vec<f64> = (0..200).map(|i| i as f64 * 0.09).collect();
        AgeBasis::from_ages(&ages, 5)
    }

    #[test]
    fn functions_are_a_partition_of_unity() {
        let basis = basis();
        assert_eq!(basis.len(), 9);
        for age in [0.0, 0.1, 0.5, 1.0, 2.5, 7.0, 12.3, 17.9, 40.0] {
            let values = basis.evaluate(age);
            let sum: f64 = values.iter().sum();
            assert!((sum - 1.0).abs() < 1e-12, "age {age}: sum {sum}");
            assert!(values.iter().all(|&v| v >= 0.0));
        }
    }

    #[test]
    fn outside_the_training_range_the_curve_is_held() {
        let basis = basis();
        assert_eq!(basis.evaluate(17.91), basis.evaluate(30.0));
        assert!(basis.covers(10.0));
        assert!(!basis.covers(30.0));
    }

    #[test]
    fn knots_follow_the_ages_and_survive_ties() {
        let mut ages = vec![1.0; 50];
        ages.extend((0..50).map(|i| 2.0 + i as f64 * 0.3));
        let basis = AgeBasis::from_ages(&ages, 6);
        assert!(basis.interior.windows(2).all(|w| w[0] < w[1]));
        assert!(basis.interior.iter().all(|&k| k > basis.boundary.0 && k < basis.boundary.1));
    }

    #[test]
    fn penalty_vanishes_on_straight_lines() {
        let penalty = second_difference_penalty(6);
        let line: Vec<f64> = (0..6).map(|i| 2.0 + 0.5 * i as f64).collect();
        let quadratic_form: f64 = (0..6)
            .flat_map(|i| (0..6).map(move |j| (i, j)))
            .map(|(i, j)| line[i] * penalty[i][j] * line[j])
            .sum();
        assert!(quadratic_form.abs() < 1e-12);
    }
}
