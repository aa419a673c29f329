//! Full-state repair over gRPC (`headcount.cluster.v1.Sync`).
//!
//! The server side answers with this node's published state as of its latest
//! update, taken from the gossip task over a bounded channel. The client side
//! pulls a peer's state when the gossip task finds a gap or meets a new
//! member. Both ends seal and open their messages like gossip datagrams, so a
//! node with another secret can neither read nor feed counts.

use std::time::Duration;

use headcount_counter::Topic;
use headcount_proto::cluster::{
    Envelope, Kind, NodeState, PullStateRequest, TopicCount,
    sync_client::SyncClient,
    sync_server::{Sync as SyncApi, SyncServer},
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::{
    broadcast::validate_name,
    envelope::{DropReason, Sealer},
    gossip::Command,
    identity::NodeId,
    metrics::ClusterMetrics,
    state::FullState,
};

/// Largest full state accepted: 100k topics of 256 bytes fit well within.
const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PULL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The peer could not be reached.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The peer answered with an error status.
    #[error("status: {0}")]
    Status(#[from] Status),
    /// The answer failed authentication or did not decode.
    #[error("refused answer: {0}")]
    Refused(DropReason),
    /// The answer is about another node or holds invalid data.
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
}

/// The gRPC service peers pull full state from.
#[derive(Clone)]
pub struct SyncService {
    own_name: String,
    sealer: Sealer,
    commands: mpsc::Sender<Command>,
    metrics: ClusterMetrics,
}

impl SyncService {
    pub(crate) fn new(
        own_name: String,
        sealer: Sealer,
        commands: mpsc::Sender<Command>,
        metrics: ClusterMetrics,
    ) -> Self {
        Self {
            own_name,
            sealer,
            commands,
            metrics,
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> SyncServer<Self> {
        SyncServer::new(self).max_encoding_message_size(MAX_STATE_BYTES)
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
        self.commands
            .send(Command::FullState(reply))
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        let state = answer.await.map_err(|_| Status::unavailable("node is shutting down"))?;
        Ok(Response::new(
            self.sealer.seal_envelope(Kind::PullResponse, state.encode_to_vec()),
        ))
    }
}

/// Pulls `target`'s full state from its sync server.
pub(crate) async fn pull(sealer: &Sealer, target: &NodeId) -> Result<FullState, PullError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", target.sync_addr()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(PULL_TIMEOUT);
    let mut client = SyncClient::new(endpoint.connect().await?).max_decoding_message_size(MAX_STATE_BYTES);
    let request = PullStateRequest {
        target: Some(target.node_ref()),
    };
    let envelope = sealer.seal_envelope(Kind::PullRequest, request.encode_to_vec());
    let answer = client.pull_state(envelope).await?.into_inner();
    let body = sealer
        .open_envelope(Kind::PullResponse, answer)
        .map_err(PullError::Refused)?;
    let state = NodeState::decode(body.as_slice()).map_err(|_| PullError::Refused(DropReason::Malformed))?;
    decode_state(state, target)
}

fn decode_state(state: NodeState, target: &NodeId) -> Result<FullState, PullError> {
    let node = state.node.ok_or(PullError::Invalid("no node"))?;
    validate_name(&node.name).map_err(|_| PullError::Invalid("invalid node name"))?;
    if node.name != target.name {
        return Err(PullError::Invalid("state of another node"));
    }
    let counts = state
        .counts
        .into_iter()
        .map(|TopicCount { topic, count, version }| Topic::new(&topic).map(|topic| (topic, count, version)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PullError::Invalid("invalid topic"))?;
    Ok(FullState {
        name: node.name,
        incarnation: node.incarnation,
        seq: state.seq,
        counts,
    })
}
