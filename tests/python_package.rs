//! The Python package's pytest suite (`python/tests`) against this build: the `pedinorm`
//! binary it compares with and a miniature normative database (the demo of
//! `tests/demo_common`: phantom cohort at 4 mm, one bracket, a case with a white-matter lesion)
//! are made here and named to pytest in `PEDINORM_BIN` and `PEDINORM_TEST_DEMO`.
//!
//! The package is built and installed into `.data/venv` by `scripts/setup.sh`; without it (or
//! without pytest) the test says so and passes on a workstation, and fails under `CI=true`.

mod demo_common;

use demo_common::{miniature_demo, quick_mapping};
use pedinorm::pipeline::demo::run_demo;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python when the package, pytest and nibabel import there.
fn package_python() -> Option<PathBuf> {
    let python = root().join(".data/venv/bin/python");
    let imports = Command::new(&python)
        .args(["-c", "import pedinorm, pytest, nibabel"])
        .output()
        .is_ok_and(|output| output.status.success());
    imports.then_some(python)
}

#[test]
fn the_python_package_passes_its_suite_against_this_build() {
    let Some(python) = package_python() else {
        let message = "the Python package or pytest is not installed in .data/venv (run scripts/setup.sh)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    run_demo(&miniature_demo(demo.clone(), 16, quick_mapping())).expect("the miniature demo runs");
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests"])
        .current_dir(root())
        .env("PEDINORM_BIN", env!("CARGO_BIN_EXE_pedinorm"))
        .env("PEDINORM_TEST_DEMO", &demo)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("pytest runs");
    let text =
        format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{text}");
    assert!(output.status.success(), "the Python package's tests failed:\n{text}");
    assert!(!text.contains(" skipped"), "no Python test may be skipped here:\n{text}");
}
