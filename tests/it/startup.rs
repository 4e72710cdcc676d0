//! Start-up refuses what would leave the server broken: a log filter that
//! writes nothing.

use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_catalogue");

/// Runs `catalogue serve ARGS` on ports of its own; returns the exit code
/// and everything it wrote. A server still running after 30 s (it started
/// serving) is killed: `None`.
fn serve(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--database-url", "memory"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut code = None;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("waits") {
            code = status.code();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("output");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (code, text)
}

#[test]
fn a_log_filter_that_writes_nothing_exits_2_naming_the_flag() {
    for filter in ["[[[", "[grpc.server]=info", "catalogue=off,info"] {
        let (code, text) = serve(&["--log-filter", filter]);
        assert_eq!(code, Some(2), "{filter}: {text}");
        assert!(text.contains("--log-filter"), "{filter}: {text}");
    }
}
