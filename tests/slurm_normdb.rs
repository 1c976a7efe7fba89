//! Normative-database builds and batch deviation maps on a real Slurm (the one-node cluster of
//! `scripts/services/slurm.sh start`, which sets `PEDINORM_SLURM=1`): the per-bracket,
//! per-subject and per-chunk steps run as job arrays chained with `--dependency=afterok`, and
//! the database (templates, statistics, subjects, calibration) and every case's deviation maps
//! are bit-identical to the local executor's. Without `PEDINORM_SLURM=1` the test only says
//! why it did not run.

mod batch_common;

use batch_common::{
    assert_same_normdb, deviation_batch, normdb_content, pedinorm, result_files, run_ok, slurm_work_dir,
    synth,
};
use std::path::Path;
use std::process::Command;

fn normdb_build(cohort: &Path, output: &Path, executor: &str) -> Command {
    let template = cohort.parent().unwrap().join("base_t1.nii.gz");
    let mut command = pedinorm();
    command
        .args(["normdb", "build", "--nodes", "1", "--jobs", "2", "--threads", "1", "--chunk-size", "4"])
        .args(["--executor", executor, "--poll-ms", "200", "--cohort"])
        .arg(cohort)
        .arg("--template")
        .arg(format!("t:7:12:{}", template.display()))
        .arg("--output")
        .arg(output);
    command
}

#[test]
fn slurm_normdb_build_and_batch_deviation_are_bit_identical_to_local() {
    let Some(dir) = slurm_work_dir() else { return };
    let cohort = synth(dir.path(), 6, 2, 4.0, 5);
    let local = dir.path().join("local.h5");
    run_ok(&mut normdb_build(&cohort, &local, "local"));
    let slurm = dir.path().join("slurm.h5");
    run_ok(&mut normdb_build(&cohort, &slurm, "slurm"));
    assert_same_normdb(&normdb_content(&slurm), &normdb_content(&local));
    // One job array per stage: space (1 bracket), map (6 subjects), partial (2 chunks), reduce.
    let round = dir.path().join("slurm.h5.build/slurm/round-1");
    for (stage, array) in [("space", "0-0"), ("map", "0-5"), ("partial", "0-1"), ("reduce", "0-0")] {
        let script = std::fs::read_to_string(round.join(format!("{stage}.sbatch"))).unwrap();
        assert!(script.contains(&format!("--array={array}")), "{stage}: {script}");
    }
    let partial = std::fs::read_to_string(round.join("partial.tasks")).unwrap();
    assert!(partial.contains("normdb partial") && partial.lines().count() == 2, "{partial}");

    // Batch deviation maps of three cases against the same database.
    let cohort_dir = cohort.parent().unwrap();
    let cases = dir.path().join("cases.csv");
    std::fs::write(
        &cases,
        format!(
            "path,age,sex,id\n{0}/sub-0007.nii.gz,10.3,M,lesion-a\n{0}/sub-0008.nii.gz,9.9,F,lesion-b\n{0}/sub-0001.nii.gz,8.1,,normal-1\n",
            cohort_dir.display()
        ),
    )
    .unwrap();
    let files = |d: &Path| result_files(d, &[".slurm"], &[], &[], &["created_utc", "seconds"]);
    let maps_local = dir.path().join("maps-local");
    run_ok(&mut deviation_batch(&local, &cases, &maps_local, &["--executor", "local", "--poll-ms", "200"]));
    let maps_slurm = dir.path().join("maps-slurm");
    run_ok(&mut deviation_batch(&local, &cases, &maps_slurm, &["--executor", "slurm", "--poll-ms", "200"]));
    let reference = files(&maps_local);
    assert_eq!(reference.iter().filter(|(name, _)| name.ends_with("report.json")).count(), 3);
    assert_eq!(files(&maps_slurm), reference);
    let script = std::fs::read_to_string(maps_slurm.join(".slurm/round-1/deviation.sbatch")).unwrap();
    assert!(script.contains("--array=0-2"), "{script}");
}
