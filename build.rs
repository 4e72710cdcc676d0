//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler, and records build information
//! for the `catalogue_build_info` metric.

use std::{env, error::Error, path::PathBuf, process::Command};

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("catalogue_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                "proto/catalogue/v1/catalogue.proto",
                "proto/inventory/v1/inventory.proto",
            ],
            &["proto"],
        )?;
    // The catalogue's own code again, over the one above, with a codec
    // that makes a request which does not decode INVALID_ARGUMENT (the
    // inventory client keeps prost's INTERNAL for a reply that does not).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .codec_path("crate::api::codec::CatalogueCodec")
        .compile_with_config(config, &["proto/catalogue/v1/catalogue.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = command_output(&rustc, &["--version"]);
    let git_sha = command_output("git", &["rev-parse", "--short=12", "HEAD"]);
    println!("cargo:rustc-env=CATALOGUE_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=CATALOGUE_GIT_SHA={git_sha}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    declare_postgres_tests();
    Ok(())
}

/// Sets `cfg(postgres_tests)` when `TEST_DATABASE_URL` is set at build
/// time: without it the PostgreSQL integration tests are built ignored, so
/// `cargo test` reports them as such (with the reason) instead of counting
/// tests that never ran as passed.
fn declare_postgres_tests() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    if env::var_os("TEST_DATABASE_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}

/// A command's first output line, or "unknown" where it cannot run (a
/// source tarball has no git).
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
