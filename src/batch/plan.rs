//! Resources per batch task (memory, wall time, CPUs) from image size and thread count, so
//! Slurm jobs are neither killed for memory nor over-requesting.
//!
//! The model counts the buffers a step holds: a map step keeps the subject, the template and
//! the warped subject at full resolution (plus the decompressed file while reading), and about
//! 18 single-precision buffers on the registration grid (pyramid copies, fields, gradients,
//! local-correlation sums); a reduce step keeps the running sums (double precision) of the
//! template and of the mean warp plus one subject's files. Times scale with the voxels of the
//! registration grid and the iteration budget, divided by the threads with a parallel
//! efficiency of 0.8; the constants are per-voxel costs fitted to map and reduce steps on
//! 1 mm images (peak RSS and CPU time from `/usr/bin/time -v`, see `docs/hpc.md`), and
//! requests add a safety factor (×1.5 memory, ×3 time, at least
//! 10 minutes) because shared nodes are slower than an idle laptop.

use super::Resources;
use serde::{Deserialize, Serialize};

/// Bytes per full-resolution voxel held by a map step.
const MAP_BYTES_PER_VOXEL: f64 = 16.0;
/// Bytes per registration-grid voxel held by a map step.
const MAP_BYTES_PER_REGISTRATION_VOXEL: f64 = 72.0;
/// Bytes per full-resolution voxel held by a reduce step (f64 sums, one subject, template).
const REDUCE_BYTES_PER_VOXEL: f64 = 28.0;
/// Bytes per registration-grid voxel of a reduce step (f64 warp sums and one warp).
const REDUCE_BYTES_PER_REGISTRATION_VOXEL: f64 = 40.0;
/// Fixed memory of a process (binary, allocator, thread stacks).
const BASE_BYTES: f64 = 50.0 * 1024.0 * 1024.0;
/// CPU seconds per registration-grid voxel of one map step (affine + deformable, default
/// iterations), measured.
const MAP_CPU_SECONDS_PER_REGISTRATION_VOXEL: f64 = 6.5e-6;
/// CPU seconds per full-resolution voxel of reading, resampling and writing in a map step.
const MAP_CPU_SECONDS_PER_VOXEL: f64 = 2.5e-7;
/// Seconds per full-resolution voxel and subject of a reduce step (mostly reading files).
const REDUCE_SECONDS_PER_VOXEL_SUBJECT: f64 = 3.5e-7;

/// Estimated needs of the tasks of one build.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskEstimate {
    /// Full-resolution voxels of the largest image.
    pub voxels: usize,
    /// Voxels of the registration grid.
    pub registration_voxels: usize,
    /// Expected peak memory of a map step (MiB).
    pub map_memory_mb: f64,
    /// Expected wall time of a map step (s).
    pub map_seconds: f64,
    /// Expected peak memory of a reduce step (MiB).
    pub reduce_memory_mb: f64,
    /// Expected wall time of a reduce step per subject (s).
    pub reduce_seconds_per_subject: f64,
    /// Resources to request per map task.
    pub map: Resources,
    /// Resources to request per reduce (and init) task, for up to 1,000 subjects.
    pub reduce: Resources,
}

impl TaskEstimate {
    /// The estimate for images of `voxels` voxels (largest subject or template), registered on
    /// a grid of about `registration_spacing_mm` (from 1 mm voxels), with `threads` per task.
    pub fn for_voxels(voxels: usize, registration_spacing_mm: f64, threads: usize) -> Self {
        Self::for_cohort(voxels, 1.0, registration_spacing_mm, threads, 1000)
    }

    /// The estimate with the image spacing (mm) and the number of subjects (reduce time).
    pub fn for_cohort(
        voxels: usize,
        image_spacing_mm: f64,
        registration_spacing_mm: f64,
        threads: usize,
        subjects: usize,
    ) -> Self {
        let threads = threads.max(1);
        let factor = (registration_spacing_mm / image_spacing_mm.max(1e-3)).round().max(1.0);
        let registration_voxels = (voxels as f64 / factor.powi(3)).ceil() as usize;
        let v = voxels as f64;
        let r = registration_voxels as f64;
        let mib = 1024.0 * 1024.0;
        let map_memory_mb =
            (BASE_BYTES + MAP_BYTES_PER_VOXEL * v + MAP_BYTES_PER_REGISTRATION_VOXEL * r) / mib;
        let reduce_memory_mb =
            (BASE_BYTES + REDUCE_BYTES_PER_VOXEL * v + REDUCE_BYTES_PER_REGISTRATION_VOXEL * r) / mib;
        let speedup = 1.0 + 0.8 * (threads as f64 - 1.0);
        let map_seconds =
            (MAP_CPU_SECONDS_PER_REGISTRATION_VOXEL * r + MAP_CPU_SECONDS_PER_VOXEL * v) / speedup;
        let reduce_seconds_per_subject = REDUCE_SECONDS_PER_VOXEL_SUBJECT * v;
        let request = |memory_mb: f64, seconds: f64, cpus: usize| Resources {
            cpus,
            memory_mb: ((memory_mb * 1.5).ceil() as u64).max(256),
            time_minutes: ((seconds * 3.0 / 60.0).ceil() as u64).max(10),
        };
        Self {
            voxels,
            registration_voxels,
            map_memory_mb,
            map_seconds,
            reduce_memory_mb,
            reduce_seconds_per_subject,
            map: request(map_memory_mb, map_seconds, threads),
            reduce: request(reduce_memory_mb, reduce_seconds_per_subject * subjects as f64, 1),
        }
    }
}

/// Resources of the `reduce` task of a normative-database build over `subjects` normals on
/// templates of `template_voxels` voxels with `nodes` age nodes per bracket: it holds every
/// subject's two masked maps (f32) and their leave-one-out null z-maps, the statistics of both
/// channels (f64 mean, M2 and age co-moment per node and sex) and one held-out copy per
/// thread; it reads two maps per subject and scores each subject once per channel.
pub fn normdb_reduce_resources(
    template_voxels: usize,
    subjects: usize,
    nodes: usize,
    threads: usize,
) -> Resources {
    let v = template_voxels as f64;
    let n = subjects as f64;
    let statistics = 2.0 * nodes.max(1) as f64 * 2.0 * 3.0 * 8.0 * v;
    let held_out = threads.max(1) as f64 * statistics / 2.0;
    let bytes = BASE_BYTES + n * (2.0 * 4.0 + 4.0) * v + statistics + held_out;
    let seconds = 3.0 * REDUCE_SECONDS_PER_VOXEL_SUBJECT * v * n;
    Resources {
        cpus: threads.max(1),
        memory_mb: ((bytes * 1.5 / (1024.0 * 1024.0)).ceil() as u64).max(256),
        time_minutes: ((seconds * 3.0 / 60.0).ceil() as u64).max(10),
    }
}

/// The plan of a whole template build: per-task requests and the totals on a number of
/// concurrent task slots.
#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    /// Per-task estimate and requests.
    pub task: TaskEstimate,
    /// Subjects.
    pub subjects: usize,
    /// Map tasks (subjects × iterations including the affine one).
    pub map_tasks: usize,
    /// Core-hours of all map tasks.
    pub map_core_hours: f64,
    /// Hours of all reduce steps (serial).
    pub reduce_hours: f64,
    /// Wall-clock hours on `slots` concurrent tasks (maps in waves, reduces serial).
    pub wall_hours: f64,
    /// Concurrent task slots assumed.
    pub slots: usize,
}

/// Computes the plan of a build of `subjects` images of `voxels` voxels at `spacing_mm`,
/// registered at `registration_spacing_mm` with `threads` per map task, `iterations`
/// deformable iterations after the affine one, on `slots` concurrent tasks.
pub fn plan_build(
    voxels: usize,
    spacing_mm: f64,
    registration_spacing_mm: f64,
    threads: usize,
    subjects: usize,
    iterations: usize,
    slots: usize,
) -> BuildPlan {
    let task = TaskEstimate::for_cohort(voxels, spacing_mm, registration_spacing_mm, threads, subjects);
    let rounds = iterations + 1;
    let map_tasks = subjects * rounds;
    let map_core_hours = map_tasks as f64 * task.map_seconds * threads.max(1) as f64 / 3600.0;
    let reduce_hours = rounds as f64 * task.reduce_seconds_per_subject * subjects as f64 / 3600.0;
    let waves = subjects.div_ceil(slots.max(1)) as f64;
    let wall_hours = rounds as f64 * waves * task.map_seconds / 3600.0 + reduce_hours;
    BuildPlan { task, subjects, map_tasks, map_core_hours, reduce_hours, wall_hours, slots: slots.max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_millimetre_brain_fits_a_few_gigabytes_and_scales_with_threads() {
        let one_mm = TaskEstimate::for_cohort(182 * 218 * 182, 1.0, 2.0, 1, 100);
        assert!(one_mm.map_memory_mb > 200.0 && one_mm.map_memory_mb < 4096.0, "{one_mm:?}");
        assert_eq!(one_mm.registration_voxels, (182 * 218 * 182usize).div_ceil(8));
        let four = TaskEstimate::for_cohort(182 * 218 * 182, 1.0, 2.0, 4, 100);
        assert!(four.map_seconds < one_mm.map_seconds / 2.0);
        assert_eq!(four.map.cpus, 4);
        assert!(four.map.memory_mb as f64 >= four.map_memory_mb);
        let big = TaskEstimate::for_cohort(182 * 218 * 182, 1.0, 2.0, 1, 10_000);
        assert!(big.reduce.time_minutes > one_mm.reduce.time_minutes);
        // Finer registration costs more.
        let fine = TaskEstimate::for_cohort(182 * 218 * 182, 1.0, 1.0, 1, 100);
        assert!(fine.map_seconds > 4.0 * one_mm.map_seconds && fine.map_memory_mb > one_mm.map_memory_mb);
    }

    #[test]
    fn normdb_reduce_grows_with_subjects() {
        let small = normdb_reduce_resources(182 * 218 * 182, 100, 2, 1);
        let large = normdb_reduce_resources(182 * 218 * 182, 1000, 2, 1);
        assert!(large.memory_mb > 5 * small.memory_mb && large.time_minutes > small.time_minutes);
        // 1,000 subjects at 1 mm need tens of GB: the reason for partial sums (docs/hpc.md).
        assert!(large.memory_mb > 40_000, "{large:?}");
    }

    #[test]
    fn more_slots_shorten_wall_time_not_core_hours() {
        let few = plan_build(182 * 218 * 182, 1.0, 2.0, 1, 1000, 4, 10);
        let many = plan_build(182 * 218 * 182, 1.0, 2.0, 1, 1000, 4, 1000);
        assert_eq!(few.map_tasks, 5000);
        assert!((few.map_core_hours - many.map_core_hours).abs() < 1e-9);
        // Map waves shrink with slots; the serial reduces do not.
        assert!(many.wall_hours - many.reduce_hours < (few.wall_hours - few.reduce_hours) / 10.0);
        // Reduces are serial: they bound the wall time from below.
        assert!(many.wall_hours >= many.reduce_hours);
    }
}
