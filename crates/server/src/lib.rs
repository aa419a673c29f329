//! The edges of a headcount node and their wiring.
//!
//! A count travels: websocket session (`ws`) → presence in the local
//! counting table → gossip (headcount-cluster) → cluster view → the query
//! layer (`query`) → HTTP (`http`), websocket pushes (`push`), live
//! streams for pages (`live`, with the one-hour `chart`) and gRPC (`grpc`).
//! Parameter rules shared by the edges live in `params`; `app` routes HTTP
//! paths to the edges and to the browser files (`assets`); [`Node`] starts
//! all of it under one shutdown token.

mod access;
mod admission;
mod app;
mod assets;
mod chart;
mod client_ip;
mod error;
mod grpc;
mod http;
mod json;
mod live;
mod metrics;
mod node;
mod params;
mod peaks;
mod push;
mod query;
mod serve;
mod state;
mod stats;
mod tls;
mod ws;

pub use access::{AdminToken, InvalidAdminToken};
pub use admission::accept_cap;
pub use client_ip::{InvalidProxy, TrustedProxies};
pub use headcount_cluster::{ClusterSecret, InvalidNodeName, NodeName, SecretTooShort};
pub use headcount_history::HistoryConfig;
pub use node::{Listeners, Node, NodeConfig, StartError};
pub use serve::HttpTimings;
pub use state::SessionTimings;
pub use tls::{TlsError, TlsFiles};
