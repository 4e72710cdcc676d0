//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("catalogue_descriptor.bin"))
        .compile_with_config(config, &["proto/catalogue/v1/catalogue.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
