//! The admin surface as an attacker reaches it: every rule of the admin
//! port (token, non-loopback refusal, faults off by default, the leak
//! fault's cap, the Host check, the connection cap and the header timeout)
//! refuses what it should and lets through what it should.

use std::{net::SocketAddr, time::Duration};

use catalogue::app::App;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::helpers::{TestApp, seed_products, test_config, value};

/// Longest any test here waits for the server to act (never reached when
/// the rule holds; it turns a missing rule into a failure, not a hang).
const PATIENCE: Duration = Duration::from_secs(20);

/// Sends `method path` over a fresh connection with the given `Host` and
/// bearer token; returns the status code and the body.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("admin accepts");
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("answered")
        .expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `send` with the Host a local client sends.
async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let host = app.admin_addr.to_string();
    send(app.admin_addr, method, path, &host, token).await
}

#[tokio::test]
async fn with_a_token_every_route_but_health_and_metrics_needs_it() {
    let app = TestApp::builder()
        .args(&["--admin-token", "secret", "--enable-faults"])
        .spawn()
        .await;

    for (method, path) in [
        ("GET", "/faults"),
        ("PUT", "/faults"),
        ("DELETE", "/faults"),
        ("GET", "/debug/pprof/tasks"),
        ("GET", "/debug/pprof/"),
        ("GET", "/a-route-added-later"),
    ] {
        let (status, _) = call(&app, method, path, None).await;
        assert_eq!(status, 401, "{method} {path} without a token");
        let (status, _) = call(&app, method, path, Some("secre")).await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(call(&app, "GET", path, None).await.0, 200, "{path} is open");
    }
    assert_eq!(call(&app, "GET", "/faults", Some("secret")).await.0, 200);
    assert_eq!(call(&app, "DELETE", "/faults", Some("secret")).await.0, 200);
    assert_eq!(
        call(&app, "GET", "/a-route-added-later", Some("secret"))
            .await
            .0,
        404
    );
}

/// Builds (does not serve) an app whose admin port listens on every
/// interface, with `extra` flags; returns why it refused, if it did.
async fn build_on_every_interface(extra: &[&str]) -> Option<String> {
    let mut config = test_config("memory", extra);
    config.admin.admin_addr = "0.0.0.0:0".parse().unwrap();
    let telemetry = crate::helpers::telemetry(&config, BoxMakeWriter::new(std::io::sink)).unwrap();
    App::build(config, &telemetry)
        .await
        .err()
        .map(|error| error.to_string())
}

#[tokio::test]
async fn a_non_loopback_admin_addr_needs_a_token_or_admin_insecure() {
    let refused = build_on_every_interface(&[])
        .await
        .expect("refused without a token");
    for flag in ["--admin-addr", "--admin-token", "--admin-insecure"] {
        assert!(refused.contains(flag), "names {flag}: {refused}");
    }

    assert_eq!(build_on_every_interface(&["--admin-insecure"]).await, None);
    assert_eq!(
        build_on_every_interface(&["--admin-token", "secret"]).await,
        None
    );
}

#[tokio::test]
async fn fault_injection_is_off_without_enable_faults() {
    let app = TestApp::builder().spawn().await;

    for method in ["GET", "PUT", "DELETE"] {
        let (status, body) = call(&app, method, "/faults", None).await;
        assert_eq!(status, 403, "{method} /faults");
        assert!(body.contains("--enable-faults"), "{body}");
    }
}

#[tokio::test]
async fn the_leak_fault_holds_at_most_its_cap() {
    const MIB: u64 = 1024 * 1024;
    let cap = (3 * MIB).to_string();
    let mut app = TestApp::builder()
        .args(&[
            "--enable-faults",
            "--fault-leak-max-bytes",
            &cap,
            "--fault-leak-bytes-per-call",
            &MIB.to_string(),
        ])
        .spawn()
        .await;

    for _ in 0..5 {
        app.get_product(&seed_products()[0].id).await.unwrap();
    }

    let (status, body) = call(&app, "GET", "/faults", None).await;
    assert_eq!(status, 200, "{body}");
    let faults: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(faults["leak_max_bytes"], 3 * MIB, "{faults}");
    assert_eq!(faults["leaked_bytes"], 3 * MIB, "{faults}");
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_fault_leaked_bytes", &[]),
        Some((3 * MIB) as f64)
    );
}

#[tokio::test]
async fn without_a_token_a_request_for_a_foreign_host_is_refused() {
    let app = TestApp::builder().spawn().await;
    let port = app.admin_addr.port();

    for host in ["rebound.example", "rebound.example:6060", "127.0.0.2"] {
        for path in ["/metrics", "/debug/pprof/tasks"] {
            let (status, body) = send(app.admin_addr, "GET", path, host, None).await;
            assert_eq!(status, 403, "Host {host} {path}");
            assert!(body.contains("--admin-token"), "{body}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        "localhost".into(),
        format!("127.0.0.1:{port}"),
    ] {
        let (status, _) = send(app.admin_addr, "GET", "/metrics", &host, None).await;
        assert_eq!(status, 200, "Host {host}");
    }

    // A token replaces the Host check: names are fine when it is presented.
    let guarded = TestApp::builder()
        .args(&["--admin-token", "secret"])
        .spawn()
        .await;
    let (addr, host) = (guarded.admin_addr, "catalogue.internal:6060");
    assert_eq!(send(addr, "GET", "/metrics", host, None).await.0, 200);
    assert_eq!(send(addr, "GET", "/log-level", host, None).await.0, 401);
    assert_eq!(
        send(addr, "GET", "/log-level", host, Some("secret"))
            .await
            .0,
        200
    );
}

/// Reads from `stream` until the server closes it; panics if it does not
/// within `PATIENCE`. Returns what the server sent.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
    match read {
        Ok(Ok(_)) => received,
        // A reset is a close too.
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => received,
        Ok(Err(error)) => panic!("read failed: {error}"),
        Err(_) => panic!("the server kept the connection open"),
    }
}

#[tokio::test]
async fn admin_connections_beyond_the_cap_are_closed_and_counted() {
    let app = TestApp::builder()
        .args(&[
            "--admin-max-connections",
            "2",
            "--admin-header-timeout",
            "1h",
        ])
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(app.admin_addr).await.unwrap());
    }

    let mut third = TcpStream::connect(app.admin_addr).await.unwrap();
    let received = closed_by_server(&mut third).await;

    assert!(received.is_empty(), "closed unanswered: {received:?}");
    drop(held);
    // The held connections' slots come back once the server sees them close.
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(app.admin_addr).await.unwrap();
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            app.admin_addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = String::from_utf8(closed_by_server(&mut stream).await).unwrap();
        if response.starts_with("HTTP/1.1 200") {
            // At least the third; retries made before the slots came back
            // were refused too.
            let refused = response
                .lines()
                .find_map(|line| {
                    line.strip_prefix(
                        "catalogue_admin_connections_refused_total{reason=\"max_connections\"} ",
                    )
                })
                .and_then(|count| count.parse::<f64>().ok());
            assert!(refused >= Some(1.0), "counted: {refused:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the held connections' slots never came back");
}

#[tokio::test]
async fn an_admin_connection_that_sends_no_whole_head_in_time_is_closed() {
    let app = TestApp::builder()
        .args(&["--admin-header-timeout", "200ms"])
        .spawn()
        .await;

    let mut silent = TcpStream::connect(app.admin_addr).await.unwrap();
    let mut slow = TcpStream::connect(app.admin_addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();

    closed_by_server(&mut silent).await;
    let answered = closed_by_server(&mut slow).await;
    assert!(
        !answered.starts_with(b"HTTP/1.1 200"),
        "the incomplete request was not served"
    );
}
