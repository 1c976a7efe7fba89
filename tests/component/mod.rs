//! The one check for a real component a test needs (Orthanc, Slurm). Present, the test runs.
//! Missing, it says why and passes on a workstation, but fails under `CI=true` (set by CI and by
//! `scripts/test.sh`, which start the components), so a component that did not start can never
//! turn into a green run.

/// Whether `CI` asks for every test to run (`true` or `1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// `true` when the component is `available`. Otherwise: under `CI=true` the test fails with
/// `why_missing`; elsewhere it prints `why_missing` and returns `false` (the test returns early).
pub fn component_available(available: bool, why_missing: &str) -> bool {
    if available {
        return true;
    }
    assert!(!ci(), "{why_missing}: CI=true, so a test that needs this component must run");
    eprintln!("{why_missing}: test not run");
    false
}
