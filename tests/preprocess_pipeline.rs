//! End-to-end preprocessing on small synthetic heads (no reference data needed): the pipeline
//! function and the `pedinorm preprocess` command.

use ndarray::Array3;
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::pipeline::preprocess::{
    Normalization, PreprocessError, PreprocessOptions, Steps, TemplateRef, preprocess,
};
use pedinorm_registration::intensity::BiasFieldParams;
use pedinorm_registration::intensity::brain_mask::dice;
use pedinorm_registration::{Grid, Image};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::process::Command;

/// A head with ventricles, white and grey matter (adult or infant contrast), CSF, bone and a
/// bright scalp, times a smooth bias field, with noise. Returns (image, true brain mask, field).
fn head(inverted: bool, bias: f64, seed: u64) -> (Image<f32>, Image<f32>, Vec<f64>) {
    let dims = [52, 56, 48];
    let grid = Grid::axis_aligned(dims, [2.5; 3], [-65.0, -70.0, -60.0]).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = dims.map(|d| (d as f64 - 1.0) / 2.0);
    let (wm, gm) = if inverted { (50.0, 85.0) } else { (110.0, 70.0) };
    let (mut image, mut truth, mut field) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = [(i as f64 - c[0]) / c[0], (j as f64 - c[1]) / c[1], (k as f64 - c[2]) / c[2]];
                let r = (p[0] * p[0] + p[1] * p[1] + 1.2 * p[2] * p[2]).sqrt();
                let (value, brain) = match r {
                    r if r < 0.15 => (15.0, true),
                    r if r < 0.45 => (wm, true),
                    r if r < 0.62 => (gm, true),
                    r if r < 0.68 => (12.0, false),
                    r if r < 0.74 => (6.0, false),
                    r if r < 0.86 => (150.0, false),
                    _ => (0.0, false),
                };
                let f = (bias * (0.7 * p[0] - 0.5 * p[1] * p[2] + 0.3 * p[2])).exp();
                let noise = (rng.random::<f64>() - 0.5) * 8.0;
                image.push(((value * f) + noise).abs() as f32);
                truth.push(if brain { 1.0f32 } else { 0.0 });
                field.push(f);
            }
        }
    }
    let shape = (dims[0], dims[1], dims[2]);
    (
        Image::new(Array3::from_shape_vec(shape, image).unwrap(), grid.clone()).unwrap(),
        Image::new(Array3::from_shape_vec(shape, truth).unwrap(), grid).unwrap(),
        field,
    )
}

fn fast_options<'a>() -> PreprocessOptions<'a> {
    PreprocessOptions {
        bias: BiasFieldParams {
            shrink_factor: 2,
            iterations: vec![30, 30, 30],
            ..BiasFieldParams::default()
        },
        ..PreprocessOptions::default()
    }
}

fn median_where(image: &Image<f32>, truth: &Image<f32>, lo: f32, hi: f32, reference: &Image<f32>) -> f32 {
    let mut v: Vec<f32> = image
        .as_slice()
        .iter()
        .zip(truth.as_slice())
        .zip(reference.as_slice())
        .filter(|((_, t), r)| **t > 0.5 && **r >= lo && **r <= hi)
        .map(|((v, _), _)| *v)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn whole_pipeline_on_heads_of_both_contrasts() {
    for inverted in [false, true] {
        let (image, truth, true_field) = head(inverted, 0.35, 11);
        let result = preprocess(&image, &fast_options()).unwrap();
        assert_eq!(result.mask_source, "intensity");
        let d = dice(&result.mask, &truth);
        assert!(d > 0.9, "mask Dice {d} (inverted {inverted})");
        // The recovered field follows the true one inside the brain (log domain).
        let field = result.field.as_ref().unwrap();
        let inside: Vec<usize> = (0..true_field.len()).filter(|&i| truth.as_slice()[i] > 0.5).collect();
        let a: Vec<f64> = inside.iter().map(|&i| (field.as_slice()[i] as f64).ln()).collect();
        let b: Vec<f64> = inside.iter().map(|&i| true_field[i].ln()).collect();
        let (ma, mb) = (a.iter().sum::<f64>() / a.len() as f64, b.iter().sum::<f64>() / b.len() as f64);
        let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let r = cov
            / (a.iter().map(|x| (x - ma).powi(2)).sum::<f64>()
                * b.iter().map(|y| (y - mb).powi(2)).sum::<f64>())
            .sqrt();
        assert!(r > 0.9, "log-field correlation {r} (inverted {inverted})");
        // White matter is scaled to 1 whichever tissue is brighter.
        let report = result.normalization.as_ref().unwrap();
        assert_eq!(report.peaks.unwrap().inverted, inverted);
        let clean = head(inverted, 0.0, 11).0;
        let wm_level = if inverted { 50.0 } else { 110.0 };
        let wm = median_where(&result.image, &truth, wm_level - 5.0, wm_level + 5.0, &clean);
        assert!((wm - 1.0).abs() < 0.05, "white matter at {wm} (inverted {inverted})");
    }
}

#[test]
fn two_acquisitions_agree_after_template_normalization() {
    let (template, truth, _) = head(false, 0.0, 3);
    let (scan_a, _, _) = head(false, 0.3, 4);
    // Second scanner: other gain, gamma and bias.
    let (scan_b, _, _) = head(false, -0.35, 5);
    let scan_b = scan_b.map(|v| 1.8 * v.powf(1.1));
    for normalization in [Normalization::TissuePeaks, Normalization::HistogramMatch, Normalization::Nyul] {
        let options = PreprocessOptions {
            normalization,
            template: Some(TemplateRef { image: &template, mask: &truth }),
            given_mask: Some(&truth),
            ..fast_options()
        };
        let a = preprocess(&scan_a, &options).unwrap().image;
        let b = preprocess(&scan_b, &options).unwrap().image;
        let (mut diff, mut level, mut n) = (0.0, 0.0, 0);
        for ((x, y), t) in a.as_slice().iter().zip(b.as_slice()).zip(truth.as_slice()) {
            if *t > 0.5 {
                diff += (x - y).abs() as f64;
                level += x.abs() as f64;
                n += 1;
            }
        }
        let relative = diff / level;
        assert!(relative < 0.08, "{normalization:?}: relative difference {relative} over {n} voxels");
    }
}

#[test]
fn errors_name_the_step() {
    let grid = Grid::axis_aligned([10, 10, 10], [1.0; 3], [0.0; 3]).unwrap();
    let constant = Image::filled(grid.clone(), 7.0f32);
    let error = preprocess(&constant, &PreprocessOptions::default()).unwrap_err();
    assert!(matches!(error, PreprocessError::Intensity { step: "input", .. }), "{error}");
    assert!(error.to_string().contains("constant"), "{error}");
    let (image, _, _) = head(false, 0.2, 1);
    let empty = image.map(|_| 0.0f32);
    let options = PreprocessOptions { given_mask: Some(&empty), ..fast_options() };
    let error = preprocess(&image, &options).unwrap_err();
    assert!(error.to_string().contains("mask"), "{error}");
    let options = PreprocessOptions { normalization: Normalization::HistogramMatch, ..fast_options() };
    assert!(matches!(preprocess(&image, &options), Err(PreprocessError::Option { .. })));
    let only_bias = PreprocessOptions { steps: "bias".parse::<Steps>().unwrap(), ..fast_options() };
    let result = preprocess(&image, &only_bias).unwrap();
    assert!(result.field.is_some() && result.normalization.is_none());
    assert_eq!(result.mask_source, "foreground");
}

#[test]
fn command_writes_outputs_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _, _) = head(true, 0.3, 8);
    let input = dir.path().join("head.nii.gz");
    write_image(&input, &image, VoxelType::F32).unwrap();
    let output = dir.path().join("out.nii.gz");
    let mask = dir.path().join("mask.nii.gz");
    let field = dir.path().join("field.nii.gz");
    let status = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("preprocess")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--mask-output")
        .arg(&mask)
        .arg("--field-output")
        .arg(&field)
        .args(["--shrink-factor", "2", "--bias-iterations", "20x20x20"])
        .status()
        .unwrap();
    assert!(status.success());
    let written = read_image(&output).unwrap();
    assert_eq!(written.grid().dims(), image.grid().dims());
    assert!(read_image(&mask).unwrap().as_slice().iter().all(|&m| m == 0.0 || m == 1.0));
    assert!(read_image(&field).unwrap().as_slice().iter().all(|&f| f > 0.0 && f.is_finite()));

    let mut broken = image.clone();
    broken.data_mut()[[3, 4, 5]] = f32::NAN;
    let bad = dir.path().join("broken.nii.gz");
    write_image(&bad, &broken, VoxelType::F32).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("preprocess")
        .arg(&bad)
        .arg("--output")
        .arg(dir.path().join("never.nii.gz"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    // The reader or the pipeline refuses NaN; either way the message names the file.
    assert!(message.contains("broken.nii.gz") && message.contains("finite"), "{message}");
    assert!(!dir.path().join("never.nii.gz").exists());
}

#[test]
fn template_mask_is_propagated_through_registration() {
    let (template, template_mask, _) = head(false, 0.0, 21);
    // The subject: the same anatomy elsewhere in the scanner, with bias and other noise.
    let (subject, truth, _) = head(false, 0.3, 22);
    let shifted = Grid::axis_aligned(subject.grid().dims(), [2.5; 3], [-59.0, -73.0, -56.0]).unwrap();
    let subject = Image::new(subject.data().clone(), shifted.clone()).unwrap();
    let truth = Image::new(truth.data().clone(), shifted).unwrap();
    let options = PreprocessOptions {
        template: Some(TemplateRef { image: &template, mask: &template_mask }),
        registration_shrink_factors: vec![4, 2],
        ..fast_options()
    };
    let result = preprocess(&subject, &options).unwrap();
    assert_eq!(result.mask_source, "template");
    let d = dice(&result.mask, &truth);
    assert!(d > 0.9, "propagated mask Dice {d}");
}
