//! HDF5 reading and writing of [`NormativeDb`] (layout in `docs/normdb.md`).

use super::*;
use hdf5::types::VarLenUnicode;
use hdf5::{File, Group, Location};
use nalgebra::Matrix4;
use ndarray::{Array, Array1, Array2, Array3};
use pedinorm_registration::Grid;
use pedinorm_registration::Image;
use pedinorm_templates::calibration::{
    AbsZHistogram, BIN_WIDTH, CURVE_POINTS, CURVE_STEP, HISTOGRAM_BINS, NullSummary,
};
use pedinorm_templates::calibration::{
    ClusterCalibration, LocalVolumeCalibration, LocalVolumeNull, SCALES_MM, VoxelCalibration,
};
use pedinorm_templates::model::{
    AtlasTable, BracketDb, BuildParameters, CalibrationRecord, ChannelCalibration, Metadata, SubjectNull,
    SubjectRecord, mask_indices,
};
use pedinorm_templates::stats::{AgeNode, GroupMoments};
use pedinorm_templates::stats::{NormativeAccumulator, Sex};
use std::path::Path;
use std::str::FromStr;

/// Deflate level of every chunked dataset.
const DEFLATE_LEVEL: u8 = 4;

/// The path of member `name` of `group`, as errors name it.
pub(super) fn member_path(group: &Group, name: &str) -> String {
    format!("{}/{name}", group.name())
}

pub(super) struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn h5<T>(
        &self,
        context: impl Into<String>,
        result: hdf5::Result<T>,
    ) -> Result<T, NormDbError> {
        result.map_err(|source| NormDbError::Hdf5 {
            path: self.path.to_owned(),
            context: context.into(),
            source,
        })
    }

    pub(super) fn schema(&self, field: impl Into<String>, rule: impl Into<String>) -> NormDbError {
        NormDbError::Schema { path: self.path.to_owned(), field: field.into(), rule: rule.into() }
    }

    pub(super) fn vlu(&self, field: &str, text: &str) -> Result<VarLenUnicode, NormDbError> {
        VarLenUnicode::from_str(text).map_err(|e| self.schema(field, format!("string not storable: {e}")))
    }

    /// Writes the scalar attribute `name` of `loc`.
    fn set_scalar<T: hdf5::H5Type>(&self, loc: &Location, name: &str, value: &T) -> Result<(), NormDbError> {
        let attr = self.h5(name, loc.new_attr::<T>().shape(()).create(name))?;
        self.h5(name, attr.as_writer().write_scalar(value))
    }

    pub(super) fn set_str(&self, loc: &Location, name: &str, value: &str) -> Result<(), NormDbError> {
        let v = self.vlu(name, value)?;
        self.set_scalar(loc, name, &v)
    }

    pub(super) fn set_f64(&self, loc: &Location, name: &str, value: f64) -> Result<(), NormDbError> {
        self.set_scalar(loc, name, &value)
    }

    pub(super) fn set_u64(&self, loc: &Location, name: &str, value: u64) -> Result<(), NormDbError> {
        self.set_scalar(loc, name, &value)
    }

    /// Reads the scalar attribute `name` of `loc`, which must exist.
    fn get_scalar<T: hdf5::H5Type>(&self, loc: &Location, name: &str) -> Result<T, NormDbError> {
        let field = format!("{}@{name}", loc.name());
        let attr = loc.attr(name).map_err(|_| self.schema(&field, "required attribute is missing"))?;
        self.h5(&field, attr.as_reader().read_scalar::<T>())
    }

    pub(super) fn get_str(&self, loc: &Location, name: &str) -> Result<String, NormDbError> {
        Ok(self.get_scalar::<VarLenUnicode>(loc, name)?.as_str().to_owned())
    }

    pub(super) fn get_f64(&self, loc: &Location, name: &str) -> Result<f64, NormDbError> {
        self.get_scalar(loc, name)
    }

    pub(super) fn get_u64(&self, loc: &Location, name: &str) -> Result<u64, NormDbError> {
        self.get_scalar(loc, name)
    }

    pub(super) fn group(&self, parent: &Group, name: &str) -> Result<Group, NormDbError> {
        parent.group(name).map_err(|_| self.schema(member_path(parent, name), "required group is missing"))
    }

    pub(super) fn dataset(&self, parent: &Group, name: &str) -> Result<hdf5::Dataset, NormDbError> {
        parent
            .dataset(name)
            .map_err(|_| self.schema(member_path(parent, name), "required dataset is missing"))
    }

    /// The outcome of creating dataset `name` of `group`.
    fn created(
        &self,
        group: &Group,
        name: &str,
        created: hdf5::Result<hdf5::Dataset>,
    ) -> Result<(), NormDbError> {
        self.h5(member_path(group, name), created).map(|_| ())
    }

    /// A shuffled, deflate-compressed dataset stored in chunks of `chunk`.
    fn write_compressed<T: hdf5::H5Type, D: ndarray::Dimension>(
        &self,
        group: &Group,
        name: &str,
        data: &Array<T, D>,
        chunk: impl hdf5::Dimension,
    ) -> Result<(), NormDbError> {
        let builder =
            group.new_dataset_builder().chunk(chunk).shuffle().deflate(DEFLATE_LEVEL).with_data(data);
        self.created(group, name, builder.create(name))
    }

    /// The dataset `name` of `group`, refused unless its shape is `shape` (`rule` completes
    /// "shape … must", e.g. `be`).
    fn read_shaped<T: hdf5::H5Type, D: ndarray::Dimension>(
        &self,
        group: &Group,
        name: &str,
        shape: &[usize],
        rule: &str,
    ) -> Result<Array<T, D>, NormDbError> {
        let ds = self.dataset(group, name)?;
        if ds.shape() != shape {
            let problem = format!("shape {:?} must {rule} {shape:?}", ds.shape());
            return Err(self.schema(member_path(group, name), problem));
        }
        self.h5(member_path(group, name), ds.read::<T, D>())
    }

    /// A 3-D dataset in chunks of up to 32³ voxels.
    pub(super) fn write_volume<T: hdf5::H5Type>(
        &self,
        group: &Group,
        name: &str,
        data: &Array3<T>,
    ) -> Result<(), NormDbError> {
        let (a, b, c) = data.dim();
        self.write_compressed(group, name, data, (a.min(32), b.min(32), c.min(32)))
    }

    pub(super) fn read_volume<T: hdf5::H5Type>(
        &self,
        group: &Group,
        name: &str,
        dims: [usize; 3],
    ) -> Result<Array3<T>, NormDbError> {
        self.read_shaped(group, name, &dims, "equal the template's")
    }

    pub(super) fn write_1d<T: hdf5::H5Type + Clone>(
        &self,
        group: &Group,
        name: &str,
        data: &[T],
    ) -> Result<(), NormDbError> {
        let arr = Array1::from_vec(data.to_vec());
        let builder = group.new_dataset_builder().with_data(&arr);
        self.created(group, name, builder.create(name))
    }

    pub(super) fn read_1d<T: hdf5::H5Type>(&self, group: &Group, name: &str) -> Result<Vec<T>, NormDbError> {
        let ds = self.dataset(group, name)?;
        self.h5(member_path(group, name), ds.read_raw::<T>())
    }

    /// A 2-D dataset in chunks of one row.
    pub(super) fn write_rows<T: hdf5::H5Type>(
        &self,
        group: &Group,
        name: &str,
        data: &Array2<T>,
    ) -> Result<(), NormDbError> {
        self.write_compressed(group, name, data, (1, data.ncols().max(1)))
    }

    pub(super) fn read_rows<T: hdf5::H5Type>(
        &self,
        group: &Group,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Array2<T>, NormDbError> {
        self.read_shaped(group, name, &shape, "be")
    }

    pub(super) fn write_strings(
        &self,
        group: &Group,
        name: &str,
        values: &[String],
    ) -> Result<(), NormDbError> {
        let v: Vec<VarLenUnicode> = values.iter().map(|s| self.vlu(name, s)).collect::<Result<_, _>>()?;
        self.write_1d(group, name, &v)
    }

    pub(super) fn read_strings(&self, group: &Group, name: &str) -> Result<Vec<String>, NormDbError> {
        Ok(self.read_1d::<VarLenUnicode>(group, name)?.into_iter().map(|s| s.as_str().to_owned()).collect())
    }
}

/// Writes `db` to a new file at `path` (the caller renames it into place).
pub(super) fn write(db: &NormativeDb, path: &Path) -> Result<(), NormDbError> {
    let ctx = Ctx { path };
    let file = ctx.h5("create file", File::create(path))?;
    let meta = &db.metadata;
    ctx.set_str(&file, "schema", SCHEMA_NAME)?;
    ctx.set_u64(&file, "schema_version", SCHEMA_VERSION as u64)?;
    ctx.set_str(&file, "software", &meta.software)?;
    ctx.set_str(&file, "created_utc", &meta.created_utc)?;
    ctx.set_str(&file, "modified_utc", &meta.modified_utc)?;
    let parameters = serde_json::to_string(&meta.parameters).expect("parameters serialize");
    ctx.set_str(&file, "parameters", &parameters)?;
    ctx.set_str(&file, "history", &meta.history.join("\n"))?;
    ctx.set_str(&file, "channels", &Channel::ALL.map(|c| c.name()).join(","))?;
    ctx.set_str(
        &file,
        "description",
        "Paediatric brain-MR normative database: age-bracket templates, voxelwise age-node statistics \
         (weighted moments per sex), subjects (pseudonyms only) and leave-one-out calibration.",
    )?;

    let templates = ctx.h5("/templates", file.create_group("templates"))?;
    let stats = ctx.h5("/stats", file.create_group("stats"))?;
    for bracket in &db.brackets {
        write_bracket(&ctx, &templates, &stats, bracket)?;
    }
    write_subjects(&ctx, &file, &db.subjects)?;
    if let Some(calibration) = &db.calibration {
        write_calibration(&ctx, &file, calibration)?;
    }
    write_safeguards(&ctx, &file, db)?;
    if let Some(atlas) = &db.atlas {
        let group = ctx.h5("/atlas", file.create_group("atlas"))?;
        ctx.set_str(&group, "name", &atlas.name)?;
        ctx.set_str(&group, "source", &atlas.source)?;
        let values: Vec<i32> = atlas.labels.iter().map(|l| l.0).collect();
        let names: Vec<String> = atlas.labels.iter().map(|l| l.1.clone()).collect();
        ctx.write_1d(&group, "label_values", &values)?;
        ctx.write_strings(&group, "label_names", &names)?;
    }
    if let Some(table) = &db.regional {
        super::hdf5_regional::write_table(&ctx, &file, table)?;
        if let Some(set) = &db.centiles {
            let regional = ctx.group(&file, "regional")?;
            super::hdf5_centiles::write(&ctx, &regional, set)?;
        }
    }
    ctx.h5("flush", file.flush())?;
    Ok(())
}

fn write_bracket(
    ctx: &Ctx,
    templates: &Group,
    stats: &Group,
    bracket: &BracketDb,
) -> Result<(), NormDbError> {
    let t = ctx.h5(format!("/templates/{}", bracket.name), templates.create_group(&bracket.name))?;
    ctx.set_f64(&t, "min_years", bracket.min_years)?;
    ctx.set_f64(&t, "max_years", bracket.max_years)?;
    ctx.write_volume(&t, "image", bracket.template.data())?;
    ctx.write_volume(&t, "mask", &bracket.mask.data().mapv(|v| u8::from(v > 0.5)))?;
    if let Some(labels) = &bracket.labels {
        ctx.write_volume(&t, "labels", &labels.data().mapv(|v| v.round() as i32))?;
    }
    if let Some(priors) = &bracket.priors {
        super::hdf5_regional::write_priors(ctx, &t, priors)?;
    }
    let affine = bracket.template.grid().affine();
    let affine = Array2::from_shape_fn((4, 4), |(r, c)| affine[(r, c)]);
    let ds = ctx.h5("affine", t.new_dataset_builder().with_data(&affine).create("affine"))?;
    ctx.set_str(&ds, "convention", "voxel (i, j, k) to world RAS+ mm, NIfTI/nibabel")?;

    let s = ctx.h5(format!("/stats/{}", bracket.name), stats.create_group(&bracket.name))?;
    let indices = bracket.mask_indices();
    ctx.set_u64(&s, "mask_voxels", indices.len() as u64)?;
    let dims = bracket.template.grid().dims();
    let scatter = |values: &[f64]| {
        let mut volume = vec![0f64; dims.iter().product()];
        for (&i, &v) in indices.iter().zip(values) {
            volume[i] = v;
        }
        Array3::from_shape_vec((dims[0], dims[1], dims[2]), volume).expect("grid shape")
    };
    let nodes = bracket.stats[0].nodes();
    for (n, node) in nodes.iter().enumerate() {
        let g = ctx.h5("node", s.create_group(&format!("node_{n:02}")))?;
        ctx.set_f64(&g, "age_years", node.age_years)?;
        ctx.set_f64(&g, "sigma_years", node.sigma_years)?;
        for channel in Channel::ALL {
            let cg = ctx.h5(channel.name(), g.create_group(channel.name()))?;
            for sex in Sex::ALL {
                let moments = bracket.stats[channel.index()].group(n, sex);
                let sg = ctx.h5(sex.code(), cg.create_group(sex.code()))?;
                ctx.set_u64(&sg, "count", moments.count)?;
                ctx.set_f64(&sg, "weight_sum", moments.weight_sum)?;
                ctx.set_f64(&sg, "weight_sq_sum", moments.weight_sq_sum)?;
                ctx.set_f64(&sg, "age_mean", moments.age_mean)?;
                ctx.set_f64(&sg, "age_m2", moments.age_m2)?;
                ctx.write_volume(&sg, "mean", &scatter(&moments.mean))?;
                ctx.write_volume(&sg, "m2", &scatter(&moments.m2))?;
                ctx.write_volume(&sg, "age_cross", &scatter(&moments.age_cross))?;
            }
        }
    }
    Ok(())
}

/// `/safeguards`: the SD floors and the out-of-distribution reference (derived from the
/// subjects table and the calibration's null summaries, written for readers of the file).
fn write_safeguards(ctx: &Ctx, file: &File, db: &NormativeDb) -> Result<(), NormDbError> {
    use pedinorm_templates::safeguards::ROBUST_Z_LIMIT;
    let g = ctx.h5("/safeguards", file.create_group("safeguards"))?;
    let normative = &db.metadata.parameters.normative;
    let (fraction, logjac) =
        normative.sd_floor.map_or((0.0, 0.0), |f| (f.intensity_fraction_of_median, f.logjac));
    ctx.set_f64(&g, "sd_floor_intensity_fraction_of_median", fraction)?;
    ctx.set_f64(&g, "sd_floor_logjac", logjac)?;
    for bracket in &db.brackets {
        let floors = bracket.sd_floors(normative);
        let b = ctx.h5(format!("/safeguards/{}", bracket.name), g.create_group(&bracket.name))?;
        ctx.set_f64(&b, "sd_floor_intensity", floors[0])?;
        ctx.set_f64(&b, "sd_floor_logjac", floors[1])?;
    }
    let Some(reference) = db.ood_reference() else { return Ok(()) };
    let r = ctx.h5("/safeguards/reference", g.create_group("reference"))?;
    ctx.set_f64(&r, "robust_z_limit", ROBUST_Z_LIMIT)?;
    ctx.set_str(
        &r,
        "rule",
        "flagged when worse than every calibration normal and beyond median ± robust_z_limit · spread",
    )?;
    for index in &reference.indices {
        ctx.write_1d(&r, &index.name, &index.values)?;
        let ds = ctx.dataset(&r, &index.name)?;
        ctx.set_f64(&ds, "median", index.median)?;
        ctx.set_f64(&ds, "spread", index.spread)?;
        ctx.set_f64(&ds, "limit", index.limit)?;
        ctx.set_str(
            &ds,
            "worse",
            if index.worse == pedinorm_templates::safeguards::Worse::Higher { "higher" } else { "lower" },
        )?;
    }
    Ok(())
}

fn write_subjects(ctx: &Ctx, file: &File, subjects: &[SubjectRecord]) -> Result<(), NormDbError> {
    let g = ctx.h5("/subjects", file.create_group("subjects"))?;
    ctx.set_u64(&g, "count", subjects.len() as u64)?;
    let col = |f: &dyn Fn(&SubjectRecord) -> String| subjects.iter().map(f).collect::<Vec<String>>();
    ctx.write_strings(&g, "pseudonym", &col(&|s| s.pseudonym.clone()))?;
    ctx.write_1d(&g, "age_years", &subjects.iter().map(|s| s.age_years).collect::<Vec<_>>())?;
    ctx.write_strings(&g, "sex", &col(&|s| s.sex.code().to_owned()))?;
    ctx.write_strings(&g, "scanner", &col(&|s| s.scanner.clone()))?;
    ctx.write_strings(&g, "bracket", &col(&|s| s.bracket.clone()))?;
    ctx.write_1d(&g, "qc_similarity", &subjects.iter().map(|s| s.qc_similarity).collect::<Vec<_>>())?;
    ctx.write_1d(
        &g,
        "qc_histogram_distance",
        &subjects.iter().map(|s| s.qc_histogram_distance).collect::<Vec<_>>(),
    )?;
    ctx.write_1d(&g, "qc_mask_dice", &subjects.iter().map(|s| s.qc_mask_dice).collect::<Vec<_>>())?;
    ctx.write_1d(&g, "qc_passed", &subjects.iter().map(|s| u8::from(s.qc_passed)).collect::<Vec<_>>())?;
    Ok(())
}

fn write_calibration(ctx: &Ctx, file: &File, calibration: &CalibrationRecord) -> Result<(), NormDbError> {
    let g = ctx.h5("/calibration", file.create_group("calibration"))?;
    ctx.set_str(&g, "method", &calibration.method)?;
    ctx.set_u64(&g, "stale", u64::from(calibration.stale))?;
    for channel in Channel::ALL {
        let c = calibration.channel(channel);
        let cg = ctx.h5(channel.name(), g.create_group(channel.name()))?;
        ctx.set_f64(&cg, "nominal_voxel_rate", c.voxel.nominal_rate)?;
        ctx.set_f64(&cg, "z_threshold", c.voxel.z_threshold)?;
        ctx.set_f64(&cg, "achieved_voxel_rate", c.voxel.achieved_rate)?;
        ctx.set_f64(&cg, "gaussian_threshold", c.voxel.gaussian_threshold)?;
        ctx.set_f64(&cg, "gaussian_achieved_rate", c.voxel.gaussian_achieved_rate)?;
        ctx.set_u64(&cg, "subjects", c.voxel.subjects as u64)?;
        ctx.set_f64(&cg, "nominal_cluster_rate", c.cluster.nominal_rate)?;
        ctx.set_f64(&cg, "cluster_mass_threshold", c.cluster.mass_threshold)?;
        ctx.set_u64(&cg, "cluster_size_threshold_voxels", c.cluster.size_threshold_voxels as u64)?;
        ctx.set_u64(&cg, "cluster_nominal_reachable", u64::from(c.cluster.nominal_reachable))?;
        ctx.set_f64(&cg, "achieved_cluster_rate", c.cluster.achieved_rate)?;
        ctx.write_1d(&cg, "achieved_voxel_rate_per_subject", &c.voxel.achieved_rate_per_subject)?;
        let sizes: Vec<u64> = c.cluster.max_cluster_per_subject.iter().map(|&s| s as u64).collect();
        ctx.write_1d(&cg, "max_cluster_voxels_per_subject", &sizes)?;
        ctx.write_1d(&cg, "max_cluster_mass_per_subject", &c.cluster.max_mass_per_subject)?;
    }
    if !calibration.nulls.is_empty() {
        let n = ctx.h5("/calibration/null", g.create_group("null"))?;
        ctx.set_f64(&n, "histogram_bin_width", BIN_WIDTH)?;
        ctx.set_f64(&n, "threshold_step", CURVE_STEP)?;
        let rows = calibration.nulls.len();
        ctx.write_strings(
            &n,
            "pseudonym",
            &calibration.nulls.iter().map(|x| x.pseudonym.clone()).collect::<Vec<_>>(),
        )?;
        for channel in Channel::ALL {
            let c = channel.index();
            let cg = ctx.h5(channel.name(), n.create_group(channel.name()))?;
            let histogram = Array2::from_shape_fn((rows, HISTOGRAM_BINS), |(r, b)| {
                calibration.nulls[r].channels[c].histogram.counts()[b]
            });
            ctx.write_rows(&cg, "abs_z_histogram", &histogram)?;
            let sizes = Array2::from_shape_fn((rows, CURVE_POINTS), |(r, k)| {
                calibration.nulls[r].channels[c].max_cluster_size[k]
            });
            ctx.write_rows(&cg, "max_cluster_voxels", &sizes)?;
            let masses = Array2::from_shape_fn((rows, CURVE_POINTS), |(r, k)| {
                calibration.nulls[r].channels[c].max_cluster_mass[k]
            });
            ctx.write_rows(&cg, "max_cluster_mass", &masses)?;
        }
        let local: Option<Vec<&LocalVolumeNull>> =
            calibration.nulls.iter().map(|x| x.local_volume.as_ref()).collect();
        if let Some(local) = local {
            write_local_volume_nulls(ctx, &n, &local)?;
        }
    }
    if let Some(local) = &calibration.local_volume {
        let lg = ctx.h5("/calibration/local_volume", g.create_group("local_volume"))?;
        ctx.set_f64(&lg, "limit", local.limit)?;
        ctx.set_f64(&lg, "family_rate", local.family_rate)?;
        ctx.set_u64(&lg, "nominal_reachable", u64::from(local.nominal_reachable))?;
        ctx.write_1d(&lg, "sigma_mm", &local.sigmas_mm)?;
        ctx.write_1d(&lg, "spread", &local.spread)?;
        ctx.write_1d(&lg, "largest_per_subject", &local.largest_per_subject)?;
    }
    if let Some(effects) = &calibration.site_effects {
        super::hdf5_site_effects::write(ctx, &g, effects)?;
    }
    super::hdf5_site_effects::write_moments(ctx, &g, &calibration.site_moments)?;
    Ok(())
}

/// Each calibration normal's local-volume extremes, one row per normal and one column per
/// neighbourhood width (`/calibration/null/local_volume`).
fn write_local_volume_nulls(ctx: &Ctx, null: &Group, local: &[&LocalVolumeNull]) -> Result<(), NormDbError> {
    let lg = ctx.h5("/calibration/null/local_volume", null.create_group("local_volume"))?;
    ctx.write_1d(&lg, "sigma_mm", &SCALES_MM)?;
    let rows = local.len();
    let columns = SCALES_MM.len();
    for (name, field) in [("min", 0usize), ("max", 1), ("mean_square", 2)] {
        let values = Array2::from_shape_fn((rows, columns), |(r, k)| {
            let n = local[r];
            [&n.min, &n.max, &n.mean_square][field][k]
        });
        ctx.write_rows(&lg, name, &values)?;
    }
    Ok(())
}

/// The local-volume extremes per calibration normal, or None for databases calibrated
/// before they were kept or at other neighbourhood widths.
fn read_local_volume_nulls(
    ctx: &Ctx,
    null: &Group,
    rows: usize,
) -> Result<Option<Vec<LocalVolumeNull>>, NormDbError> {
    if !null.link_exists("local_volume") {
        return Ok(None);
    }
    let lg = ctx.group(null, "local_volume")?;
    let sigmas: Vec<f64> = ctx.read_1d(&lg, "sigma_mm")?;
    if sigmas != SCALES_MM {
        return Ok(None);
    }
    let columns = SCALES_MM.len();
    let min: Array2<f32> = ctx.read_rows(&lg, "min", [rows, columns])?;
    let max: Array2<f32> = ctx.read_rows(&lg, "max", [rows, columns])?;
    let mean_square: Array2<f32> = ctx.read_rows(&lg, "mean_square", [rows, columns])?;
    Ok(Some(
        (0..rows)
            .map(|r| LocalVolumeNull {
                min: min.row(r).to_vec(),
                max: max.row(r).to_vec(),
                mean_square: mean_square.row(r).to_vec(),
            })
            .collect(),
    ))
}

fn read_nulls(ctx: &Ctx, calibration: &Group) -> Result<Vec<SubjectNull>, NormDbError> {
    if !calibration.link_exists("null") {
        return Ok(Vec::new());
    }
    let n = ctx.group(calibration, "null")?;
    for (attr, expected) in [("histogram_bin_width", BIN_WIDTH), ("threshold_step", CURVE_STEP)] {
        let found = ctx.get_f64(&n, attr)?;
        if (found - expected).abs() > 1e-12 {
            return Err(
                ctx.schema(format!("/calibration/null@{attr}"), format!("must be {expected}, found {found}"))
            );
        }
    }
    let pseudonyms = ctx.read_strings(&n, "pseudonym")?;
    let rows = pseudonyms.len();
    let mut per_channel: Vec<Vec<NullSummary>> = Vec::new();
    for channel in Channel::ALL {
        let cg = ctx.group(&n, channel.name())?;
        let histogram: Array2<u64> = ctx.read_rows(&cg, "abs_z_histogram", [rows, HISTOGRAM_BINS])?;
        let sizes: Array2<u32> = ctx.read_rows(&cg, "max_cluster_voxels", [rows, CURVE_POINTS])?;
        let masses: Array2<f32> = ctx.read_rows(&cg, "max_cluster_mass", [rows, CURVE_POINTS])?;
        let field = format!("/calibration/null/{}", channel.name());
        per_channel.push(
            (0..rows)
                .map(|r| {
                    let h = AbsZHistogram::from_counts(histogram.row(r).to_vec())
                        .map_err(|e| ctx.schema(&field, e.to_string()))?;
                    NullSummary::from_parts(h, sizes.row(r).to_vec(), masses.row(r).to_vec())
                        .map_err(|e| ctx.schema(&field, e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        );
    }
    let logjac = per_channel.pop().expect("two channels");
    let intensity = per_channel.pop().expect("two channels");
    let mut local = read_local_volume_nulls(ctx, &n, rows)?.map(Vec::into_iter);
    Ok(pseudonyms
        .into_iter()
        .zip(intensity.into_iter().zip(logjac))
        .map(|(pseudonym, (i, l))| SubjectNull {
            pseudonym,
            channels: [i, l],
            local_volume: local.as_mut().and_then(Iterator::next),
        })
        .collect())
}

/// Reads and validates a database.
pub(super) fn read(path: &Path) -> Result<NormativeDb, NormDbError> {
    let ctx = Ctx { path };
    if !path.is_file() {
        return Err(NormDbError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such normative database file"),
        });
    }
    let file = ctx.h5("open", File::open(path))?;
    let schema = ctx.get_str(&file, "schema")?;
    if schema != SCHEMA_NAME {
        return Err(ctx.schema("/@schema", format!("must be {SCHEMA_NAME:?}, found {schema:?}")));
    }
    let version = ctx.get_u64(&file, "schema_version")?;
    if version == 0 || version > SCHEMA_VERSION as u64 {
        return Err(ctx.schema(
            "/@schema_version",
            format!("version {version} is not supported (this software reads up to {SCHEMA_VERSION})"),
        ));
    }
    let parameters_json = ctx.get_str(&file, "parameters")?;
    let parameters: BuildParameters = serde_json::from_str(&parameters_json)
        .map_err(|e| ctx.schema("/@parameters", format!("invalid JSON build parameters: {e}")))?;
    let history = ctx.get_str(&file, "history")?;
    let metadata = Metadata {
        software: ctx.get_str(&file, "software")?,
        created_utc: ctx.get_str(&file, "created_utc")?,
        modified_utc: ctx.get_str(&file, "modified_utc")?,
        parameters,
        history: history.lines().map(str::to_owned).collect(),
    };
    let templates = ctx.group(&file, "templates")?;
    let stats = ctx.group(&file, "stats")?;
    let mut names = ctx.h5("/templates", templates.member_names())?;
    // Brackets in age order (HDF5 lists members by name).
    let mut brackets = Vec::new();
    names.sort();
    for name in &names {
        brackets.push(read_bracket(&ctx, &templates, &stats, name)?);
    }
    brackets.sort_by(|a, b| a.min_years.total_cmp(&b.min_years).then(a.max_years.total_cmp(&b.max_years)));
    let subjects = read_subjects(&ctx, &file)?;
    let calibration =
        if file.link_exists("calibration") { Some(read_calibration(&ctx, &file)?) } else { None };
    let atlas = if file.link_exists("atlas") {
        let g = ctx.group(&file, "atlas")?;
        let values: Vec<i32> = ctx.read_1d(&g, "label_values")?;
        let label_names = ctx.read_strings(&g, "label_names")?;
        if values.len() != label_names.len() {
            return Err(ctx.schema("/atlas", "label_values and label_names must have the same length"));
        }
        Some(AtlasTable {
            name: ctx.get_str(&g, "name")?,
            source: ctx.get_str(&g, "source")?,
            labels: values.into_iter().zip(label_names).collect(),
        })
    } else {
        None
    };
    let regional = super::hdf5_regional::read_table(&ctx, &file)?;
    let centiles = match regional {
        Some(_) => super::hdf5_centiles::read(&ctx, &ctx.group(&file, "regional")?)?,
        None => None,
    };
    Ok(NormativeDb { metadata, brackets, subjects, calibration, atlas, regional, centiles })
}

fn read_bracket(ctx: &Ctx, templates: &Group, stats: &Group, name: &str) -> Result<BracketDb, NormDbError> {
    let t = ctx.group(templates, name)?;
    let affine_ds = ctx.dataset(&t, "affine")?;
    let affine: Array2<f64> = ctx.h5("affine", affine_ds.read_2d::<f64>())?;
    if affine.dim() != (4, 4) {
        return Err(ctx.schema(format!("/templates/{name}/affine"), "must be 4×4"));
    }
    let matrix = Matrix4::from_fn(|r, c| affine[[r, c]]);
    let image_ds = ctx.dataset(&t, "image")?;
    let shape = image_ds.shape();
    if shape.len() != 3 {
        return Err(ctx.schema(format!("/templates/{name}/image"), "must be 3-D"));
    }
    let dims = [shape[0], shape[1], shape[2]];
    let grid = Grid::new(dims, matrix)
        .map_err(|e| ctx.schema(format!("/templates/{name}/affine"), e.to_string()))?;
    let template_data: Array3<f32> = ctx.read_volume(&t, "image", dims)?;
    let template = Image::new(template_data, grid.clone()).expect("shape checked");
    let mask_data: Array3<u8> = ctx.read_volume(&t, "mask", dims)?;
    let mask = Image::new(mask_data.mapv(|v| if v > 0 { 1.0f32 } else { 0.0 }), grid.clone())
        .expect("shape checked");
    let labels = if t.link_exists("labels") {
        let data: Array3<i32> = ctx.read_volume(&t, "labels", dims)?;
        Some(Image::new(data.mapv(|v| v as f32), grid.clone()).expect("shape checked"))
    } else {
        None
    };
    let priors = super::hdf5_regional::read_priors(ctx, &t, &grid)?;
    let indices = mask_indices(&mask);
    let s = ctx.group(stats, name)?;
    let mask_voxels = ctx.get_u64(&s, "mask_voxels")?;
    if mask_voxels as usize != indices.len() {
        return Err(ctx.schema(
            format!("/stats/{name}@mask_voxels"),
            format!("{mask_voxels} does not match the {} voxels of the template mask", indices.len()),
        ));
    }
    let mut node_names = ctx.h5("nodes", s.member_names())?;
    node_names.sort();
    if node_names.is_empty() {
        return Err(ctx.schema(format!("/stats/{name}"), "at least one node_NN group is required"));
    }
    let mut nodes = Vec::new();
    let mut channel_groups: [Vec<[GroupMoments; 2]>; 2] = [Vec::new(), Vec::new()];
    for node_name in &node_names {
        let g = ctx.group(&s, node_name)?;
        nodes.push(AgeNode {
            age_years: ctx.get_f64(&g, "age_years")?,
            sigma_years: ctx.get_f64(&g, "sigma_years")?,
        });
        for channel in Channel::ALL {
            let cg = ctx.group(&g, channel.name())?;
            let mut pair = Vec::new();
            for sex in Sex::ALL {
                let sg = ctx.group(&cg, sex.code())?;
                let gather = |volume: Array3<f64>| {
                    let flat = volume.as_standard_layout();
                    let flat = flat.as_slice().expect("standard layout");
                    indices.iter().map(|&i| flat[i]).collect::<Vec<f64>>()
                };
                pair.push(GroupMoments {
                    count: ctx.get_u64(&sg, "count")?,
                    weight_sum: ctx.get_f64(&sg, "weight_sum")?,
                    weight_sq_sum: ctx.get_f64(&sg, "weight_sq_sum")?,
                    age_mean: ctx.get_f64(&sg, "age_mean")?,
                    age_m2: ctx.get_f64(&sg, "age_m2")?,
                    mean: gather(ctx.read_volume(&sg, "mean", dims)?),
                    m2: gather(ctx.read_volume(&sg, "m2", dims)?),
                    age_cross: gather(ctx.read_volume(&sg, "age_cross", dims)?),
                });
            }
            let male = pair.pop().expect("two sexes");
            let female = pair.pop().expect("two sexes");
            channel_groups[channel.index()].push([female, male]);
        }
    }
    let [intensity, logjac] = channel_groups;
    let field = format!("/stats/{name}");
    let stats = [
        NormativeAccumulator::from_parts(nodes.clone(), intensity)
            .map_err(|e| ctx.schema(&field, e.to_string()))?,
        NormativeAccumulator::from_parts(nodes, logjac).map_err(|e| ctx.schema(&field, e.to_string()))?,
    ];
    Ok(BracketDb {
        name: name.to_owned(),
        min_years: ctx.get_f64(&t, "min_years")?,
        max_years: ctx.get_f64(&t, "max_years")?,
        template,
        mask,
        labels,
        priors,
        stats,
    })
}

fn read_subjects(ctx: &Ctx, file: &File) -> Result<Vec<SubjectRecord>, NormDbError> {
    let g = ctx.group(file, "subjects")?;
    let pseudonym = ctx.read_strings(&g, "pseudonym")?;
    let age: Vec<f64> = ctx.read_1d(&g, "age_years")?;
    let sex = ctx.read_strings(&g, "sex")?;
    let scanner = ctx.read_strings(&g, "scanner")?;
    let bracket = ctx.read_strings(&g, "bracket")?;
    let similarity: Vec<f64> = ctx.read_1d(&g, "qc_similarity")?;
    let passed: Vec<u8> = ctx.read_1d(&g, "qc_passed")?;
    let n = pseudonym.len();
    // Columns added later: unknown (NaN) in files written before them.
    let optional = |name: &str| -> Result<Vec<f64>, NormDbError> {
        if g.link_exists(name) { ctx.read_1d(&g, name) } else { Ok(vec![f64::NAN; n]) }
    };
    let histogram_distance = optional("qc_histogram_distance")?;
    let mask_dice = optional("qc_mask_dice")?;
    if [
        age.len(),
        sex.len(),
        scanner.len(),
        bracket.len(),
        similarity.len(),
        passed.len(),
        histogram_distance.len(),
        mask_dice.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err(ctx.schema("/subjects", "all columns must have the same length"));
    }
    (0..n)
        .map(|i| {
            Ok(SubjectRecord {
                pseudonym: pseudonym[i].clone(),
                age_years: age[i],
                sex: Sex::parse(&sex[i]).ok_or_else(|| {
                    ctx.schema("/subjects/sex", format!("row {i}: {:?} is not F or M", sex[i]))
                })?,
                scanner: scanner[i].clone(),
                bracket: bracket[i].clone(),
                qc_similarity: similarity[i],
                qc_histogram_distance: histogram_distance[i],
                qc_mask_dice: mask_dice[i],
                qc_passed: passed[i] != 0,
            })
        })
        .collect()
}

fn read_calibration(ctx: &Ctx, file: &File) -> Result<CalibrationRecord, NormDbError> {
    let g = ctx.group(file, "calibration")?;
    let mut channels = Vec::new();
    for channel in Channel::ALL {
        let cg = ctx.group(&g, channel.name())?;
        let per_subject: Vec<f64> = ctx.read_1d(&cg, "achieved_voxel_rate_per_subject")?;
        let sizes: Vec<u64> = ctx.read_1d(&cg, "max_cluster_voxels_per_subject")?;
        channels.push(ChannelCalibration {
            voxel: VoxelCalibration {
                nominal_rate: ctx.get_f64(&cg, "nominal_voxel_rate")?,
                z_threshold: ctx.get_f64(&cg, "z_threshold")?,
                achieved_rate: ctx.get_f64(&cg, "achieved_voxel_rate")?,
                achieved_rate_per_subject: per_subject,
                gaussian_threshold: ctx.get_f64(&cg, "gaussian_threshold")?,
                gaussian_achieved_rate: ctx.get_f64(&cg, "gaussian_achieved_rate")?,
                subjects: ctx.get_u64(&cg, "subjects")? as usize,
            },
            cluster: ClusterCalibration {
                nominal_rate: ctx.get_f64(&cg, "nominal_cluster_rate")?,
                // Schema version 1 judged clusters by size only: no mass threshold (every
                // cluster above the size threshold then counts, see the deviation pipeline).
                mass_threshold: if cg.attr("cluster_mass_threshold").is_ok() {
                    ctx.get_f64(&cg, "cluster_mass_threshold")?
                } else {
                    f64::NAN
                },
                max_mass_per_subject: if cg.link_exists("max_cluster_mass_per_subject") {
                    ctx.read_1d(&cg, "max_cluster_mass_per_subject")?
                } else {
                    Vec::new()
                },
                size_threshold_voxels: ctx.get_u64(&cg, "cluster_size_threshold_voxels")? as usize,
                nominal_reachable: ctx.get_u64(&cg, "cluster_nominal_reachable")? != 0,
                achieved_rate: ctx.get_f64(&cg, "achieved_cluster_rate")?,
                max_cluster_per_subject: sizes.into_iter().map(|s| s as usize).collect(),
            },
        });
    }
    let nulls = read_nulls(ctx, &g)?;
    Ok(CalibrationRecord {
        method: ctx.get_str(&g, "method")?,
        stale: ctx.get_u64(&g, "stale")? != 0,
        channels,
        // Recomputed from the stored summaries (the stored limit is for readers of the file).
        local_volume: nulls
            .iter()
            .map(|n| n.local_volume.as_ref())
            .collect::<Option<Vec<_>>>()
            .and_then(|local| LocalVolumeCalibration::calibrate(&local)),
        nulls,
        site_effects: super::hdf5_site_effects::read(ctx, &g)?,
        site_moments: super::hdf5_site_effects::read_moments(ctx, &g)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_datasets_round_trip_and_name_what_breaks_the_schema() {
        let volume = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32);
        let rows = Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f64);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.h5");
        let ctx = Ctx { path: &path };
        let file = ctx.h5("create file", File::create(&path)).unwrap();
        let g = ctx.h5("/g", file.create_group("g")).unwrap();
        ctx.set_str(&g, "text", "ünïcode").unwrap();
        ctx.set_f64(&g, "real", 0.1).unwrap();
        ctx.set_u64(&g, "count", 7).unwrap();
        assert_eq!(ctx.get_str(&g, "text").unwrap(), "ünïcode");
        assert_eq!(ctx.get_f64(&g, "real").unwrap().to_bits(), 0.1f64.to_bits());
        assert_eq!(ctx.get_u64(&g, "count").unwrap(), 7);
        let missing = ctx.get_f64(&g, "absent").unwrap_err().to_string();
        assert!(missing.ends_with("/g@absent: required attribute is missing"), "{missing}");

        ctx.write_volume(&g, "volume", &volume).unwrap();
        assert_eq!(ctx.read_volume::<f32>(&g, "volume", [2, 3, 4]).unwrap(), volume);
        let wrong = ctx.read_volume::<f32>(&g, "volume", [2, 3, 5]).unwrap_err().to_string();
        assert!(wrong.ends_with("/g/volume: shape [2, 3, 4] must equal the template's [2, 3, 5]"), "{wrong}");
        ctx.write_rows(&g, "rows", &rows).unwrap();
        assert_eq!(ctx.read_rows::<f64>(&g, "rows", [3, 2]).unwrap(), rows);
        let wrong = ctx.read_rows::<f64>(&g, "rows", [2, 3]).unwrap_err().to_string();
        assert!(wrong.ends_with("/g/rows: shape [3, 2] must be [2, 3]"), "{wrong}");
        ctx.write_1d(&g, "line", &[1u64, 2, 3]).unwrap();
        assert_eq!(ctx.read_1d::<u64>(&g, "line").unwrap(), [1, 2, 3]);
        let absent = ctx.read_1d::<u64>(&g, "absent").unwrap_err().to_string();
        assert!(absent.ends_with("/g/absent: required dataset is missing"), "{absent}");
    }
}
