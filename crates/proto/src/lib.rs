//! Rust types generated from `proto/`: the public `headcount.v1` API and the
//! internal `headcount.cluster.v1` protocol between nodes.
//!
//! Generated at build time by protox + tonic-prost-build, so a fresh machine
//! needs nothing but cargo.

/// The public API (`proto/headcount/v1/headcount.proto`).
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("headcount.v1");
}

/// The internal protocol between nodes (`proto/headcount/cluster/v1/cluster.proto`).
#[allow(missing_docs, clippy::all)]
pub mod cluster {
    tonic::include_proto!("headcount.cluster.v1");
}

/// The encoded `FileDescriptorSet` of the public API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("headcount_descriptor");
