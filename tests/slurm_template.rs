//! Template builds on a real Slurm (a one-node cluster on localhost started by
//! `scripts/services/slurm.sh start`, which sets `PEDINORM_SLURM=1`): the Slurm executor gives
//! bit-identical results to the local one, and an array task killed mid-run is reported by
//! subject, after which a re-run resumes and ends identical. Without `PEDINORM_SLURM=1` the
//! tests only say why they did not run.

mod batch_common;

use batch_common::{QUICK_TEMPLATE_REGISTRATION, pedinorm, run_ok, slurm_work_dir, squeue_tasks};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn synth(dir: &Path, n: usize) -> std::path::PathBuf {
    batch_common::synth(dir, n, 0, 6.0, 5)
}

fn build_command(cohort: &Path, out: &Path, executor: &str, extra: &[&str]) -> Command {
    let mut command = pedinorm();
    command
        .args([
            "template",
            "build",
            "--brackets",
            "all",
            "--iterations",
            "2",
            "--threads",
            "1",
            "--jobs",
            "2",
        ])
        .args(QUICK_TEMPLATE_REGISTRATION)
        .args(["--executor", executor, "--poll-ms", "200", "--cohort"])
        .arg(cohort)
        .arg("--out-dir")
        .arg(out)
        .args(extra);
    command
}

/// Result files of a build (images compared by voxel values, other files by bytes).
fn result_files(build_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files = batch_common::template_build_files(build_dir);
    assert!(files.len() > 10, "build in {} is incomplete", build_dir.display());
    files
}

#[test]
fn slurm_build_is_bit_identical_to_local_and_survives_a_killed_task() {
    let Some(dir) = slurm_work_dir() else { return };
    let cohort = synth(dir.path(), 4);
    let local = dir.path().join("local");
    run_ok(&mut build_command(&cohort, &local, "local", &[]));
    let reference = result_files(&local.join("all"));

    // The same build on Slurm.
    let slurm = dir.path().join("slurm");
    run_ok(&mut build_command(&cohort, &slurm, "slurm", &[]));
    assert_eq!(result_files(&slurm.join("all")), reference);
    let scripts: Vec<_> = std::fs::read_dir(slurm.join("all/slurm/round-1")).unwrap().collect();
    assert!(scripts.len() >= 2 * 7, "one script and task list per stage");

    // Cancel one array task of the last iteration's map stage mid-run (no retries). One task
    // runs at a time, so the last one is still pending while the first runs: the cancelled task
    // never writes its outputs, whatever the timing.
    // The limit comes from a site settings file, as on a cluster.
    let faulty = dir.path().join("faulty");
    let site = dir.path().join("slurm-site.toml");
    std::fs::write(&site, "max_concurrent = 1\nsbatch_options = [\"--comment=pedinorm-site\"]\n").unwrap();
    let child = build_command(&cohort, &faulty, "slurm", &["--retries", "0", "--slurm-config"])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed = loop {
        assert!(Instant::now() < deadline, "the map stage of iteration 2 never appeared");
        let tasks = squeue_tasks("pedinorm-all-iter-2-map");
        // Once the stage runs, cancel its last array task still pending.
        if tasks.iter().any(|(_, _, state)| state == "RUNNING")
            && let Some((id, _, _)) =
                tasks.iter().rev().find(|(id, _, state)| id.contains('_') && state == "PENDING")
            && Command::new("scancel").arg(id).status().unwrap().success()
        {
            break id.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the build must fail after task {killed} was cancelled");
    // A task cancelled while pending leaves the queue without a record of its own.
    assert!(
        stderr.contains("in iter-2-map after 1 attempt(s)")
            && (stderr.contains("CANCELLED") || stderr.contains("without completing")),
        "{stderr}"
    );
    let index: usize = killed.rsplit('_').next().unwrap().parse().unwrap();
    let subject = format!("sub-{:04}", index + 1);
    assert!(
        stderr.contains(&format!("{subject} in iter-2-map")),
        "task {killed} is subject {subject}: {stderr}"
    );
    assert!(!faulty.join("all/iter-2/done.json").exists(), "the reduce after the failure must not run");
    // Nothing of this build is left in the queue (dependent jobs were cancelled).
    let leftover = Instant::now() + Duration::from_secs(10);
    while !squeue_tasks("pedinorm-all").iter().all(|(_, _, s)| s != "PENDING" && s != "RUNNING") {
        assert!(Instant::now() < leftover, "jobs left pending: {:?}", squeue_tasks("pedinorm-all"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_round = std::fs::read_dir(faulty.join("all/slurm/round-1")).unwrap();
    let scripts: Vec<String> = first_round
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .filter(|text| text.contains("#SBATCH"))
        .collect();
    assert!(!scripts.is_empty());
    assert!(
        scripts.iter().all(|t| t.contains("#SBATCH --comment=pedinorm-site") && t.contains("%1")),
        "site settings in every job script: {scripts:?}"
    );
    // Re-run: resumes from the killed task and ends identical.
    run_ok(&mut build_command(&cohort, &faulty, "slurm", &[]));
    assert_eq!(result_files(&faulty.join("all")), reference);
    // The re-run submitted only what was left: no init, no earlier iteration.
    let resumed: Vec<String> = std::fs::read_dir(faulty.join("all/slurm/round-2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(resumed.iter().all(|n| n.starts_with("iter-2-")), "{resumed:?}");
}
