//! Bad input on the admin port: a log filter too big, silencing or
//! unparsable; a query parameter no route takes; a request another site's
//! page made a browser send.

use reqwest::{Client, StatusCode};

use crate::helpers::{Logs, TestApp};

async fn put_log_level(app: &TestApp, path_and_query: &str, body: &str) -> (StatusCode, String) {
    let response = Client::new()
        .put(app.admin_url(path_and_query))
        .body(body.to_owned())
        .send()
        .await
        .expect("admin answers");
    (response.status(), response.text().await.unwrap())
}

async fn current_filter(app: &TestApp) -> String {
    reqwest::get(app.admin_url("/log-level"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_filter_that_silences_the_service_is_refused_unless_it_is_off() {
    let logs = Logs::default();
    let app = TestApp::builder().logs(&logs).spawn().await;

    for body in [
        "[[[",
        "[grpc.server]=info",
        "catalogue=off,info",
        "h2=trace",
    ] {
        let (status, message) = put_log_level(&app, "/log-level", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {message}");
    }
    let (_, message) = put_log_level(&app, "/log-level", "h2=trace").await;
    assert!(
        message.contains("`off`"),
        "says how to silence on purpose: {message}"
    );
    assert_eq!(current_filter(&app).await, "info\n", "nothing changed");

    let (status, message) = put_log_level(&app, "/log-level", "off").await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert!(
        logs.text().contains("log filter changed"),
        "the change itself is written before the silence: {}",
        logs.text()
    );
}

#[tokio::test]
async fn a_filter_over_1_kib_is_refused() {
    let app = TestApp::builder().spawn().await;
    let long = std::iter::repeat_n("catalogue::store=debug", 60)
        .collect::<Vec<_>>()
        .join(",");
    assert!(long.len() > 1024);

    let (status, message) = put_log_level(&app, "/log-level", &long).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
    assert!(message.contains("1024"), "{message}");
    assert_eq!(current_filter(&app).await, "info\n");
}

#[tokio::test]
async fn field_filters_match_literally_not_as_regular_expressions() {
    let app = TestApp::builder().spawn().await;
    // As a regular expression, `(a+)+$` is the textbook catastrophe; as a
    // literal value it is a string like any other.
    let body = "info,[call{path=(a+)+$}]=debug";

    let (status, message) = put_log_level(&app, "/log-level", body).await;

    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(current_filter(&app).await, format!("{body}\n"));
}

#[tokio::test]
async fn an_unknown_query_parameter_on_debug_routes_is_a_400_naming_it() {
    let app = TestApp::builder().spawn().await;

    for path in [
        "/debug/pprof/profile?secs=1",
        "/debug/pprof/heap?seconds=1",
        "/debug/pprof/tasks?verbose=1",
        "/debug/console?wake=1",
    ] {
        let response = reqwest::get(app.admin_url(path)).await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        let parameter = path.split(['?', '=']).nth(1).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains(parameter), "{path} names {parameter}: {body}");
    }
}

#[tokio::test]
async fn cross_site_requests_are_refused_with_or_without_a_token() {
    let open = TestApp::builder().args(&["--enable-faults"]).spawn().await;
    let guarded = TestApp::builder()
        .args(&["--admin-token", "secret"])
        .spawn()
        .await;
    let cross_site: [(&str, &str); 3] = [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
    ];

    for (app, token) in [(&open, None), (&guarded, Some("secret"))] {
        for (method, path) in [
            ("GET", "/debug/pprof/tasks"),
            ("PUT", "/log-level"),
            ("DELETE", "/faults"),
        ] {
            for (name, value) in cross_site {
                let mut request = Client::new()
                    .request(method.parse().unwrap(), app.admin_url(path))
                    .header(name, value)
                    .body("info");
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                let body = response.text().await.unwrap();
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} {name}: {value}: {body}"
                );
                assert!(body.contains("cross-site"), "says why: {body}");
            }
        }
    }
    // The same request from the admin port's own origin, or from no page
    // at all (curl), is served.
    let same_origin = format!("http://{}", open.admin_addr);
    let response = Client::new()
        .get(open.admin_url("/debug/pprof/tasks"))
        .header("origin", same_origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), StatusCode::FORBIDDEN);
    let scrape = Client::new()
        .get(open.admin_url("/metrics"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::OK, "open routes stay open");
}
