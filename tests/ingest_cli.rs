//! `pedinorm ingest` from the command line: exit codes, one-line refusals listing every
//! reason, and that the national identifier never appears in output, logs or stored bytes.

mod ingest_support;

use ingest_support::*;
use std::path::Path;
use std::process::Command;

fn pedinorm(args: &[&str], key_file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args(["--log", "trace"])
        .args(args)
        .env("PEDINORM_PSEUDONYM_KEY_FILE", key_file)
        .output()
        .unwrap()
}

/// `pedinorm ingest` of a study into database B with an explicit national identifier.
fn ingest_into_b(data_dir: &str, national_id: &str, study: &str, key_file: &Path) -> std::process::Output {
    pedinorm(
        &["ingest", "--database", "B", "--data-dir", data_dir, "--national-id", national_id, study],
        key_file,
    )
}

#[test]
fn ingest_cli_never_shows_the_identifier_and_refuses_with_every_reason() {
    let (dir, key_file, study_dir) = default_study();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let study_arg = study_dir.to_str().unwrap();

    let mut logs = Vec::new();
    let accepted = ingest_into_b(data_arg, "rssmra85t10a562s", study_arg, &key_file);
    assert!(accepted.status.success(), "{}", String::from_utf8_lossy(&accepted.stderr));
    let stdout = String::from_utf8_lossy(&accepted.stdout).into_owned();
    assert!(stdout.starts_with("ingested: database B"), "{stdout}");
    logs.push(accepted.stdout);
    logs.push(accepted.stderr);

    let again = pedinorm(
        &["ingest", "--database", "B", "--data-dir", data_arg, "--id-issuer", CF_ISSUER, study_arg],
        &key_file,
    );
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("already ingested"));
    logs.push(again.stdout);
    logs.push(again.stderr);

    // Refusal: exit status non-zero, one line, every reason named; nothing written.
    let refused_dir = dir.path().join("refused");
    write_study(
        &refused_dir,
        &StudySpec {
            study_number: 9,
            modality: "CT".into(),
            field_strength: 1.5,
            national_id: Some("RSSMRA85T10A562T".into()),
            ..StudySpec::default()
        },
    );
    let before = snapshot(&data);
    let refused = pedinorm(
        &[
            "ingest",
            "--database",
            "B",
            "--data-dir",
            data_arg,
            "--id-issuer",
            CF_ISSUER,
            refused_dir.to_str().unwrap(),
        ],
        &key_file,
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    for code in ["invalid-identifier", "not-mr", "field-strength-not-accepted"] {
        assert!(error_lines[0].contains(code), "{code} missing in {stderr}");
    }
    assert!(error_lines[0].contains("check character mismatch"));
    assert_eq!(snapshot(&data), before);
    logs.push(refused.stdout);
    logs.push(refused.stderr);

    // An invalid explicit identifier is refused without echoing it.
    let invalid = ingest_into_b(data_arg, "MRTMTT25D09F205A", study_arg, &key_file);
    assert!(!invalid.status.success());
    assert!(
        String::from_utf8_lossy(&invalid.stderr)
            .contains("national identifier invalid: check character mismatch")
    );
    logs.push(invalid.stdout);
    logs.push(invalid.stderr);

    // Database A needs a class.
    let no_class = pedinorm(&["ingest", "--database", "A", "--data-dir", data_arg, study_arg], &key_file);
    assert!(!no_class.status.success());
    assert!(String::from_utf8_lossy(&no_class.stderr).contains("class"));

    let key = std::fs::read(&key_file).unwrap();
    let key = key.trim_ascii();
    for needle in [
        CODICE_FISCALE.as_bytes(),
        b"rssmra85t10a562s".as_slice(),
        b"MRTMTT25D09F205A".as_slice(),
        b"RSSMRA85T10A562T".as_slice(),
        PATIENT_NAME.as_bytes(),
        BIRTH_DATE.as_bytes(),
        key,
    ] {
        for log in &logs {
            assert!(!contains(log, needle), "output contains {:?}", String::from_utf8_lossy(needle));
        }
        for (path, bytes) in snapshot(&data) {
            let bytes = if path.to_string_lossy().ends_with(".gz") { gunzip(&bytes) } else { bytes };
            assert!(
                !contains(&bytes, needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}
