//! Multi-node behaviour: 2 to 5 real nodes on loopback, real websocket
//! clients, a short gossip interval (X = 100 ms). Each test reads like the
//! cluster contract (README, "A three-node cluster"; docs/protocol.md):
//! convergence, crash, graceful leave, restart, authentication, garbage,
//! partition, churn, repair.

use std::time::Duration;

use headcount_tests::{
    GossipLink, TestNode, Ws, close, converge, eventually, next_count, test_config, wait_for_members,
};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

const JOIN: Duration = Duration::from_secs(10);
/// Generous bound for tests; the timing targets live in BENCHMARKS.md.
const CONVERGE: Duration = Duration::from_secs(5);
/// Crash detection with the test timings (500 ms probes, 1.5 s suspicion).
const PRUNE: Duration = Duration::from_secs(10);

fn secret(key: &str) -> headcount_server::ClusterSecret {
    headcount_server::ClusterSecret::new(key.as_bytes().to_vec()).expect("long enough")
}

async fn cluster(names: &[&str]) -> Vec<TestNode> {
    cluster_with(names, |_| {}).await
}

async fn cluster_with(names: &[&str], tweak: impl Fn(&mut headcount_server::NodeConfig)) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for name in names {
        let mut config = test_config(name);
        config.seeds = nodes.iter().map(|node| node.gossip.to_string()).collect();
        tweak(&mut config);
        nodes.push(TestNode::start(config).await);
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_for_members(&refs, names.len() as u64, JOIN).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_converges_on_the_cluster_wide_count() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let _a = nodes[0].connect_n("news", 3).await;
    let mut b = nodes[1].connect_n("news", 2).await;
    let _c = nodes[2].connect_n("sport", 1).await;
    converge(&refs, "news", 5, CONVERGE).await;
    converge(&refs, "sport", 1, CONVERGE).await;
    let (_, body) = nodes[2].get("/count/news").await;
    assert_eq!((body["local"].as_u64(), body["nodes"].as_u64()), (Some(0), Some(3)));
    let (_, list) = nodes[2].get("/counts").await;
    assert_eq!(list["total"], 6);

    close(b.pop().expect("socket")).await;
    converge(&refs, "news", 4, CONVERGE).await;
}

/// How long SWIM takes to forget a node declared down (15 s), plus
/// detection and a join, with room for a busy machine.
const FORGET_AND_REJOIN: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_clock_stepped_back_is_counted() {
    let nodes = cluster(&["b"]).await;
    let b = &nodes[0];
    // Its first life ran with a clock an hour fast...
    let hour_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
        + 3_600_000;
    let mut first = test_config("a");
    first.seeds = vec![b.gossip.to_string()];
    first.first_incarnation = Some(hour_ahead);
    let first = TestNode::start(first).await;
    wait_for_members(&[b, &first], 2, JOIN).await;
    let gossip = first.gossip;
    first.kill().await;

    // ...and it restarts on the same address with the clock set right: its
    // incarnation is an hour below its previous life's, which outranks it
    // until SWIM forgets the dead one.
    let mut again = test_config("a");
    again.seeds = vec![b.gossip.to_string()];
    let again = TestNode::start_on(again, gossip).await;
    let _visitors = again.connect_n("news", 2).await;
    converge(&[b, &again], "news", 2, FORGET_AND_REJOIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_nodes_with_one_name_hide_no_visitor() {
    // A misconfiguration: two nodes started with the same --node-name.
    let nodes = cluster(&["observer", "twin", "twin"]).await;
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let _one = nodes[1].connect_n("news", 3).await;
    let _other = nodes[2].connect_n("news", 2).await;
    let _here = nodes[0].connect_n("news", 1).await;
    converge(&refs, "news", 6, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pushes_follow_changes_on_other_nodes() {
    let nodes = cluster(&["a", "b"]).await;
    let mut watcher = headcount_tests::ws_connect(nodes[0].http, "/ws/live?watch=1")
        .await
        .expect("watch");
    assert_eq!(next_count(&mut watcher, CONVERGE).await, Some(0));
    let _remote = nodes[1].connect_n("live", 2).await;
    headcount_tests::wait_for_push(&mut watcher, 2, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_pruned_by_itself() {
    let mut nodes = cluster(&["a", "b", "c"]).await;
    let _a = nodes[0].connect_n("page", 1).await;
    let _c = nodes[2].connect_n("page", 4).await;
    {
        let refs: Vec<&TestNode> = nodes.iter().collect();
        converge(&refs, "page", 5, CONVERGE).await;
    }
    let crashed = nodes.pop().expect("c");
    crashed.kill().await;
    let survivors: Vec<&TestNode> = nodes.iter().collect();
    converge(&survivors, "page", 1, PRUNE).await;
    wait_for_members(&survivors, 2, PRUNE).await;
    let (_, cluster) = nodes[0].get("/cluster").await;
    let c = cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["name"] == "c")
        .cloned();
    assert_eq!(c.map(|m| m["state"].clone()), Some("down".into()), "{cluster}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_drops_the_share_and_closes_clients_with_1001() {
    let mut nodes = cluster(&["a", "b", "c"]).await;
    let _a = nodes[0].connect_n("page", 2).await;
    let mut leaving_clients = nodes[2].connect_n("page", 3).await;
    {
        let refs: Vec<&TestNode> = nodes.iter().collect();
        converge(&refs, "page", 5, CONVERGE).await;
    }
    let leaving = nodes.pop().expect("c");
    leaving.stop().await;
    let survivors: Vec<&TestNode> = nodes.iter().collect();
    // Failure detection would need seconds; the leave message makes it fast.
    converge(&survivors, "page", 2, Duration::from_secs(2)).await;
    for client in &mut leaving_clients {
        let code = loop {
            match tokio::time::timeout(CONVERGE, futures_util::StreamExt::next(client)).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        };
        assert_eq!(code, Some(1001));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_the_same_name_never_double_counts() {
    let mut nodes = cluster(&["a", "b"]).await;
    let old = nodes[1].connect_n("page", 3).await;
    converge(&[&nodes[0], &nodes[1]], "page", 3, CONVERGE).await;
    let b = nodes.pop().expect("b");
    b.kill().await;
    drop(old);
    // The new process comes back at once, under the same name, elsewhere.
    let mut config = test_config("b");
    config.seeds = vec![nodes[0].gossip.to_string()];
    let restarted = TestNode::start(config).await;
    let _new = restarted.connect_n("page", 2).await;
    let a = &nodes[0];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PRUNE;
    loop {
        let count = a.count("page").await;
        seen.push(count);
        if count == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a never settled on 2: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.iter().all(|&count| count <= 3),
        "old and new counts added up: {seen:?}"
    );
    converge(&[a, &restarted], "page", 2, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_can_neither_join_nor_count() {
    let nodes = cluster_with(&["a", "b"], |config| {
        config.cluster_secret = Some(secret("the-right-cluster-secret"))
    })
    .await;
    let _a = nodes[0].connect_n("page", 1).await;
    converge(&[&nodes[0], &nodes[1]], "page", 1, CONVERGE).await;

    let mut wrong = test_config("intruder");
    wrong.cluster_secret = Some(secret("a-wrong-cluster-secret"));
    wrong.seeds = vec![nodes[0].gossip.to_string()];
    let intruder = TestNode::start(wrong).await;
    let mut none = test_config("open");
    none.seeds = vec![nodes[0].gossip.to_string()];
    let open = TestNode::start(none).await;
    let _i = intruder.connect_n("page", 5).await;
    let _o = open.connect_n("page", 7).await;

    // Wait until their announces reached a and were refused, then check
    // that nothing of theirs counts anywhere.
    eventually(
        CONVERGE,
        "a refuses the intruder's and the open node's packets",
        || async {
            nodes[0]
                .metric("headcount_gossip_dropped_total{reason=\"bad_mac\"}")
                .await
                >= 2.0
                && nodes[0]
                    .metric("headcount_gossip_dropped_total{reason=\"unauthenticated\"}")
                    .await
                    >= 2.0
        },
    )
    .await;
    for node in &nodes {
        assert_eq!(node.count("page").await, 1);
        let (_, body) = node.get("/count/page").await;
        assert_eq!(body["nodes"], 2);
    }
    assert_eq!(intruder.count("page").await, 5, "the intruder only counts itself");
    assert_eq!(open.count("page").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_garbage_datagrams_are_survived() {
    let nodes = cluster_with(&["a", "b"], |config| {
        config.cluster_secret = Some(secret("the-cluster-secret"))
    })
    .await;
    let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for batch in 0..50usize {
        for i in 0..100usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (batch * 100 + i) % 2_000;
            let datagram: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
            let _ = sender.send_to(&datagram, nodes[0].gossip).await;
        }
        // Paced by a round trip, so the kernel's receive buffer never overflows.
        nodes[0].metric("headcount_gossip_received_packets_total").await;
    }
    let _b = nodes[1].connect_n("still", 2).await;
    converge(&[&nodes[0], &nodes[1]], "still", 2, CONVERGE).await;
    eventually(CONVERGE, "garbage is counted as dropped", || async {
        nodes[0].metric("headcount_gossip_dropped_total").await >= 4_000.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_splits_the_counts_and_heals_by_itself() {
    let links = [
        GossipLink::new().await,
        GossipLink::new().await,
        GossipLink::new().await,
        GossipLink::new().await,
    ];
    let names = ["a", "b", "c", "d"];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut config = test_config(name);
        config.advertise = Some(links[i].front);
        config.seeds = links[..i].iter().map(|link| link.front.to_string()).collect();
        let node = TestNode::start(config).await;
        links[i].forward_to(node.gossip);
        nodes.push(node);
    }
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_for_members(&all, 4, JOIN).await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        clients.push(node.connect_n("split", i + 1).await);
    }
    converge(&all, "split", 10, CONVERGE).await;

    // {a, b} | {c, d}
    for (left, right) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        links[left].cut(nodes[right].gossip);
        links[right].cut(nodes[left].gossip);
    }
    converge(&[&nodes[0], &nodes[1]], "split", 3, PRUNE).await;
    converge(&[&nodes[2], &nodes[3]], "split", 7, PRUNE).await;

    for link in &links {
        link.heal();
    }
    wait_for_members(&all, 4, JOIN).await;
    converge(&all, "split", 10, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_churn_across_nodes_ends_with_every_node_agreeing() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let topics = ["t0", "t1", "t2", "t3"];
    let mut held: Vec<(usize, Ws)> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..150 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if seed.is_multiple_of(3) && !held.is_empty() {
            let (_, socket) = held.swap_remove((seed as usize / 3) % held.len());
            if seed.is_multiple_of(2) {
                close(socket).await;
            } else {
                drop(socket);
            }
        } else {
            let topic = (seed as usize / 7) % topics.len();
            let node = &nodes[(seed as usize / 11) % nodes.len()];
            held.push((topic, node.connect(topics[topic]).await));
        }
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    for (i, topic) in topics.iter().enumerate() {
        let expected = held.iter().filter(|(t, _)| *t == i).count() as u64;
        converge(&refs, topic, expected, CONVERGE).await;
    }
    let (_, list) = nodes[1].get("/counts").await;
    assert_eq!(list["total"], held.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_pulls_the_whole_state_and_a_burst_is_repaired_by_a_delta() {
    // A long round, so the burst below lands in one or two of them even on
    // a slow machine (more topics in one round than broadcasts carry).
    const X: Duration = Duration::from_secs(3);
    const WITHIN: Duration = Duration::from_secs(15);
    let mut config = test_config("a");
    config.max_connections_per_ip = 10_000;
    config.timings.gossip_interval = X;
    let a = TestNode::start(config).await;
    let mut sockets = Vec::new();
    for i in 0..1_500 {
        sockets.push(a.connect(&format!("burst/{i}")).await);
    }
    let mut config = test_config("b");
    config.seeds = vec![a.gossip.to_string()];
    config.timings.gossip_interval = X;
    let b = TestNode::start(config).await;
    wait_for_members(&[&a, &b], 2, JOIN).await;
    eventually(WITHIN, "b sees a's 1,500 topics", || async {
        let (_, list) = b.get("/counts?prefix=burst/&limit=1").await;
        list["total"] == 1_500
    })
    .await;
    let full_pulls = b.metric("headcount_cluster_full_pulls_total").await;
    assert!(full_pulls >= 1.0, "a new member's state comes whole");
    let pulls = b.metric("headcount_cluster_pulls_total{result=\"ok\"}").await;
    // More topics in one round than broadcasts carry: b must pull, and
    // what it pulls is what changed.
    let burst = (1_500..3_000).map(|i| a.connect_owned(format!("burst/{i}")));
    sockets.extend(futures_util::future::join_all(burst).await);
    eventually(WITHIN, "b sees the burst of 1,500 more", || async {
        let (_, list) = b.get("/counts?prefix=burst/&limit=1").await;
        list["total"] == 3_000
    })
    .await;
    assert!(
        b.metric("headcount_cluster_pulls_total{result=\"ok\"}").await > pulls,
        "the burst was pulled"
    );
    assert_eq!(
        b.metric("headcount_cluster_full_pulls_total").await,
        full_pulls,
        "as a delta, not the whole state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_peer_unless_the_seeds_name_only_this_node() {
    let free = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut waiting = test_config("waiting");
    waiting.seeds = vec![free.to_string()];
    let waiting = TestNode::start(waiting).await;
    let (status, body) = waiting.get("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (503, Some("joining")));

    let own = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut alone = test_config("alone");
    alone.seeds = vec![own.to_string()];
    let alone = TestNode::start_on(alone, own).await;
    eventually(CONVERGE, "a node seeded only with itself is ready", || async {
        alone.get("/readyz").await.0 == 200
    })
    .await;

    let mut joiner = test_config("joiner");
    joiner.seeds = vec![alone.gossip.to_string()];
    let joiner = TestNode::start(joiner).await;
    eventually(JOIN, "a node that joined a peer is ready", || async {
        joiner.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(waiting.get("/readyz").await.0, 503, "still no peer at its seed");
}
