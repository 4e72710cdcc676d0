//! `/debug/pprof/tasks` can never hurt: no number of dumps, with the
//! service idle, busy or a worker blocked, keeps a call from being served or
//! the process from draining and exiting 0 within its shutdown grace; and
//! the dump lists the live tasks by name and spawn location.

use std::{process::Stdio, time::Duration};

use catalogue::{
    api::proto::{GetProductRequest, catalogue_service_client::CatalogueServiceClient},
    runtime::{TaskList, runtime_builder},
};
use tonic::transport::Channel;

use crate::helpers::TestApp;

/// The apps' `--shutdown-grace` (5 s here, 10 s for the binary) with room:
/// beyond this, shutdown is stuck, not slow.
const STOP_BOUND: Duration = Duration::from_secs(15);
const DUMPS: usize = 20;
/// Longer than the old dump's 5 s timeout, so a dump that waits for the
/// workers would either answer late or give up and leave one behind.
const BLOCKING: &str = r#"{"blocking_ms": 6000, "methods": ["GetProduct"]}"#;

/// Runs `test` with a memory app on the service's own runtime
/// (multi-threaded, two workers), which lists its tasks.
fn on_service_runtime<F: Future<Output = ()>>(test: impl FnOnce(TestApp) -> F) {
    let tasks = TaskList::default();
    tasks
        .record(runtime_builder().worker_threads(2))
        .build()
        .unwrap()
        .block_on(async {
            let app = TestApp::builder()
                .args(&["--enable-faults"])
                .tasks(tasks)
                .spawn()
                .await;
            test(app).await;
        });
}

async fn task_dump(admin_url: &str) -> (u16, String) {
    let response = reqwest::get(format!("{admin_url}/debug/pprof/tasks"))
        .await
        .expect("admin answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("dump body"))
}

async fn stop_within_bound(app: TestApp) {
    tokio::time::timeout(STOP_BOUND, app.stop())
        .await
        .expect("run_until_stopped returned: shutdown is not wedged")
        .expect("clean shutdown");
}

/// Calls GetProduct on a task of its own (to be blocked by the fault).
fn get_product(client: &CatalogueServiceClient<Channel>) -> tokio::task::JoinHandle<bool> {
    let mut client = client.clone();
    tokio::spawn(async move {
        let request = GetProductRequest {
            product_id: "prod-0000001".into(),
        };
        client.get_product(request).await.is_ok()
    })
}

#[test]
fn the_dump_lists_the_named_server_tasks_and_each_calls_spawn_location() {
    on_service_runtime(|app| async move {
        let (status, dump) = task_dump(&app.admin_url("")).await;

        assert_eq!(status, 200, "{dump}");
        for name in ["\"grpc-server\"", "\"admin-server\"", "\"metrics-upkeep\""] {
            assert!(dump.contains(name), "{name} in {dump}");
        }
        assert!(dump.contains("spawned at src/app.rs:"), "{dump}");
        assert!(dump.contains("by spawn location:"), "{dump}");
        stop_within_bound(app).await;
    });
}

#[test]
fn twenty_dumps_then_shutdown_drains_and_returns() {
    on_service_runtime(|mut app| async move {
        for _ in 0..DUMPS {
            let (status, dump) = task_dump(&app.admin_url("")).await;
            assert_eq!(status, 200, "{dump}");
            app.get_product("prod-0000001")
                .await
                .expect("served between dumps");
        }

        stop_within_bound(app).await;
    });
}

#[test]
fn a_dump_while_a_worker_is_blocked_answers_at_once_and_wedges_nothing() {
    on_service_runtime(|app| async move {
        app.put_faults(BLOCKING).await;
        let blocked = get_product(&app.client);
        app.wait_for_in_flight(1.0).await;

        let (status, dump) = task_dump(&app.admin_url("")).await;

        assert_eq!(status, 200, "{dump}");
        assert!(
            !blocked.is_finished(),
            "the dump waited for the blocked worker"
        );
        assert!(blocked.await.unwrap(), "the blocked call is served");
        app.put_faults(r#"{"blocking_ms": 0}"#).await;
        let (status, dump) = task_dump(&app.admin_url("")).await;
        assert_eq!(status, 200, "a later dump: {dump}");
        stop_within_bound(app).await;
    });
}

/// A port free now, for a child process to bind.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The real binary, three times: twenty dumps, one more with a worker
/// blocked, then SIGTERM and exit code 0 within its grace (a wedged runtime
/// never exits; it is killed after the bound).
#[tokio::test]
async fn the_binary_exits_0_on_sigterm_after_dumps_every_time() {
    for trial in 0..3 {
        let (grpc, admin) = (free_port(), free_port());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalogue"))
            .args(["serve", "--database-url", "memory", "--seed-products", "10"])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(["--console-addr", "127.0.0.1:0", "--drain-delay", "0s"])
            .args(["--shutdown-grace", "10s", "--enable-faults"])
            .env("TOKIO_WORKER_THREADS", "2")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let admin_url = format!("http://127.0.0.1:{admin}");
        let mut dumped = 0;
        for _ in 0..600 {
            match reqwest::get(format!("{admin_url}/debug/pprof/tasks")).await {
                Ok(response) if response.status() == 200 => {
                    dumped += 1;
                    if dumped == DUMPS {
                        break;
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert_eq!(dumped, DUMPS, "trial {trial}: dumps answered");
        let faults = reqwest::Client::new()
            .put(format!("{admin_url}/faults"))
            .body(BLOCKING)
            .send()
            .await
            .expect("faults set");
        assert_eq!(faults.status(), 200);
        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .unwrap()
            .connect()
            .await
            .expect("connects");
        let blocked = get_product(&CatalogueServiceClient::new(channel));
        // Time for the call to reach a worker (its scrape could wait behind
        // the blocked worker, as the dump may: the assertion is on what
        // follows, not on this order).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, dump) = task_dump(&admin_url).await;
        assert_eq!(status, 200, "trial {trial}, blocked worker: {dump}");

        let sent = std::process::Command::new("kill")
            .arg(child.id().expect("running").to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let status = tokio::time::timeout(STOP_BOUND, child.wait()).await;

        let status = status
            .unwrap_or_else(|_| panic!("trial {trial}: still running after SIGTERM"))
            .expect("the binary exits");
        assert_eq!(status.code(), Some(0), "trial {trial}");
        assert!(
            blocked.await.unwrap(),
            "trial {trial}: the blocked call drained"
        );
    }
}
