//! Template builds on a real Slurm (a one-node cluster on localhost started by
//! `scripts/services/slurm.sh start`, which sets `PEDINORM_SLURM=1`): the Slurm executor gives
//! bit-identical results to the local one, and an array task killed mid-run is reported by
//! subject, after which a re-run resumes and ends identical. Without `PEDINORM_SLURM=1` the
//! tests only say why they did not run.

use pedinorm::nifti_io::read_image;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn slurm_available() -> bool {
    if std::env::var("PEDINORM_SLURM").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "PEDINORM_SLURM is not 1: Slurm tests not run (start Slurm with scripts/services/slurm.sh start)"
    );
    false
}

fn pedinorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pedinorm"))
}

fn synth(dir: &Path, n: usize) -> PathBuf {
    let out = dir.join("cohort");
    let status = pedinorm()
        .args(["synth", "--phantom", "--no-warps", "--resolution", "6", "--ages", "7-11", "--seed", "5"])
        .args(["--n", &n.to_string(), "--out-dir"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out.join("cohort.csv")
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
        .args([
            "--registration-spacing",
            "6",
            "--affine-iterations",
            "30x15",
            "--deformable-iterations",
            "10x5",
        ])
        .args(["--executor", executor, "--poll-ms", "200", "--cohort"])
        .arg(cohort)
        .arg("--out-dir")
        .arg(out)
        .args(extra);
    command
}

/// Result files of a build (images compared by voxel values, other files by bytes).
fn result_files(build_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(build_dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = path.strip_prefix(build_dir).unwrap().to_string_lossy().into_owned();
        if !path.is_file() || name.starts_with("slurm") || name.ends_with("done.json") || name == "build.json"
        {
            continue;
        }
        let content = if name.ends_with(".nii.gz") && !name.ends_with("warp.nii.gz") {
            read_image(path).unwrap().as_slice().iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            std::fs::read(path).unwrap()
        };
        files.push((name, content));
    }
    assert!(files.len() > 10, "build in {} is incomplete", build_dir.display());
    files
}

fn squeue_tasks(name_prefix: &str) -> Vec<(String, String, String)> {
    // (job id with array index, name, state) of this test's jobs.
    let output = Command::new("squeue").args(["-h", "-r", "-o", "%i|%j|%T"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split('|').collect();
            (parts.len() == 3 && parts[1].starts_with(name_prefix))
                .then(|| (parts[0].to_string(), parts[1].to_string(), parts[2].to_string()))
        })
        .collect()
}

#[test]
fn slurm_build_is_bit_identical_to_local_and_survives_a_killed_task() {
    if !slurm_available() {
        return;
    }
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let cohort = synth(dir.path(), 4);
    let local = dir.path().join("local");
    let output = build_command(&cohort, &local, "local", &[]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reference = result_files(&local.join("all"));

    // The same build on Slurm.
    let slurm = dir.path().join("slurm");
    let output = build_command(&cohort, &slurm, "slurm", &[]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(result_files(&slurm.join("all")), reference);
    let scripts: Vec<_> = std::fs::read_dir(slurm.join("all/slurm/round-1")).unwrap().collect();
    assert!(scripts.len() >= 2 * 7, "one script and task list per stage");

    // Kill one array task of the last iteration's map stage mid-run (no retries).
    let faulty = dir.path().join("faulty");
    let child = build_command(&cohort, &faulty, "slurm", &["--retries", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed = loop {
        assert!(Instant::now() < deadline, "the map stage of iteration 2 never appeared");
        let tasks = squeue_tasks("pedinorm-all-iter-2-map");
        // Once the stage runs, cancel its last array task still pending or running.
        if tasks.iter().any(|(_, _, state)| state == "RUNNING")
            && let Some((id, _, _)) = tasks
                .iter()
                .rev()
                .find(|(id, _, state)| id.contains('_') && (state == "PENDING" || state == "RUNNING"))
            && Command::new("scancel").arg(id).status().unwrap().success()
        {
            break id.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the build must fail after task {killed} was cancelled");
    assert!(stderr.contains("in iter-2-map after 1 attempt(s)") && stderr.contains("CANCELLED"), "{stderr}");
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
    // Re-run: resumes from the killed task and ends identical.
    let output = build_command(&cohort, &faulty, "slurm", &[]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(result_files(&faulty.join("all")), reference);
    // The re-run submitted only what was left: no init, no earlier iteration.
    let resumed: Vec<String> = std::fs::read_dir(faulty.join("all/slurm/round-2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(resumed.iter().all(|n| n.starts_with("iter-2-")), "{resumed:?}");
}
