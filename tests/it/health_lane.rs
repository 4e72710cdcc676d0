//! The health lane (`--health-addr`): the gRPC port's health statuses
//! answered (Check and Watch) from a thread and runtime of its own,
//! NOT_SERVING while the main runtime is stalled and from the shutdown on.

use std::{net::SocketAddr, sync::atomic::Ordering};

use tonic::{Streaming, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};

use crate::{health::spawn_with_flaky_store, helpers::TestApp};

const SERVICE: &str = "catalogue.v1.CatalogueService";

async fn lane_client(app: &TestApp) -> HealthClient<Channel> {
    let lane = app.health_addr.expect("the health lane is on by default");
    connect(lane).await
}

async fn connect(lane: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{lane}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("the health lane accepts");
    HealthClient::new(channel)
}

async fn check(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let response = health.check(request).await.expect("the lane answers");
    response.into_inner().status()
}

/// Watches the server's health on the lane: the stream, and its first
/// status.
async fn watch_server(
    health: &mut HealthClient<Channel>,
) -> (Streaming<HealthCheckResponse>, HealthCheckResponse) {
    let request = HealthCheckRequest::default();
    let mut stream = health.watch(request).await.expect("the lane streams");
    let first = stream.get_mut().message().await.expect("streamed");
    (stream.into_inner(), first.expect("a status"))
}

/// Checks `service` until the lane answers `wanted` (the test's own timeout
/// bounds it).
async fn until(health: &mut HealthClient<Channel>, service: &str, wanted: ServingStatus) {
    while check(health, service).await != wanted {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_lane_answers_the_grpc_ports_statuses() {
    let app = TestApp::builder().spawn().await;
    let mut lane = lane_client(&app).await;

    let server = check(&mut lane, "").await;
    let catalogue = check(&mut lane, SERVICE).await;
    let unknown = lane
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    let (_watch, watched) = watch_server(&mut lane).await;

    assert_ne!(app.health_addr, Some(app.grpc_addr));
    assert_eq!(server, ServingStatus::Serving);
    assert_eq!(catalogue, ServingStatus::Serving);
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(watched.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn the_lane_follows_the_store() {
    let (app, store) = spawn_with_flaky_store().await;
    let mut lane = lane_client(&app).await;

    store.down.store(true, Ordering::SeqCst);
    until(&mut lane, SERVICE, ServingStatus::NotServing).await;
    let server = check(&mut lane, "").await;
    store.down.store(false, Ordering::SeqCst);
    until(&mut lane, SERVICE, ServingStatus::Serving).await;

    assert_eq!(server, ServingStatus::Serving, "liveness is untouched");
}

/// The drain delay outlasts the test: the app stays in its shutdown.
#[tokio::test]
async fn the_lane_says_not_serving_from_the_shutdown_on() {
    let mut app = TestApp::builder()
        .configure(|config| config.drain_delay = std::time::Duration::from_secs(3600))
        .spawn()
        .await;
    let mut lane = lane_client(&app).await;
    let (mut watch, first) = watch_server(&mut lane).await;

    app.begin_shutdown();
    until(&mut lane, "", ServingStatus::NotServing).await;
    let catalogue = check(&mut lane, SERVICE).await;
    let next = watch.message().await.expect("streamed").expect("a status");

    assert_eq!(first.status(), ServingStatus::Serving);
    assert_eq!(catalogue, ServingStatus::NotServing);
    assert_eq!(next.status(), ServingStatus::NotServing);
}

#[tokio::test]
async fn the_lane_stops_with_the_app() {
    let app = TestApp::builder().spawn().await;
    let lane = app.health_addr.expect("the health lane is on by default");

    app.stop().await.expect("clean shutdown");
    let after = tokio::net::TcpStream::connect(lane).await;

    assert!(after.is_err(), "the lane's listener is closed: {after:?}");
}

/// The app runs on this test's runtime (one thread): blocking that thread
/// stalls it, as a wedged process would be.
#[tokio::test]
async fn the_lane_says_not_serving_while_the_main_runtime_is_stalled() {
    let app = TestApp::builder()
        .args(&["--health-stall-limit", "100ms"])
        .spawn()
        .await;
    let lane_addr = app.health_addr.expect("the health lane is on by default");
    let mut lane = lane_client(&app).await;
    until(&mut lane, "", ServingStatus::Serving).await;

    let (seen, stalled_seen) = std::sync::mpsc::channel();
    let prober = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the prober");
        runtime.block_on(async {
            let mut lane = connect(lane_addr).await;
            until(&mut lane, "", ServingStatus::NotServing).await;
        });
        seen.send(()).expect("the test waits");
    });
    // Blocks the app's only thread until the prober has seen NOT_SERVING.
    stalled_seen.recv().expect("the prober saw NOT_SERVING");
    prober.join().expect("the prober finished");
    until(&mut lane, "", ServingStatus::Serving).await;
    let catalogue = check(&mut lane, SERVICE).await;

    assert_eq!(catalogue, ServingStatus::Serving, "running again");
}

#[tokio::test]
async fn no_health_lane_means_no_lane_address() {
    let app = TestApp::builder().args(&["--no-health-lane"]).spawn().await;

    assert_eq!(app.health_addr, None);
}
