//! Series assembly: group frames by series, split by orientation / echo / size / time point,
//! sort along the slice normal by ImagePositionPatient, check that the slices form one regular
//! volume, and derive the voxel → world affine (LPS at the file boundary → RAS+ inside).

use super::DicomError;
use super::frames::{Frame, ObjectHeader, cross};
use nalgebra::Matrix4;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Relative tolerance on slice spacing: a gap may differ from the median by this fraction
/// (or by [`SPACING_TOLERANCE_MM`], whichever is larger) before the series is refused.
pub const SPACING_TOLERANCE_FRACTION: f64 = 0.01;
/// Absolute tolerance on slice spacing (mm): absorbs rounding of positions in headers.
pub const SPACING_TOLERANCE_MM: f64 = 0.02;
/// Largest in-plane drift of slice positions, as a fraction of the distance along the normal,
/// before a series counts as acquired with gantry tilt (about 0.06°).
pub const TILT_TOLERANCE: f64 = 1e-3;
/// Tolerance on the direction cosines when deciding whether two frames share an orientation.
pub const ORIENTATION_TOLERANCE: f64 = 1e-4;

/// A frame located in its object.
#[derive(Debug, Clone)]
pub(crate) struct LocatedFrame {
    /// Index of the object among the sources.
    pub object: usize,
    pub frame: Frame,
}

/// A checked, sorted set of frames forming one volume.
#[derive(Debug)]
pub(crate) struct VolumePlan {
    /// Index of the first object (metadata source) among the sources.
    pub first_object: usize,
    pub series_uid: String,
    pub study_uid: String,
    /// Frames in slice order (k = 0, 1, ...).
    pub frames: Vec<LocatedFrame>,
    pub rows: usize,
    pub columns: usize,
    /// Voxel → world (RAS+ mm).
    pub affine: Matrix4<f64>,
    /// Suffix distinguishing the volumes of one series (`""` when there is one).
    pub split_suffix: String,
}

/// What distinguishes volumes inside one series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SplitKey {
    rows: u32,
    columns: u32,
    orientation: Option<[i64; 6]>,
    echo_number: Option<i64>,
    echo_time_us: Option<i64>,
    temporal: Option<i64>,
    /// Objects that each hold a whole volume (Siemens MOSAIC: one file per time point or
    /// diffusion direction) give one volume each: their InstanceNumber (else their index).
    whole_volume_object: Option<(bool, i64)>,
}

fn series_label(header: &ObjectHeader) -> String {
    let number = header.sidecar.series_number.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    match &header.sidecar.series_description {
        Some(description) => format!("{number} ({description})"),
        None => number,
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Groups the objects' frames into volumes and checks each. `labels[i]` names object `i`.
pub(crate) fn plan_volumes(
    headers: &[ObjectHeader],
    labels: &[PathBuf],
) -> Result<Vec<VolumePlan>, DicomError> {
    // Series in a deterministic order: series number, then UID.
    let mut series: BTreeMap<(i64, String), Vec<usize>> = BTreeMap::new();
    for (index, header) in headers.iter().enumerate() {
        let number = header.sidecar.series_number.unwrap_or(i64::MAX);
        series.entry((number, header.series_uid.clone())).or_default().push(index);
    }
    let mut plans = Vec::new();
    for objects in series.values() {
        let without_uid: Vec<usize> =
            objects.iter().copied().filter(|&o| headers[o].series_uid_missing).collect();
        if let Some(&first) = without_uid.first() {
            tracing::warn!(
                "{}: SeriesInstanceUID is missing ({} file(s) of series {}); grouped by StudyInstanceUID, \
                 SeriesNumber, SeriesDescription, Modality and acquisition geometry instead",
                labels[first].display(),
                without_uid.len(),
                series_label(&headers[first]),
            );
        }
        let mut groups: BTreeMap<SplitKey, Vec<LocatedFrame>> = BTreeMap::new();
        for &object in objects {
            let header = &headers[object];
            for frame in &header.frames {
                let key = SplitKey {
                    rows: header.rows,
                    columns: header.columns,
                    orientation: frame
                        .orientation
                        .map(|o| o.map(|v| (v / ORIENTATION_TOLERANCE).round() as i64)),
                    echo_number: frame.echo_number,
                    echo_time_us: frame.echo_time.map(|t| (t * 1000.0).round() as i64),
                    temporal: frame.temporal,
                    whole_volume_object: header
                        .mosaic
                        .map(|_| header.instance_number.map_or((true, object as i64), |n| (false, n))),
                };
                groups.entry(key).or_default().push(LocatedFrame { object, frame: frame.clone() });
            }
        }
        let count = groups.len();
        for (index, frames) in groups.into_values().enumerate() {
            let suffix = if count > 1 { format!("_{}", index + 1) } else { String::new() };
            plans.push(plan_one(headers, labels, frames, suffix)?);
        }
    }
    Ok(plans)
}

fn plan_one(
    headers: &[ObjectHeader],
    labels: &[PathBuf],
    mut frames: Vec<LocatedFrame>,
    split_suffix: String,
) -> Result<VolumePlan, DicomError> {
    let first = &headers[frames[0].object];
    let series = series_label(first) + &split_suffix;
    let file_of = |frame: &LocatedFrame| labels[frame.object].clone();
    let geometry = |frame: &LocatedFrame, field: &'static str, rule: String| DicomError::Geometry {
        series: series.clone(),
        file: file_of(frame),
        field,
        rule,
    };
    // Every frame needs a complete geometry.
    for frame in &frames {
        let missing = |field| DicomError::MissingField {
            file: file_of(frame),
            field,
            purpose: "place the slice in space",
        };
        frame.frame.position.ok_or_else(|| missing("ImagePositionPatient"))?;
        frame.frame.orientation.ok_or_else(|| missing("ImageOrientationPatient"))?;
        let spacing = frame.frame.pixel_spacing.ok_or_else(|| missing("PixelSpacing"))?;
        if spacing.iter().any(|&s| !(s > 0.0 && s < 1e4)) {
            return Err(geometry(frame, "PixelSpacing", format!("must be positive, found {spacing:?}")));
        }
        let (slope, intercept) = frame.frame.rescale;
        if !(slope.is_finite() && intercept.is_finite()) || slope == 0.0 {
            return Err(geometry(
                frame,
                "RescaleSlope",
                format!("must be finite and non-zero, found {slope}"),
            ));
        }
    }
    if let Some(colour) = frames.iter().find(|f| {
        let header = &headers[f.object];
        header.samples_per_pixel != 1 || !header.photometric.starts_with("MONOCHROME")
    }) {
        let header = &headers[colour.object];
        return Err(DicomError::InvalidField {
            file: file_of(colour),
            field: "PhotometricInterpretation",
            rule: format!(
                "only greyscale images (MONOCHROME1/2, one sample per pixel) are supported, found {} with {} samples",
                header.photometric, header.samples_per_pixel
            ),
        });
    }
    if let Some(tilted) =
        frames.iter().find(|f| headers[f.object].gantry_tilt.is_some_and(|t| t.abs() > 1e-3))
    {
        let tilt = headers[tilted.object].gantry_tilt.unwrap_or_default();
        return Err(geometry(tilted, "GantryDetectorTilt", format!("gantry tilt {tilt}° is not supported")));
    }
    let orientation = frames[0].frame.orientation.unwrap_or_default();
    let row = [orientation[0], orientation[1], orientation[2]];
    let column = [orientation[3], orientation[4], orientation[5]];
    if (norm(row) - 1.0).abs() > 1e-2 || (norm(column) - 1.0).abs() > 1e-2 || dot(row, column).abs() > 1e-2 {
        return Err(geometry(
            &frames[0],
            "ImageOrientationPatient",
            format!("row and column directions must be orthogonal unit vectors, found {orientation:?}"),
        ));
    }
    let row = row.map(|v| v / norm(row));
    let column = column.map(|v| v / norm(column));
    let normal = cross(row, column);
    let normal = normal.map(|v| v / norm(normal));
    let along = |frame: &LocatedFrame| dot(frame.frame.position.unwrap_or_default(), normal);
    frames.sort_by(|a, b| {
        along(a)
            .total_cmp(&along(b))
            .then(a.frame.instance_number.cmp(&b.frame.instance_number))
            .then(labels[a.object].cmp(&labels[b.object]))
            .then(a.frame.frame.cmp(&b.frame.frame))
    });
    let spacing = frames[0].frame.pixel_spacing.unwrap_or_default();
    for frame in &frames {
        let other = frame.frame.pixel_spacing.unwrap_or_default();
        if (other[0] - spacing[0]).abs() > 1e-4 || (other[1] - spacing[1]).abs() > 1e-4 {
            return Err(geometry(
                frame,
                "PixelSpacing",
                format!(
                    "differs within the series: {other:?} vs {spacing:?} in {}",
                    file_of(&frames[0]).display()
                ),
            ));
        }
    }

    let positions: Vec<[f64; 3]> = frames.iter().map(|f| f.frame.position.unwrap_or_default()).collect();
    let slice_step: [f64; 3] = if frames.len() == 1 {
        let thickness =
            first.spacing_between_slices.or(first.slice_thickness).filter(|t| *t > 0.0).unwrap_or(1.0);
        normal.map(|v| v * thickness)
    } else {
        let gaps: Vec<f64> = positions.windows(2).map(|w| dot(w[1], normal) - dot(w[0], normal)).collect();
        for (index, &gap) in gaps.iter().enumerate() {
            if gap.abs() < 1e-3 {
                return Err(geometry(
                    &frames[index + 1],
                    "ImagePositionPatient",
                    format!(
                        "two slices at the same position ({} and this one): duplicates or a time series, which \
                         is not supported",
                        file_of(&frames[index]).display()
                    ),
                ));
            }
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let tolerance = SPACING_TOLERANCE_MM.max(SPACING_TOLERANCE_FRACTION * median);
        for (index, &gap) in gaps.iter().enumerate() {
            if (gap - median).abs() <= tolerance {
                continue;
            }
            let ratio = gap / median;
            let rule = if ratio > 1.5 && (ratio - ratio.round()).abs() * median <= tolerance {
                format!(
                    "{} missing slice(s): gap of {gap:.4} mm after {} where the spacing is {median:.4} mm",
                    ratio.round() as i64 - 1,
                    file_of(&frames[index]).display()
                )
            } else {
                format!(
                    "non-uniform slice spacing: gap of {gap:.4} mm after {} differs from the median {median:.4} mm \
                     by more than {tolerance:.4} mm",
                    file_of(&frames[index]).display()
                )
            };
            return Err(geometry(&frames[index + 1], "ImagePositionPatient", rule));
        }
        // Positions must advance along the normal: an in-plane drift means gantry tilt.
        let first_position = positions[0];
        for (index, position) in positions.iter().enumerate().skip(1) {
            let offset: [f64; 3] = std::array::from_fn(|a| position[a] - first_position[a]);
            let distance = dot(offset, normal);
            let drift = norm(std::array::from_fn(|a| offset[a] - distance * normal[a]));
            if drift > TILT_TOLERANCE * distance.abs() + 1e-3 {
                return Err(geometry(
                    &frames[index],
                    "ImagePositionPatient",
                    format!(
                        "slices drift {drift:.4} mm sideways over {distance:.4} mm along the normal (gantry tilt \
                         or sheared stack), which is not supported"
                    ),
                ));
            }
        }
        let last = positions[positions.len() - 1];
        let steps = (positions.len() - 1) as f64;
        std::array::from_fn(|a| (last[a] - first_position[a]) / steps)
    };

    // LPS voxel → world: columns advance along the row direction by the column spacing.
    let mut lps = Matrix4::identity();
    for axis in 0..3 {
        lps[(axis, 0)] = row[axis] * spacing[1];
        lps[(axis, 1)] = column[axis] * spacing[0];
        lps[(axis, 2)] = slice_step[axis];
        lps[(axis, 3)] = positions[0][axis];
    }
    let ras = crate::formats::lps::ras_lps_affine() * lps;
    Ok(VolumePlan {
        first_object: frames[0].object,
        series_uid: first.series_uid.clone(),
        study_uid: first.study_uid.clone(),
        rows: first.rows as usize,
        columns: first.columns as usize,
        affine: ras,
        frames,
        split_suffix,
    })
}
