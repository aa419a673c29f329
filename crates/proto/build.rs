//! Compiles proto/ with protox (pure Rust, no system `protoc`) and generates
//! prost messages and tonic services, plus the descriptor set that gRPC
//! reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTOS: [&str; 2] = ["headcount/v1/headcount.proto", "headcount/cluster/v1/cluster.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, [&root])?;
    fs::write(out.join("headcount_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    Ok(())
}
