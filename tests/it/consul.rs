//! Consul registration and resolution against a recorded-contract agent: no
//! Consul server is installable here, so an axum server stands in for the
//! agent's HTTP API, records every request and answers in the documented
//! shapes (`fixtures/consul_*.json`).

use std::{
    collections::{BTreeMap, VecDeque},
    pin::pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use catalogue::{
    app::{App, StartupError},
    config::ServeConfig,
    discovery::consul::{ConsulAddr, ConsulClient, ConsulError, Instance, WatchOptions},
};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::helpers::{TestApp, load_config, repo_path, test_config};

const HEALTH_SERVICE: &str = "catalogue.v1.CatalogueService";
/// Generous: only a broken contract makes a test wait this long.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn registration_sends_the_documented_service_definition() {
    let agent = ConsulAgent::start(Script::default()).await;
    let _app = TestApp::builder()
        .args(&[
            "--consul-addr",
            &agent.url,
            "--consul-advertise-addr",
            "192.0.2.10:50051",
        ])
        .spawn()
        .await;

    let requests = agent.requests(1).await;

    let register = &requests[0];
    assert_eq!(register.method, Method::PUT);
    assert_eq!(register.path, "/v1/agent/service/register");
    assert_eq!(register.content_type.as_deref(), Some("application/json"));
    // Compared whole, so a misspelt or missing Consul field name fails here.
    let mut expected = fixture("consul_register.json");
    expected["Meta"]["version"] = env!("CARGO_PKG_VERSION").into();
    assert_eq!(register.json(), expected);
}

#[tokio::test]
async fn shutdown_deregisters_the_same_id_before_health_turns_not_serving() {
    let agent = ConsulAgent::start(Script {
        hold_deregister: true,
        ..Script::default()
    })
    .await;
    let mut app = TestApp::builder()
        .args(&["--consul-addr", &agent.url])
        .spawn()
        .await;
    let registered = agent.requests(1).await[0].json();
    let port = app.grpc_addr.port();
    assert_eq!(registered["ID"], format!("catalogue-127.0.0.1-{port}"));
    assert_eq!(registered["Address"], "127.0.0.1");
    assert_eq!(registered["Port"], port);
    assert_eq!(
        registered["Check"]["GRPC"],
        format!("127.0.0.1:{port}/{HEALTH_SERVICE}")
    );

    app.begin_shutdown();
    let deregister = agent.requests(2).await.remove(1);
    // The agent has not answered the deregistration yet, so the drain must
    // not have begun.
    let status = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: HEALTH_SERVICE.into(),
        })
        .await
        .expect("health answers while deregistering")
        .into_inner()
        .status();
    agent.release_deregister();

    assert_eq!(deregister.method, Method::PUT);
    assert_eq!(
        deregister.path,
        format!(
            "/v1/agent/service/deregister/{}",
            registered["ID"].as_str().unwrap()
        )
    );
    assert_eq!(status, ServingStatus::Serving);
    app.stopped().await.expect("clean shutdown");
    assert_eq!(agent.recorded().len(), 2, "{:#?}", agent.recorded());
}

#[tokio::test]
async fn a_refused_registration_fails_start_up_with_the_agents_answer() {
    let agent = ConsulAgent::start(Script {
        register: (
            StatusCode::BAD_REQUEST,
            "Invalid check: Interval must be > 0",
        ),
        ..Script::default()
    })
    .await;

    let error = build_and_run(test_config("memory", &["--consul-addr", &agent.url]))
        .await
        .expect_err("start-up fails");

    assert!(
        matches!(
            error,
            StartupError::Consul(ConsulError::Status {
                status: StatusCode::BAD_REQUEST,
                ..
            })
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("/v1/agent/service/register")
            && message.contains("Invalid check: Interval must be > 0"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_agent_fails_start_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);

    let error = build_and_run(test_config("memory", &["--consul-addr", &addr]))
        .await
        .expect_err("start-up fails");

    assert!(
        matches!(error, StartupError::Consul(ConsulError::Unreachable { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn every_interface_without_an_advertise_address_fails_start_up() {
    let agent = ConsulAgent::start(Script::default()).await;
    let mut config = test_config("memory", &["--consul-addr", &agent.url]);
    config.grpc_addr = "0.0.0.0:0".parse().unwrap();

    let error = build_and_run(config).await.expect_err("start-up fails");

    assert!(
        error.to_string().contains("--consul-advertise-addr"),
        "{error}"
    );
    assert!(agent.recorded().is_empty(), "nothing was registered");
}

#[tokio::test]
async fn healthy_instances_are_read_from_the_documented_health_answer() {
    let agent = ConsulAgent::start(Script {
        health: vec![Answer::json(7, fixture_text("consul_health_service.json"))],
        ..Script::default()
    })
    .await;

    let instances = agent
        .client()
        .healthy_instances("catalogue")
        .await
        .expect("instances");

    assert_eq!(
        addresses(instances),
        [
            "192.0.2.11:50051",
            // Service.Address is empty: the node's address.
            "192.0.2.12:50052",
            "[2001:db8::13]:50051",
        ]
    );
    let request = agent.requests(1).await.remove(0);
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, "/v1/health/service/catalogue");
    assert_eq!(request.query, params(&[("passing", "true")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_balances_over_the_instances_consul_reports() {
    let app = TestApp::builder().spawn().await;
    let port = app.grpc_addr.port();
    // The second instance is in Consul's answer but not running: the client
    // must not send it calls, since its health never says SERVING.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = ConsulAgent::start(Script {
        health: vec![Answer::json(
            3,
            health_answer(&[("127.0.0.1", port), ("127.0.0.1", dead_port)]),
        )],
        ..Script::default()
    })
    .await;
    let target = format!(
        "consul://{}/catalogue",
        agent.url.trim_start_matches("http://")
    );
    let config = load_config(
        &target,
        &["--rps", "50", "--duration", "1s", "--mix", "get=1"],
    );

    let summary = catalogue::load::run(&config).await.expect("load runs");

    let live = format!("http://127.0.0.1:{port}");
    assert_eq!(summary.total("GetProduct"), 50, "{summary}");
    assert_eq!(
        summary.replicas.get(&live).copied(),
        Some(summary.total("GetProduct") + 1),
        "every call, and the discovery stream before them, went to {live}: {summary}"
    );
    let dead = format!("http://127.0.0.1:{dead_port}");
    assert_eq!(summary.replicas.get(&dead).copied(), Some(0), "{summary}");
    let request = agent.requests(1).await.remove(0);
    assert_eq!(request.path, "/v1/health/service/catalogue");
}

#[tokio::test]
async fn a_watch_blocks_on_the_last_index_and_yields_each_change() {
    let both = health_answer(&[("192.0.2.1", 50051), ("192.0.2.2", 50051)]);
    let one = health_answer(&[("192.0.2.1", 50051)]);
    let agent = ConsulAgent::start(Script {
        health: vec![
            Answer::json(10, both.clone()),
            // Woken without a change (Consul does not promise one).
            Answer::json(11, both),
            Answer::json(12, one),
        ],
        ..Script::default()
    })
    .await;
    let mut watch = pin!(agent.client().watch("catalogue", quick_watch()));

    let first = next(&mut watch).await.expect("first set");
    let second = next(&mut watch).await.expect("second set");

    assert_eq!(addresses(first), ["192.0.2.1:50051", "192.0.2.2:50051"]);
    assert_eq!(addresses(second), ["192.0.2.1:50051"]);
    // The fourth blocks on index 12 until the test ends.
    let queries: Vec<_> = requests_while_polling(&agent, 4, &mut watch)
        .await
        .into_iter()
        .map(|request| request.query)
        .collect();
    assert_eq!(
        queries,
        [
            params(&[("passing", "true")]),
            params(&[("passing", "true"), ("index", "10"), ("wait", "30s")]),
            params(&[("passing", "true"), ("index", "11"), ("wait", "30s")]),
            params(&[("passing", "true"), ("index", "12"), ("wait", "30s")]),
        ]
    );
}

#[tokio::test]
async fn a_watch_starts_over_when_the_index_goes_backwards() {
    let one = health_answer(&[("192.0.2.1", 50051)]);
    let both = health_answer(&[("192.0.2.1", 50051), ("192.0.2.2", 50051)]);
    let agent = ConsulAgent::start(Script {
        health: vec![
            Answer::json(20, one),
            // A snapshot restore, say.
            Answer::json(5, both.clone()),
            Answer::json(6, both),
        ],
        ..Script::default()
    })
    .await;
    let mut watch = pin!(agent.client().watch("catalogue", quick_watch()));

    next(&mut watch).await.expect("first set");
    let second = next(&mut watch).await.expect("second set");

    assert_eq!(addresses(second), ["192.0.2.1:50051", "192.0.2.2:50051"]);
    let indexes: Vec<Option<String>> = requests_while_polling(&agent, 4, &mut watch)
        .await
        .into_iter()
        .map(|request| request.query.get("index").cloned())
        .collect();
    assert_eq!(
        indexes,
        [None, Some("20".into()), None, Some("6".into())],
        "a fresh read after the index went backwards"
    );
}

#[tokio::test]
async fn bad_answers_are_clear_errors_and_a_watch_outlives_them() {
    let one = health_answer(&[("192.0.2.1", 50051)]);
    let agent = ConsulAgent::start(Script {
        health: vec![
            Answer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                index: None,
                body: "No cluster leader".into(),
            },
            Answer::json(3, r#"[{"Node": {"Address": "192.0.2.1"}, "Serv"#.into()),
            // Blocking needs the index header.
            Answer {
                index: None,
                ..Answer::json(0, one.clone())
            },
            Answer::json(4, one),
        ],
        ..Script::default()
    })
    .await;
    let client = agent.client();

    let server_error = client.healthy_instances("catalogue").await.unwrap_err();
    let malformed = client.healthy_instances("catalogue").await.unwrap_err();
    let mut watch = pin!(client.watch("catalogue", quick_watch()));
    let no_index = next(&mut watch).await.unwrap_err();
    let recovered = next(&mut watch).await.expect("the watch goes on");

    assert!(
        matches!(server_error, ConsulError::Status { status, .. } if status == 500),
        "{server_error:?}"
    );
    assert!(
        server_error.to_string().contains("No cluster leader"),
        "{server_error}"
    );
    assert!(
        matches!(malformed, ConsulError::MalformedJson { .. }),
        "{malformed:?}"
    );
    assert!(
        malformed.to_string().contains("malformed JSON"),
        "{malformed}"
    );
    assert!(
        matches!(no_index, ConsulError::MissingIndex { .. }),
        "{no_index:?}"
    );
    assert_eq!(addresses(recovered), ["192.0.2.1:50051"]);
}

/// Builds and runs an app that is expected to fail before it serves.
async fn build_and_run(config: ServeConfig) -> Result<(), StartupError> {
    let telemetry = crate::helpers::telemetry(&config, BoxMakeWriter::new(std::io::sink))
        .expect("telemetry initialises once per test process");
    let app = App::build(config, &telemetry).await?;
    tokio::time::timeout(PATIENCE, app.run_until_stopped(std::future::pending()))
        .await
        .expect("start-up fails in time")
}

fn quick_watch() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_secs(30),
        min_interval: Duration::ZERO,
        retry_after: Duration::from_millis(10),
    }
}

async fn next<S>(watch: &mut S) -> Result<Vec<Instance>, ConsulError>
where
    S: Stream<Item = Result<Vec<Instance>, ConsulError>> + Unpin,
{
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("the watch yields in time")
        .expect("a watch never ends")
}

/// The agent's first `count` requests, polling `watch` meanwhile (a stream
/// only queries when polled) and failing if it yields.
async fn requests_while_polling<S>(
    agent: &ConsulAgent,
    count: usize,
    watch: &mut S,
) -> Vec<Recorded>
where
    S: Stream<Item = Result<Vec<Instance>, ConsulError>> + Unpin,
{
    tokio::select! {
        requests = agent.requests(count) => requests,
        item = watch.next() => panic!("nothing changed, yet the watch yielded {item:?}"),
    }
}

fn addresses(instances: Vec<Instance>) -> Vec<String> {
    instances.iter().map(ToString::to_string).collect()
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn fixture_text(name: &str) -> String {
    let path = repo_path(&format!("tests/it/fixtures/{name}"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).expect("fixture is JSON")
}

/// A health answer with one passing instance per `(address, port)`, in the
/// fixture's shape, trimmed to what matters.
fn health_answer(instances: &[(&str, u16)]) -> String {
    let entries: Vec<Value> = instances
        .iter()
        .map(|(address, port)| {
            json!({
                "Node": {"Node": format!("node-{address}"), "Address": address},
                "Service": {
                    "ID": format!("catalogue-{address}-{port}"),
                    "Service": "catalogue",
                    "Address": address,
                    "Port": port,
                },
                "Checks": [],
            })
        })
        .collect();
    Value::from(entries).to_string()
}

/// What the stand-in agent does: its answer to a registration, its answers
/// to health queries in order (past the last, a query blocks as it would on
/// an agent where nothing changes), and whether a deregistration waits for
/// `release_deregister`.
struct Script {
    register: (StatusCode, &'static str),
    health: Vec<Answer>,
    hold_deregister: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            register: (StatusCode::OK, ""),
            health: Vec::new(),
            hold_deregister: false,
        }
    }
}

#[derive(Clone)]
struct Answer {
    status: StatusCode,
    /// `X-Consul-Index`.
    index: Option<u64>,
    body: String,
}

impl Answer {
    fn json(index: u64, body: String) -> Self {
        Self {
            status: StatusCode::OK,
            index: Some(index),
            body,
        }
    }
}

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: String,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("{} body is not JSON: {error}", self.path))
    }
}

/// The recorded-contract stand-in for a Consul agent, on loopback port 0.
struct ConsulAgent {
    url: String,
    recorded: watch::Receiver<Vec<Recorded>>,
    deregister_gate: Arc<Semaphore>,
}

#[derive(Clone)]
struct AgentState {
    recorded: Arc<watch::Sender<Vec<Recorded>>>,
    register: (StatusCode, &'static str),
    health: Arc<Mutex<VecDeque<Answer>>>,
    deregister_gate: Option<Arc<Semaphore>>,
}

impl ConsulAgent {
    async fn start(script: Script) -> Self {
        let (recorded, recorded_receiver) = watch::channel(Vec::new());
        let deregister_gate = Arc::new(Semaphore::new(0));
        let state = AgentState {
            recorded: Arc::new(recorded),
            register: script.register,
            health: Arc::new(Mutex::new(script.health.into())),
            deregister_gate: script.hold_deregister.then(|| deregister_gate.clone()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("agent binds");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new().fallback(answer).with_state(state);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            recorded: recorded_receiver,
            deregister_gate,
        }
    }

    fn client(&self) -> ConsulClient {
        ConsulClient::new(ConsulAddr::parse(&self.url).expect("agent url")).expect("client")
    }

    /// The requests so far.
    fn recorded(&self) -> Vec<Recorded> {
        self.recorded.borrow().clone()
    }

    /// The requests so far, once there are at least `count`.
    async fn requests(&self, count: usize) -> Vec<Recorded> {
        let mut recorded = self.recorded.clone();
        let result = tokio::time::timeout(PATIENCE, recorded.wait_for(|r| r.len() >= count)).await;
        match result {
            Ok(Ok(requests)) => requests.clone(),
            _ => panic!(
                "the agent never got {count} requests: {:#?}",
                self.recorded()
            ),
        }
    }

    fn release_deregister(&self) {
        self.deregister_gate.add_permits(1);
    }
}

async fn answer(
    State(agent): State<AgentState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri
        .query()
        .map(|query| {
            reqwest::Url::parse(&format!("http://agent/?{query}"))
                .expect("query parses")
                .query_pairs()
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    agent.recorded.send_modify(|recorded| {
        recorded.push(Recorded {
            method: method.clone(),
            path: uri.path().to_owned(),
            query,
            content_type: headers
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    });
    let path = uri.path();
    if method == Method::PUT && path == "/v1/agent/service/register" {
        return agent.register.into_response();
    }
    if method == Method::PUT && path.starts_with("/v1/agent/service/deregister/") {
        if let Some(gate) = &agent.deregister_gate {
            gate.acquire().await.expect("gate open").forget();
        }
        return StatusCode::OK.into_response();
    }
    if method == Method::GET && path.starts_with("/v1/health/service/") {
        let next = agent.health.lock().unwrap().pop_front();
        let Some(answer) = next else {
            return std::future::pending().await;
        };
        let mut response = (answer.status, answer.body).into_response();
        if answer.status.is_success() {
            response.headers_mut().insert(
                CONTENT_TYPE,
                "application/json".parse().expect("header value"),
            );
        }
        if let Some(index) = answer.index {
            response
                .headers_mut()
                .insert("x-consul-index", index.into());
        }
        return response;
    }
    (StatusCode::NOT_FOUND, "no such endpoint in the contract").into_response()
}
