//! `--ready-file`: the binary, started on port 0, writes the addresses it
//! really listens on, and they answer.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use catalogue::ready::Addresses;

const BINARY: &str = env!("CARGO_BIN_EXE_catalogue");

/// Waits for `path` to appear (or the child to exit) and parses it.
fn read_ready_file(child: &mut Child, path: &Path) -> Addresses {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("the ready file is JSON: {error}: {text}"));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the binary exited ({status}) without a ready file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("no ready file at {}", path.display());
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[tokio::test]
async fn serve_writes_the_real_grpc_and_admin_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.json");
    let mut child = Command::new(BINARY)
        .args(["serve", "--database-url", "memory", "--seed-products", "10"])
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--health-addr", "127.0.0.1:0"])
        .args(["--drain-delay", "0s", "--ready-file"])
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");

    let addresses = read_ready_file(&mut child, &path);
    let health = reqwest::get(format!("http://{}/healthz", addresses.admin)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", addresses.grpc))
        .unwrap()
        .connect()
        .await
        .expect("the gRPC address accepts");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = client
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    stop(child);

    assert_ne!(addresses.grpc.port(), 0);
    assert_ne!(addresses.admin.port(), 0);
    assert_ne!(addresses.health.expect("the health lane").port(), 0);
    assert_eq!(addresses.console, None, "the console is dormant");
    assert_eq!(health.expect("the admin address answers").status(), 200);
    assert!(check.is_ok(), "{check:?}");
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        entries, 1,
        "no temporary file is left beside the ready file"
    );
}

#[tokio::test]
async fn the_upstream_simulator_writes_its_addresses_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.json");
    let mut child = Command::new(BINARY)
        .args([
            "upstream",
            "--addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");

    let addresses = read_ready_file(&mut child, &path);
    let faults = reqwest::get(format!("http://{}/faults", addresses.admin)).await;
    stop(child);

    assert_ne!(addresses.grpc.port(), 0);
    assert_eq!(faults.expect("the admin address answers").status(), 200);
}
