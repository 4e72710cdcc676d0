//! Connection hygiene on the gRPC port: a connection that does not start
//! HTTP/2 in time is closed, one client IP holds a bounded number of
//! connections, and the open-files limit is raised at start (and
//! `--max-connections` fitted to it).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{TestApp, value};

/// Longest a test waits for the server to close a connection (reached only
/// when the rule is missing: it turns a hang into a failure).
const PATIENCE: Duration = Duration::from_secs(20);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// Whether the server closes `stream` (EOF or reset) within `PATIENCE`;
/// whatever it sent first (its SETTINGS, a GOAWAY) is read and dropped.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut sink)).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => error.kind() == std::io::ErrorKind::ConnectionReset,
        Err(_) => false,
    }
}

fn refused(app_scrape: &prometheus_parse::Scrape, reason: &str) -> Option<f64> {
    value(
        app_scrape,
        "catalogue_connections_refused_total",
        &[("reason", reason)],
    )
}

#[tokio::test]
async fn a_connection_that_does_not_start_http2_in_time_is_closed() {
    let mut app = TestApp::builder()
        .args(&["--handshake-timeout", "300ms"])
        .spawn()
        .await;

    // Silent; the preface and SETTINGS but no request; a trickle of the
    // preface, a byte at a time.
    let mut silent = TcpStream::connect(app.grpc_addr).await.unwrap();
    let mut no_request = TcpStream::connect(app.grpc_addr).await.unwrap();
    no_request.write_all(PREFACE).await.unwrap();
    no_request.write_all(SETTINGS).await.unwrap();
    let mut trickle = TcpStream::connect(app.grpc_addr).await.unwrap();
    let trickling = async {
        for byte in PREFACE {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_by_server(&mut trickle).await
    };

    let (silent, no_request, trickle) = tokio::join!(
        closed_by_server(&mut silent),
        closed_by_server(&mut no_request),
        trickling
    );

    assert!(silent, "a silent connection is closed");
    assert!(no_request, "a connection that never asks is closed");
    assert!(trickle, "a trickling connection is closed");
    // A client that starts at once (the test's own channel, reconnected
    // if it sat idle past the timeout) is served.
    app.get_product(&crate::helpers::seed_products()[0].id)
        .await
        .expect("served");
    assert!(refused(&app.scrape().await, "handshake_timeout") >= Some(3.0));
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("any 127/8 address is loopback on Linux");
    socket.connect(addr).await.unwrap()
}

/// Whether a connection is still open: the server answered the preface
/// with its SETTINGS and has not closed it.
async fn served(stream: &mut TcpStream) -> bool {
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(SETTINGS).await.unwrap();
    let mut first = [0u8; 9];
    matches!(
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut first)).await,
        Ok(Ok(_)) if first[3] == 0x4
    )
}

#[tokio::test]
async fn one_client_ip_holds_at_most_max_connections_per_peer() {
    let app: TestApp = TestApp::builder()
        .args(&[
            "--max-connections-per-peer",
            "2",
            "--handshake-timeout",
            "1h",
        ])
        .spawn()
        .await;
    // The test's own channel is 127.0.0.1's first connection.
    let mut second = connect_from("127.0.0.1", app.grpc_addr).await;
    assert!(served(&mut second).await, "the second is served");

    let mut third = connect_from("127.0.0.1", app.grpc_addr).await;
    let mut other_peer = connect_from("127.0.0.2", app.grpc_addr).await;

    assert!(closed_by_server(&mut third).await, "the third is closed");
    assert!(served(&mut other_peer).await, "another IP is served");
    assert_eq!(
        refused(&app.scrape().await, "max_connections_per_peer"),
        Some(1.0)
    );
    drop(second);
}

const BINARY: &str = env!("CARGO_BIN_EXE_catalogue");

/// Starts the binary under `ulimit` arguments `limit` with `extra` flags;
/// returns its soft open-files limit once serving and its log up to then.
fn serve_under_ulimit(limit: &str, extra: &str) -> (u64, String) {
    let script = format!(
        "ulimit {limit} && exec {BINARY} serve --database-url memory --seed-products 10 \
         --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 \
         --drain-delay 0s {extra}"
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("CATALOGUE_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut log = String::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains("catalogue is serving") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or_else(|| panic!("no open-files limit in {limits}"));
    (soft, log)
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let hard: u64 = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .expect("a finite hard limit");
    assert!(
        hard > 1,
        "the machine's hard limit ({hard}) leaves nothing to raise"
    );

    let (soft, log) = serve_under_ulimit(&format!("-Sn {}", hard / 2), "");

    assert_eq!(soft, hard, "{log}");
    assert!(log.contains("raised the soft limit on open files"), "{log}");
}

#[test]
fn max_connections_beyond_the_open_files_limit_is_lowered_with_a_warning() {
    let (soft, log) = serve_under_ulimit("-n 1024", "--max-connections 4096");

    assert_eq!(soft, 1024);
    let warning = log
        .lines()
        .find(|line| line.contains("--max-connections is more than the open-files limit allows"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(warning.contains("lowered_to=768"), "{warning}");
}

#[tokio::test]
async fn a_connection_older_than_max_connection_age_gets_a_goaway() {
    let app = TestApp::builder()
        .args(&[
            "--max-connection-age",
            "300ms",
            "--max-connection-age-grace",
            "1s",
            "--request-timeout",
            "1h",
        ])
        .spawn()
        .await;
    let mut stream = TcpStream::connect(app.grpc_addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(SETTINGS).await.unwrap();
    // A call whose request never ends: only the grace can end it.
    stream.write_all(&never_ending_call()).await.unwrap();

    // Frames until the server's GOAWAY, or the end of the connection.
    let goaway = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return None;
            }
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.ok()?;
            if header[3] == 0x4 && header[4] == 0 {
                stream
                    .write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])
                    .await
                    .ok()?;
            }
            if header[3] == 0x6 && header[4] == 0 {
                let mut ack = vec![0, 0, 8, 0x6, 0x1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                stream.write_all(&ack).await.ok()?;
            }
            if header[3] == 0x7 {
                return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
        }
    })
    .await
    .expect("a GOAWAY or a close within the patience");

    assert_eq!(goaway, Some(0), "GOAWAY NO_ERROR");
    assert!(
        closed_by_server(&mut stream).await,
        "closed once the grace is over, its call unfinished"
    );
}

/// A HEADERS frame (stream 1, END_HEADERS, no END_STREAM) of a GetProduct
/// call, its header block in HPACK literals without indexing.
fn never_ending_call() -> Vec<u8> {
    call_headers("/catalogue.v1.CatalogueService/GetProduct")
}

/// A whole health check: its HEADERS (stream 1) and an empty request
/// message that ends the stream.
fn health_check() -> Vec<u8> {
    let mut frames = call_headers("/grpc.health.v1.Health/Check");
    frames.extend_from_slice(&[0, 0, 5, 0x0, 0x1, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    frames
}

/// A HEADERS frame (stream 1, END_HEADERS) of a call of `path`.
fn call_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "catalogue"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut frame = vec![0, 0, block.len() as u8, 0x1, 0x4, 0, 0, 0, 1];
    frame.extend(block);
    frame
}

#[tokio::test]
async fn a_connection_with_no_call_open_for_the_idle_timeout_is_closed() {
    let app = TestApp::builder()
        .args(&["--connection-idle-timeout", "300ms"])
        .spawn()
        .await;
    let mut stream = TcpStream::connect(app.grpc_addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(SETTINGS).await.unwrap();
    // One call, answered, then nothing.
    stream.write_all(&health_check()).await.unwrap();

    assert!(
        closed_by_server(&mut stream).await,
        "the idle connection is closed"
    );
    let scrape = app.scrape().await;
    assert!(refused(&scrape, "connection_idle_timeout") >= Some(1.0));
}

#[tokio::test]
async fn a_connection_with_a_call_open_is_not_idle() {
    let mut app = TestApp::builder()
        .args(&[
            "--connection-idle-timeout",
            "300ms",
            "--enable-faults",
            "--fault-slow-stream-ms",
            "200",
            "--fault-methods",
            "ListProducts",
        ])
        .spawn()
        .await;

    // Six products, 200 ms apart: four times the idle timeout.
    let received = app.list_to_end(6).await;

    assert_eq!(received, 6);
    let scrape = app.scrape().await;
    assert_eq!(refused(&scrape, "connection_idle_timeout"), Some(0.0));
}

#[tokio::test]
async fn the_last_connection_slots_are_kept_for_addresses_holding_few() {
    // 16 slots, the last 2 for addresses holding none (a share of 1).
    let app = TestApp::builder()
        .args(&[
            "--max-connections",
            "16",
            "--max-connections-per-peer",
            "8",
            "--handshake-timeout",
            "1h",
        ])
        .spawn()
        .await;
    // 127.0.0.1 holds 8 (the test's own channel is one), 127.0.0.2 asks
    // for 8 more.
    let mut held = Vec::new();
    for from in [&["127.0.0.1"; 7][..], &["127.0.0.2"; 8][..]].concat() {
        let mut stream = connect_from(from, app.grpc_addr).await;
        if served(&mut stream).await {
            held.push(stream);
        }
    }

    let mut fresh = connect_from("127.0.0.3", app.grpc_addr).await;

    assert!(served(&mut fresh).await, "a fresh address is served");
    assert_eq!(
        held.len(),
        13,
        "all but the reserve of 2 (and 127.0.0.1's own)"
    );
    assert_eq!(
        refused(&app.scrape().await, "reserved_for_new_peers"),
        Some(2.0)
    );
}
