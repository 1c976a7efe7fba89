//! A deviation result as standard DICOM objects for the PACS: the significant clusters as a
//! Segmentation (`seg.rs`), the z-maps as derived MR series (`zmap.rs`) and as colour-fused
//! Secondary Capture series (`fused.rs`), the measurements as a TID 1500 structured report
//! (`sr.rs`), all on the series the case came from (`source.rs`)
//! and in its study. The command line writes them with
//! `--dicom-out DIR`; the service stores them into the study's PACS with STOW-RS.

pub mod encapsulated;
pub mod fused;
pub mod report_pdf;
pub mod seg;
pub mod source;
pub mod sr;
pub mod zmap;

use crate::formats::dicom_common::{DateTime, EncodeError};
use crate::formats::dicom_write::{DicomWriteError, UidSource};
use crate::formats::lps::ras_to_lps;
use crate::formats::nifti::read_image;
use ndarray::Array3;
use pedinorm_registration::{Grid, Image};
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
    /// A deviation output could not be read.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
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
    /// The PDF report could not be built.
    #[error("cannot build report.pdf: {0}")]
    Pdf(String),
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

/// A cluster as `report.json` lists it (the fields the result objects use).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ClusterSummary {
    /// `intensity` or `logjac`.
    pub channel: String,
    /// Label in the cluster maps (0: not in the maps).
    pub label: u32,
    /// Peak z (signed).
    pub peak_z: f32,
    /// Volume in template space (mm³).
    pub volume_mm3: f64,
    /// Peak position in the case's world (RAS+ mm).
    pub peak_native_mm: [f64; 3],
    /// Atlas region at the peak.
    #[serde(default)]
    pub region: Option<String>,
    /// Beyond the calibrated cluster threshold.
    pub significant: bool,
}

/// What the result objects are made of: the maps on the case grid and the report of one
/// deviation run, as `pipeline::deviation::write_outputs` writes them into its folder.
#[derive(Debug, Clone)]
pub struct ResultMaps {
    /// Significant clusters labelled on the case grid (`clusters_native.nii.gz`).
    pub clusters_native: Image<f32>,
    /// Intensity and log-Jacobian z-maps on the case grid.
    pub z_native: [Image<f32>; 2],
    /// The clusters of the report.
    pub clusters: Vec<ClusterSummary>,
    /// The whole report (`report.json`).
    pub report: serde_json::Value,
}

/// The channels in map order, with the file of each native z-map.
pub const CHANNELS: [(&str, &str); 2] =
    [("intensity", "intensity_z_native.nii.gz"), ("logjac", "logjac_z_native.nii.gz")];

impl ResultMaps {
    /// Reads the maps and report of a deviation run from its output folder.
    pub fn read(dir: &Path) -> Result<Self, ResultsError> {
        let image = |name: &str| {
            let path = dir.join(name);
            read_image(&path).map_err(|e| ResultsError::Input { path, message: e.to_string() })
        };
        let report_path = dir.join("report.json");
        let report: serde_json::Value = std::fs::read(&report_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|message| ResultsError::Input { path: report_path.clone(), message })?;
        let clusters = serde_json::from_value(report["clusters"].clone()).map_err(|e| {
            ResultsError::Input { path: report_path.clone(), message: format!("clusters: {e}") }
        })?;
        Ok(ResultMaps {
            clusters_native: image("clusters_native.nii.gz")?,
            z_native: [image(CHANNELS[0].1)?, image(CHANNELS[1].1)?],
            clusters,
            report,
        })
    }

    /// The calibrated |z| threshold of `channel` in the report.
    pub fn threshold(&self, channel: &str) -> Result<f32, ResultsError> {
        self.report["thresholds"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["channel"] == channel))
            .and_then(|t| t["z_threshold"].as_f64())
            .map(|z| z as f32)
            .ok_or_else(|| ResultsError::Input {
                path: "report.json".into(),
                message: format!("thresholds: no z_threshold for channel {channel}"),
            })
    }

    /// The significant clusters that have voxels on the case grid, numbered per channel and
    /// sign in the report's order (largest first).
    pub fn significant_clusters(&self) -> Vec<Significant> {
        let grid = self.clusters_native.grid();
        let voxel_ml = grid.linear().determinant().abs() / 1000.0;
        let labels = self.clusters_native.data();
        let mut counts = std::collections::BTreeMap::<(String, bool), usize>::new();
        let mut clusters = Vec::new();
        for cluster in self.clusters.iter().filter(|c| c.significant && c.label > 0) {
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
}

/// The file name of the one-page report among the result objects (the only one that is not
/// DICOM: the service does not send it to the PACS, which gets its encapsulated copy).
pub const REPORT_PDF: &str = "report.pdf";

/// One result object: where it goes under the output folder and its Part 10 bytes.
#[derive(Debug, Clone)]
pub struct ResultObject {
    /// Path under the output folder (`seg.dcm`, `zmap_intensity/IM0001.dcm`, ...).
    pub file: PathBuf,
    /// SeriesInstanceUID of the object (empty for `report.pdf`, which is not DICOM).
    pub series_uid: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What the result objects are built from.
pub struct ResultsRequest<'a> {
    /// The maps and report of the deviation run.
    pub maps: &'a ResultMaps,
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
    let grid = request.maps.clusters_native.grid();
    if grid.dims() != source.grid.dims() || !grid.same_as(&source.grid, 0.01) {
        return Err(ResultsError::Grid { maps: grid.dims(), source_dims: source.grid.dims() });
    }
    let mut objects = Vec::new();
    let series_files = |folder: &str, series_uid: &str, series: Vec<Vec<u8>>| {
        series
            .into_iter()
            .enumerate()
            .map(|(k, bytes)| ResultObject {
                file: Path::new(folder).join(format!("IM{:04}.dcm", k + 1)),
                series_uid: series_uid.to_owned(),
                bytes,
            })
            .collect::<Vec<_>>()
    };
    if let Some(written) = &source.written {
        objects.extend(series_files("source", &written.series_uid, written.objects.clone()));
    }
    let clusters = request.maps.significant_clusters();
    let seg_uids = seg::SegUids {
        series: request.uids.child(1).uid(1),
        instance: request.uids.child(1).uid(2),
        dimension_organization: request.uids.child(1).uid(3),
    };
    let seg = seg::segmentation(source, &clusters, &seg_uids, &request.when)?;
    let seg_reference = seg
        .as_ref()
        .map(|_| sr::SegReference { series: seg_uids.series.clone(), instance: seg_uids.instance.clone() });
    if let Some(bytes) = seg {
        objects.push(ResultObject {
            file: PathBuf::from("seg.dcm"),
            series_uid: seg_uids.series.clone(),
            bytes,
        });
    }
    let sr_source = request.uids.child(2);
    let sr_uids = sr::SrUids {
        series: sr_source.uid(1),
        instance: sr_source.uid(2),
        device: sr_source.uid(3),
        tracking_root: sr_source.uid(4),
    };
    let bytes = sr::measurement_report(
        source,
        &clusters,
        seg_reference.as_ref(),
        &request.maps.report,
        &sr_uids,
        &request.when,
    )?;
    objects.push(ResultObject { file: PathBuf::from("sr.dcm"), series_uid: sr_uids.series.clone(), bytes });
    let threshold = request.maps.threshold(CHANNELS[0].0)?;
    let picture = |k: usize| fused::picture(source, &request.maps.z_native[0], k, threshold, CHANNELS[0].0);
    let pdf = report_pdf::report_pdf(request.maps, source, &clusters, &picture)?;
    // Each UID drawn once: a random source gives a new one on every call.
    let pdf_uids = request.uids.child(3);
    let (pdf_series, pdf_instance) = (pdf_uids.uid(1), pdf_uids.uid(2));
    let document = encapsulated::encapsulated_pdf(source, &pdf, &pdf_series, &pdf_instance, &request.when)?;
    objects.push(ResultObject {
        file: PathBuf::from("report_pdf.dcm"),
        series_uid: pdf_series,
        bytes: document,
    });
    objects.push(ResultObject { file: PathBuf::from(REPORT_PDF), series_uid: String::new(), bytes: pdf });
    for (c, (name, _)) in CHANNELS.into_iter().enumerate() {
        let series = zmap::zmap_series(
            &request.maps.z_native[c],
            &source.study,
            &format!("pedinorm {name} z-map"),
            zmap::ZMAP_SERIES_NUMBER + c as u32,
            request.uids.child(10 + c as u64),
        )?;
        objects.extend(series_files(&format!("zmap_{name}"), &series.series_uid, series.objects));
    }
    for (c, (name, _)) in CHANNELS.into_iter().enumerate() {
        let uids = request.uids.child(20 + c as u64);
        let fused_uids = fused::FusedUids {
            series: uids.uid(1),
            instances: (0..source.slices.len()).map(|k| uids.uid(1000 + k as u64)).collect(),
        };
        let threshold = request.maps.threshold(name)?;
        let series = fused::fused_series(
            source,
            &request.maps.z_native[c],
            name,
            threshold,
            fused::SERIES_NUMBER + c as u32,
            &fused_uids,
            &request.when,
        )?;
        objects.extend(series_files(&format!("fused_{name}"), &fused_uids.series, series));
    }
    Ok(objects)
}

/// The result objects of one case scored by `pedinorm deviation`, from its outputs in `out_dir`,
/// written into `dir`; returns the files written. A DICOM case (`case_path`, read again for its
/// slices' SOP instances and its study's attributes, which the scoring read does not keep) gets
/// results on its own series; a NIfTI case (`image`) is first written as an MR series of a new
/// study named after the file.
pub fn write_case_results(
    case_path: &Path,
    image: &Image<f32>,
    out_dir: &Path,
    dir: &Path,
) -> Result<Vec<PathBuf>, ResultsError> {
    let when = DateTime::now_utc();
    let source = if crate::formats::dicom::is_nifti_path(case_path) {
        let name = case_path.file_name().unwrap_or_default().to_string_lossy().replace(".nii", "");
        SourceSeries::new_study(image, &crate::formats::dicom::sanitize(&name), UidSource::Random, &when)?
    } else {
        let unreadable =
            |rule: String| ResultsError::Source { path: case_path.to_owned(), field: "files", rule };
        let volumes = crate::formats::dicom::load_series(&[case_path.to_owned()])
            .map_err(|e| unreadable(e.to_string()))?;
        let volume = volumes.first().ok_or_else(|| unreadable("no image volume".into()))?;
        SourceSeries::from_case_files(case_path, volume)?
    };
    let maps = ResultMaps::read(out_dir)?;
    let objects =
        build_results(&ResultsRequest { maps: &maps, source: &source, uids: UidSource::Random, when })?;
    write_results(dir, &objects)
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
