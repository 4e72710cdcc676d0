//! Every call bounded in time, streams included: a stream ends at
//! `--stream-timeout` or the client's `grpc-timeout`, and after
//! `--stream-idle-timeout` without progress, whichever side stalls it.

use std::time::Duration;

use catalogue::api::proto::{
    ListProductsRequest, catalogue_service_client::CatalogueServiceClient,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tonic::{Code, Request, transport::Channel};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

use crate::helpers::{TestApp, seed_products, value};

/// Longest a test waits for the server to end a call (reached only when
/// the bound is missing: it turns a hang into a failure).
const PATIENCE: Duration = Duration::from_secs(30);

/// An app whose ListProducts sends one product every 200 ms (a page of 50
/// takes 10 s); `extra` flags besides.
async fn slow_stream_app(extra: &[&str]) -> TestApp {
    let flags = [
        &[
            "--enable-faults",
            "--fault-slow-stream-ms",
            "200",
            "--fault-methods",
            "ListProducts",
        ],
        extra,
    ]
    .concat();
    TestApp::builder().args(&flags).spawn().await
}

/// Reads a ListProducts stream of 50 until it ends; returns how many
/// products came and the status it ended with.
async fn read_stream(
    client: &mut CatalogueServiceClient<Channel>,
    request: Request<ListProductsRequest>,
) -> (usize, Result<(), tonic::Status>) {
    let mut stream = match client.list_products(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (0, Err(status)),
    };
    let mut received = 0;
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .expect("the stream ends within the patience");
    (received, ended)
}

fn page_of_50() -> Request<ListProductsRequest> {
    Request::new(ListProductsRequest {
        page_size: 50,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_stream_ends_deadline_exceeded_at_the_stream_timeout() {
    let app = slow_stream_app(&["--stream-timeout", "1s"]).await;

    let (received, ended) = read_stream(&mut app.client.clone(), page_of_50()).await;

    let status = ended.expect_err("cut off");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received < 50, "{received} products: the whole page");
}

#[tokio::test]
async fn a_clients_grpc_timeout_bounds_the_whole_stream() {
    let app = slow_stream_app(&[]).await;
    let mut request = page_of_50();
    request.set_timeout(Duration::from_secs(1));

    let (received, ended) = read_stream(&mut app.client.clone(), request).await;

    let status = ended.expect_err("cut off");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received < 50, "{received} products: the whole page");
}

#[tokio::test]
async fn a_reflection_stream_whose_client_sends_nothing_more_ends_and_gives_its_slot_back() {
    let mut app = TestApp::builder()
        .args(&[
            "--stream-idle-timeout",
            "500ms",
            "--max-concurrent-calls",
            "1",
            "--max-calls-per-connection",
            "1",
        ])
        .spawn()
        .await;
    // One request, and the client's side of the stream left open.
    let (requests, open_requests) = tokio::sync::mpsc::channel(1);
    requests
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .await
        .unwrap();
    let mut responses = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(open_requests))
        .await
        .expect("reflection answers")
        .into_inner();
    responses
        .message()
        .await
        .expect("the first answer")
        .expect("a message");

    let ended = tokio::time::timeout(PATIENCE, responses.message())
        .await
        .expect("the idle stream ends within the patience");

    let status = ended.expect_err("ended by the server");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    app.get_product(&seed_products()[0].id)
        .await
        .expect("the only call slot is free again");
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_idle_calls_expired_total", &[]),
        Some(1.0)
    );
    drop(requests);
}

#[tokio::test]
async fn one_address_cannot_take_every_admin_connection() {
    // 8 connections, at most 4 from one address.
    let app = TestApp::builder()
        .args(&[
            "--admin-max-connections",
            "8",
            "--admin-header-timeout",
            "1h",
        ])
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(app.admin_addr).await.unwrap());
    }

    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut scraper = socket.connect(app.admin_addr).await.unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.admin_addr
    );
    scraper.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, scraper.read_to_end(&mut response))
        .await
        .expect("answered within the patience")
        .expect("read");
    let response = String::from_utf8(response).unwrap();

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(
            "catalogue_admin_connections_refused_total{reason=\"max_connections_per_peer\"} 4"
        ),
        "{response}"
    );
    drop(held);
}

#[tokio::test]
async fn a_reflection_stream_whose_client_keeps_asking_is_not_idle() {
    let app = TestApp::builder()
        .args(&["--stream-idle-timeout", "500ms"])
        .spawn()
        .await;
    let (requests, open_requests) = tokio::sync::mpsc::channel(1);
    let list_services = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    requests.send(list_services()).await.unwrap();
    let mut responses = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(open_requests))
        .await
        .expect("reflection answers")
        .into_inner();

    // Five requests 250 ms apart: two and a half idle timeouts in all, but
    // never half of one without a request.
    let mut answered = 0;
    for _ in 0..5 {
        responses
            .message()
            .await
            .expect("answered")
            .expect("a message");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        if answered < 5 {
            requests.send(list_services()).await.unwrap();
        }
    }
    drop(requests);
    let ended = tokio::time::timeout(PATIENCE, responses.message())
        .await
        .expect("the stream ends once the requests end");

    assert_eq!(answered, 5);
    assert!(matches!(ended, Ok(None)), "{ended:?}");
}
