//! Start-up refuses what would leave the server broken: a value of zero
//! where zero means "never" or "nothing", a log filter that writes
//! nothing, a method named twice; and an error that is not clap's is
//! written once, with a non-zero exit.

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
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .args(if args.contains(&"--database-url") {
            &[][..]
        } else {
            &["--database-url", "memory"]
        })
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
fn zero_where_zero_breaks_the_server_exits_2_naming_the_flag() {
    for flag in [
        "--breaker-probes",
        "--breaker-open-timeout",
        "--upstream-timeout",
        "--upstream-max-concurrency",
        "--store-health-interval",
        "--db-acquire-timeout",
        "--db-statement-timeout",
        "--stream-idle-timeout",
    ] {
        let zero = if flag.ends_with("-probes") || flag.ends_with("-concurrency") {
            "0"
        } else {
            "0s"
        };
        let (code, text) = serve(&[flag, zero]);
        assert_eq!(code, Some(2), "{flag} {zero}: {text}");
        assert!(text.contains(flag), "{flag} is named: {text}");
    }
}

#[test]
fn a_log_filter_that_writes_nothing_exits_2_naming_the_flag() {
    for filter in ["[[[", "[grpc.server]=info", "catalogue=off,info"] {
        let (code, text) = serve(&["--log-filter", filter]);
        assert_eq!(code, Some(2), "{filter}: {text}");
        assert!(text.contains("--log-filter"), "{filter}: {text}");
    }
}

#[test]
fn a_fault_method_named_twice_exits_2() {
    let (code, text) = serve(&[
        "--enable-faults",
        "--fault-methods",
        "GetProduct,SearchProducts,GetProduct",
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--fault-methods"), "{text}");
    assert!(text.contains("GetProduct"), "{text}");
}

#[test]
fn a_start_up_error_is_written_once_and_exits_non_zero() {
    let (code, text) = serve(&["--database-url", "mysql://nowhere/catalogue"]);

    assert!(matches!(code, Some(code) if code != 0), "{code:?}: {text}");
    assert_eq!(
        text.matches("unsupported database url").count(),
        1,
        "written once: {text}"
    );
}
