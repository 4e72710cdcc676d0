//! The log filter changed at run time on the admin port.

use reqwest::StatusCode;

use crate::helpers::{Backend, Logs, TestApp};

const TOKEN: &str = "s3cret";

async fn app_logging_to(logs: &Logs) -> TestApp {
    TestApp::builder()
        .backend(Backend::Sqlite)
        .args(&["--admin-token", TOKEN])
        .logs(logs)
        .spawn()
        .await
}

async fn put_log_level(app: &TestApp, body: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .put(app.admin_url("/log-level"))
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin answers");
    (response.status(), response.text().await.unwrap())
}

async fn log_level(app: &TestApp) -> String {
    reqwest::Client::new()
        .get(app.admin_url("/log-level"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("admin answers")
        .text()
        .await
        .unwrap()
}

/// The admin server logs each request at DEBUG.
async fn health_checks_logged(app: &TestApp, logs: &Logs) -> usize {
    reqwest::get(app.admin_url("/healthz"))
        .await
        .expect("admin answers");
    logs.text()
        .lines()
        .filter(|line| line.contains("admin request") && line.contains("/healthz"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_changes_without_a_restart() {
    let logs = Logs::default();
    let app = app_logging_to(&logs).await;
    assert_eq!(
        health_checks_logged(&app, &logs).await,
        0,
        "at info, no request is logged"
    );
    assert_eq!(log_level(&app).await, "info\n");

    let directives = "info,catalogue::admin=debug";
    let (status, body) = put_log_level(&app, directives, Some(TOKEN)).await;
    assert_eq!((status, body), (StatusCode::OK, format!("{directives}\n")));

    assert_eq!(
        health_checks_logged(&app, &logs).await,
        1,
        "{}",
        logs.text()
    );
    assert_eq!(log_level(&app).await, format!("{directives}\n"));
    let change = logs
        .text()
        .lines()
        .find(|line| line.contains("log filter changed"))
        .map(str::to_owned)
        .expect("the change is logged");
    assert!(
        change.contains("WARN")
            && change.contains("from=info")
            && change.contains(&format!("to={directives}")),
        "{change}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_refused_and_changes_nothing() {
    let logs = Logs::default();
    let app = app_logging_to(&logs).await;

    for (body, names) in [("catalogue=loud", "catalogue=loud"), ("  ", "empty")] {
        let (status, message) = put_log_level(&app, body, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!(message.contains(names), "{body:?}: {message}");
    }
    assert_eq!(log_level(&app).await, "info\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_filter_needs_the_admin_token() {
    let logs = Logs::default();
    let app = app_logging_to(&logs).await;

    for token in [None, Some("wrong")] {
        let (status, _) = put_log_level(&app, "debug", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let status = reqwest::get(app.admin_url("/log-level"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reading it too");
    assert_eq!(log_level(&app).await, "info\n");
}
