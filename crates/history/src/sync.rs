//! History replication over the cluster's gRPC port
//! (`headcount.cluster.v1.History`): the answering service, the two calls
//! and the task that flushes, pushes and pulls.
//!
//! - Every flush interval (with jitter) the task writes the tally as one
//!   flush and pushes what it wrote to every live member, so a node lost
//!   with its disk a moment later has already handed its views over.
//! - Every flush interval it also pulls from one random live member
//!   whatever it lacks, and it pulls at once from a member it has not seen
//!   before: a lost push, a node that was away or a new node catches up
//!   from there. A quiet cluster's pull carries the puller's haves and an
//!   empty answer.
//! - On shutdown it flushes a last time and pushes that flush.
//!
//! Bodies are sealed with the cluster secret like every message between
//! nodes; a batch that does not check out is refused whole and counted.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use headcount_cluster::{ClusterView, MemberState, PeerLink, envelope::DropReason};
use headcount_proto::cluster::{
    Envelope, HistoryBatch, HistoryPullRequest, HistoryPush, Kind, OriginVersion,
    history_client::HistoryClient,
    history_server::{History as HistoryApi, HistoryServer},
};
use prost::Message;
use rand::seq::IndexedRandom;
use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, transport::Channel};
use tracing::{Instrument, debug, info_span, warn};

use crate::{
    History,
    day::Day,
    replica::{Batch, InvalidBatch, Origin, haves_to_wire, salt_to_wire},
    store::Flushed,
};

/// Largest history message accepted or sent.
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Rows per push message and, roughly, per pull answer.
pub(crate) const MAX_ROWS_PER_MESSAGE: usize = 5_000;
/// Pulls in a row while answers come back full.
const MAX_PULLS_IN_A_ROW: usize = 1_000;
/// How long a push or pull may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a push or pull failed.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("status: {0}")]
    Status(#[from] Status),
    #[error("refused answer: {0}")]
    Refused(DropReason),
    #[error("invalid answer: {0}")]
    Invalid(#[from] InvalidBatch),
    #[error("store: {0}")]
    Store(#[from] crate::StatsError),
}

/// The gRPC service peers push to and pull from.
#[derive(Clone)]
pub struct HistorySync {
    history: History,
    link: PeerLink,
}

impl HistorySync {
    /// The service for `history`, sealing with `link`'s secret.
    pub fn new(history: History, link: PeerLink) -> Self {
        Self { history, link }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> HistoryServer<Self> {
        HistoryServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn open<T: Message + Default>(&self, kind: Kind, envelope: Envelope) -> Result<T, Status> {
        let body = self.link.sealer().open_envelope(kind, envelope).map_err(|reason| {
            self.history.dropped(reason.label());
            Status::unauthenticated(format!("history message refused: {reason}"))
        })?;
        T::decode(body.as_slice()).map_err(|_| {
            self.history.dropped(DropReason::Malformed.label());
            Status::invalid_argument("history message does not decode")
        })
    }

    fn checked(&self, batch: Option<HistoryBatch>) -> Result<Batch, Status> {
        Batch::from_wire(batch.unwrap_or_default()).map_err(|invalid| {
            self.history.dropped("invalid");
            Status::invalid_argument(format!("history batch refused: {invalid}"))
        })
    }
}

#[tonic::async_trait]
impl HistoryApi for HistorySync {
    async fn push(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let push: HistoryPush = self.open(Kind::HistoryPush, request.into_inner())?;
        let batch = self.checked(push.batch)?;
        let flushed = push.flushed.map(|flushed| (flushed.origin, flushed.version));
        self.history
            .apply(batch, flushed, "push")
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(
            self.link.sealer().seal_envelope(Kind::HistoryPush, Vec::new()),
        ))
    }

    async fn pull(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let pull: HistoryPullRequest = self.open(Kind::HistoryPullRequest, request.into_inner())?;
        let salt = crate::replica::salt_from_wire(pull.salt).map_err(|invalid| {
            self.history.dropped("invalid");
            Status::invalid_argument(format!("history pull refused: {invalid}"))
        })?;
        if let Some(salt) = salt {
            self.history.0.salts.offer(salt);
        }
        let haves = crate::replica::haves_from_wire(pull.haves);
        let mut batch = self
            .history
            .changes_since(haves)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        batch.salt = self.history.0.salts.current();
        let body = batch.to_wire().encode_to_vec();
        Ok(Response::new(
            self.link.sealer().seal_envelope(Kind::HistoryPullResponse, body),
        ))
    }
}

async fn client(link: &PeerLink, addr: SocketAddr) -> Result<HistoryClient<Channel>, PeerError> {
    let channel = link.channel(addr, CALL_TIMEOUT).await?;
    Ok(HistoryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Pushes one flush to the peer at `addr`, in messages of bounded size;
/// only the last one names the flush, so the peer claims it only once it
/// has every part.
async fn push(link: &PeerLink, addr: SocketAddr, origin: Origin, flushed: &Flushed) -> Result<(), PeerError> {
    let mut client = client(link, addr).await?;
    let batch = &flushed.batch;
    let parts = batch
        .rows
        .len()
        .max(batch.sketches.len())
        .div_ceil(MAX_ROWS_PER_MESSAGE)
        .max(1);
    for part in 0..parts {
        let range = |len: usize| (part * MAX_ROWS_PER_MESSAGE).min(len)..((part + 1) * MAX_ROWS_PER_MESSAGE).min(len);
        let chunk = Batch {
            rows: batch.rows[range(batch.rows.len())].to_vec(),
            sketches: batch.sketches[range(batch.sketches.len())].to_vec(),
            haves: Default::default(),
            salt: batch.salt.clone(),
        };
        let last = part + 1 == parts;
        let message = HistoryPush {
            flushed: last.then_some(OriginVersion {
                origin,
                version: flushed.version,
            }),
            batch: Some(chunk.to_wire()),
        };
        let sealed = link.sealer().seal_envelope(Kind::HistoryPush, message.encode_to_vec());
        client.push(sealed).await?;
    }
    Ok(())
}

/// Asks the peer at `addr` for what this node lacks and merges it; repeats
/// while answers come back full.
async fn pull(history: &History, link: &PeerLink, addr: SocketAddr) -> Result<(), PeerError> {
    let mut client = client(link, addr).await?;
    for _ in 0..MAX_PULLS_IN_A_ROW {
        let request = HistoryPullRequest {
            haves: haves_to_wire(&history.haves().await?),
            salt: salt_to_wire(history.0.salts.current().as_ref()),
        };
        let sealed = link
            .sealer()
            .seal_envelope(Kind::HistoryPullRequest, request.encode_to_vec());
        let answer = client.pull(sealed).await?.into_inner();
        let body = link
            .sealer()
            .open_envelope(Kind::HistoryPullResponse, answer)
            .map_err(PeerError::Refused)?;
        let batch = HistoryBatch::decode(body.as_slice()).map_err(|_| PeerError::Refused(DropReason::Malformed))?;
        let batch = Batch::from_wire(batch)?;
        let full = batch.rows.len() >= MAX_ROWS_PER_MESSAGE;
        history.apply(batch, None, "pull").await?;
        if !full {
            break;
        }
    }
    Ok(())
}

/// The live members' gRPC addresses, by name.
fn live_peers(view: &ClusterView) -> Vec<(String, SocketAddr)> {
    view.members
        .iter()
        .filter(|member| member.state == MemberState::Alive)
        .map(|member| (member.name.clone(), member.sync_addr))
        .collect()
}

/// `interval` give or take a tenth, so nodes started together spread out.
fn jittered(interval: Duration) -> Duration {
    let tenth = u64::try_from(interval.as_millis() / 10).unwrap_or(u64::MAX).max(1);
    (interval + Duration::from_millis(rand::random_range(0..=2 * tenth))).saturating_sub(Duration::from_millis(tenth))
}

/// The replication task of one node.
pub(crate) struct Replicator {
    pub(crate) history: History,
    pub(crate) link: PeerLink,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Replicator {
    pub(crate) async fn run(mut self) {
        let interval = self.history.0.config.flush_interval;
        let mut next_flush = Instant::now() + jittered(interval);
        let mut next_pull = Instant::now() + jittered(interval);
        let mut seen: HashSet<String> = HashSet::new();
        let mut pruned_through: Option<Day> = None;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next_flush) => {
                    self.prune_once_a_day(&mut pruned_through).await;
                    self.flush_and_push().await;
                    next_flush = Instant::now() + jittered(interval);
                }
                () = tokio::time::sleep_until(next_pull) => {
                    let peers = live_peers(&self.view.borrow());
                    if let Some((name, addr)) = peers.choose(&mut rand::rng()) {
                        self.spawn_pull(name, *addr);
                    }
                    next_pull = Instant::now() + jittered(interval);
                }
                changed = self.view.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let peers = live_peers(&self.view.borrow_and_update());
                    for (name, addr) in peers {
                        if seen.insert(name.clone()) {
                            self.spawn_pull(&name, addr);
                        }
                    }
                }
            }
        }
        self.flush_and_push().await;
    }

    async fn prune_once_a_day(&self, pruned_through: &mut Option<Day>) {
        let today = Day::today();
        if *pruned_through == Some(today) {
            return;
        }
        match self.history.prune(today).await {
            Ok(rows) if rows > 0 => debug!(rows, "pruned history past retention"),
            Ok(_) => {}
            Err(error) => warn!(%error, "history could not be pruned"),
        }
        *pruned_through = Some(today);
    }

    async fn flush_and_push(&self) {
        let flushed = match self.history.flush().await {
            Ok(Some(flushed)) => Arc::new(flushed),
            Ok(None) => return,
            Err(error) => {
                warn!(%error, "history flush failed; its views are lost");
                return;
            }
        };
        let origin = self.history.origin();
        for (name, addr) in live_peers(&self.view.borrow()) {
            let (history, link, flushed) = (self.history.clone(), self.link.clone(), Arc::clone(&flushed));
            let pushed = async move {
                if let Err(error) = push(&link, addr, origin, &flushed).await {
                    history.peer_error("push");
                    debug!(%error, "history push failed; the peer will pull");
                }
            };
            self.tracker
                .spawn(pushed.instrument(info_span!("history_push", peer = %name)));
        }
    }

    fn spawn_pull(&self, name: &str, addr: SocketAddr) {
        let (history, link, shutdown) = (self.history.clone(), self.link.clone(), self.shutdown.clone());
        let pulled = async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = pull(&history, &link, addr) => if let Err(error) = result {
                    history.peer_error("pull");
                    debug!(%error, "history pull failed");
                }
            }
        };
        self.tracker
            .spawn(pulled.instrument(info_span!("history_pull", peer = %name)));
    }
}
