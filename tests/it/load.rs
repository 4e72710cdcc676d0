//! `catalogue load` against a spawned app.

use catalogue::{
    load::LoadConfig,
    load::{self, Summary},
};

use crate::helpers::{self, TestApp};

/// `catalogue load` against `app` with `flags` (split at whitespace).
fn load_config(app: &TestApp, flags: &str) -> LoadConfig {
    let flags: Vec<&str> = flags.split_whitespace().collect();
    helpers::load_config(&format!("http://{}", app.grpc_addr), &flags)
}

/// Waits until the server has finished recording every call the client
/// made (a cancelled stream ends on the server a moment after the client
/// moved on), then returns the server's count for `method`.
async fn server_handled(app: &TestApp, method: &str, expected: u64) -> f64 {
    let mut handled = 0.0;
    for _ in 0..500 {
        let scrape = app.scrape().await;
        handled = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "grpc_server_handled_total"
                    && s.labels.get("grpc_method") == Some(method)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum();
        if handled >= expected as f64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    handled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_reaches_its_rate_and_agrees_with_the_servers_counts() {
    let app = TestApp::builder().spawn().await;
    let config = load_config(&app, "--rps 100 --duration 2s --mix get=8,list=1,search=1");

    let summary = load::run(&config).await.expect("load runs");

    let sent: u64 = summary
        .calls
        .values()
        .flat_map(|codes| codes.values())
        .sum();
    // 200 calls are scheduled over the 2 s window.
    assert!((190..=201).contains(&sent), "{sent} calls sent");
    assert_eq!(summary.skipped, 0);
    // Discovery reads one ListProducts page before the run.
    for (method, discovery) in [
        ("GetProduct", 0),
        ("ListProducts", 1),
        ("SearchProducts", 0),
    ] {
        let client = summary.total(method) + discovery;
        assert_eq!(
            server_handled(&app, method, client).await,
            client as f64,
            "{method}"
        );
    }
    assert!(
        summary.latency_ms.p50 <= summary.latency_ms.p99
            && summary.latency_ms.p99 <= summary.latency_ms.max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_runs_the_mix_it_is_given() {
    let app = TestApp::builder().spawn().await;
    let config = load_config(&app, "--concurrency 4 --duration 1s --mix search=1");

    let summary = load::run(&config).await.expect("load runs");

    assert!(summary.total("SearchProducts") > 0);
    assert_eq!(
        summary.total("GetProduct") + summary.total("ListProducts"),
        0
    );
    assert_eq!(
        summary.calls["SearchProducts"].get("OK").copied(),
        Some(summary.total("SearchProducts"))
    );
}

#[tokio::test]
async fn the_binary_prints_a_json_summary() {
    let app = TestApp::builder().spawn().await;
    let target = format!("http://{}", app.grpc_addr);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalogue"))
        .args([
            "load",
            "--target",
            &target,
            "--rps",
            "50",
            "--duration",
            "1s",
            "--json",
        ])
        .output()
        .await
        .expect("catalogue load runs");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Summary = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert!(summary.achieved_rps > 0.0);
    assert!(summary.calls.contains_key("GetProduct"));
}

#[tokio::test]
async fn an_unreachable_target_is_a_clear_error() {
    // Bound and never listening: a connection to it is refused, and no
    // server of another test can take the port while it is held (a port
    // freed again could be, and would answer UNIMPLEMENTED).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let unused = held.local_addr().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalogue"))
        .args([
            "load",
            "--target",
            &format!("http://{unused}"),
            "--duration",
            "1s",
        ])
        .output()
        .await
        .expect("catalogue load runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no replica"), "{stderr}");
}
