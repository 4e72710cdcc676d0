//! Fair calls: one connection cannot hold every call slot, and health
//! Watch streams, never shed by the global limit, have a bound of their own.

use catalogue::api::proto::{
    GetProductRequest, ListProductsRequest, catalogue_service_client::CatalogueServiceClient,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use tokio::task::JoinHandle;

use crate::helpers::{TestApp, seed_products, shed};

/// An app with `slots` call slots whose GetProduct waits a minute, so that
/// every admitted call holds its slot; `extra` flags besides.
async fn slow_get_product_app(slots: &str, extra: &[&str]) -> TestApp {
    let flags = [
        &[
            "--max-concurrent-calls",
            slots,
            "--enable-faults",
            "--fault-latency-ms",
            "60000",
            "--fault-methods",
            "GetProduct",
        ],
        extra,
    ]
    .concat();
    TestApp::builder().args(&flags).spawn().await
}

/// `calls` GetProduct calls on the app's own connection, left running.
fn hold_calls(app: &TestApp, calls: usize) -> Vec<JoinHandle<Result<(), tonic::Status>>> {
    (0..calls)
        .map(|_| {
            let mut client = app.client.clone();
            let request = GetProductRequest {
                product_id: seed_products()[0].id.clone(),
            };
            tokio::spawn(async move { client.get_product(request).await.map(drop) })
        })
        .collect()
}

/// Reads a short ListProducts stream (never slowed) to its end.
async fn list_a_page(client: &mut CatalogueServiceClient<Channel>) {
    let request = ListProductsRequest {
        page_size: 3,
        ..Default::default()
    };
    let mut stream = client
        .list_products(request)
        .await
        .expect("served")
        .into_inner();
    while stream.message().await.expect("streamed").is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_at_most_a_quarter_of_the_call_slots() {
    // Arrange: 8 slots, so 2 per connection by default.
    let app = slow_get_product_app("8", &[]).await;

    // Act: one connection (the app's channel) asks for every slot.
    let held = hold_calls(&app, 8);

    // Assert: two admitted, six refused by the connection's bound...
    app.wait_for_value(
        "catalogue_shed_total",
        &[("reason", "connection_limit")],
        6.0,
    )
    .await;
    app.wait_for_in_flight(2.0).await;
    // ...and a fresh client's connection is served.
    list_a_page(&mut client_from(&app, "127.0.0.1").await).await;
    let scrape = app.scrape().await;
    assert_eq!(
        shed(&scrape, "concurrency_limit"),
        Some(0.0),
        "the global limit was never reached"
    );
    for call in held {
        call.abort();
    }
}

#[tokio::test]
async fn health_watches_have_their_own_bound_and_take_no_call_slot() {
    let mut app = TestApp::builder()
        .args(&["--max-health-watches", "2", "--max-concurrent-calls", "1"])
        .spawn()
        .await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watches = Vec::new();
    for _ in 0..2 {
        let mut watch = health
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch admitted")
            .into_inner();
        watch.message().await.expect("first status");
        watches.push(watch);
    }

    let refused = health
        .watch(HealthCheckRequest::default())
        .await
        .expect_err("a third watch is refused");

    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("checks are never refused");
    app.get_product(&seed_products()[0].id)
        .await
        .expect("the watches hold no call slot");
    let scrape = app.scrape().await;
    assert_eq!(shed(&scrape, "health_watch_limit"), Some(1.0));
    drop(watches);
    for _ in 0..1000 {
        if health.watch(HealthCheckRequest::default()).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("closed watches never gave their slots back");
}

/// A client of the app's gRPC port from the loopback address `from`.
async fn client_from(app: &TestApp, from: &str) -> CatalogueServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .local_address(Some(from.parse().unwrap()))
        .connect()
        .await
        .unwrap();
    CatalogueServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_ip_cannot_hold_every_call_slot_over_many_connections() {
    let app = slow_get_product_app(
        "8",
        &[
            "--max-calls-per-connection",
            "8",
            "--max-calls-per-peer",
            "3",
        ],
    )
    .await;
    let request = || GetProductRequest {
        product_id: seed_products()[0].id.clone(),
    };
    let held = hold_calls(&app, 5);
    app.wait_for_value("catalogue_shed_total", &[("reason", "peer_limit")], 2.0)
        .await;

    let mut same_ip = client_from(&app, "127.0.0.1").await;
    let mut other_ip = client_from(&app, "127.0.0.2").await;
    let refused = same_ip
        .get_product(request())
        .await
        .expect_err("127.0.0.1 holds its share on another connection");
    list_a_page(&mut other_ip).await;

    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(shed(&app.scrape().await, "peer_limit"), Some(3.0));
    for call in held {
        call.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_call_slots_are_kept_for_addresses_holding_few() {
    // 16 slots, the last 2 for addresses holding no call (a share of 1); 8 per
    // address.
    let app = slow_get_product_app(
        "16",
        &[
            "--max-calls-per-connection",
            "16",
            "--max-calls-per-peer",
            "8",
        ],
    )
    .await;
    let held = hold_calls(&app, 8);
    app.wait_for_in_flight(8.0).await;
    let second = client_from(&app, "127.0.0.2").await;
    let second_held: Vec<_> = (0..8)
        .map(|_| {
            let mut client = second.clone();
            let request = GetProductRequest {
                product_id: seed_products()[0].id.clone(),
            };
            tokio::spawn(async move { client.get_product(request).await.map(drop) })
        })
        .collect();
    app.wait_for_value(
        "catalogue_shed_total",
        &[("reason", "reserved_for_new_peers")],
        2.0,
    )
    .await;

    list_a_page(&mut client_from(&app, "127.0.0.3").await).await;

    app.wait_for_in_flight(14.0).await;
    for call in held.into_iter().chain(second_held) {
        call.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_addresses_holding_few_calls_leave_the_reserve_to_a_fresh_one() {
    // 144 slots, the last 18 one each (a share of 1) for addresses holding no call;
    // 127.0.0.1 holds all the rest.
    let app = slow_get_product_app(
        "144",
        &[
            "--max-calls-per-connection",
            "144",
            "--max-calls-per-peer",
            "144",
        ],
    )
    .await;
    let mut held = hold_calls(&app, 126);
    app.wait_for_in_flight(126.0).await;

    // 16 addresses ask for 3 calls each.
    for last in 10..26 {
        let client = client_from(&app, &format!("127.0.0.{last}")).await;
        held.extend((0..3).map(|_| {
            let mut client = client.clone();
            let request = GetProductRequest {
                product_id: seed_products()[0].id.clone(),
            };
            tokio::spawn(async move { client.get_product(request).await.map(drop) })
        }));
    }
    let decided = |scrape: &prometheus_parse::Scrape| {
        crate::helpers::value(
            scrape,
            "grpc_server_in_flight_requests",
            &[("grpc_method", "GetProduct")],
        )
        .unwrap_or(0.0)
            + shed(scrape, "reserved_for_new_peers").unwrap_or(0.0)
            + shed(scrape, "concurrency_limit").unwrap_or(0.0)
    };
    let mut scrape = app.scrape().await;
    for _ in 0..1500 {
        if decided(&scrape) == 126.0 + 48.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        scrape = app.scrape().await;
    }

    list_a_page(&mut client_from(&app, "127.0.0.99").await).await;

    assert_eq!(
        decided(&scrape),
        126.0 + 48.0,
        "every call admitted or refused"
    );
    assert_eq!(
        shed(&scrape, "reserved_for_new_peers"),
        Some(32.0),
        "one reserve slot each, two refused each"
    );
    for call in held {
        call.abort();
    }
}
