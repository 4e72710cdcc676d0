//! The binary's command line, run as a user runs it: values are parsed
//! into their types at start, a bad one exits 2 naming the flag, boolean
//! variables take what clap's boolish parser takes, and text logs carry
//! colours only on a terminal.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

const BINARY: &str = env!("CARGO_BIN_EXE_catalogue");

/// Runs the binary with `args` and `env`; returns its exit code and what
/// it wrote to standard error.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_value_exits_2_naming_the_flag_for_every_subcommand() {
    let flags: &[(&[&str], &str)] = &[
        (
            &["serve", "--breaker-failure-ratio", "2"],
            "--breaker-failure-ratio",
        ),
        (
            &["serve", "--trace-sampler-arg", "1.5"],
            "--trace-sampler-arg",
        ),
        (
            &["serve", "--upstream-url", "inventory:50052"],
            "--upstream-url",
        ),
        (
            &["serve", "--otlp-endpoint", "127.0.0.1:4317"],
            "--otlp-endpoint",
        ),
        (&["serve", "--otlp-timeout", "0"], "--otlp-timeout"),
        (
            &["serve", "--otlp-compression", "zstd"],
            "--otlp-compression",
        ),
        (&["serve", "--fault-error-rate", "7"], "--fault-error-rate"),
        (&["serve", "--fault-latency-ms", "5"], "--enable-faults"),
        (
            &["serve", "--fault-methods", "DropTables"],
            "--fault-methods",
        ),
        (&["serve", "--health-addr", "localhost"], "--health-addr"),
        (
            &["serve", "--health-stall-limit", "0s"],
            "--health-stall-limit",
        ),
        (&["upstream", "--error-rate", "1.5"], "--error-rate"),
        (&["upstream", "--hang-rate=-1"], "--hang-rate"),
        (&["load", "--target", "ftp://catalogue"], "--target"),
        (&["load", "--rps", "0"], "--rps"),
    ];
    let variables = [
        (("RUST_LOG", "catalogue=loud"), "--log-filter"),
        (("CATALOGUE_CONSOLE", "maybe"), "--console"),
        (("OTEL_EXPORTER_OTLP_HEADERS", "api-key"), "--otlp-headers"),
    ];
    let cases = flags.iter().map(|&(args, flag)| (args, &[][..], flag));
    let cases = cases.chain(
        variables
            .iter()
            .map(|(variable, flag)| (&["serve"][..], std::slice::from_ref(variable), *flag)),
    );
    for (args, env, flag) in cases {
        let (code, stderr) = run(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} {env:?} names {flag}: {stderr}"
        );
    }
}

/// The exporter's headers often carry a collector's key: a bad list is
/// named, its text is not repeated, nor shown by `--help`.
#[test]
fn a_bad_header_list_is_refused_without_repeating_its_secrets() {
    let secret = [(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "authorization=Bearer s3cret,broken",
    )];
    let (code, stderr) = run(&["serve"], &secret);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--otlp-headers"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let help = Command::new(BINARY)
        .args(["serve", "--help"])
        .env("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--otlp-headers") && !help.contains("s3cret"),
        "{help}"
    );
}

#[test]
fn boolean_variables_take_1_and_text_logs_to_a_pipe_have_no_colours() {
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--database-url",
            "memory",
            "--seed-products",
            "10",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--console-addr",
            "127.0.0.1:0",
            "--drain-delay",
            "0s",
        ])
        .env("CATALOGUE_CONSOLE", "1")
        .env("CATALOGUE_NO_RUNTIME_METRICS", "yes")
        .env("CATALOGUE_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let serving = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("catalogue is serving"));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("the binary exits");

    let line = serving.expect("a serving line");
    assert!(
        line.contains("console=awake at 127.0.0.1:"),
        "the console is on: {line}"
    );
    assert!(
        !line.contains('\x1b'),
        "no ANSI escapes in a pipe: {line:?}"
    );
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0");
}
