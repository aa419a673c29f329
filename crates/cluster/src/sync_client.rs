//! The pulling side of full-state repair (`headcount.cluster.v1.Sync`).
//!
//! The gossip task starts a pull when it finds a gap or meets a new member.
//! The request and the answer are sealed and opened like gossip datagrams, so
//! a node with another secret can neither read nor feed counts; the answer
//! must be about the node that was asked and hold only valid names and topics.

use headcount_counter::Topic;
use headcount_proto::cluster::{Envelope, Kind, NodeState, PullStateRequest, TopicCount, sync_client::SyncClient};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio_rustls::TlsConnector;
use tonic::Status;

use crate::{
    envelope::{DropReason, Sealer},
    identity::{NodeId, NodeName},
    state::FullState,
    sync_tls,
    timings::{PULL_CONNECT_TIMEOUT, PULL_TIMEOUT},
};

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

/// Pulls `target`'s full state from its sync server (over TLS with `tls`);
/// an answer over `max_bytes` is refused unread.
pub(crate) async fn pull(
    sealer: &Sealer,
    target: &NodeId,
    max_bytes: usize,
    tls: Option<&TlsConnector>,
) -> Result<FullState, PullError> {
    let addr = target.sync_addr();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(PULL_CONNECT_TIMEOUT)
        .timeout(PULL_TIMEOUT);
    let channel = match tls {
        None => endpoint.connect().await?,
        Some(tls) => {
            let tls = tls.clone();
            let connect = tower::service_fn(move |_| {
                let tls = tls.clone();
                async move { sync_tls::connect(&tls, addr).await.map(TokioIo::new) }
            });
            endpoint.connect_with_connector(connect).await?
        }
    };
    let mut client = SyncClient::new(channel).max_decoding_message_size(max_bytes);
    let request = PullStateRequest {
        target: Some(target.node_ref()),
    };
    let envelope = sealer.seal_envelope(Kind::PullRequest, request.encode_to_vec());
    let answer: Envelope = client.pull_state(envelope).await?.into_inner();
    let body = sealer
        .open_envelope(Kind::PullResponse, answer)
        .map_err(PullError::Refused)?;
    let state = NodeState::decode(body.as_slice()).map_err(|_| PullError::Refused(DropReason::Malformed))?;
    decode_state(state, target)
}

fn decode_state(state: NodeState, target: &NodeId) -> Result<FullState, PullError> {
    let node = state.node.ok_or(PullError::Invalid("no node"))?;
    NodeName::new(&node.name).map_err(|_| PullError::Invalid("invalid node name"))?;
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
