//! Compiles `proto/broker/v1/*.proto` with protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`, then generates prost messages and tonic clients and servers.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        proto_root.join("broker/v1/broker.proto"),
        proto_root.join("broker/v1/streams.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&proto_root])?;
    // Kept for gRPC server reflection and for the contract test, which reads field numbers
    // and types back from exactly what was compiled.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("broker_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads as `bytes::Bytes`: handed between NATS and gRPC without copying.
        .bytes(".broker.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
