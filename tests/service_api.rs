//! End-to-end tests of the HTTP service: a real server on an ephemeral port, real SQLite, real
//! ingest, hit with reqwest.

mod service_common;

use pedinorm::service::roles::{Access, ROUTES, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_common::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn concrete(path: &str) -> String {
    path.replace("{id}", "999999").replace("{name}", "report.json")
}

/// The portal must name a role the route allows (other than admin/portal); any such role.
fn acting_role_for(route: &pedinorm::service::roles::RouteSpec) -> &'static str {
    [Role::Radiologist, Role::Committee, Role::Scientist, Role::Auditor]
        .into_iter()
        .find(|role| route.allows(*role))
        .map(|role| role.as_str())
        .unwrap_or("radiologist")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_table_is_enforced_for_every_route_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let tokens: Vec<(Role, String)> = Role::ALL
        .into_iter()
        .map(|role| (role, add_user(dir.path(), &format!("user-{role}"), role.as_str(), Some("C1"))))
        .collect();
    // The portal acts only for registered users.
    for role in [Role::Radiologist, Role::Committee, Role::Scientist, Role::Auditor] {
        add_user(dir.path(), "dr portal user", role.as_str(), Some("C2"));
    }
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let mut checked = 0;
    for route in ROUTES {
        let url = format!("{}{}", server.base, concrete(route.path));
        let method = reqwest::Method::from_bytes(route.method.as_bytes()).unwrap();
        // Without a token.
        let response = client.request(method.clone(), &url).json(&json!({})).send().await.unwrap();
        match route.access {
            Access::Public => {
                assert_eq!(response.status(), StatusCode::OK, "{} {}", route.method, route.path)
            }
            Access::Roles(_) => {
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{} {} without token",
                    route.method,
                    route.path
                );
                // An unknown token and a forged one.
                for token in
                    ["pn_1_bogus", "garbage", "pn_999999_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
                {
                    let response = client
                        .request(method.clone(), &url)
                        .bearer_auth(token)
                        .json(&json!({}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        response.status(),
                        StatusCode::UNAUTHORIZED,
                        "{} {} token {token}",
                        route.method,
                        route.path
                    );
                }
            }
        }
        for (role, token) in &tokens {
            let mut request = client.request(method.clone(), &url).bearer_auth(token).json(&json!({}));
            if *role == Role::Portal {
                request = request
                    .header("X-Acting-User", "dr portal user")
                    .header("X-Acting-Role", acting_role_for(route))
                    .header("X-Acting-Centre", "C2");
            }
            let status = request.send().await.unwrap().status();
            if route.allows(*role) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} should be allowed {} {} but got {status}",
                    route.method,
                    route.path
                );
                assert!(
                    status != StatusCode::INTERNAL_SERVER_ERROR,
                    "{role} {} {}: 500",
                    route.method,
                    route.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} must be refused {} {}",
                    route.method,
                    route.path
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * Role::ALL.len());

    // The portal acting for a role the route does not allow is refused, and without naming
    // the user it acts for it gets 400.
    let portal = &tokens.iter().find(|(r, _)| *r == Role::Portal).unwrap().1;
    let response = client
        .get(format!("{}/api/v1/cases", server.base))
        .bearer_auth(portal)
        .header("X-Acting-User", "x")
        .header("X-Acting-Role", "scientist")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response =
        client.get(format!("{}/api/v1/cases", server.base)).bearer_auth(portal).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // The OpenAPI document lists exactly the routes of the table.
    let document: Value =
        client.get(format!("{}/openapi.json", server.base)).send().await.unwrap().json().await.unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(documented, table, "OpenAPI document and route table differ");
    // Every protected operation declares the bearer scheme; public ones do not.
    for route in ROUTES {
        let operation = &document["paths"][route.path][route.method.to_lowercase()];
        let secured = operation.get("security").is_some();
        assert_eq!(secured, route.access != Access::Public, "{} {}", route.method, route.path);
    }

    // Every request above was audited, with the acting user for the portal.
    let api = Api::new(&server.base);
    let auditor = &tokens.iter().find(|(r, _)| *r == Role::Auditor).unwrap().1;
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = api.get(auditor, &format!("/api/v1/audit?after={after}&limit=1000")).await;
        let page = page.as_array().unwrap().clone();
        // Each read is audited too, so stop at the first short page.
        let last_page = page.len() < 1000;
        if let Some(last) = page.last() {
            after = last["seq"].as_i64().unwrap();
        }
        records.extend(page);
        if last_page {
            break;
        }
    }
    // Requests to routes that need a token one by one; public routes and requests without a
    // valid token are counted in aggregate.
    let expected_minimum = ROUTES.iter().filter(|r| r.access != Access::Public).count() * Role::ALL.len();
    assert!(records.len() >= expected_minimum, "{} audit records < {expected_minimum}", records.len());
    assert!(records.iter().any(|r| r["on_behalf_of"].as_str().unwrap().starts_with("dr portal user")));
    assert!(records.iter().any(|r| r["outcome"] == "403" && r["role"] == "auditor"));
    let (_, verify) = api.get(auditor, "/api/v1/audit/verify").await;
    assert_eq!(verify["intact"], true, "{verify}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_consent_ingest_and_case_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let radiologist = add_user(dir.path(), "dr rad", "radiologist", Some("C1"));
    let committee_1 = add_user(dir.path(), "prof one", "committee", Some("C1"));
    let committee_2 = add_user(dir.path(), "prof two", "committee", Some("C1"));
    let portal = add_user(dir.path(), "portal", "portal", None);
    add_user(dir.path(), "prof three", "committee", Some("C2"));
    let server = TestServer::start(config).await;
    let api = Api::new(&server.base);

    // Upload without consent: stored, no ingest job yet.
    let (_, files) = synthetic_study(4);
    let (status, submitted) = api
        .post_bytes(&radiologist, "/api/v1/studies?database=A", "application/zip", zip_study(&files))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let study_id = submitted["study"]["id"].as_i64().unwrap();
    assert!(submitted["job"].is_null());
    assert_eq!(submitted["study"]["files"], 4);

    // A case cannot be opened before consent for database A.
    let (status, body) = api.post(&radiologist, "/api/v1/cases", &json!({ "study_id": study_id })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["reasons"][0].as_str().unwrap().starts_with("consent_missing"), "{body}");

    // Ingest refuses to start without consent, then consent is recorded and ingest runs.
    let ingest = format!("/api/v1/studies/{study_id}/ingest");
    let (status, _) = api.post(&radiologist, &ingest, &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let consent = format!("/api/v1/studies/{study_id}/consent");
    let (status, _) = api.post(&radiologist, &consent, &consent_record(true, false, "2024-03-01")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api.post(&radiologist, &consent, &consent_record(true, true, "2024-03-01")).await;
    assert_eq!(status, StatusCode::CONFLICT, "consent is never replaced");
    let job = api.run_job(&radiologist, &ingest, &json!({}), Duration::from_secs(30)).await;
    assert_eq!(job["state"], "done", "{job}");
    let (_, study) = api.get(&radiologist, &format!("/api/v1/studies/{study_id}")).await;
    assert_eq!(study["status"], "admitted", "{study}");
    assert_eq!(study["metadata"]["linked"], true, "{study}");
    assert!((study["metadata"]["age_years"].as_f64().unwrap() - 8.0).abs() < 1.0);
    assert!(!dir.path().join("incoming").join(study_id.to_string()).exists(), "identified originals removed");

    // Case workflow: submit → review → approval → A2 → confirmations from two centres → A1.
    let (status, case) = api
        .post(
            &radiologist,
            "/api/v1/cases",
            &json!({ "study_id": study_id, "orpha_codes": ["ORPHA:99"], "clinical": { "seizures": true } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let case_id = case["id"].as_i64().unwrap();
    let case_path = |action: &str| format!("/api/v1/cases/{case_id}{action}");
    let request = api.client.patch(format!("{}{}", api.base, case_path(""))).bearer_auth(&radiologist);
    let (status, _) = api.send(request.json(&json!({ "orpha_codes": ["ORPHA:abc"] }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.post(&committee_1, &case_path("/confirmations"), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "no confirmation before A2");
    assert_eq!(api.post(&committee_1, &case_path("/review"), &json!({})).await.0, StatusCode::OK);
    let (_, case) = api.post(&committee_1, &case_path("/approvals"), &json!({"comment": "ok"})).await;
    assert_eq!(case["status"], "A2", "{case}");
    let (_, case) = api.post(&committee_1, &case_path("/confirmations"), &json!({})).await;
    assert_eq!(case["status"], "A2");
    let (_, case) = api.post(&committee_2, &case_path("/confirmations"), &json!({})).await;
    assert_eq!(case["status"], "A2", "same centre twice is not enough: {case}");
    // The portal acts for a committee member of another centre: recorded under that name.
    let request = api
        .client
        .post(format!("{}{}", api.base, case_path("/confirmations")))
        .bearer_auth(&portal)
        .header("X-Acting-User", "prof three")
        .header("X-Acting-Role", "committee")
        .header("X-Acting-Centre", "C2");
    let (_, case) = api.send(request.json(&json!({}))).await;
    assert_eq!(case["status"], "A1", "{case}");
    assert_eq!(case["confirming_centres"], json!(["C1", "C2"]));
    assert!(case["events"].as_array().unwrap().iter().any(|e| e["actor"] == "prof three"));

    // Deviation maps need the normative database: a clear 503 when it is missing.
    let (status, body) = api.post(&radiologist, &case_path("/deviation"), &json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.to_string().contains("normative database"));

    // Consent withdrawal is recorded and excludes the study from new deviation maps.
    let (_, consent) =
        api.post(&radiologist, &format!("{consent}/withdraw"), &json!({"reason": "family request"})).await;
    assert_eq!(consent["withdrawn"], true);
    let (status, _) = api.post(&radiologist, &case_path("/deviation"), &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Withdrawal of the case is a state with a reason.
    let (_, case) = api.post(&radiologist, &case_path("/withdraw"), &json!({"reason": "duplicate"})).await;
    assert_eq!(case["status"], "withdrawn");
    let (_, cases) = api.get(&radiologist, "/api/v1/cases").await;
    assert_eq!(cases.as_array().unwrap().len(), 1, "nothing is deleted");

    server.stop().await;
    // No identity anywhere in the service's files (state, archive, job outputs).
    assert_eq!(files_containing(dir.path(), "Rossiniano"), Vec::<String>::new());
    assert_eq!(files_containing(dir.path(), &codice_fiscale()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_named_4xx_never_500() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let scientist = add_user(dir.path(), "sci", "scientist", Some("C1"));
    let server = TestServer::start(config).await;
    let api = Api::new(&server.base);
    let upload = |body: Vec<u8>, content_type: &'static str, query: &'static str| {
        let api = api.clone();
        let scientist = scientist.clone();
        async move { api.post_bytes(&scientist, &format!("/api/v1/studies{query}"), content_type, body).await }
    };
    // Malformed DICOM.
    let (status, body) =
        upload(b"this is not a DICOM file at all".to_vec(), "application/dicom", "?database=B").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["reasons"][0].as_str().unwrap().contains("not a readable DICOM file"), "{body}");
    // Truncated DICOM.
    let (_, files) = synthetic_study(1);
    let (status, _) = upload(files[0][..300].to_vec(), "application/dicom", "?database=B").await;
    assert!(status.is_client_error(), "{status}");
    // Zip-slip.
    let evil = zip(&[("ok/1.dcm", &files[0]), ("../../evil.dcm", &files[0])]);
    let (status, body) = upload(evil, "application/zip", "?database=B").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("traversal"));
    assert!(!dir.path().parent().unwrap().join("evil.dcm").exists());
    // Corrupt zip.
    let (status, _) = upload(b"PK\x03\x04garbage".to_vec(), "application/zip", "?database=B").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Too large (limit 4 MiB in the test configuration).
    let (status, _) = upload(vec![0u8; 5 * 1024 * 1024], "application/zip", "?database=B").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Multipart with a traversal file name.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(files[0].clone()).file_name("../../x.dcm"));
    let request = api
        .client
        .post(format!("{}/api/v1/studies?database=B", api.base))
        .bearer_auth(&scientist)
        .multipart(form);
    assert_eq!(api.send(request).await.0, StatusCode::BAD_REQUEST);
    // Bad database, bad content type, bad query, bad JSON, bad ids.
    assert_eq!(upload(files[0].clone(), "application/dicom", "?database=C").await.0, 400);
    assert_eq!(upload(files[0].clone(), "text/plain", "?database=B").await.0, 400);
    assert_eq!(upload(files[0].clone(), "application/dicom", "?allow_unlinked=maybe").await.0, 400);
    assert_eq!(api.get(&scientist, "/api/v1/jobs?limit=many").await.0, StatusCode::BAD_REQUEST);
    let (status, _) =
        api.post_bytes(&scientist, "/api/v1/normdb/builds", "application/json", b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for path in ["/api/v1/studies/abc", "/api/v1/studies/-1", "/api/v1/jobs/99999999999999999999"] {
        assert_eq!(api.get(&scientist, path).await.0, StatusCode::BAD_REQUEST, "{path}");
    }
    // A good multipart upload with consent: ingest runs and the study is admitted to B.
    let (_, files) = synthetic_study(3);
    let (_, job) = api.upload_consented(&scientist, "B", zip_study(&files)).await;
    assert_eq!(job["result"]["admitted"], true, "{job}");
    // The same study offered to database A by someone without consent for A is refused by name.
    let (_, submitted) = upload(zip_study(&files), "application/zip", "?database=A").await;
    let study_id = submitted["study"]["id"].as_i64().unwrap();
    let (status, _) = api
        .post(
            &scientist,
            &format!("/api/v1/studies/{study_id}/consent"),
            &json!({ "database_a": false, "database_b": true, "research_use": false, "date": "2024-01-02" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) =
        api.post(&scientist, &format!("/api/v1/studies/{study_id}/ingest"), &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.to_string().contains("consent_scope"));
    // Job outputs of the ingest job: listed and downloadable; traversal names refused.
    let job_id = job["id"].as_i64().unwrap();
    let (_, outputs) = api.get(&scientist, &format!("/api/v1/jobs/{job_id}/outputs")).await;
    assert_eq!(outputs[0]["name"], "result.json");
    let (status, _) = api.download(&scientist, &format!("/api/v1/jobs/{job_id}/outputs/result.json")).await;
    assert_eq!(status, StatusCode::OK);
    for name in ["..%2F..%2Fservice.sqlite", ".hidden", "a%5Cb"] {
        let (status, _) = api.get(&scientist, &format!("/api/v1/jobs/{job_id}/outputs/{name}")).await;
        assert!(status == 400 || status == 404, "{name}: {status}");
    }
    // Metrics are Prometheus text and count requests.
    let admin = add_user(dir.path(), "adm", "admin", None);
    let (_, metrics) = api.download(&admin, "/metrics").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("pedinorm_http_requests_total{action=\"study.upload\",status=\"422\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("pedinorm_jobs{state=\"done\"}"));
    server.stop().await;
}
