//! `TestApp::builder()`: every test gets its own app on port 0 and its own
//! database.
//!
//! # Layout
//! - here: the app and its builder, the backends, the test configuration
//! - `helpers/grpc.rs`: calls to the app, the upstream simulator, the load
//!   generator's configuration
//! - `helpers/http.rs`: the admin port (scrapes, faults, waits on a metric)
//! - `helpers/metrics.rs`: samples read out of a scrape
//! - `helpers/logs.rs`: where the app's log lines go, and its subscriber
//! - `helpers/postgres.rs`: a schema per test, dropped when the test ends

mod grpc;
mod http;
mod logs;
mod metrics;
mod postgres;

use std::{sync::Arc, time::Duration};

use catalogue::{
    api::proto::catalogue_service_client::CatalogueServiceClient,
    app::{App, StartupError},
    config::{Cli, Command, ServeConfig},
    runtime::TaskList,
    store::{self, Store},
    telemetry::Telemetry,
};
use clap::Parser;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub use grpc::{load_config, simulator, upstream};
pub use http::scrape;
pub use logs::{Logs, telemetry, test_log_sink};
pub use metrics::{bucket, shed, value};
pub use postgres::{PgSchema, test_database_url};

/// Size of the catalogue each test app is seeded with.
pub const CATALOGUE_SIZE: u32 = 500;

/// Where a test app keeps its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Memory,
    /// `TEST_DATABASE_URL`'s server, each test in its own schema (dropped
    /// with the app). Without the variable at build time these tests are
    /// built ignored (see `build.rs`), so they are reported as not run,
    /// never as passed.
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
    /// The health lane's; `None` with `--no-health-lane`.
    pub health_addr: Option<std::net::SocketAddr>,
    pub console_addr: Option<std::net::SocketAddr>,
    pub channel: Channel,
    pub client: CatalogueServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), StartupError>>,
    /// Dropped after the server handle: flushes exported spans.
    telemetry: Telemetry,
    data_dir: tempfile::TempDir,
    /// A `Backend::Postgres` app's schema, dropped with the app.
    schema: Option<PgSchema>,
}

/// What a test app is built from; `TestApp::builder()`.
pub struct TestAppBuilder {
    products: Products,
    extra: Vec<String>,
    logs: Option<Logs>,
    tasks: Option<TaskList>,
    configure: Option<ConfigChange>,
}

/// A change to the parsed configuration (`TestAppBuilder::configure`).
type ConfigChange = Box<dyn FnOnce(&mut ServeConfig)>;

/// Where a test app's products come from.
enum Products {
    Backend(Backend),
    /// A database the test made, to reach behind the app's back.
    DatabaseUrl(String),
    /// A store the test made, to observe or break it.
    Store(Arc<dyn Store>),
}

impl TestApp {
    /// A memory app with `test_config`'s flags, logs silent unless
    /// `TEST_LOG` is set; each option below changes one of those.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            products: Products::Backend(Backend::Memory),
            extra: Vec::new(),
            logs: None,
            tasks: None,
            configure: None,
        }
    }

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

    /// Waits for the server task started by `spawn`.
    pub async fn stopped(mut self) -> Result<(), StartupError> {
        (&mut self.server).await.expect("server task panicked")
    }

    /// The SQLite database file of a `Backend::Sqlite` app.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.data_dir.path().join("catalogue.db")
    }

    /// The schema of a `Backend::Postgres` app, to reach behind its back.
    pub fn schema(&self) -> Option<&PgSchema> {
        self.schema.as_ref()
    }

    /// The app's subscriber, for work a test runs as the app would.
    pub fn dispatch(&self) -> tracing::Dispatch {
        self.telemetry.dispatch()
    }

    /// Exports the spans finished so far.
    pub fn flush_traces(&self) {
        self.telemetry.flush_traces();
    }
}

impl TestAppBuilder {
    /// Products kept in `backend` (memory unless told).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.products = Products::Backend(backend);
        self
    }

    /// Products kept at `database_url`, a database the test made (a
    /// `PgSchema`, maybe through a relay) and drops itself.
    pub fn database_url(mut self, database_url: &str) -> Self {
        self.products = Products::DatabaseUrl(database_url.to_owned());
        self
    }

    /// Products served from `store`, which the test made.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.products = Products::Store(store);
        self
    }

    /// Command-line flags after `test_config`'s own.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// The app's log lines kept in `logs`.
    pub fn logs(mut self, logs: &Logs) -> Self {
        self.logs = Some(logs.clone());
        self
    }

    /// The app's task dump lists `tasks` (which the test's runtime
    /// records).
    pub fn tasks(mut self, tasks: TaskList) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Changes the parsed configuration where no flag can say it (an
    /// address already taken, say).
    pub fn configure(mut self, change: impl FnOnce(&mut ServeConfig) + 'static) -> Self {
        self.configure = Some(Box::new(change));
        self
    }

    /// Builds the app, serves it on a task of the test's runtime, and
    /// connects a client.
    pub async fn spawn(self) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut schema = None;
        let database_url = match &self.products {
            Products::Backend(Backend::Memory) | Products::Store(_) => "memory".to_owned(),
            Products::Backend(Backend::Sqlite) => format!(
                "sqlite://{}",
                data_dir.path().join("catalogue.db").display()
            ),
            Products::Backend(Backend::Postgres) => schema.insert(PgSchema::required().await).url(),
            Products::DatabaseUrl(url) => url.clone(),
        };
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut config = test_config(&database_url, &extra);
        if let Some(change) = self.configure {
            change(&mut config);
        }
        let ready_file = config
            .ready_file
            .get_or_insert_with(|| data_dir.path().join("ready.json"))
            .clone();
        let sink = match &self.logs {
            Some(logs) => logs.sink(),
            None => test_log_sink(),
        };
        let mut telemetry = telemetry(&config, sink).expect("test telemetry builds");
        if let Some(tasks) = self.tasks {
            telemetry = telemetry.with_tasks(tasks);
        }
        let app = match self.products {
            Products::Store(store) => App::build_with_store(config, store, &telemetry).await,
            _ => App::build(config, &telemetry).await,
        }
        .expect("app builds");

        let grpc_addr = app.grpc_addr();
        let admin_addr = app.admin_addr();
        let health_addr = app.health_addr();
        let console_addr = app.console_addr();
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = shutdown_signal.await;
        }));
        serving(&ready_file, &server).await;
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("valid uri")
            .connect()
            .await
            .expect("connects to the app");
        TestApp {
            grpc_addr,
            admin_addr,
            health_addr,
            client: CatalogueServiceClient::new(channel.clone()),
            channel,
            console_addr,
            shutdown: Some(shutdown),
            server,
            telemetry,
            data_dir,
            schema,
        }
    }
}

/// Returns once the app has started everything it runs (its ready file is
/// written after the last task is spawned), or once it has stopped (a test
/// of a failed start reads why from `stopped`). Listeners are bound before
/// `spawn` runs the app, so a connection alone does not say it has started.
async fn serving(ready_file: &std::path::Path, server: &JoinHandle<Result<(), StartupError>>) {
    const BOUND: Duration = Duration::from_secs(60);
    let waited = tokio::time::timeout(BOUND, async {
        while !ready_file.exists() && !server.is_finished() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    waited
        .await
        .expect("the app started or stopped within a minute: its start is wedged");
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
        "--health-addr",
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

/// The seed catalogue's products, as the API returns them.
pub fn seed_products() -> Vec<catalogue::api::proto::Product> {
    store::seed::products(CATALOGUE_SIZE)
        .map(Into::into)
        .collect()
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
