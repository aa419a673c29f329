//! A node on the open internet, against hostile clients: requests whose
//! headers never end, connections left idle, one address opening connection
//! after connection, gRPC watch floods, malformed topics. Each test is a
//! finding of the exposure review, reproduced against a real node on
//! loopback; the node must cut the client off, refuse it, or answer 400, and
//! keep serving everyone else. Last, what `--admin-token` closes and what
//! it leaves open.

use std::time::Duration;

use futures_util::StreamExt;
use headcount_proto::v1::{
    ListMembersRequest, ListTopicsRequest, WatchCountRequest, cluster_client::ClusterClient,
    counter_client::CounterClient,
};
use headcount_server::{AdminToken, HttpTimings, TrustedProxies, accept_cap};
use headcount_tests::{TestNode, get_json, test_config, ws_connect};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tonic::{Code, transport::Channel};

/// Generous bound for "soon" on a shared machine.
const SOON: Duration = Duration::from_secs(5);

/// A node whose HTTP timeouts are short enough for a test.
async fn node_with(tweak: impl FnOnce(&mut headcount_server::NodeConfig)) -> TestNode {
    let mut config = test_config("a");
    config.http = HttpTimings {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
    };
    tweak(&mut config);
    TestNode::start(config).await
}

/// Reads until the server closes the connection; the bytes it sent, or
/// `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_headers_never_end_is_cut_off() {
    let node = node_with(|_| {}).await;
    let mut slow = TcpStream::connect(node.http).await.expect("connect");
    slow.write_all(b"GET /count/news HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("write");
    assert!(
        closed_within(&mut slow, SOON).await.is_some(),
        "half-sent headers must not hold a connection open"
    );
    assert_eq!(node.get("/count/news").await.0, 200, "others are still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let node = node_with(|_| {}).await;
    let mut idle = TcpStream::connect(node.http).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let answered = closed_within(&mut idle, SOON)
        .await
        .expect("closed after the idle timeout");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "the request itself was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_ip_before_any_request_is_read() {
    let node = node_with(|config| {
        config.max_connections_per_ip = 1;
        config.http.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..accept_cap(1) {
        held.push(TcpStream::connect(node.http).await.expect("connect"));
    }
    let mut over = TcpStream::connect(node.http).await.expect("the kernel accepts the SYN");
    assert_eq!(
        closed_within(&mut over, SOON).await,
        Some(Vec::new()),
        "one connection over the cap is closed unread, without an answer"
    );
    let first = held.first_mut().expect("held");
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = closed_within(first, SOON).await.expect("answered and closed");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "connections under the cap are served"
    );
    drop(held);
    let (status, _) = get_json(node.http, "/healthz").await;
    assert_eq!(status, 200, "places come back when connections close");
}

async fn counter(node: &TestNode) -> CounterClient<Channel> {
    CounterClient::connect(format!("http://{}", node.grpc))
        .await
        .expect("grpc connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_streams_are_watchers_under_the_per_ip_cap() {
    let node = node_with(|config| config.max_connections_per_ip = 2).await;
    let client = counter(&node).await;
    let mut streams = Vec::new();
    let watch = || {
        let mut client = client.clone();
        async move { client.watch_count(WatchCountRequest { topic: "t".into() }).await }
    };
    for _ in 0..2 {
        let mut stream = watch().await.expect("under the cap").into_inner();
        assert!(stream.next().await.is_some(), "the first count arrives");
        streams.push(stream);
    }
    let refused = watch().await.expect_err("over the per-IP cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    let status = ws_connect(node.http, "/ws/t?watch=1")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        status.to_string().contains("429"),
        "websocket watchers share the cap: {status}"
    );
    streams.clear();
    let mut again = None;
    for _ in 0..50 {
        match watch().await {
            Ok(stream) => {
                again = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(again.is_some(), "a closed stream gives its place back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grpc_connection_opens_at_most_100_streams_at_once() {
    let node = node_with(|config| config.max_connections_per_ip = 1_000).await;
    let client = counter(&node).await;
    let mut open = Vec::new();
    for i in 0..100 {
        let mut client = client.clone();
        let mut stream = client
            .watch_count(WatchCountRequest { topic: format!("t{i}") })
            .await
            .expect("within the stream limit")
            .into_inner();
        assert!(stream.next().await.is_some());
        open.push(stream);
    }
    let mut one_more = client.clone();
    let waiting = tokio::spawn(async move {
        let mut stream = one_more
            .watch_count(WatchCountRequest { topic: "last".into() })
            .await?
            .into_inner();
        stream.next().await.transpose()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the 101st stream waits for a free one");
    open.pop();
    let first = timeout(SOON, waiting).await.expect("starts once one closes");
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_percent_escapes_are_refused_as_invalid_topics() {
    let node = node_with(|_| {}).await;
    for path in ["/count/%zz", "/count/a%", "/count/%2"] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("percent")), "{body}");
    }
    let refused = ws_connect(node.http, "/ws/%zz").await.map(|_| ()).expect_err("refused");
    assert!(refused.to_string().contains("400"), "{refused}");
    let (_, counts) = node.get("/counts").await;
    assert_eq!(counts["total"], 0, "the literal topic was never counted: {counts}");
}

const TOKEN: &str = "an-admin-token-for-tests";

async fn get_with(node: &TestNode, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", node.http));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_only_a_page_s_own_count_stays_open() {
    let node = node_with(|config| {
        config.admin_token = Some(AdminToken::new(TOKEN).expect("valid token"));
        config.public_prefixes = vec!["shared.example/".into()];
    })
    .await;
    for path in [
        "/counts",
        "/cluster",
        "/metrics",
        "/counts?prefix=private.example/",
        "/live/cluster",
    ] {
        assert_eq!(get_with(&node, path, None).await.0, 401, "{path} without the token");
        assert_eq!(
            get_with(&node, path, Some("wrong-token-wrong-token")).await.0,
            401,
            "{path}"
        );
    }
    for path in ["/counts", "/cluster", "/metrics"] {
        assert_eq!(get_with(&node, path, Some(TOKEN)).await.0, 200, "{path} with the token");
    }
    let (status, page) = get_with(&node, "/", None).await;
    assert_eq!(status, 401, "the dashboard asks for the token");
    assert!(page.contains("token-form"), "and carries the form that asks for it");
    assert_eq!(get_with(&node, "/", Some(TOKEN)).await.0, 200);
    for path in ["/counts?prefix=shared.example/", "/counts?prefix=shared.example/blog/"] {
        assert_eq!(get_with(&node, path, None).await.0, 200, "{path}: a public prefix");
    }
    for path in ["/count/news", "/hc.js", "/healthz", "/readyz", "/dashboard.js"] {
        assert_eq!(get_with(&node, path, None).await.0, 200, "{path} is always open");
    }
    ws_connect(node.http, "/ws/news")
        .await
        .expect("websockets are always open");

    let mut client = counter(&node).await;
    let open = client
        .get_count(headcount_proto::v1::GetCountRequest { topic: "news".into() })
        .await;
    assert!(open.is_ok(), "GetCount is open: {open:?}");
    let listing = |prefix: &str, token: Option<&str>| {
        let mut request = tonic::Request::new(ListTopicsRequest {
            prefix: prefix.into(),
            limit: 10,
        });
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("ascii");
            request.metadata_mut().insert("authorization", value);
        }
        request
    };
    let refused = client
        .list_topics(listing("", None))
        .await
        .expect_err("needs the token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(client.list_topics(listing("", Some(TOKEN))).await.is_ok());
    assert!(client.list_topics(listing("shared.example/", None)).await.is_ok());
    let mut members = ClusterClient::connect(format!("http://{}", node.grpc))
        .await
        .expect("connects");
    let refused = members
        .list_members(ListMembersRequest {})
        .await
        .expect_err("needs the token");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

/// Opens a counted websocket as a proxy would, naming `client` in
/// `X-Forwarded-For`; the HTTP status of a refusal, or 101.
async fn through_proxy(node: &TestNode, client: &str) -> (u16, Option<headcount_tests::Ws>) {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("ws://{}/ws/news", node.http)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_str(client).expect("ascii"));
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => (101, Some(socket)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (response.status().as_u16(), None),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_proxy_names_the_client() {
    let direct = node_with(|config| config.max_connections_per_ip = 1).await;
    let (status, _first) = through_proxy(&direct, "198.51.100.1").await;
    assert_eq!(status, 101);
    let (status, _) = through_proxy(&direct, "198.51.100.2").await;
    assert_eq!(status, 429, "an untrusted peer cannot pick its address");

    let behind = node_with(|config| {
        config.max_connections_per_ip = 1;
        config.trusted_proxies = TrustedProxies::parse(["127.0.0.1"]).expect("valid");
    })
    .await;
    let (status, _one) = through_proxy(&behind, "198.51.100.1").await;
    assert_eq!(status, 101);
    let (status, _two) = through_proxy(&behind, "198.51.100.2, 127.0.0.1").await;
    assert_eq!(status, 101, "another client behind the same proxy");
    let (status, _) = through_proxy(&behind, "198.51.100.1").await;
    assert_eq!(status, 429, "the forwarded client is capped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_sync_call_is_not_decoded_beyond_1_kib() {
    use headcount_proto::cluster::{Envelope, sync_client::SyncClient};
    let node = node_with(|_| {}).await;
    let mut client = SyncClient::connect(format!("http://{}", node.grpc))
        .await
        .expect("grpc connects");
    let big = Envelope {
        kind: 2,
        timestamp_ms: 0,
        body: vec![7; 4096],
        mac: Vec::new(),
    };
    let refused = client.pull_state(big).await.expect_err("too big to read");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused}");
    let small = Envelope {
        kind: 2,
        timestamp_ms: 0,
        body: vec![7; 16],
        mac: Vec::new(),
    };
    let refused = client.pull_state(small).await.expect_err("not a pull request");
    assert_ne!(refused.code(), Code::OutOfRange, "small requests are read: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_is_cut_off_once_its_buffers_fill() {
    let node = node_with(|config| {
        config.push_interval = Duration::from_millis(1);
        config.session.send_timeout = Duration::from_millis(300);
        config.max_connections_per_ip = 100_000;
    })
    .await;
    // Long topic, big pushes; a tiny receive window that is never read.
    let topic = "t".repeat(250);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("receive buffer");
    let stream = socket.connect(node.http).await.expect("connect");
    let url = format!("ws://{}/ws/{topic}?watch=1", node.http);
    let (_never_read, _) = tokio_tungstenite::client_async(url, stream).await.expect("upgrade");
    assert_eq!(node.metric("headcount_watchers").await, 1.0);
    // Every join and leave changes the count, so the watcher is pushed a
    // frame a millisecond until its buffers are full and a send times out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while node.metric("headcount_watchers").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a watcher that never reads still holds its session"
        );
        for _ in 0..50 {
            let churn = ws_connect(node.http, &format!("/ws/{topic}")).await.expect("upgrade");
            drop(churn);
        }
    }
    let count = || async { node.count(&topic).await == 0 };
    headcount_tests::eventually(SOON, "the churn is over", count).await;
}
