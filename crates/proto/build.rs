//! Compiles proto/ with protox (pure Rust, no system `protoc`) and generates
//! prost messages and tonic services, plus the descriptor set that gRPC
//! reflection serves: the public API only, so reflection never lists the
//! protocol between nodes.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PUBLIC: &str = "headcount/v1/headcount.proto";
const PROTOS: [&str; 2] = [PUBLIC, "headcount/cluster/v1/cluster.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let public = protox::compile([PUBLIC], [&root])?;
    fs::write(out.join("headcount_descriptor.bin"), public.encode_to_vec())?;
    let descriptors = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    Ok(())
}
