//! tokio-console on demand: dormant until `PUT /debug/console`, attached
//! over its real gRPC protocol (console-api's client), seeing tasks by
//! name, closed by `DELETE`, and woken and put to sleep under load without
//! a panic.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use console_api::{
    field::{Name, Value},
    instrument::{InstrumentRequest, Update, instrument_client::InstrumentClient},
};
use tonic::{Streaming, transport::Channel};

use crate::helpers::TestApp;

/// Wake and sleep cycles under load.
const CYCLES: usize = 50;

/// `METHOD /debug/console`, with a bearer token or not: the status and body.
async fn console_route(
    app: &TestApp,
    method: reqwest::Method,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method, app.admin_url("/debug/console"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The JSON state `METHOD /debug/console` answers (200 expected).
async fn console_state(app: &TestApp, method: reqwest::Method) -> serde_json::Value {
    let (status, body) = console_route(app, method.clone(), None).await;
    assert_eq!(status, 200, "{method} /debug/console: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("{body:?}: {error}"))
}

/// Wakes the console; the address it listens on.
async fn wake(app: &TestApp) -> SocketAddr {
    let state = console_state(app, reqwest::Method::PUT).await;
    assert_eq!(state["state"], "awake", "{state}");
    state["addr"]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("an awake console names its address: {state}"))
}

/// An attached console: its stream of updates and the names of the tasks
/// it was told of so far.
struct Attached {
    updates: Streaming<Update>,
    names: Vec<String>,
}

/// Attaches a console and reads its first update (every task the console
/// knows).
async fn attach(addr: SocketAddr) -> Attached {
    let mut console: InstrumentClient<Channel> =
        InstrumentClient::connect(format!("http://{addr}"))
            .await
            .expect("console attaches");
    let mut updates = console
        .watch_updates(InstrumentRequest {})
        .await
        .expect("watch starts")
        .into_inner();
    let first = updates
        .message()
        .await
        .expect("first update")
        .expect("the stream starts with the current state");
    let names = task_names(&first).collect();
    Attached { updates, names }
}

/// The `task.name`s of an update's new tasks.
fn task_names(update: &Update) -> impl Iterator<Item = String> + '_ {
    update
        .task_update
        .iter()
        .flat_map(|tasks| &tasks.new_tasks)
        .flat_map(|task| &task.fields)
        .filter_map(|field| match (&field.name, &field.value) {
            (Some(Name::StrName(name)), Some(Value::StrVal(value) | Value::DebugVal(value)))
                if name == "task.name" =>
            {
                Some(value.trim_matches('"').to_owned())
            }
            _ => None,
        })
}

/// Reads updates until every name in `wanted` was among the tasks the
/// console was told of; the names seen by then.
async fn until_tasks_named<'a>(attached: &'a mut Attached, wanted: &[&str]) -> &'a [String] {
    loop {
        // Tasks arrive over several updates, in no set order.
        if wanted
            .iter()
            .all(|wanted| attached.names.iter().any(|name| name == wanted))
        {
            return &attached.names;
        }
        match attached.updates.message().await.expect("updates stream") {
            Some(update) => attached.names.extend(task_names(&update)),
            None => panic!(
                "the update stream ended without {wanted:?}: {:?}",
                attached.names
            ),
        }
    }
}

/// Spawns a task named `name` as the app would (with its subscriber) that
/// lives until `done` is set.
fn spawn_named(app: &TestApp, name: &str, done: Arc<tokio::sync::Notify>) {
    tracing::dispatcher::with_default(&app.dispatch(), || {
        tokio::task::Builder::new()
            .name(name)
            .spawn(async move { done.notified().await })
            .expect("spawns");
    });
}

/// How long one step of a wake and sleep cycle may hang before the test
/// says which one did (not a speed limit: each takes milliseconds).
const STEP_HANG: std::time::Duration = std::time::Duration::from_secs(60);

/// Awaits one step of cycle `cycle`; a hang fails naming the step.
async fn step<T>(cycle: usize, what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_HANG, step)
        .await
        .unwrap_or_else(|_| panic!("cycle {cycle}: {what} hung for {STEP_HANG:?}"))
}

/// Spawns a probe task and reads updates until the console is told of it.
/// The console's event buffer is bounded by design (it drops events rather
/// than queue them when its aggregator falls behind, and says how many in
/// the next update): a probe whose spawn may have been dropped is followed
/// by another. Updates that report no drop and never name a probe fail.
async fn until_a_probe_is_seen(
    app: &TestApp,
    attached: &mut Attached,
    cycle: usize,
    done: &Arc<tokio::sync::Notify>,
) {
    /// Updates (one a second) without a drop and without the probe.
    const PATIENCE: usize = 30;
    let mut probe = 0;
    let mut name = format!("probe-{cycle}-{probe}");
    spawn_named(app, &name, done.clone());
    let mut quiet = 0;
    while !attached.names.contains(&name) {
        let update = step(cycle, "an update", attached.updates.message())
            .await
            .expect("updates stream")
            .unwrap_or_else(|| panic!("cycle {cycle}: the update stream ended without {name}"));
        attached.names.extend(task_names(&update));
        if attached.names.contains(&name) {
            return;
        }
        let dropped = update
            .task_update
            .as_ref()
            .map_or(0, |tasks| tasks.dropped_events);
        if dropped > 0 {
            probe += 1;
            name = format!("probe-{cycle}-{probe}");
            spawn_named(app, &name, done.clone());
            quiet = 0;
        } else {
            quiet += 1;
            assert!(
                quiet < PATIENCE,
                "cycle {cycle}: {PATIENCE} updates, none dropping events, none naming {name}"
            );
        }
    }
}

/// Reads what is left of an update stream: it must end (an error or the
/// end), not hang, once the endpoint is closed.
async fn until_closed(mut attached: Attached) {
    while let Ok(Some(_)) = attached.updates.message().await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reports_the_servers_named_tasks() {
    let app = TestApp::builder().args(&["--console"]).spawn().await;
    let console_addr = app.console_addr.expect("--console serves the console");
    let mut updates = attach(console_addr).await;
    until_tasks_named(&mut updates, &["grpc-server", "admin-server"]).await;
    let state = console_state(&app, reqwest::Method::GET).await;
    assert_eq!(
        state["state"], "awake",
        "--console is awake from the start: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_sleeps_until_woken_sees_tasks_spawned_since_and_detaches_on_delete() {
    let app = TestApp::builder().spawn().await;
    assert_eq!(app.console_addr, None, "no endpoint while dormant");
    let state = console_state(&app, reqwest::Method::GET).await;
    assert_eq!(state["state"], "dormant", "{state}");
    assert!(
        state["since"]
            .as_str()
            .is_some_and(|since| since.ends_with('Z')),
        "{state}"
    );
    let done = Arc::new(tokio::sync::Notify::new());
    spawn_named(&app, "spawned-while-dormant", done.clone());

    let addr = wake(&app).await;
    let again = console_state(&app, reqwest::Method::PUT).await;
    assert_eq!(
        again["addr"],
        addr.to_string(),
        "waking twice changes nothing: {again}"
    );
    let mut updates = attach(addr).await;
    spawn_named(&app, "spawned-after-waking", done.clone());
    // The second PUT came on a connection of its own: the app's task for
    // it was spawned after waking.
    let seen = until_tasks_named(&mut updates, &["spawned-after-waking", "admin-connection"]).await;
    // Its spawn was reported after the dormant one's would have been, on
    // the same channel: by now the console would know that one too.
    assert!(
        !seen.iter().any(|name| name == "spawned-while-dormant"),
        "a task spawned while dormant stays unseen: {seen:?}"
    );
    assert!(
        !seen.iter().any(|name| name == "grpc-server"),
        "so do the server's tasks, spawned before waking: {seen:?}"
    );

    let state = console_state(&app, reqwest::Method::DELETE).await;
    assert_eq!(state["state"], "dormant", "{state}");
    assert_eq!(state.get("addr"), None, "{state}");
    until_closed(updates).await;
    assert!(
        InstrumentClient::connect(format!("http://{addr}"))
            .await
            .is_err(),
        "the endpoint is closed while dormant"
    );
    let again = console_state(&app, reqwest::Method::DELETE).await;
    assert_eq!(
        again["state"], "dormant",
        "sleeping twice changes nothing: {again}"
    );

    // Woken again, a new console is told of the task seen last time and
    // still alive.
    let mut updates = attach(wake(&app).await).await;
    until_tasks_named(&mut updates, &["spawned-after-waking"]).await;
    console_state(&app, reqwest::Method::DELETE).await;
    until_closed(updates).await;
    done.notify_waiters();
}

#[tokio::test]
async fn the_console_routes_need_the_token_and_refuse_other_methods() {
    let app = TestApp::builder()
        .args(&["--admin-token", "secret"])
        .spawn()
        .await;
    let (status, _) = console_route(&app, reqwest::Method::PUT, None).await;
    assert_eq!(status, 401, "waking the console needs the token");
    let (status, body) = console_route(&app, reqwest::Method::POST, Some("secret")).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = console_route(&app, reqwest::Method::PUT, Some("secret")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = console_route(&app, reqwest::Method::DELETE, Some("secret")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn waking_on_a_taken_address_is_a_conflict_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = taken.local_addr().unwrap();
    let app = TestApp::builder()
        .configure(move |config| config.telemetry.console_addr = addr)
        .spawn()
        .await;
    let (status, body) = console_route(&app, reqwest::Method::PUT, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains(&addr.to_string()),
        "the answer names the address: {body}"
    );
    let state = console_state(&app, reqwest::Method::GET).await;
    assert_eq!(
        state["state"], "dormant",
        "a failed wake leaves it asleep: {state}"
    );
}

/// Calls GetProduct and ListProducts until `stop`; counts the calls.
fn load(
    app: &TestApp,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let mut client = app.client.clone();
    tokio::spawn(async move {
        let mut round = 0u32;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let id = format!("prod-{:07}", round % 500 + 1);
            client
                .get_product(catalogue::api::proto::GetProductRequest { product_id: id })
                .await
                .expect("GetProduct answers while the console wakes and sleeps");
            let mut stream = client
                .list_products(catalogue::api::proto::ListProductsRequest {
                    page_size: 50,
                    ..Default::default()
                })
                .await
                .expect("ListProducts starts")
                .into_inner();
            while stream
                .message()
                .await
                .expect("ListProducts streams")
                .is_some()
            {}
            calls.fetch_add(2, Ordering::Relaxed);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_wake_and_sleep_cycles_under_load_are_clean() {
    // Every layer on, each with a filter of its own (the OpenTelemetry
    // layer's, the log layer's at DEBUG, the console's), the shape of
    // tokio-rs/tracing#3406; nothing listens on the OTLP port (dropped
    // exports only).
    let flags = [
        "--otlp-endpoint",
        "http://127.0.0.1:9",
        "--log-filter",
        "debug,h2=info,hyper=info,tower=info",
    ];
    let app = TestApp::builder().args(&flags).spawn().await;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let loads: Vec<_> = (0..4)
        .map(|_| load(&app, stop.clone(), calls.clone()))
        .collect();
    let done = Arc::new(tokio::sync::Notify::new());

    for cycle in 0..CYCLES {
        let addr = step(cycle, "wake", wake(&app)).await;
        let mut updates = step(cycle, "attach", attach(addr)).await;
        if cycle == 0 || cycle == CYCLES - 1 {
            until_a_probe_is_seen(&app, &mut updates, cycle, &done).await;
        }
        let state = step(cycle, "sleep", console_state(&app, reqwest::Method::DELETE)).await;
        assert_eq!(state["state"], "dormant", "cycle {cycle}: {state}");
        step(cycle, "the stream's end", until_closed(updates)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for load in loads {
        load.await.expect("no load task panicked");
    }
    done.notify_waiters();
    assert!(calls.load(Ordering::Relaxed) > 0, "the load ran");
    let mut app = app;
    app.get_product("prod-0000001")
        .await
        .expect("the app still serves after the cycles");
}
