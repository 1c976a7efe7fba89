//! A weighted sum of metrics over channel pairs (several contrasts registered at once, as ANTs
//! does with one `--metric` per contrast in a stage).

use super::{Layout, Metric, MetricEvaluator};
use crate::plan::RegistrationError;
use std::sync::Arc;

/// `Σ_c weight_c · cost_c(fixed_c, moving_c)` over channels stacked one after another in the
/// fixed and moving buffers (channel `c` occupies samples `c·n .. (c+1)·n`); the sample weights
/// (masks) are per position and shared by all channels, so they have length `n`.
#[derive(Debug, Clone)]
pub struct WeightedSum {
    /// `(weight, metric)` per channel, in buffer order.
    pub terms: Vec<(f64, Arc<dyn Metric>)>,
}

impl Metric for WeightedSum {
    fn check(&self) -> Result<(), RegistrationError> {
        if self.terms.is_empty() || self.terms.iter().any(|(w, _)| !(w.is_finite() && *w > 0.0)) {
            return Err(RegistrationError::InvalidParameters {
                field: "metric weights",
                rule: "at least one channel, every weight finite and > 0".into(),
            });
        }
        self.terms.iter().try_for_each(|(_, metric)| metric.check())
    }

    fn sampling(&self) -> Option<(f64, u64)> {
        self.terms.iter().find_map(|(_, metric)| metric.sampling())
    }

    fn prepare(&self, fixed: &[f32], layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
        let channels = self.terms.len();
        if channels == 0 || fixed.len() % channels != 0 {
            return Err(RegistrationError::InvalidParameters {
                field: "metric channels",
                rule: format!("{} fixed values do not split into {channels} channels", fixed.len()),
            });
        }
        let n = fixed.len() / channels;
        let evaluators = self
            .terms
            .iter()
            .zip(fixed.chunks(n))
            .map(|((weight, metric), chunk)| Ok((*weight, metric.prepare(chunk, layout)?)))
            .collect::<Result<Vec<_>, RegistrationError>>()?;
        Ok(Box::new(WeightedSumEvaluator { evaluators, n }))
    }
}

struct WeightedSumEvaluator {
    evaluators: Vec<(f64, Box<dyn MetricEvaluator>)>,
    n: usize,
}

impl MetricEvaluator for WeightedSumEvaluator {
    fn value_and_derivative(
        &mut self,
        moving: &[f32],
        weight: Option<&[f32]>,
        derivative: &mut [f64],
    ) -> f64 {
        let n = self.n;
        let mut total = 0.0;
        for ((w, evaluator), (m, d)) in
            self.evaluators.iter_mut().zip(moving.chunks(n).zip(derivative.chunks_mut(n)))
        {
            total += *w * evaluator.value_and_derivative(m, weight, d);
            d.iter_mut().for_each(|v| *v *= *w);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MeanSquares, Ncc};

    #[test]
    fn weighted_sum_adds_channel_costs_and_scales_their_derivatives() {
        let t1: Vec<f32> = (0..200).map(|i| ((i as f32) * 0.3).sin() * 40.0 + 100.0).collect();
        let t2: Vec<f32> = (0..200).map(|i| ((i as f32) * 0.11).cos() * 25.0 + 60.0).collect();
        let m1: Vec<f32> = t1.iter().enumerate().map(|(i, v)| v + (i % 7) as f32).collect();
        let m2: Vec<f32> = t2.iter().enumerate().map(|(i, v)| 0.8 * v + (i % 5) as f32).collect();
        let layout = Layout::Samples { fixed_range: (0.0, 200.0), moving_range: (0.0, 200.0) };
        let single = |metric: &dyn Metric, fixed: &[f32], moving: &[f32]| {
            let mut d = vec![0f64; moving.len()];
            let cost = metric.prepare(fixed, layout).unwrap().value_and_derivative(moving, None, &mut d);
            (cost, d)
        };
        let (c1, d1) = single(&MeanSquares, &t1, &m1);
        let (c2, d2) = single(&Ncc, &t2, &m2);
        let sum = WeightedSum { terms: vec![(0.25, Arc::new(MeanSquares)), (2.0, Arc::new(Ncc))] };
        sum.check().unwrap();
        let fixed = [t1.clone(), t2.clone()].concat();
        let moving = [m1, m2].concat();
        let (cost, d) = single(&sum, &fixed, &moving);
        assert!((cost - (0.25 * c1 + 2.0 * c2)).abs() < 1e-12);
        assert_eq!(d[7], 0.25 * d1[7]);
        assert_eq!(d[200 + 9], 2.0 * d2[9]);
        assert!(sum.prepare(&fixed[..399], layout).is_err());
        assert!(WeightedSum { terms: vec![(0.0, Arc::new(Ncc))] }.check().is_err());
    }
}
