//! The pulling side of repair (`headcount.cluster.v1.Sync`).
//!
//! The gossip task starts a pull when it finds a gap or meets a new member,
//! asking for what changed since the update it holds.
//! The request and the answer are sealed and opened like gossip datagrams, so
//! a node with another secret can neither read nor feed counts; the answer
//! must be about the node that was asked and hold only valid names and topics.

use std::time::Duration;

use headcount_counter::Topic;
use headcount_proto::cluster::{Envelope, Kind, NodeState, PullStateRequest, TopicCount, sync_client::SyncClient};
use prost::Message;
use tonic::Status;

use crate::{
    envelope::DropReason,
    identity::{NodeId, NodeName},
    link::PeerLink,
    state::FullState,
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

/// Pulls what changed on `target` after update `since` (the whole state if
/// `since` is 0 or too old for it) from its sync server, within `timeout`;
/// an answer over `max_bytes` is refused unread.
pub(crate) async fn pull(
    link: &PeerLink,
    target: &NodeId,
    max_bytes: usize,
    since: u64,
    timeout: Duration,
) -> Result<FullState, PullError> {
    let sealer = link.sealer();
    let channel = link.channel(target.sync_addr(), timeout).await?;
    let mut client = SyncClient::new(channel).max_decoding_message_size(max_bytes);
    let request = PullStateRequest {
        target: Some(target.node_ref()),
        since,
    };
    let envelope = sealer.seal_envelope(Kind::PullRequest, request.encode_to_vec());
    let answer: Envelope = client.pull_state(envelope).await?.into_inner();
    let body = sealer
        .open_envelope(Kind::PullResponse, answer)
        .map_err(PullError::Refused)?;
    let state = NodeState::decode(body.as_slice()).map_err(|_| PullError::Refused(DropReason::Malformed))?;
    decode_state(state, target)
}

/// Checks a peer's answer to a pull of `target` and turns it into what the
/// merge rules take.
pub fn decode_state(state: NodeState, target: &NodeId) -> Result<FullState, PullError> {
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
        delta_since: state.delta.then_some(state.since),
    })
}
