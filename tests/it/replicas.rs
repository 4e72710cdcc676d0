//! Three replicas of the real binary, each its own process, against one
//! PostgreSQL database, driven by the load generator's balanced client while
//! one replica is stopped and started again.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use catalogue::{
    load::LoadConfig,
    load::{self, Summary},
};
use tokio::process::Child;

use crate::helpers::{self, PgSchema, value};

/// One replica: a child process on fixed ports, so it can come back on them.
struct Replica {
    grpc_port: u16,
    admin_port: u16,
    database_url: String,
    process: Option<Child>,
}

impl Replica {
    async fn start(database_url: &str) -> Self {
        let mut replica = Self {
            grpc_port: free_port(),
            admin_port: free_port(),
            database_url: database_url.to_owned(),
            process: None,
        };
        replica.restart().await;
        replica
    }

    async fn restart(&mut self) {
        let log = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalogue"))
            .args(["serve", "--database-url", &self.database_url])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--admin-addr", &format!("127.0.0.1:{}", self.admin_port)])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(["--seed-products", "300", "--drain-delay", "500ms"])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the catalogue binary starts");
        self.process = Some(process);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok(response) = reqwest::get(self.admin_url("/readyz")).await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replica on port {} never became ready", self.grpc_port);
    }

    /// Sends `signal` (TERM: drain; KILL: crash) and waits for the exit.
    async fn stop(&mut self, signal: &str) {
        let mut process = self.process.take().expect("running");
        let pid = process.id().expect("running").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success());
        process.wait().await.expect("the replica exits");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    async fn scrape(&self) -> prometheus_parse::Scrape {
        helpers::scrape(&self.admin_url("/metrics")).await
    }

    /// GetProduct calls this process answered OK.
    async fn served(&self) -> f64 {
        let scrape = self.scrape().await;
        value(
            &scrape,
            "grpc_server_handled_total",
            &[("grpc_method", "GetProduct"), ("grpc_code", "OK")],
        )
        .unwrap_or(0.0)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn load_config(replicas: &[Replica], retries: u32) -> LoadConfig {
    let target = replicas
        .iter()
        .map(Replica::url)
        .collect::<Vec<_>>()
        .join(",");
    let retries = retries.to_string();
    let extra = [
        "--rps",
        "200",
        "--duration",
        "10s",
        "--mix",
        "get=90,search=10",
        "--deadline",
        "2s",
        "--retries",
        &retries,
        "--json",
    ];
    helpers::load_config(&target, &extra)
}

/// Drives three replicas for 10 s; the second is stopped with `signal` at
/// 2 s and started again 2 s later. Returns their schema (dropped last),
/// the summary and the replicas.
async fn three_replicas_with_one_stopped(
    signal: &str,
    retries: u32,
) -> (PgSchema, Summary, Vec<Replica>) {
    let schema = PgSchema::required().await;
    let database_url = schema.url();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&database_url).await);
    }
    let config = load_config(&replicas, retries);
    let load = tokio::spawn(async move { load::run(&config).await });

    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[1].stop(signal).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[1].restart().await;
    let summary = load.await.unwrap().expect("load runs");
    (schema, summary, replicas)
}

/// Codes other than OK and NOT_FOUND (the mix asks for a few unknown ids).
fn failures(summary: &Summary) -> Vec<String> {
    summary
        .calls
        .iter()
        .flat_map(|(method, codes)| {
            codes
                .iter()
                .filter(|(code, _)| !matches!(code.as_str(), "OK" | "NOT_FOUND"))
                .map(move |(code, n)| format!("{method} {code} {n}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_draining_replica_gets_no_new_calls_and_load_spreads_again_when_it_is_back() {
    let (_schema, summary, replicas) = three_replicas_with_one_stopped("TERM", 0).await;

    // No retries: a call sent to the replica after it began draining would
    // have failed.
    assert_eq!(failures(&summary), Vec::<String>::new(), "{summary}");
    assert_eq!(summary.retries, 0);
    assert_eq!(summary.replicas.len(), 3, "{summary}");
    for (replica, calls) in &summary.replicas {
        assert!(*calls > 100, "{replica} got {calls} calls: {summary}");
    }
    // The restarted process is a new one: what it served, it served after
    // the restart.
    assert!(replicas[1].served().await > 50.0, "{summary}");
    let mut instances = BTreeSet::new();
    for replica in &replicas {
        let scrape = replica.scrape().await;
        let build = scrape
            .samples
            .iter()
            .find(|sample| sample.metric == "catalogue_build_info")
            .expect("build info");
        instances.insert(
            build
                .labels
                .get("instance_id")
                .expect("instance_id")
                .to_owned(),
        );
    }
    assert_eq!(instances.len(), 3, "{instances:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn calls_survive_a_crashed_replica_by_retrying_on_the_others() {
    let (_schema, summary, replicas) = three_replicas_with_one_stopped("KILL", 2).await;

    assert_eq!(failures(&summary), Vec::<String>::new(), "{summary}");
    assert_eq!(summary.replicas.len(), 3, "{summary}");
    assert!(replicas[1].served().await > 50.0, "{summary}");
}
