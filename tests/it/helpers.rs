//! `spawn_app`: every test gets its own app on port 0 and its own database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use catalogue::{
    api::proto::{
        GetProductRequest, ListProductsRequest, Product,
        catalogue_service_client::CatalogueServiceClient,
    },
    app::{App, StartupError},
    config::{Cli, Command, ServeConfig},
    load::LoadConfig,
    runtime::TaskList,
    store::{self, Store},
    telemetry::Telemetry,
    upstream::simulator::UpstreamSimulator,
};
use clap::Parser;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Size of the catalogue each test app is seeded with.
pub const CATALOGUE_SIZE: u32 = 500;

/// Where a test app keeps its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Memory,
    /// `TEST_DATABASE_URL`'s server, each test in its own schema. Without
    /// the variable at build time these tests are built ignored (see
    /// `build.rs`), so they are reported as not run, never as passed.
    Postgres,
}

/// Generates one test per backend from `async fn name(backend: Backend)`.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::helpers::Backend::Sqlite).await
            })+
        }
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::helpers::Backend::Memory).await
            })+
        }
        mod postgres {
            $(#[tokio::test]
            #[cfg_attr(not(postgres_tests), ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set")]
            async fn $name() {
                super::$name($crate::helpers::Backend::Postgres).await
            })+
        }
    };
}
pub(crate) use backend_tests;

pub struct TestApp {
    pub grpc_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    pub console_addr: Option<std::net::SocketAddr>,
    pub channel: Channel,
    pub client: CatalogueServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), StartupError>>,
    /// Dropped last: flushes exported spans.
    telemetry: Telemetry,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    /// Triggers shutdown and waits for `run_until_stopped` to return.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        self.begin_shutdown();
        (&mut self.server).await.expect("server task panicked")
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for the server task started by `spawn_app`.
    pub async fn stopped(mut self) -> Result<(), StartupError> {
        (&mut self.server).await.expect("server task panicked")
    }

    /// The SQLite database file of a `Backend::Sqlite` app.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self._data_dir.path().join("catalogue.db")
    }

    /// The app's subscriber, for work a test runs as the app would.
    pub fn dispatch(&self) -> tracing::Dispatch {
        self.telemetry.dispatch()
    }

    /// Exports the spans finished so far.
    pub fn flush_traces(&self) {
        self.telemetry.flush_traces();
    }

    /// Scrapes `/metrics` and parses it as Prometheus text.
    pub async fn scrape(&self) -> prometheus_parse::Scrape {
        scrape(&self.admin_url("/metrics")).await
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Calls GetProduct for `product_id`.
    pub async fn get_product(&mut self, product_id: &str) -> Result<Product, tonic::Status> {
        let request = GetProductRequest {
            product_id: product_id.to_owned(),
        };
        self.client
            .get_product(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Reads a ListProducts stream of `page_size` to its end; returns how
    /// many products it held.
    pub async fn list_to_end(&mut self, page_size: i32) -> usize {
        let request = ListProductsRequest {
            page_size,
            ..Default::default()
        };
        let mut stream = self
            .client
            .list_products(request)
            .await
            .unwrap()
            .into_inner();
        let mut received = 0;
        while stream.message().await.unwrap().is_some() {
            received += 1;
        }
        received
    }
}

/// Fetches `url` (a `/metrics` endpoint) and parses it as Prometheus text.
pub async fn scrape(url: &str) -> prometheus_parse::Scrape {
    let body = reqwest::get(url)
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("metrics body");
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_owned())))
        .expect("valid Prometheus text")
}

/// `catalogue load --target TARGET EXTRA...`, parsed.
pub fn load_config(target: &str, extra: &[&str]) -> LoadConfig {
    let args = [&["catalogue", "load", "--target", target], extra].concat();
    match Cli::try_parse_from(args)
        .expect("load flags parse")
        .into_command()
    {
        Command::Load(config) => config,
        other => unreachable!("{other:?}"),
    }
}

/// Configuration of a test app: port 0 everywhere, a short grace period.
pub fn test_config(database_url: &str, extra: &[&str]) -> ServeConfig {
    let mut args = vec![
        "catalogue",
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--shutdown-grace",
        "5s",
        "--drain-delay",
        "0s",
        "--console-addr",
        "127.0.0.1:0",
    ];
    let size = CATALOGUE_SIZE.to_string();
    args.extend(["--seed-products", &size]);
    args.extend(extra);
    match Cli::try_parse_from(args)
        .expect("test configuration parses")
        .into_command()
    {
        Command::Serve(config) => config,
        other => unreachable!("not a serve command: {other:?}"),
    }
}

/// Spawns an app on `backend`; `None` (the test is skipped) for PostgreSQL
/// when `TEST_DATABASE_URL` is not set.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, extra: &[&str]) -> Option<TestApp> {
    spawn_app_logging_to(backend, extra, test_log_sink()).await
}

/// Spawns an app whose log lines go to `sink`.
pub async fn spawn_app_logging_to(
    backend: Backend,
    extra: &[&str],
    sink: BoxMakeWriter,
) -> Option<TestApp> {
    spawn_app_listing(backend, extra, sink, TaskList::default()).await
}

/// Spawns an app whose task dump lists `tasks` (which the test's runtime
/// records).
pub async fn spawn_app_listing(
    backend: Backend,
    extra: &[&str],
    sink: BoxMakeWriter,
    tasks: TaskList,
) -> Option<TestApp> {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let database_url = match backend {
        Backend::Memory => "memory".to_owned(),
        Backend::Sqlite => format!(
            "sqlite://{}",
            data_dir.path().join("catalogue.db").display()
        ),
        Backend::Postgres => postgres_schema(&test_database_url()).await,
    };
    Some(start_at(&database_url, extra, sink, data_dir, tasks).await)
}

/// Spawns an app on `database_url` (a PostgreSQL schema the test made, to
/// reach behind the app's back); `data_dir` lives as long as the app.
pub async fn spawn_app_at(
    database_url: &str,
    extra: &[&str],
    sink: BoxMakeWriter,
    data_dir: tempfile::TempDir,
) -> TestApp {
    start_at(database_url, extra, sink, data_dir, TaskList::default()).await
}

async fn start_at(
    database_url: &str,
    extra: &[&str],
    sink: BoxMakeWriter,
    data_dir: tempfile::TempDir,
    tasks: TaskList,
) -> TestApp {
    let config = test_config(database_url, extra);
    let mut telemetry = telemetry(&config, sink)
        .expect(TELEMETRY_ONCE)
        .with_tasks(tasks);
    let app = App::build(config, &mut telemetry)
        .await
        .expect("app builds");
    start(app, telemetry, data_dir).await
}

/// Spawns a memory app from a configuration the test adjusted
/// (`test_config`'s, changed where a flag cannot say it).
pub async fn spawn_app_configured(config: ServeConfig) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let mut telemetry = telemetry(&config, test_log_sink()).expect(TELEMETRY_ONCE);
    let app = App::build(config, &mut telemetry)
        .await
        .expect("app builds");
    start(app, telemetry, data_dir).await
}

/// Spawns an app around a store the test made (to observe or break it).
pub async fn spawn_app_with_store(store: Arc<dyn Store>) -> TestApp {
    spawn_app_with_store_and(store, &[]).await
}

/// `spawn_app_with_store` with `extra` flags.
pub async fn spawn_app_with_store_and(store: Arc<dyn Store>, extra: &[&str]) -> TestApp {
    spawn_app_with_store_logging_to(store, extra, test_log_sink()).await
}

/// `spawn_app_with_store_and`, its log lines written to `sink`.
pub async fn spawn_app_with_store_logging_to(
    store: Arc<dyn Store>,
    extra: &[&str],
    sink: BoxMakeWriter,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let config = test_config("memory", extra);
    let mut telemetry = telemetry(&config, sink).expect(TELEMETRY_ONCE);
    let app = App::build_with_store(config, store, &mut telemetry)
        .await
        .expect("app builds");
    start(app, telemetry, data_dir).await
}

async fn start(app: App, telemetry: Telemetry, data_dir: tempfile::TempDir) -> TestApp {
    let grpc_addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let console_addr = app.console_addr();
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = shutdown_signal.await;
    }));
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects to the app");
    TestApp {
        grpc_addr,
        admin_addr,
        client: CatalogueServiceClient::new(channel.clone()),
        channel,
        console_addr,
        shutdown: Some(shutdown),
        server,
        telemetry,
        _data_dir: data_dir,
    }
}

/// The PostgreSQL server of the tests. Only tests built with the variable
/// set run (the others are ignored), so here it must be set.
pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL was set when the tests were built, and must be set to run them")
}

/// A fresh schema in the test database, and a url whose connections use it.
pub async fn postgres_schema(url: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "catalogue_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("TEST_DATABASE_URL connects");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("schema created");
    pool.close().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options[search_path]={schema}")
}

const TELEMETRY_ONCE: &str = "test telemetry builds";

/// An app's telemetry, in a process that never sets a global default
/// dispatch (each test's app has its own).
///
/// While a process has exactly one live `Dispatch`, tracing-core takes a
/// shortcut: a callsite's interest (cached until the next rebuild) and the
/// maximum level are asked of the *calling thread's* default dispatch, not
/// of the registered ones. A test process whose only dispatch is its app's
/// (`cargo nextest`, or one test run alone) would then cache `never` for
/// every callsite first reached outside the app's scope: tokio's task
/// spans first reached by the test's own runtime, say, and tokio-console
/// sees no task. The binary is unaffected (its app's dispatch is the global
/// default, which is what a thread without its own gets). A second,
/// silent dispatch kept for the whole process ends the shortcut: interest
/// is asked of every registered dispatch, as when several tests' apps run
/// in one process.
pub fn telemetry(
    config: &ServeConfig,
    sink: BoxMakeWriter,
) -> Result<Telemetry, catalogue::telemetry::TelemetryError> {
    static WITNESS: std::sync::LazyLock<tracing::Dispatch> =
        std::sync::LazyLock::new(|| tracing::Dispatch::new(Silent));
    std::sync::LazyLock::force(&WITNESS);
    Telemetry::init(&config.telemetry, sink)
}

/// A subscriber that wants nothing and raises no level.
struct Silent;

impl tracing::Subscriber for Silent {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::never()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::OFF)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Logs are silent unless `TEST_LOG` is set.
pub fn test_log_sink() -> BoxMakeWriter {
    if std::env::var_os("TEST_LOG").is_some() {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::sink)
    }
}

/// The seed catalogue's products, as the API returns them.
pub fn seed_products() -> Vec<catalogue::api::proto::Product> {
    store::seed::products(CATALOGUE_SIZE)
        .map(Into::into)
        .collect()
}

/// The value of the one sample of `name` whose labels include `labels`.
pub fn value(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let matching: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {} samples",
        matching.len()
    );
    matching.first().map(|sample| match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => {
            buckets.last().map_or(0.0, |bucket| bucket.count)
        }
        prometheus_parse::Value::Summary(_) => panic!("{name} is a summary"),
    })
}

/// Calls refused at once for `reason` (`catalogue_shed_total`).
pub fn shed(scrape: &prometheus_parse::Scrape, reason: &str) -> Option<f64> {
    value(scrape, "catalogue_shed_total", &[("reason", reason)])
}

/// The cumulative count of the histogram bucket `le` of the one series of
/// `name` whose labels include `labels`.
pub fn bucket(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
    le: f64,
) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    let prometheus_parse::Value::Histogram(buckets) = &sample.value else {
        panic!("{name} is not a histogram");
    };
    buckets
        .iter()
        .find(|bucket| (bucket.less_than - le).abs() < 1e-12)
        .map(|bucket| bucket.count)
        .unwrap_or_else(|| panic!("{name} has no bucket {le}"))
}

/// Sets faults through the admin API; returns the HTTP status and body.
pub async fn put_faults(app: &TestApp, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .put(app.admin_url("/faults"))
        .body(body.to_owned())
        .send()
        .await
        .expect("admin answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Starts an upstream simulator on loopback; returns its url.
pub async fn upstream(latency_ms: u64, error_rate: f64) -> String {
    simulator(latency_ms, error_rate, 0.0).await.0
}

/// Starts an upstream simulator; returns its url and its admin url.
pub async fn simulator(latency_ms: u64, error_rate: f64, hang_rate: f64) -> (String, String) {
    let (latency, error_rate, hang_rate) = (
        latency_ms.to_string(),
        error_rate.to_string(),
        hang_rate.to_string(),
    );
    let args = [
        "catalogue",
        "upstream",
        "--addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--latency-ms",
        &latency,
        "--error-rate",
        &error_rate,
        "--hang-rate",
        &hang_rate,
    ];
    let config = match Cli::try_parse_from(args)
        .expect("simulator flags parse")
        .into_command()
    {
        Command::Upstream(config) => config,
        other => unreachable!("{other:?}"),
    };
    let simulator = UpstreamSimulator::bind(&config)
        .await
        .expect("simulator binds");
    let url = format!("http://{}", simulator.grpc_addr().unwrap());
    let admin = format!("http://{}", simulator.admin_addr().unwrap());
    tokio::spawn(simulator.run(std::future::pending()));
    (url, admin)
}

/// Waits until `in_flight` GetProduct calls are being handled.
pub async fn wait_for_in_flight(app: &TestApp, in_flight: f64) {
    for _ in 0..1000 {
        let scrape = app.scrape().await;
        if value(
            &scrape,
            "grpc_server_in_flight_requests",
            &[("grpc_method", "GetProduct")],
        ) == Some(in_flight)
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never reached {in_flight} calls in flight");
}

/// Waits (scraping every 20 ms, at most 30 s) until the one sample of
/// `name` with `labels` equals `expected`.
pub async fn wait_for_value(app: &TestApp, name: &str, labels: &[(&str, &str)], expected: f64) {
    let mut last = None;
    for _ in 0..1500 {
        last = value(&app.scrape().await, name, labels);
        if last == Some(expected) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{name} {labels:?} stayed {last:?}, never {expected}");
}

/// A path in the repository.
pub fn repo_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A YAML file of the repository (compose, collector, Prometheus, rules).
pub fn read_yaml(path: &std::path::Path) -> serde_norway::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Log lines written by the app, kept for the test to read: a sink for
/// `spawn_app_logging_to` (`BoxMakeWriter::new(move || logs.clone())`).
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// A sink for `spawn_app_logging_to` that writes here.
    pub fn sink(&self) -> BoxMakeWriter {
        let logs = self.clone();
        BoxMakeWriter::new(move || logs.clone())
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.bytes()).expect("log lines are UTF-8")
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
