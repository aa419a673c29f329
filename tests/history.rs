//! Visit history on real nodes: views survive restarts and shutdowns, reach
//! every node, outlive a node lost with its disk, and identify nobody.

use std::{path::Path, time::Duration};

use headcount_server::{NodeConfig, TrustedProxies};
use headcount_tests::{TestNode, Ws, close, eventually, history_in, test_config, wait_for_members};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

const JOIN: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(10);
const TOPIC: &str = "example.com/post";

/// Views of `TOPIC` today as `node` answers them.
async fn views(node: &TestNode) -> u64 {
    let (status, body) = node.get(&format!("/stats/{TOPIC}")).await;
    assert_eq!(status, 200, "{body}");
    body["views"].as_u64().expect("views")
}

/// Opens and closes `n` counted websockets: `n` views.
async fn view(node: &TestNode, n: usize) {
    for socket in node.connect_n(TOPIC, n).await {
        close(socket).await;
    }
}

async fn wait_for_views(node: &TestNode, expected: u64) {
    eventually(SETTLE, &format!("{} answers {expected} views", node.name), || async {
        views(node).await == expected
    })
    .await;
}

fn config_in(name: &str, dir: &Path) -> NodeConfig {
    let mut config = test_config(name);
    config.history = history_in(dir);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_history_and_counts_no_view_twice() {
    let dir = TempDir::new().expect("tempdir");
    let node = TestNode::start(config_in("a", dir.path())).await;
    view(&node, 3).await;
    wait_for_views(&node, 3).await;
    node.stop().await;

    let node = TestNode::start(config_in("a", dir.path())).await;
    assert_eq!(views(&node).await, 3, "the restarted node answers what it had");
    view(&node, 2).await;
    wait_for_views(&node, 5).await;
    node.stop().await;
    let node = TestNode::start(config_in("a", dir.path())).await;
    assert_eq!(views(&node).await, 5, "after two restarts, every view once");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_what_no_flush_has_yet() {
    let dir = TempDir::new().expect("tempdir");
    let mut config = config_in("a", dir.path());
    if let Some(history) = &mut config.history {
        history.flush_interval = Duration::from_secs(3600);
    }
    let node = TestNode::start(config.clone()).await;
    view(&node, 4).await;
    wait_for_views(&node, 4).await;
    node.stop().await;
    let node = TestNode::start(config).await;
    assert_eq!(views(&node).await, 4, "the shutdown flush wrote every view");
    node.stop().await;
}

async fn three_nodes(dirs: &[TempDir; 3]) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for (name, dir) in ["a", "b", "c"].into_iter().zip(dirs) {
        let mut config = config_in(name, dir.path());
        config.seeds = nodes.iter().map(|node| node.gossip.to_string()).collect();
        nodes.push(TestNode::start(config).await);
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_for_members(&refs, 3, JOIN).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_taken_on_one_node_are_answered_by_all() {
    let dirs = [(); 3].map(|()| TempDir::new().expect("tempdir"));
    let nodes = three_nodes(&dirs).await;
    view(&nodes[0], 5).await;
    view(&nodes[1], 2).await;
    for node in &nodes {
        wait_for_views(node, 7).await;
    }
    let (status, list) = nodes[2].get("/stats?prefix=example.com/").await;
    assert_eq!(status, 200);
    assert_eq!(list["views"], 7, "{list}");
    assert_eq!(list["topics"][0]["topic"], TOPIC, "{list}");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_with_its_disk_takes_none_of_its_flushed_views() {
    let dirs = [(); 3].map(|()| TempDir::new().expect("tempdir"));
    let mut nodes = three_nodes(&dirs).await;
    view(&nodes[0], 6).await;
    for node in &nodes[1..] {
        wait_for_views(node, 6).await;
    }
    let lost = nodes.remove(0);
    lost.kill().await;
    std::fs::remove_dir_all(dirs[0].path()).expect("delete the disk");
    for node in &nodes {
        assert_eq!(views(node).await, 6, "{} still holds the lost node's views", node.name);
    }
    let mut config = config_in("a", dirs[0].path());
    config.seeds = vec![nodes[0].gossip.to_string()];
    let replacement = TestNode::start(config).await;
    wait_for_views(&replacement, 6).await;
    view(&replacement, 1).await;
    for node in nodes.iter().chain([&replacement]) {
        wait_for_views(node, 7).await;
    }
    for node in nodes.into_iter().chain([replacement]) {
        node.stop().await;
    }
}

/// A counted websocket from `client` with `user_agent`, through a proxy.
async fn visit(node: &TestNode, client: &str, user_agent: &str) -> Ws {
    let mut request = format!("ws://{}/ws/{TOPIC}", node.http)
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert("x-forwarded-for", HeaderValue::from_str(client).expect("ascii"));
    headers.insert("user-agent", HeaderValue::from_str(user_agent).expect("ascii"));
    let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_are_distinct_clients_and_their_views_add_up() {
    let mut config = test_config("a");
    config.trusted_proxies = TrustedProxies::parse(["127.0.0.1"]).expect("valid");
    let node = TestNode::start(config).await;
    for _ in 0..50 {
        close(visit(&node, "198.51.100.1", "Firefox/1").await).await;
    }
    for i in 0..200 {
        let (client, agent) = (format!("198.51.100.{}", i % 100 + 2), format!("Agent/{}", i / 100));
        close(visit(&node, &client, &agent).await).await;
    }
    eventually(SETTLE, "250 views by 201 visitors", || async {
        let (_, body) = node.get(&format!("/stats/{TOPIC}")).await;
        body["views"] == 250 && body["visitors"] == 201
    })
    .await;
    let (_, site) = node.get("/stats?prefix=example.com/").await;
    assert_eq!(
        (site["views"].as_u64(), site["visitors"].as_u64()),
        (Some(250), Some(201)),
        "{site}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dates_and_ranges_are_refused() {
    let node = TestNode::start(test_config("a")).await;
    for path in [
        format!("/stats/{TOPIC}?from=2026-02-30"),
        format!("/stats/{TOPIC}?from=2026-11-30&to=2026-11-01"),
        format!("/stats/{TOPIC}?from=2020-01-01&to=2026-11-30"),
        "/stats?date=yesterday".to_owned(),
        "/stats?limit=0".to_owned(),
        "/stats/%zz".to_owned(),
    ] {
        let (status, body) = node.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (status, body) = node.get(&format!("/stats/{TOPIC}?from=2026-11-01&to=2026-11-30")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["days"].as_array().map(Vec::len),
        Some(30),
        "every day of the range: {body}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_history_says_so() {
    let mut config = test_config("a");
    config.history = None;
    let node = TestNode::start_without_history(config).await;
    let (status, body) = node.get(&format!("/stats/{TOPIC}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("--no-history")),
        "{body}"
    );
    node.stop().await;
}

/// A history push from a peer that claims `views` views of `TOPIC` today,
/// sealed with `secret`.
fn forged_push(secret: &str, views: u64, topic: &str) -> headcount_proto::cluster::Envelope {
    use headcount_proto::cluster::{HistoryBatch, HistoryPush, HistoryRow, Kind};
    use prost::Message;
    let sealer = headcount_cluster::envelope::Sealer::new(Some(secret.as_bytes()), 64 * 1024);
    let today = headcount_history::Day::today().number();
    let push = HistoryPush {
        flushed: None,
        batch: Some(HistoryBatch {
            rows: vec![HistoryRow {
                origin: 42,
                day: today,
                topic: topic.into(),
                version: 1,
                views,
                peak: 0,
            }],
            ..Default::default()
        }),
    };
    sealer.seal_envelope(Kind::HistoryPush, push.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_peers_is_taken_only_sealed_with_the_secret_and_valid() {
    use headcount_proto::cluster::history_client::HistoryClient;
    const SECRET: &str = "the-history-cluster-secret";
    let mut config = test_config("a");
    config.cluster_secret = Some(headcount_server::ClusterSecret::new(SECRET.as_bytes().to_vec()).expect("long"));
    let node = TestNode::start(config).await;
    let mut peer = HistoryClient::connect(format!("http://{}", node.grpc))
        .await
        .expect("grpc connects");

    let forged = peer
        .push(forged_push("another-secret-entirely", 1_000, TOPIC))
        .await
        .expect_err("another secret");
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged}");
    let invalid = peer
        .push(forged_push(SECRET, 1_000, ""))
        .await
        .expect_err("an invalid topic");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument, "{invalid}");
    assert_eq!(views(&node).await, 0, "neither changed anything");

    peer.push(forged_push(SECRET, 7, TOPIC))
        .await
        .expect("a peer with the secret");
    assert_eq!(views(&node).await, 7, "a sealed, valid row is merged");
    peer.push(forged_push(SECRET, 3, TOPIC)).await.expect("an older copy");
    assert_eq!(
        views(&node).await,
        7,
        "rows merge by maximum: a peer cannot take views away"
    );
    node.stop().await;
}
