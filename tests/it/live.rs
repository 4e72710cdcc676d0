//! `/debug/live`: the page is open and embedded, its feed is guarded, sends
//! the metric table and then the exposition's samples, marks changes made
//! while it is read, and serves at most four viewers. (The page itself is
//! tested in headless Chromium by `scripts/live-view.sh`.)

use std::time::Duration;

use catalogue::{admin::live::MAX_VIEWERS, metrics::names};

use crate::helpers::{TestApp, repo_path};

const TOKEN: &str = "secret";

/// One viewer of the feed: its response, read an event at a time.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    /// `GET /debug/live/feed` with the token: the response, whatever it is.
    async fn request(app: &TestApp, token: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(app.admin_url("/debug/live/feed"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the admin port answers")
    }

    async fn open(app: &TestApp) -> Self {
        let response = Self::request(app, Some(TOKEN)).await;
        assert_eq!(response.status(), 200, "the feed with the token");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event that has data: its name and its data.
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(line) = line.strip_prefix("data:") {
                        data.push(line.strip_prefix(' ').unwrap_or(line));
                    }
                }
                if !data.is_empty() {
                    return (event, data.join("\n"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the feed reads")
                .expect("the feed does not end");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next event named `name`, skipping others.
    async fn next_named(&mut self, name: &str) -> String {
        loop {
            let (event, data) = self.next().await;
            if event == name {
                return data;
            }
        }
    }
}

async fn app() -> TestApp {
    TestApp::builder()
        .args(&["--admin-token", TOKEN, "--enable-faults"])
        .spawn()
        .await
}

#[tokio::test]
async fn the_page_is_open_and_its_feed_needs_the_token() {
    let app = app().await;
    let page = reqwest::get(app.admin_url("/debug/live"))
        .await
        .expect("the admin port answers");
    assert_eq!(page.status(), 200, "the page is open: it holds no data");
    let html = page.text().await.unwrap();
    assert!(html.contains("uPlot"), "uPlot is embedded");
    assert!(html.contains("/debug/live/feed"), "the script is embedded");
    assert!(!html.contains("/*live.js*/"), "every placeholder is filled");

    assert_eq!(Feed::request(&app, None).await.status(), 401);
    assert_eq!(Feed::request(&app, Some("wrong")).await.status(), 401);
    let query = reqwest::Client::new()
        .get(app.admin_url("/debug/live/feed?token=secret"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 400, "a query parameter is refused by name");
}

#[tokio::test]
async fn the_feed_sends_the_table_then_samples_of_the_exposition() {
    let app = app().await;
    let mut feed = Feed::open(&app).await;

    let hello: serde_json::Value = serde_json::from_str(&feed.next_named("hello").await).unwrap();
    let families: Vec<&str> = hello["families"]
        .as_array()
        .expect("families")
        .iter()
        .map(|family| family["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        families.len(),
        names::ALL.len(),
        "every family: {families:?}"
    );
    assert!(families.contains(&"grpc_server_handled_total"));

    let sample = feed.next_named("sample").await;
    let (head, lines) = sample.split_once('\n').expect("a head, then the samples");
    let head: serde_json::Value = serde_json::from_str(head).unwrap();
    assert!(head["t_ms"].as_u64().is_some(), "{head}");
    assert!(
        head["allocated_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "jemalloc's count: {head}"
    );
    assert!(
        !lines.lines().any(|line| line.starts_with('#')),
        "no comments"
    );
    for family in [
        "catalogue_build_info",
        "tokio_alive_tasks",
        "process_cpu_seconds_total",
    ] {
        assert!(
            lines.lines().any(|line| line.starts_with(family)),
            "{family} in {lines}"
        );
    }
}

#[tokio::test]
async fn a_change_made_while_a_page_watches_is_marked_once_it_succeeded() {
    let app = app().await;
    let mut feed = Feed::open(&app).await;
    feed.next_named("hello").await;

    let put = |body: &'static str| {
        reqwest::Client::new()
            .put(app.admin_url("/faults"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };
    let refused = put(r#"{"latency_ms": "soon"}"#).await.unwrap();
    assert_eq!(refused.status(), 400, "a refused change");
    assert_eq!(put(r#"{"latency_ms":1}"#).await.unwrap().status(), 200);

    let marker: serde_json::Value = serde_json::from_str(&feed.next_named("marker").await).unwrap();
    assert_eq!(
        marker["label"], r#"PUT /faults {"latency_ms":1}"#,
        "the first marker is the change that succeeded: {marker}"
    );
    assert!(marker["end_ms"].as_u64() >= marker["start_ms"].as_u64());
}

#[tokio::test]
async fn at_most_four_viewers_read_the_feed_and_a_seat_comes_back() {
    let app = app().await;
    let mut viewers = Vec::new();
    for _ in 0..MAX_VIEWERS {
        viewers.push(Feed::open(&app).await);
    }
    let refused = Feed::request(&app, Some(TOKEN)).await;
    assert_eq!(refused.status(), 503);
    assert!(
        refused.text().await.unwrap().contains("viewers already"),
        "the refusal says why"
    );

    // A viewer goes; its seat is given back when the next sample finds it
    // gone.
    drop(viewers.pop());
    let mut answers = Vec::new();
    for _ in 0..50 {
        let response = Feed::request(&app, Some(TOKEN)).await;
        answers.push(response.status().as_u16());
        if response.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no seat came back after a viewer left: {answers:?}");
}

/// The page draws families by name: each must be one the table defines, so
/// the page and the dashboards never disagree.
#[test]
fn every_family_the_page_reads_is_in_the_table() {
    let script = std::fs::read_to_string(repo_path("src/admin/live/live.js")).unwrap();
    let mut named = 0;
    // Each `"name"`: a quote, a snake_case word, a quote.
    let words = script.match_indices('"').filter_map(|(at, _)| {
        let rest = &script[at + 1..];
        let end =
            rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))?;
        rest[end..].starts_with('"').then(|| &rest[..end])
    });
    for quoted in words {
        let family = ["grpc_", "tokio_", "catalogue_", "process_", "rpc_"]
            .iter()
            .any(|prefix| quoted.starts_with(prefix))
            .then(|| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| quoted.strip_suffix(suffix))
                    .unwrap_or(quoted)
            });
        let Some(family) = family else { continue };
        let label = names::ALL
            .iter()
            .any(|definition| definition.labels.contains(&family));
        if label {
            continue;
        }
        named += 1;
        assert!(
            names::ALL
                .iter()
                .any(|definition| definition.name == family),
            "live.js reads {quoted}, which metrics::names does not define"
        );
    }
    assert!(
        named > 30,
        "the script names the families it reads: {named}"
    );
}

/// A page left open does not hold up a drain: its feed ends, cleanly, when
/// shutdown begins (rather than being cut off when the grace runs out).
#[tokio::test]
async fn the_feed_ends_cleanly_when_the_service_begins_to_drain() {
    let mut app = app().await;
    let mut feed = Feed::open(&app).await;
    feed.next_named("hello").await;
    app.begin_shutdown();
    // A hang guard, not a speed limit: samples keep coming once a second
    // for as long as the feed is open.
    let end = async {
        loop {
            match feed.response.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), end)
        .await
        .expect("the feed ends once the drain begins")
        .expect("the feed ended cleanly, not cut off");
    app.stopped().await.expect("the app stops");
}
