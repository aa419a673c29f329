//! A peer that holds the cluster secret and lies. It joins the cluster as a
//! real SWIM member (foca, over its own UDP socket on another loopback
//! address), learns the others' identities from the membership, then sends
//! sealed count updates that speak for another node, or claim more than a
//! node may hold. The honest nodes must drop them, count the drops in
//! `/metrics`, and keep counting exactly what their own visitors do.

use std::{
    collections::HashMap,
    net::SocketAddr,
    num::NonZeroU32,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use foca::{AccumulatingRuntime, Config, Foca, NoCustomBroadcast, PostcardCodec, Timer};
use headcount_cluster::{
    NodeId, NodeName,
    broadcast::{decode_update, encode_update},
    envelope::Sealer,
};
use headcount_counter::Topic;
use headcount_proto::cluster::{Kind, NodeRef};
use headcount_server::ClusterSecret;
use headcount_tests::{TestNode, converge, eventually, test_config, wait_for_members};
use rand::{SeedableRng, rngs::StdRng};
use tokio::{net::UdpSocket, time::Instant};

const SECRET: &[u8] = b"the-shared-cluster-secret";
const SOON: Duration = Duration::from_secs(10);

/// A SWIM member run by hand, with the cluster secret.
struct Liar {
    foca: Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<NodeId>,
    timers: Vec<(Instant, Timer<NodeId>)>,
    socket: UdpSocket,
    sealer: Sealer,
    /// The latest seq each member announced to the liar.
    seqs: HashMap<String, u64>,
}

impl Liar {
    async fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.2:0")
            .await
            .expect("bind another loopback address");
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_millis() as u64);
        let identity = NodeId {
            incarnation,
            ..NodeId::starting_now(
                &NodeName::new("liar").expect("valid"),
                socket.local_addr().expect("addr"),
                1,
            )
        };
        let config = Config::new_lan(NonZeroU32::new(8).expect("non-zero"));
        Self {
            foca: Foca::new(identity, config, StdRng::seed_from_u64(7), PostcardCodec),
            runtime: AccumulatingRuntime::new(),
            timers: Vec::new(),
            socket,
            sealer: Sealer::new(Some(SECRET), 1500),
            seqs: HashMap::new(),
        }
    }

    fn me(&self) -> NodeRef {
        self.foca.identity().node_ref()
    }

    /// Sends what foca queued and keeps its timers.
    async fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            let sealed = self.sealer.seal(Kind::Gossip, data.to_vec());
            let _ = self.socket.send_to(&sealed, to.gossip).await;
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.push((Instant::now() + after, timer));
        }
        while self.runtime.to_notify().is_some() {}
    }

    /// Runs SWIM for `within`, answering probes like an honest member.
    async fn run_for(&mut self, within: Duration) {
        let until = Instant::now() + within;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < until {
            let due: Vec<Timer<NodeId>> = {
                let now = Instant::now();
                let (due, later) = std::mem::take(&mut self.timers)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                self.timers = later;
                due.into_iter().map(|(_, timer)| timer).collect()
            };
            for timer in due {
                let _ = self.foca.handle_timer(timer, &mut self.runtime);
            }
            if let Ok(Ok((len, _))) =
                tokio::time::timeout(Duration::from_millis(20), self.socket.recv_from(&mut buf)).await
            {
                match self.sealer.open_datagram(&buf[..len]) {
                    Ok((Kind::Gossip, body)) => {
                        let _ = self.foca.handle_data(&body, &mut self.runtime);
                    }
                    Ok((_, body)) => {
                        if let Ok(update) = decode_update(&body) {
                            let seq = self.seqs.entry(update.name).or_default();
                            *seq = (*seq).max(update.seq);
                        }
                    }
                    Err(_) => {}
                }
            }
            self.flush().await;
        }
    }

    /// Joins through `seed` and returns the identity of the member `name`.
    async fn join_and_learn(&mut self, seed: SocketAddr, name: &str) -> NodeId {
        self.foca
            .announce(NodeId::seed(seed), &mut self.runtime)
            .expect("announce");
        self.flush().await;
        for _ in 0..50 {
            self.run_for(Duration::from_millis(200)).await;
            if let Some(id) = self
                .foca
                .iter_members()
                .map(|member| member.id())
                .find(|id| id.name == name)
            {
                return id.clone();
            }
        }
        panic!("the liar never learned of {name}");
    }

    /// Sends a sealed count update to `to`, as if from `origin`.
    async fn send_counts(&self, to: SocketAddr, origin: NodeRef, seq: u64, counts: &[(&str, u64)]) {
        let counts: Vec<(Topic, u64)> = counts
            .iter()
            .map(|(topic, count)| (Topic::new(topic).expect("valid"), *count))
            .collect();
        let update = encode_update(origin, seq, seq, &counts);
        let sealed = self.sealer.seal(Kind::Counts, update);
        self.socket.send_to(&sealed, to).await.expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_secret_can_neither_speak_for_others_nor_claim_too_much() {
    let secret = || Some(ClusterSecret::new(SECRET.to_vec()).expect("long enough"));
    let mut a_config = test_config("a");
    a_config.cluster_secret = secret();
    a_config.max_connections = 100;
    let a = TestNode::start(a_config).await;
    let mut b_config = test_config("b");
    b_config.cluster_secret = secret();
    b_config.max_connections = 100;
    b_config.seeds = vec![a.gossip.to_string()];
    let b = TestNode::start(b_config).await;
    wait_for_members(&[&a, &b], 2, SOON).await;
    let _visitors = a.connect_n("news", 2).await;
    converge(&[&a, &b], "news", 2, SOON).await;

    let mut liar = Liar::new().await;
    let a_id = liar.join_and_learn(a.gossip, "a").await;

    // Speaking for a: a's name, incarnation and next seq (learned from the
    // digests a sends every member), from the liar's own address.
    let mut next_seq = None;
    for _ in 0..20 {
        liar.run_for(Duration::from_millis(200)).await;
        next_seq = liar.seqs.get("a").map(|seq| seq + 1);
        if next_seq.is_some() {
            break;
        }
    }
    let next_seq = next_seq.expect("a's digests reach every member");
    liar.send_counts(b.gossip, a_id.node_ref(), next_seq, &[("news", 99)])
        .await;
    eventually(SOON, "b drops counts that do not come from their origin", || async {
        b.metric("headcount_gossip_dropped_total{reason=\"not_from_origin\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(b.count("news").await, 2, "a's visitors, as a itself says");

    // Claiming more than a node may hold, for itself.
    liar.run_for(Duration::from_millis(500)).await;
    liar.send_counts(b.gossip, liar.me(), 1, &[("lies", 1_000)]).await;
    eventually(SOON, "b refuses a count above --max-connections", || async {
        b.metric("headcount_gossip_dropped_total{reason=\"count_too_high\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(b.count("lies").await, 0);
    assert_eq!(b.count("news").await, 2);
}
