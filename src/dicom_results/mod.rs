//! A deviation result as standard DICOM objects for the PACS: the significant clusters as a
//! Segmentation (`seg.rs`), the z-maps as derived MR series (`zmap.rs`), all on the series the
//! case came from (`source.rs`) and in its study. The command line writes them with
//! `--dicom-out DIR`; the service stores them into the study's PACS with STOW-RS.

pub mod seg;
pub mod source;
pub mod zmap;

use crate::formats::dicom_common::{DateTime, EncodeError};
use crate::formats::dicom_write::{DicomWriteError, UidSource};
use crate::formats::lps::ras_to_lps;
use ndarray::Array3;
use pedinorm_registration::Grid;
use pedinorm_templates::model::score::DeviationResult;
use source::SourceSeries;
use std::path::{Path, PathBuf};

/// Why the result objects could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The source series cannot be referenced.
    #[error("{path}: {field}: {rule}")]
    Source {
        /// The source object or input.
        path: PathBuf,
        /// The DICOM attribute.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The maps do not lie on the source series' grid.
    #[error(
        "the deviation maps ({maps:?} voxels) do not lie on the source series' grid ({source_dims:?} voxels)"
    )]
    Grid {
        /// The maps' dimensions.
        maps: [usize; 3],
        /// The source series' dimensions.
        source_dims: [usize; 3],
    },
    /// The image does not fit DICOM Rows/Columns, or there are too many segments.
    #[error("an image of {dims:?} voxels does not fit DICOM Rows/Columns (at most 65535)")]
    TooLarge {
        /// The grid dimensions.
        dims: [usize; 3],
    },
    /// An object could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A series could not be encoded.
    #[error(transparent)]
    Series(#[from] DicomWriteError),
    /// A file could not be written.
    #[error("{path}: cannot write: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// ImageOrientationPatient of a grid's slices: the directions of voxel axes i and j in LPS.
pub fn lps_orientation(grid: &Grid) -> [f64; 6] {
    let direction = grid.direction();
    let row = ras_to_lps([direction[(0, 0)], direction[(1, 0)], direction[(2, 0)]]);
    let column = ras_to_lps([direction[(0, 1)], direction[(1, 1)], direction[(2, 1)]]);
    [row[0], row[1], row[2], column[0], column[1], column[2]]
}

/// ImagePositionPatient of slice `k` of a grid: the centre of voxel (0, 0, k) in LPS.
pub fn slice_position(grid: &Grid, k: usize) -> [f64; 3] {
    ras_to_lps(grid.voxel_to_world([0.0, 0.0, k as f64]))
}

/// A significant cluster on the source grid, as the result objects describe it.
#[derive(Debug, Clone)]
pub struct Significant {
    /// The segment label: channel, sign and rank, e.g. `intensity z>0 cluster 1`.
    pub label: String,
    /// `intensity` or `logjac`.
    pub channel: String,
    /// Above the normals (positive z).
    pub positive: bool,
    /// Peak z (signed).
    pub peak_z: f32,
    /// Volume on the source grid (ml): what the segmentation shows.
    pub volume_ml: f64,
    /// Volume in template space (ml), as `report.json` lists it.
    pub template_volume_ml: f64,
    /// Atlas region at the peak.
    pub region: Option<String>,
    /// Peak position in the case's world (RAS+ mm).
    pub peak_native_mm: [f64; 3],
    /// The cluster's voxels on the source grid.
    pub mask: Array3<bool>,
}

impl Significant {
    /// One line describing the cluster (the segment description).
    pub fn description(&self) -> String {
        format!(
            "{}: peak z {:.2}, {:.2} ml{}",
            self.label,
            self.peak_z,
            self.volume_ml,
            self.region.as_deref().map(|r| format!(", peak in {r}")).unwrap_or_default()
        )
    }
}

/// The significant clusters of `result` that have voxels on the case grid, numbered per
/// channel and sign in the result's order (largest first).
pub fn significant_clusters(result: &DeviationResult) -> Vec<Significant> {
    let grid = result.clusters_native.grid();
    let voxel_ml = grid.linear().determinant().abs() / 1000.0;
    let labels = result.clusters_native.data();
    let mut counts = std::collections::BTreeMap::<(String, bool), usize>::new();
    let mut clusters = Vec::new();
    for cluster in result.clusters.iter().filter(|c| c.significant && c.label > 0) {
        let mask = labels.mapv(|v| v.round() == cluster.label as f32);
        let voxels = mask.iter().filter(|&&v| v).count();
        if voxels == 0 {
            continue;
        }
        let positive = cluster.peak_z > 0.0;
        let rank = counts.entry((cluster.channel.clone(), positive)).or_default();
        *rank += 1;
        clusters.push(Significant {
            label: format!("{} z{}0 cluster {rank}", cluster.channel, if positive { '>' } else { '<' }),
            channel: cluster.channel.clone(),
            positive,
            peak_z: cluster.peak_z,
            volume_ml: voxels as f64 * voxel_ml,
            template_volume_ml: cluster.volume_mm3 / 1000.0,
            region: cluster.region.clone(),
            peak_native_mm: cluster.peak_native_mm,
            mask,
        });
    }
    clusters
}

/// One result object: where it goes under the output folder and its Part 10 bytes.
#[derive(Debug, Clone)]
pub struct ResultObject {
    /// Path under the output folder (`seg.dcm`, `zmap_intensity/IM0001.dcm`, ...).
    pub file: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What the result objects are built from.
pub struct ResultsRequest<'a> {
    /// The deviation result (maps on the case grid).
    pub result: &'a DeviationResult,
    /// The series the results lie on and reference.
    pub source: &'a SourceSeries,
    /// Where the new UIDs come from.
    pub uids: UidSource,
    /// Creation date and time.
    pub when: DateTime,
}

/// Builds every result object of `request` in memory (so that nothing is written when one
/// fails): the source series when it was written here, the segmentation (when a cluster is
/// significant) and the z-map series.
pub fn build_results(request: &ResultsRequest<'_>) -> Result<Vec<ResultObject>, ResultsError> {
    let source = request.source;
    let maps = request.result.clusters_native.grid();
    if maps.dims() != source.grid.dims() || !maps.same_as(&source.grid, 0.01) {
        return Err(ResultsError::Grid { maps: maps.dims(), source_dims: source.grid.dims() });
    }
    let mut objects = Vec::new();
    let series_files = |folder: &str, series: Vec<Vec<u8>>| {
        series
            .into_iter()
            .enumerate()
            .map(|(k, bytes)| ResultObject {
                file: Path::new(folder).join(format!("IM{:04}.dcm", k + 1)),
                bytes,
            })
            .collect::<Vec<_>>()
    };
    if let Some(written) = &source.written {
        objects.extend(series_files("source", written.objects.clone()));
    }
    let clusters = significant_clusters(request.result);
    let seg_uids = seg::SegUids {
        series: request.uids.child(1).uid(1),
        instance: request.uids.child(1).uid(2),
        dimension_organization: request.uids.child(1).uid(3),
    };
    if let Some(bytes) = seg::segmentation(source, &clusters, &seg_uids, &request.when)? {
        objects.push(ResultObject { file: PathBuf::from("seg.dcm"), bytes });
    }
    for (c, name) in ["intensity", "logjac"].into_iter().enumerate() {
        let series = zmap::zmap_series(
            &request.result.z_native[c],
            &source.study,
            &format!("pedinorm {name} z-map"),
            zmap::ZMAP_SERIES_NUMBER + c as u32,
            request.uids.child(10 + c as u64),
        )?;
        objects.extend(series_files(&format!("zmap_{name}"), series.objects));
    }
    Ok(objects)
}

/// Writes the objects under `dir`, each file atomically; returns the files written.
pub fn write_results(dir: &Path, objects: &[ResultObject]) -> Result<Vec<PathBuf>, ResultsError> {
    let mut written = Vec::with_capacity(objects.len());
    for object in objects {
        let path = dir.join(&object.file);
        crate::atomic::write_bytes(&path, &object.bytes)
            .map_err(|e| ResultsError::Write { path: path.clone(), message: e.to_string() })?;
        written.push(path);
    }
    Ok(written)
}
