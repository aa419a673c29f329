//! The edges of a headcount node and their wiring.
//!
//! A count travels: websocket session (`ws`) → presence in the local
//! counting table → gossip (headcount-cluster) → cluster view → the query
//! layer (`query`) → HTTP (`http`), websocket pushes (`push`) and gRPC
//! (`grpc`). Parameter rules shared by the edges live in `params`; `app`
//! routes HTTP paths to the edges; [`Node`] starts all of it under one
//! shutdown token.

mod admission;
mod app;
mod error;
mod grpc;
mod http;
mod metrics;
mod node;
mod params;
mod push;
mod query;
mod ws;

pub use headcount_cluster::{InvalidNodeName, NodeName};
pub use node::{Listeners, Node, NodeConfig, StartError};
pub use ws::SessionTimings;
