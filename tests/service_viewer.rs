//! The web viewer against the real `pedinorm serve` process: a synthetic case (phantom brain at
//! 4 mm with a strong white-matter lesion) is uploaded, ingested and mapped by a deviation job
//! against a miniature normative database with growth-chart centiles (24 normals); then the viewer's routes are probed over HTTP (sessions,
//! roles, centres, names, audit) and the page is driven in Debian's headless Chromium by
//! Playwright (`tests/browser/viewer_check.py`): refused without a session, a canvas that is
//! not blank, a cluster click that puts the crosshair on the cluster's peak, the template
//! beside the case, the regional volumes with their centiles and growth charts, and a screenshot kept under the target folder's `test-artifacts/`.
//!
//! Chromium and Playwright come from `scripts/setup.sh`; without them the test says so and
//! passes on a workstation, and fails under `CI=true`.

mod service_common;

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use service_common::demo_common::{miniature_demo, quick_mapping};
use service_common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python with Playwright, when it, Chromium and the NiiVue bundle are installed.
fn browser_python() -> Option<PathBuf> {
    let python = root().join(".data/venv/bin/python");
    let has_playwright = std::process::Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|output| output.status.success());
    let has_niivue = root().join(".data/viewer/niivue.js").is_file();
    (has_playwright && has_niivue && Path::new(CHROMIUM).exists()).then_some(python)
}

fn wait_job(client: &Client, base: &str, token: &str, job: i64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let job_json: Value = client
            .get(format!("{base}/api/v1/jobs/{job}"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if matches!(job_json["state"].as_str(), Some("done" | "failed" | "cancelled")) {
            return job_json;
        }
        assert!(Instant::now() < deadline, "job {job} not finished in time: {job_json}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn post_json(client: &Client, base: &str, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = client.post(format!("{base}{path}")).bearer_auth(token).json(body).send().unwrap();
    (response.status(), response.json().unwrap_or(Value::Null))
}

/// Opens a viewer session with `token`; returns the `Cookie` header value.
fn session(client: &Client, base: &str, token: &str) -> String {
    let response = client.post(format!("{base}/viewer/session")).bearer_auth(token).send().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/viewer", "Max-Age=900"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    set_cookie.split(';').next().unwrap().to_string()
}

fn get_with_cookie(client: &Client, base: &str, path: &str, cookie: &str) -> reqwest::blocking::Response {
    client.get(format!("{base}{path}")).header("Cookie", cookie).send().unwrap()
}

/// Acquisition headers that classify a series as T1w (3-D MPRAGE) and as T2w (2-D TSE).
const T1W_HEADERS: [(dicom_core::Tag, dicom_core::VR, &str); 5] = [
    (dicom_dictionary_std::tags::SCANNING_SEQUENCE, dicom_core::VR::CS, "GR\\IR"),
    (dicom_dictionary_std::tags::MR_ACQUISITION_TYPE, dicom_core::VR::CS, "3D"),
    (dicom_dictionary_std::tags::REPETITION_TIME, dicom_core::VR::DS, "2300"),
    (dicom_dictionary_std::tags::ECHO_TIME, dicom_core::VR::DS, "2.98"),
    (dicom_dictionary_std::tags::INVERSION_TIME, dicom_core::VR::DS, "900"),
];
const T2W_HEADERS: [(dicom_core::Tag, dicom_core::VR, &str); 7] = [
    (dicom_dictionary_std::tags::SCANNING_SEQUENCE, dicom_core::VR::CS, "SE"),
    (dicom_dictionary_std::tags::SEQUENCE_VARIANT, dicom_core::VR::CS, "SK\\SP\\OSP"),
    (dicom_dictionary_std::tags::INVERSION_TIME, dicom_core::VR::DS, ""),
    (dicom_dictionary_std::tags::MR_ACQUISITION_TYPE, dicom_core::VR::CS, "2D"),
    (dicom_dictionary_std::tags::REPETITION_TIME, dicom_core::VR::DS, "6000"),
    (dicom_dictionary_std::tags::ECHO_TIME, dicom_core::VR::DS, "96"),
    (dicom_dictionary_std::tags::SERIES_DESCRIPTION, dicom_core::VR::LO, "t2_tse"),
];

/// How far the head moved between the T1w and the T2w series (patient coordinates, mm).
const T2W_MOTION_MM: [f64; 3] = [5.0, -4.0, 3.0];

/// The objects of a series as series `number` of the same study, with new series and instance
/// UIDs, the acquisition `headers` of a contrast (an empty value removes the element), and the
/// head moved by `shift_mm` (patient coordinates) since the first series.
fn as_contrast(
    files: &[Vec<u8>],
    number: u32,
    headers: &[(dicom_core::Tag, dicom_core::VR, &str)],
    shift_mm: [f64; 3],
) -> Vec<Vec<u8>> {
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_dictionary_std::tags;
    let series_uid = format!("2.25.{}", rand::random::<u64>());
    files
        .iter()
        .enumerate()
        .map(|(k, bytes)| {
            let mut object = dicom_object::from_reader(&bytes[128..]).unwrap();
            let instance_uid = format!("{series_uid}.{}", k + 1);
            let position: Vec<f64> =
                object.element(tags::IMAGE_POSITION_PATIENT).unwrap().to_multi_float64().unwrap();
            let moved: Vec<String> =
                position.iter().zip(shift_mm).map(|(p, s)| format!("{:.4}", p + s)).collect();
            let mut put = |tag, vr, value: &str| {
                object.put(DataElement::new(tag, vr, PrimitiveValue::from(value.to_string())));
            };
            put(tags::SERIES_INSTANCE_UID, dicom_core::VR::UI, &series_uid);
            put(tags::SOP_INSTANCE_UID, dicom_core::VR::UI, &instance_uid);
            put(tags::SERIES_NUMBER, dicom_core::VR::IS, &number.to_string());
            put(tags::IMAGE_POSITION_PATIENT, dicom_core::VR::DS, &moved.join("\\"));
            for &(tag, vr, value) in headers.iter().filter(|h| !h.2.is_empty()) {
                put(tag, vr, value);
            }
            for &(tag, ..) in headers.iter().filter(|h| h.2.is_empty()) {
                object.remove_element(tag);
            }
            object.update_meta(|meta| meta.media_storage_sop_instance_uid = instance_uid.clone());
            let mut out = Vec::new();
            object.write_all(&mut out).unwrap();
            out
        })
        .collect()
}

/// A server with a normative database, a radiologist of C1 and a finished deviation job:
/// (folder, server, radiologist's token, job id).
fn server_with_deviation_job() -> (tempfile::TempDir, ServerProcess, String, i64) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    private(&state);
    // Enough normals for growth-chart centiles, so the viewer shows them.
    let demo = miniature_demo(dir.path().join("demo"), 24, quick_mapping());
    let summary = pedinorm::pipeline::demo::run_demo(&demo).unwrap();
    std::fs::copy(&summary.normdb, state.join("normdb.h5")).unwrap();
    let case = phantom_subject(&phantom_generator(), 10.3, true, 7, true);
    std::fs::write(dir.path().join("pseudonym.key"), PSEUDONYM_KEY).unwrap();
    let config = dir.path().join("pedinorm.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"state\"\nlisten = \"127.0.0.1:0\"\npseudonym_key_file = \"pseudonym.key\"\n\
             national_id_issuer = \"{SYNTHETIC_ISSUER}\"\nviewer_assets = \"{}\"\n\
             [compute]\naffine_iterations = [60, 30, 10]\ndeformable_iterations = [20, 10, 5]\n\
             bias_correction = false\n",
            root().join(".data/viewer").display()
        ),
    )
    .unwrap();
    let radiologist = add_user(&state, "dr rad", "radiologist", Some("C1"));
    let server = ServerProcess::start(&config, Some(&dir.path().join("server.log")));
    let client = Client::new();
    let base = server.base.clone();
    // The study holds a T1w and a T2w series (the same pixels, the acquisition headers of each
    // contrast), so the viewer offers both.
    let (_, t1w) = subject_dicom(&case, 1);
    let mut files = as_contrast(&t1w, 2, &T1W_HEADERS, [0.0; 3]);
    files.extend(as_contrast(&t1w, 3, &T2W_HEADERS, T2W_MOTION_MM));
    let consent = consent_record(true, false, "2024-01-02");
    let (status, submitted) =
        upload_multipart(&client, &base, &radiologist, "A", Some(&consent), zip_study(&files));
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let ingest =
        wait_job(&client, &base, &radiologist, submitted["job"].as_i64().unwrap(), Duration::from_secs(60));
    assert_eq!(ingest["result"]["admitted"], true, "{ingest}");
    let study = submitted["study"]["id"].as_i64().unwrap();
    let (status, case) =
        post_json(&client, &base, &radiologist, "/api/v1/cases", &json!({ "study_id": study }));
    assert_eq!(status, StatusCode::CREATED, "{case}");
    let path = format!("/api/v1/cases/{}/deviation", case["id"]);
    let (status, accepted) = post_json(&client, &base, &radiologist, &path, &json!({}));
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job = accepted["job"].as_i64().unwrap();
    let deviation = wait_job(&client, &base, &radiologist, job, Duration::from_secs(300));
    assert_eq!(deviation["state"], "done", "{deviation}");
    (dir, server, radiologist, job)
}

#[test]
fn the_viewer_shows_a_deviation_job_to_those_who_may_read_it() {
    let (dir, server, radiologist, job) = server_with_deviation_job();
    let state = dir.path().join("state");
    let (client, base) = (Client::new(), server.base.clone());
    let page = format!("/viewer/jobs/{job}");

    // Without a session, or with one the service never opened: 401, no page.
    let refused = client.get(format!("{base}{page}")).send().unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_with_cookie(&client, &base, &page, "pedinorm_viewer=forged").status(),
        StatusCode::UNAUTHORIZED
    );
    // The token opens a session only in the Authorization header, never as a cookie.
    let as_cookie = format!("pedinorm_viewer={radiologist}");
    assert_eq!(get_with_cookie(&client, &base, &page, &as_cookie).status(), StatusCode::UNAUTHORIZED);

    // With a session: the page, its manifest, its files.
    let cookie = session(&client, &base, &radiologist);
    let response = get_with_cookie(&client, &base, &page, &cookie);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(response.headers()["cache-control"], "no-store");
    let manifest: Value =
        get_with_cookie(&client, &base, &format!("{page}/manifest"), &cookie).json().unwrap();
    assert_eq!(manifest["images"][0]["name"], "case-1.nii.gz", "{manifest}");
    let contrasts: Vec<&str> =
        manifest["images"].as_array().unwrap().iter().map(|i| i["contrast"].as_str().unwrap()).collect();
    assert_eq!(contrasts, ["T1w", "T2w"], "the scored T1w first, then the other contrast: {manifest}");
    assert_eq!(manifest["template"], "template.nii.gz", "{manifest}");
    for name in
        ["case-1.nii.gz", "case-2.nii.gz", "template.nii.gz", "intensity_z_native.nii.gz", "logjac_z.nii.gz"]
    {
        let response = get_with_cookie(&client, &base, &format!("{page}/files/{name}"), &cookie);
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(&response.bytes().unwrap()[..2], &[0x1f, 0x8b], "{name} is gzipped NIfTI");
    }
    // The T2w series was acquired after the head moved: the job aligned it onto the scored T1w,
    // so it lies on the T1w's grid with the same anatomy in the same voxels.
    let job_json: Value = client
        .get(format!("{base}/api/v1/jobs/{job}"))
        .bearer_auth(&radiologist)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(job_json["result"]["contrasts"][0]["contrast"], "T2w", "{job_json}");
    assert_eq!(job_json["result"]["contrasts"][0]["aligned"], "case-2_aligned.nii.gz", "{job_json}");
    let volume = |name: &str| {
        let bytes =
            get_with_cookie(&client, &base, &format!("{page}/files/{name}"), &cookie).bytes().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        pedinorm::formats::nifti::read_image(&path).unwrap()
    };
    let (t1w, t2w) = (volume("case-1.nii.gz"), volume("case-2.nii.gz"));
    assert!(t2w.grid().same_as(t1w.grid(), 1e-3), "the aligned T2w lies on the T1w's grid");
    let all: Vec<usize> = (0..t1w.as_slice().len()).collect();
    let correlation = pedinorm_templates::model::space::masked_correlation(&t1w, &t2w, &all);
    assert!(correlation > 0.97, "aligned T2w against T1w: correlation {correlation}");
    let report: Value =
        get_with_cookie(&client, &base, &format!("{page}/files/report.json"), &cookie).json().unwrap();
    // The database has centile models: the report places the case, the manifest lists the charts.
    assert_eq!(report["regional"]["centiles"][0]["measure"], "total_brain", "{}", report["regional"]);
    let charts: Vec<&str> =
        manifest["charts"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(charts.contains(&"growth_total_brain.svg") && charts.contains(&"growth_icv.svg"), "{charts:?}");
    let chart = get_with_cookie(&client, &base, &format!("{page}/files/growth_total_brain.svg"), &cookie);
    assert_eq!(chart.status(), StatusCode::OK);
    assert_eq!(chart.headers()["content-type"], "image/svg+xml");
    let text = report.to_string();
    assert!(!text.contains(PATIENT_NAME) && !text.contains("SYNTHETIC^"), "no identity in the report");
    // Bad names are 400, names the job does not have 404, unknown jobs 404, other job kinds 404.
    for (name, status) in [
        ("a%20b", StatusCode::BAD_REQUEST),
        (".hidden", StatusCode::BAD_REQUEST),
        ("case-9.nii.gz", StatusCode::NOT_FOUND),
        ("service.sqlite", StatusCode::NOT_FOUND),
        ("montage_intensity.png", StatusCode::NOT_FOUND),
    ] {
        let response = get_with_cookie(&client, &base, &format!("{page}/files/{name}"), &cookie);
        assert_eq!(response.status(), status, "{name}");
    }
    assert_eq!(
        get_with_cookie(&client, &base, "/viewer/jobs/999999", &cookie).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get_with_cookie(&client, &base, "/viewer/jobs/1", &cookie).status(), StatusCode::NOT_FOUND);
    assert_eq!(get_with_cookie(&client, &base, "/viewer/jobs/x", &cookie).status(), StatusCode::BAD_REQUEST);
    assert_eq!(get_with_cookie(&client, &base, "/viewer/assets/niivue.js", &cookie).status(), StatusCode::OK);

    // Another centre's radiologist sees no such job; an auditor may not open a session; a
    // disabled user's session fails at once.
    let elsewhere = add_user(&state, "dr far", "radiologist", Some("C2"));
    let elsewhere_cookie = session(&client, &base, &elsewhere);
    assert_eq!(get_with_cookie(&client, &base, &page, &elsewhere_cookie).status(), StatusCode::NOT_FOUND);
    let auditor = add_user(&state, "aud", "auditor", None);
    let opened = client.post(format!("{base}/viewer/session")).bearer_auth(&auditor).send().unwrap();
    assert_eq!(opened.status(), StatusCode::FORBIDDEN);
    let admin = add_user(&state, "adm", "admin", None);
    let far_id = elsewhere.split('_').nth(1).unwrap();
    let (status, _) =
        post_json(&client, &base, &admin, &format!("/api/v1/users/{far_id}/disable"), &json!({}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get_with_cookie(&client, &base, &page, &elsewhere_cookie).status(), StatusCode::UNAUTHORIZED);
    // Rotating a token ends the sessions opened with the old one.
    let colleague = add_user(&state, "dr two", "radiologist", Some("C1"));
    let colleague_cookie = session(&client, &base, &colleague);
    assert_eq!(get_with_cookie(&client, &base, &page, &colleague_cookie).status(), StatusCode::OK);
    let colleague_id = colleague.split('_').nth(1).unwrap();
    let rotate = format!("/api/v1/users/{colleague_id}/rotate-token");
    let (status, _) = post_json(&client, &base, &admin, &rotate, &json!({}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get_with_cookie(&client, &base, &page, &colleague_cookie).status(), StatusCode::UNAUTHORIZED);

    // Signing out ends the session at once and expires the cookie; another session stays open.
    let second = session(&client, &base, &radiologist);
    let ended = client.post(format!("{base}/viewer/session/end")).header("Cookie", &second).send().unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(ended.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get_with_cookie(&client, &base, &page, &second).status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get_with_cookie(&client, &base, &page, &cookie).status(), StatusCode::OK);
    let ended = client.post(format!("{base}/viewer/session/end")).header("Cookie", &second).send().unwrap();
    assert_eq!(ended.status(), StatusCode::UNAUTHORIZED, "an ended session cannot sign out again");

    // The portal opens a session for the user it acts for; that user's scope applies.
    let portal = add_user(&state, "portal", "portal", None);
    let opened = client
        .post(format!("{base}/viewer/session"))
        .bearer_auth(&portal)
        .header("x-acting-user", "dr rad")
        .header("x-acting-role", "radiologist")
        .header("x-acting-centre", "C1")
        .send()
        .unwrap();
    assert_eq!(opened.status(), StatusCode::CREATED);
    let portal_cookie =
        opened.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert_eq!(get_with_cookie(&client, &base, &page, &portal_cookie).status(), StatusCode::OK);
    let opened = client.post(format!("{base}/viewer/session")).bearer_auth(&portal).send().unwrap();
    assert_eq!(opened.status(), StatusCode::BAD_REQUEST, "the portal must name the user it acts for");

    // The browser (Chromium, Playwright and NiiVue from scripts/setup.sh).
    let Some(python) = browser_python() else {
        component_available(
            false,
            "chromium, Playwright or the NiiVue bundle is not installed (scripts/setup.sh installs them)",
        );
        return;
    };
    let thresholds: serde_json::Map<String, Value> = report["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["channel"].as_str().unwrap().to_string(), t["z_threshold"].clone()))
        .collect();
    let cluster = report["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["significant"] == true)
        .expect("the strong lesion gives a significant cluster")
        .clone();
    let centiles = report["regional"]["centiles"].as_array().unwrap().len();
    let expected =
        json!({ "cluster": cluster, "thresholds": thresholds, "centiles": centiles, "charts": charts });
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("viewer.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = std::process::Command::new(python)
        .arg(root().join("tests/browser/viewer_check.py"))
        .args([&base, &radiologist, &job.to_string(), &expected.to_string()])
        .arg(&screenshot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "screenshot kept at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());

    // Every page view and file fetch is in the audit log, with the viewer's name.
    let records: Value = client
        .get(format!("{base}/api/v1/audit?limit=1000"))
        .bearer_auth(&auditor)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let records = records.as_array().unwrap();
    let count = |action: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome && r["user"] == "dr rad")
            .count()
    };
    assert!(count("viewer.page", "200") >= 2, "page views audited");
    assert!(count("viewer.file", "200") >= 6, "image fetches audited");
    assert!(count("viewer.session_open", "201") >= 2, "sessions audited");
    assert!(count("viewer.session_end", "204") >= 1, "signing out audited");
}
