//! The answering side of repair (`headcount.cluster.v1.Sync`).
//!
//! A peer with a gap asks for this node's published state since the update
//! it holds (a delta, or the whole state when that is too old). The service opens
//! the sealed request, then asks the gossip task for the state as of its
//! latest update through a bounded channel of its own ([`StateRequest`]), so
//! it never shares the task's state or its command queue.

use headcount_proto::cluster::{
    Envelope, Kind, NodeState, PullStateRequest,
    sync_server::{Sync as SyncApi, SyncServer},
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::{
    envelope::{DropReason, Sealer},
    metrics::ClusterMetrics,
};

/// Largest pull request accepted: a sealed node reference is a few hundred
/// bytes, and nothing bigger is decoded before its MAC is checked.
const MAX_REQUEST_BYTES: usize = 1024;

/// A request to the gossip task for this node's published state, as a
/// puller that holds every update up to `since` needs it.
pub(crate) struct StateRequest {
    pub(crate) since: u64,
    pub(crate) reply: oneshot::Sender<NodeState>,
}

/// The gRPC service peers pull full state from.
#[derive(Clone)]
pub struct SyncService {
    own_name: String,
    sealer: Sealer,
    state_requests: mpsc::Sender<StateRequest>,
    max_state_bytes: usize,
    metrics: ClusterMetrics,
}

impl SyncService {
    pub(crate) fn new(
        own_name: String,
        sealer: Sealer,
        state_requests: mpsc::Sender<StateRequest>,
        max_state_bytes: usize,
        metrics: ClusterMetrics,
    ) -> Self {
        Self {
            own_name,
            sealer,
            state_requests,
            max_state_bytes,
            metrics,
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> SyncServer<Self> {
        let max_state_bytes = self.max_state_bytes;
        SyncServer::new(self)
            .max_encoding_message_size(max_state_bytes)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl SyncApi for SyncService {
    async fn pull_state(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let body = self
            .sealer
            .open_envelope(Kind::PullRequest, request.into_inner())
            .map_err(|reason| {
                self.metrics.dropped(reason.label());
                Status::unauthenticated(format!("pull request refused: {reason}"))
            })?;
        let pull = PullStateRequest::decode(body.as_slice()).map_err(|_| {
            self.metrics.dropped(DropReason::Malformed.label());
            Status::invalid_argument("pull request does not decode")
        })?;
        if pull.target.is_none_or(|target| target.name != self.own_name) {
            return Err(Status::not_found("this node is not the pull target"));
        }
        let (reply, answer) = oneshot::channel();
        self.state_requests
            .send(StateRequest {
                since: pull.since,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        let state = answer.await.map_err(|_| Status::unavailable("node is shutting down"))?;
        Ok(Response::new(
            self.sealer.seal_envelope(Kind::PullResponse, state.encode_to_vec()),
        ))
    }
}
