//! The running service against its own OpenAPI document: `schemathesis run --checks all` as the
//! scientist, radiologist and auditor roles (`scripts/services/schemathesis.sh`), with the
//! schemathesis that `scripts/setup.sh` installs. Any 500, undocumented status or content type,
//! response that breaks its schema, or schema-valid request answered 400 fails the test.

mod component;

use std::path::Path;
use std::process::Command;

#[test]
fn the_running_server_keeps_its_openapi_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = root.join(".data/schemathesis/bin/schemathesis");
    if !component::component_available(
        schemathesis.exists(),
        "schemathesis is not installed (scripts/setup.sh installs it)",
    ) {
        return;
    }
    let output = Command::new(root.join("scripts/services/schemathesis.sh"))
        .arg(env!("CARGO_BIN_EXE_pedinorm"))
        .arg(&schemathesis)
        .arg("10")
        .output()
        .expect("run scripts/services/schemathesis.sh");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    for role in ["scientist", "radiologist", "auditor"] {
        assert!(report.contains(&format!("{role}: passed")), "{role} did not pass:\n{report}");
    }
}
