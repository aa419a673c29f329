//! Single-node behaviour, as a user of one node sees it (README's websocket and HTTP sections): counts
//! follow open websockets, the first frame and the pushes, topic names in
//! URLs, every refusal before the upgrade and its order, the frame size cap,
//! resets and idle clients, graceful shutdown, the HTTP API, and memory that
//! follows the live topics rather than every topic ever seen.
//!
//! Every test runs a real node on loopback ports and talks to it with real
//! HTTP and websocket clients. Conditions are awaited with deadlines, never
//! with fixed sleeps.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use headcount_server::{NodeConfig, SessionTimings};
use headcount_tests::{
    TestNode, Ws, close, eventually, next_count, percent_encode, test_config, wait_for_push, ws_connect,
};
use serde_json::{Value, json};
use tokio::{net::TcpSocket, time::Instant};
use tokio_tungstenite::{
    MaybeTlsStream,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

/// Generous bound for anything that should happen "at once".
const SOON: Duration = Duration::from_secs(5);
/// A second loopback address, so a test can be two client IPs.
const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

// ---------------------------------------------------------------- helpers

/// An upgrade the server answered with plain HTTP instead of `101`.
#[derive(Debug)]
struct Refused {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Refused {
    /// Asserts the refusal is `status` with a JSON `{"error":"…"}` body.
    fn assert_error(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert!(
            self.body["error"].as_str().is_some_and(|message| !message.is_empty()),
            "{what}: the body is not {{\"error\":…}}: {self:?}"
        );
    }

    /// Asserts a 503 with a `Retry-After` in seconds and a JSON error.
    fn assert_full(&self, what: &str) {
        self.assert_error(503, what);
        let retry_after = self
            .retry_after
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: no Retry-After: {self:?}"));
        assert!(
            retry_after.trim().parse::<u64>().is_ok(),
            "{what}: Retry-After {retry_after:?} is not seconds"
        );
    }
}

/// Tries a websocket upgrade from 127.0.0.1, with an `Origin` header if given.
async fn upgrade(node: &TestNode, path: &str, origin: Option<&str>) -> Result<Ws, Refused> {
    upgrade_from(IpAddr::V4(Ipv4Addr::LOCALHOST), node.http, path, origin).await
}

/// Tries a websocket upgrade to `server` from the client address `local`.
async fn upgrade_from(local: IpAddr, server: SocketAddr, path: &str, origin: Option<&str>) -> Result<Ws, Refused> {
    let mut request = format!("ws://{server}{path}")
        .into_client_request()
        .expect("a valid websocket request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).expect("a valid Origin header"));
    }
    let socket = TcpSocket::new_v4().expect("tcp socket");
    socket.bind(SocketAddr::new(local, 0)).expect("bind the client address");
    let stream = socket.connect(server).await.expect("tcp connect");
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            body: response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice(body).ok())
                .unwrap_or(Value::Null),
        }),
        Err(error) => panic!("websocket {path}: neither upgraded nor refused as HTTP: {error}"),
    }
}

/// Expects the upgrade to be refused.
async fn refused(node: &TestNode, path: &str, origin: Option<&str>) -> Refused {
    refused_from(IpAddr::V4(Ipv4Addr::LOCALHOST), node, path, origin).await
}

/// Expects the upgrade from `local` to be refused.
async fn refused_from(local: IpAddr, node: &TestNode, path: &str, origin: Option<&str>) -> Refused {
    match upgrade_from(local, node.http, path, origin).await {
        Ok(_) => panic!("{path} (origin {origin:?}, from {local}) was upgraded; expected a refusal"),
        Err(refusal) => refusal,
    }
}

/// Polls upgrades of `path` until one is admitted; each refusal meanwhile
/// must be `status` (the limit still in force). Panics after [`SOON`].
async fn admitted_soon(node: &TestNode, path: &str, status: u16, what: &str) -> Ws {
    let deadline = Instant::now() + SOON;
    loop {
        match upgrade(node, path, None).await {
            Ok(socket) => return socket,
            Err(refusal) if refusal.status == 503 && status == 503 => refusal.assert_full(what),
            Err(refusal) => refusal.assert_error(status, what),
        }
        assert!(Instant::now() < deadline, "not within {SOON:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next text frame on `socket` as JSON (skipping pings and pongs).
async fn next_json(socket: &mut Ws) -> Value {
    let deadline = Instant::now() + SOON;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a text frame within 5 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).expect("the server's text frames are JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code (`Err` says
/// what happened instead), then finishes the closing handshake.
async fn close_code(mut socket: Ws) -> Result<u16, String> {
    let deadline = Instant::now() + SOON;
    let code = loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(format!("no close frame within {SOON:?}")),
            Ok(None) => return Err("the connection ended without a close frame".into()),
            Ok(Some(Err(error))) => return Err(format!("the connection failed without a close frame: {error}")),
            Ok(Some(Ok(Message::Close(Some(frame))))) => break Ok(u16::from(frame.code)),
            Ok(Some(Ok(Message::Close(None)))) => break Err("a close frame without a code".into()),
            Ok(Some(Ok(_))) => {}
        }
    };
    // Reading on sends our close reply, so the server's side ends at once.
    let _ = tokio::time::timeout_at(deadline, async { while let Some(Ok(_)) = socket.next().await {} }).await;
    code
}

/// This node's own line in `/cluster`.
async fn own_member(node: &TestNode) -> Value {
    let (status, body) = node.get("/cluster").await;
    assert_eq!(status, 200, "/cluster: {body}");
    body["members"][0].clone()
}

/// `GET /metrics`: status, content type and text.
async fn metrics_text(node: &TestNode) -> (u16, String, String) {
    let response = reqwest::get(format!("http://{}/metrics", node.http))
        .await
        .expect("GET /metrics");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("metrics body"))
}

/// The value of the unlabelled sample `name` in `/metrics`.
async fn metric(node: &TestNode, name: &str) -> Option<f64> {
    let (_, _, text) = metrics_text(node).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
}

fn config(tweak: impl FnOnce(&mut NodeConfig)) -> NodeConfig {
    let mut config = test_config("a");
    tweak(&mut config);
    config
}

// ------------------------------------------------------------------ counts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_open_websockets() {
    let node = TestNode::start(test_config("a")).await;
    let mut sockets = node.connect_n("t", 5).await;
    // The presence is taken before the upgrade answer, so the count is
    // already there when the client sees the upgrade.
    assert_eq!(
        node.get("/count/t").await,
        (200, json!({"topic": "t", "count": 5, "local": 5, "nodes": 1}))
    );

    let _other = node.connect("u").await;
    assert_eq!(node.count("t").await, 5, "another topic does not change t");

    for socket in sockets.drain(..2) {
        close(socket).await;
    }
    eventually(SOON, "closing 2 of 5 leaves 3", || async { node.count("t").await == 3 }).await;
    assert_eq!(
        node.get("/count/t").await,
        (200, json!({"topic": "t", "count": 3, "local": 3, "nodes": 1}))
    );

    assert_eq!(
        node.get("/count/nobody-here").await,
        (200, json!({"topic": "nobody-here", "count": 0, "local": 0, "nodes": 1}))
    );

    for socket in sockets {
        close(socket).await;
    }
    eventually(SOON, "every socket closed: t is 0", || async {
        node.count("t").await == 0
    })
    .await;
    assert_eq!(node.count("u").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_is_the_count_and_watchers_get_pushes_without_being_counted() {
    let node = TestNode::start(test_config("a")).await;
    let mut watcher = ws_connect(node.http, "/ws/live?watch=1")
        .await
        .expect("watcher upgrade");
    assert_eq!(next_json(&mut watcher).await, json!({"topic": "live", "count": 0}));

    let mut first = node.connect("live").await;
    assert_eq!(
        next_json(&mut first).await,
        json!({"topic": "live", "count": 1}),
        "the first frame counts itself"
    );
    assert_eq!(
        next_json(&mut watcher).await,
        json!({"topic": "live", "count": 1}),
        "a join is pushed"
    );
    assert_eq!(node.count("live").await, 1, "the watcher is not counted");
    assert_eq!(
        own_member(&node).await["connections"],
        1,
        "the watcher is no connection in /cluster"
    );

    let second = node.connect("live").await;
    assert_eq!(next_json(&mut watcher).await, json!({"topic": "live", "count": 2}));
    wait_for_push(&mut first, 2, SOON).await;

    // A second watcher starts from the current count.
    let mut late = ws_connect(node.http, "/ws/live?watch=1")
        .await
        .expect("watcher upgrade");
    assert_eq!(next_json(&mut late).await, json!({"topic": "live", "count": 2}));
    assert_eq!(node.count("live").await, 2);

    close(second).await;
    assert_eq!(
        next_json(&mut watcher).await,
        json!({"topic": "live", "count": 1}),
        "a leave is pushed"
    );
    wait_for_push(&mut first, 1, SOON).await;
    wait_for_push(&mut late, 1, SOON).await;

    // Nothing changes: nothing is pushed, for many push intervals.
    assert_eq!(
        next_count(&mut watcher, Duration::from_millis(600)).await,
        None,
        "a push without a change"
    );
    // ...and the watcher is still there to see the next change.
    let _third = node.connect("live").await;
    assert_eq!(next_json(&mut watcher).await, json!({"topic": "live", "count": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_come_at_most_once_per_interval_and_only_on_change() {
    const JOINS: u64 = 200;
    let interval = Duration::from_millis(250);
    let node = TestNode::start(config(|c| c.push_interval = interval)).await;
    let mut watcher = ws_connect(node.http, "/ws/burst?watch=1")
        .await
        .expect("watcher upgrade");
    assert_eq!(next_json(&mut watcher).await, json!({"topic": "burst", "count": 0}));

    let reader = tokio::spawn(async move {
        let started = Instant::now();
        let mut pushes = Vec::new();
        while let Some(count) = next_count(&mut watcher, SOON).await {
            pushes.push(count);
            if count == JOINS {
                break;
            }
        }
        (pushes, started.elapsed(), watcher)
    });
    let _sockets = node.connect_n("burst", usize::try_from(JOINS).expect("small")).await;
    let (pushes, elapsed, mut watcher) = reader.await.expect("reader task");

    assert_eq!(pushes.last(), Some(&JOINS), "the final count is pushed: {pushes:?}");
    assert!(
        pushes.windows(2).all(|pair| pair[0] < pair[1]),
        "every push is a change: {pushes:?}"
    );
    let allowed = elapsed.as_millis() / interval.as_millis() + 2;
    assert!(
        pushes.len() as u128 <= allowed,
        "{} pushes in {elapsed:?} with a {interval:?} push interval (at most {allowed}): {pushes:?}",
        pushes.len()
    );
    assert_eq!(
        next_count(&mut watcher, 3 * interval).await,
        None,
        "no push while nothing changes"
    );
}

// ------------------------------------------------------------------ topics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_percent_decoded_paths_with_slashes_and_unicode() {
    let node = TestNode::start(test_config("a")).await;

    let mut rooted = node.connect("%2Fblog%2Fpost-1").await;
    assert_eq!(
        next_json(&mut rooted).await,
        json!({"topic": "/blog/post-1", "count": 1})
    );
    let mut plain = node.connect("blog/post-1").await;
    assert_eq!(next_json(&mut plain).await, json!({"topic": "blog/post-1", "count": 1}));
    let _encoded_slash = node.connect("blog%2Fpost-1").await;

    assert_eq!(
        node.get("/count/%2Fblog%2Fpost-1").await,
        (
            200,
            json!({"topic": "/blog/post-1", "count": 1, "local": 1, "nodes": 1})
        )
    );
    assert_eq!(
        node.get("/count/blog/post-1").await,
        (200, json!({"topic": "blog/post-1", "count": 2, "local": 2, "nodes": 1}))
    );
    assert_eq!(node.count("blog%2Fpost-1").await, 2, "an encoded slash is a slash");
    assert_eq!(node.count("news").await, 0);
    // Decoded once: %252F names the topic "%2F", not "/".
    assert_eq!(
        node.get("/count/%252F").await,
        (200, json!({"topic": "%2F", "count": 0, "local": 0, "nodes": 1}))
    );

    let mut cafe = node.connect("caf%C3%A9").await;
    assert_eq!(next_json(&mut cafe).await, json!({"topic": "café", "count": 1}));
    let _cafe_again = node.connect("%63af%C3%A9").await;
    let mut news = node.connect(&percent_encode("ニュース")).await;
    assert_eq!(next_json(&mut news).await, json!({"topic": "ニュース", "count": 1}));

    // The HTTP client percent-encodes the raw UTF-8 path itself.
    assert_eq!(
        node.get("/count/café").await,
        (200, json!({"topic": "café", "count": 2, "local": 2, "nodes": 1}))
    );
    assert_eq!(node.count("caf%C3%A9").await, 2);
    assert_eq!(node.count("ニュース").await, 1);
    assert_eq!(node.count("cafe").await, 0);

    // What is percent-encoded belongs to the topic: "?" does not start a
    // query, "+" is no space, "%20" is one.
    let mut question = node.connect("q%3Fwatch%3D1").await;
    assert_eq!(
        next_json(&mut question).await,
        json!({"topic": "q?watch=1", "count": 1}),
        "counted, not a watcher"
    );
    assert_eq!(node.count("q%3Fwatch%3D1").await, 1);
    assert_eq!(node.count("q").await, 0);
    let plus = node.connect("a+b").await;
    let space = node.connect("a%20b").await;
    assert_eq!(node.get("/count/a+b").await.1["topic"], "a+b");
    assert_eq!(node.count("a+b").await, 1);
    assert_eq!(
        node.get("/count/a%20b").await,
        (200, json!({"topic": "a b", "count": 1, "local": 1, "nodes": 1}))
    );
    drop((question, plus, space));
    eventually(SOON, "the extra topics are gone", || async {
        node.count("q%3Fwatch%3D1").await + node.count("a+b").await + node.count("a%20b").await == 0
    })
    .await;

    let (status, list) = node.get("/counts").await;
    assert_eq!(status, 200, "/counts: {list}");
    assert_eq!(
        list,
        json!({"total": 6, "topics": [
            {"topic": "blog/post-1", "count": 2},
            {"topic": "café", "count": 2},
            {"topic": "/blog/post-1", "count": 1},
            {"topic": "ニュース", "count": 1},
        ]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topics_get_400_json_on_both_endpoints_and_are_never_counted() {
    let node = TestNode::start(test_config("a")).await;
    let too_long = "a".repeat(257);
    let too_long_unicode = percent_encode(&"é".repeat(129));
    let cases = [
        ("empty", ""),
        ("257 bytes", too_long.as_str()),
        ("258 bytes of é", too_long_unicode.as_str()),
        ("newline", "%0A"),
        ("newline inside", "a%0Ab"),
        ("NUL", "%00"),
        ("DEL", "%7F"),
        ("C1 control U+0085", "%C2%85"),
        ("invalid UTF-8", "%FF"),
        ("truncated UTF-8", "caf%C3"),
    ];
    for (what, raw) in cases {
        let (status, body) = node.get(&format!("/count/{raw}")).await;
        assert_eq!(status, 400, "/count/{raw} ({what}): {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "/count/{raw} ({what}): {body}"
        );
        refused(&node, &format!("/ws/{raw}"), None)
            .await
            .assert_error(400, &format!("/ws/{raw} ({what})"));
        refused(&node, &format!("/ws/{raw}?watch=1"), None)
            .await
            .assert_error(400, &format!("/ws/{raw}?watch=1 ({what})"));
    }

    assert_eq!(
        node.get("/counts").await,
        (200, json!({"total": 0, "topics": []})),
        "nothing was counted"
    );
    let own = own_member(&node).await;
    assert_eq!(
        (own["connections"].as_u64(), own["topics"].as_u64()),
        (Some(0), Some(0)),
        "{own}"
    );

    // The longest valid topics: 256 bytes, in ASCII and in two-byte characters.
    let longest = "a".repeat(256);
    let mut socket = node.connect(&longest).await;
    assert_eq!(next_json(&mut socket).await, json!({"topic": longest, "count": 1}));
    assert_eq!(node.count(&longest).await, 1);
    let longest_unicode = "é".repeat(128);
    let _unicode = node.connect(&percent_encode(&longest_unicode)).await;
    assert_eq!(node.get(&format!("/count/{longest_unicode}")).await.1["count"], 1);
}

// ------------------------------------------------------------------ frames

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_frames_over_1_kib_close_with_1009_and_uncount() {
    let node = TestNode::start(test_config("a")).await;
    let mut text = node.connect("big").await;
    let mut binary = node.connect("big").await;
    let mut small = node.connect("big").await;
    assert_eq!(node.count("big").await, 3);

    text.send(Message::Text("x".repeat(1025).into()))
        .await
        .expect("send 1025 bytes of text");
    assert_eq!(close_code(text).await, Ok(1009), "a 1025-byte text frame");
    binary
        .send(Message::Binary(vec![7u8; 4096].into()))
        .await
        .expect("send 4 KiB binary");
    assert_eq!(close_code(binary).await, Ok(1009), "a 4 KiB binary frame");
    eventually(SOON, "both closed connections are uncounted", || async {
        node.count("big").await == 1
    })
    .await;

    // Small frames, up to exactly 1 KiB, keep the connection open: the ping
    // sent after them is answered, so the server read them all and stayed.
    small
        .send(Message::Text("hello".into()))
        .await
        .expect("send a small text frame");
    small
        .send(Message::Text("y".repeat(1024).into()))
        .await
        .expect("send 1 KiB of text");
    small
        .send(Message::Binary(vec![1u8; 1024].into()))
        .await
        .expect("send 1 KiB binary");
    small
        .send(Message::Ping(b"still here".to_vec().into()))
        .await
        .expect("send a ping");
    let deadline = Instant::now() + SOON;
    loop {
        match tokio::time::timeout_at(deadline, small.next())
            .await
            .expect("a pong within 5 s")
        {
            Some(Ok(Message::Pong(payload))) if payload.as_ref() == b"still here" => break,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("a frame of at most 1 KiB ended the connection: {other:?}"),
        }
    }
    assert_eq!(
        node.count("big").await,
        1,
        "the connection that sent small frames is still counted"
    );
}

// ------------------------------------------------------------------ limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_refuses_with_429_before_the_upgrade() {
    let node = TestNode::start(config(|c| c.max_connections_per_ip = 2)).await;
    let mut held = node.connect_n("t", 2).await;

    let refusal = refused(&node, "/ws/t", None).await;
    refusal.assert_error(429, "a third connection from 127.0.0.1");
    refused(&node, "/ws/other", None)
        .await
        .assert_error(429, "a third connection, on another topic");
    assert_eq!(node.count("t").await, 2, "a refused attempt is not counted");
    assert_eq!(node.count("other").await, 0);

    // The cap is per address: another client IP still gets in.
    let other_ip = upgrade_from(OTHER_IP, node.http, "/ws/t", None)
        .await
        .expect("another IP is admitted");
    assert_eq!(node.count("t").await, 3);

    close(held.pop().expect("held socket")).await;
    let again = admitted_soon(&node, "/ws/t", 429, "a closed connection gives its per-IP place back").await;
    assert_eq!(node.count("t").await, 3);
    drop((held, other_ip, again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_with_503_and_retry_after() {
    let node = TestNode::start(config(|c| c.max_connections = 2)).await;
    let mut held = node.connect_n("full", 2).await;

    refused(&node, "/ws/full", None).await.assert_full("a third connection");
    refused_from(OTHER_IP, &node, "/ws/full", None)
        .await
        .assert_full("a third connection from another IP");
    refused(&node, "/ws/elsewhere", None)
        .await
        .assert_full("a third connection on another topic");
    assert_eq!(node.count("full").await, 2, "refused attempts are not counted");
    assert_eq!(node.count("elsewhere").await, 0);
    assert_eq!(own_member(&node).await["connections"], 2);

    close(held.pop().expect("held socket")).await;
    let again = admitted_soon(&node, "/ws/elsewhere", 503, "a closed connection gives its place back").await;
    assert_eq!((node.count("full").await, node.count("elsewhere").await), (1, 1));
    drop((held, again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topics_refuses_new_topics_with_503_while_live_ones_still_accept() {
    let node = TestNode::start(config(|c| c.max_topics = 2)).await;
    let _a = node.connect("a").await;
    let b = node.connect("b").await;

    refused(&node, "/ws/c", None).await.assert_full("a third topic");
    let _a_again = upgrade(&node, "/ws/a", None)
        .await
        .expect("a live topic still accepts connections");
    assert_eq!(node.count("a").await, 2);
    assert_eq!(node.count("c").await, 0, "the refused topic is not counted");
    let own = own_member(&node).await;
    assert_eq!(
        (own["connections"].as_u64(), own["topics"].as_u64()),
        (Some(3), Some(2)),
        "{own}"
    );

    close(b).await;
    let _c = admitted_soon(&node, "/ws/c", 503, "a topic that empties frees its place").await;
    assert_eq!(node.count("c").await, 1);
    refused(&node, "/ws/b", None)
        .await
        .assert_full("b is now the new topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_the_contract_order() {
    // invalid topic 400 < origin 403 < per-IP 429 < node full 503.
    let node = TestNode::start(config(|c| {
        c.allowed_origins = Some(vec!["https://ok.example".into()]);
        c.max_connections_per_ip = 1;
        c.max_connections = 1;
        c.max_topics = 1;
    }))
    .await;
    let good = Some("https://ok.example");
    let bad = Some("https://evil.example");
    let _held = upgrade(&node, "/ws/held", good)
        .await
        .expect("the first connection is admitted");

    // From 127.0.0.1, which holds its one place on a full node.
    refused(&node, "/ws/%FF", bad)
        .await
        .assert_error(400, "invalid topic and bad origin");
    refused(&node, "/ws/", None)
        .await
        .assert_error(400, "empty topic and no origin");
    refused(&node, "/ws/%0A", good)
        .await
        .assert_error(400, "invalid topic, per-IP cap and node full");
    refused(&node, "/ws/held", bad)
        .await
        .assert_error(403, "bad origin, per-IP cap and node full");
    refused(&node, "/ws/held", None)
        .await
        .assert_error(403, "no origin, per-IP cap and node full");
    refused(&node, "/ws/held", good)
        .await
        .assert_error(429, "per-IP cap and node full");
    refused(&node, "/ws/new", good)
        .await
        .assert_error(429, "per-IP cap, node full and max topics");

    // From another address, which holds nothing.
    refused_from(OTHER_IP, &node, "/ws/%7F", bad)
        .await
        .assert_error(400, "other IP: invalid topic, bad origin");
    refused_from(OTHER_IP, &node, "/ws/held", bad)
        .await
        .assert_error(403, "other IP: bad origin, node full");
    refused_from(OTHER_IP, &node, "/ws/held", good)
        .await
        .assert_full("other IP: node full");
    refused_from(OTHER_IP, &node, "/ws/new", good)
        .await
        .assert_full("other IP: node full and max topics");

    assert_eq!(node.count("held").await, 1, "no refused attempt was counted");
    assert_eq!(node.count("new").await, 0);
    let own = own_member(&node).await;
    assert_eq!(
        (own["connections"].as_u64(), own["topics"].as_u64()),
        (Some(1), Some(1)),
        "{own}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_open_websockets() {
    let node = TestNode::start(config(|c| c.allowed_origins = Some(vec!["https://example.com".into()]))).await;

    let mut allowed = upgrade(&node, "/ws/site", Some("https://example.com"))
        .await
        .expect("allowed origin");
    assert_eq!(next_json(&mut allowed).await, json!({"topic": "site", "count": 1}));
    for origin in [
        Some("https://evil.example"),
        Some("https://example.com.evil.example"),
        Some("null"),
        None,
    ] {
        refused(&node, "/ws/site", origin)
            .await
            .assert_error(403, &format!("origin {origin:?}"));
        refused(&node, "/ws/site?watch=1", origin)
            .await
            .assert_error(403, &format!("watcher, origin {origin:?}"));
    }
    assert_eq!(node.count("site").await, 1, "refused origins are not counted");
    assert_eq!(own_member(&node).await["connections"], 1);
}

// ------------------------------------------------- how connections end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_vanished_clients_are_uncounted() {
    let node = TestNode::start(test_config("a")).await;
    let reset = node.connect("gone").await;
    let vanished = node.connect("gone").await;
    let mut kept = node.connect("gone").await;
    assert_eq!(node.count("gone").await, 3);

    // TCP reset: SO_LINGER 0, then drop, so the kernel sends RST.
    let MaybeTlsStream::Plain(tcp) = reset.get_ref() else {
        panic!("a plain TCP websocket")
    };
    tcp.set_zero_linger().expect("SO_LINGER 0");
    drop(reset);
    eventually(SOON, "a reset connection is uncounted", || async {
        node.count("gone").await == 2
    })
    .await;

    // Dropped without a close frame (FIN only).
    drop(vanished);
    eventually(
        SOON,
        "a connection closed without a close frame is uncounted",
        || async { node.count("gone").await == 1 },
    )
    .await;

    assert_eq!(next_json(&mut kept).await["count"], 3, "the survivor's first frame");
    assert_eq!(node.count("gone").await, 1, "the other connection is still counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_answering_ones_kept() {
    let timings = SessionTimings {
        ping_after: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        ..SessionTimings::default()
    };
    let node = TestNode::start(config(|c| c.session = timings)).await;
    // Never read: it never answers the server's pings.
    let silent = node.connect("idle").await;
    let mut answering = node.connect("idle").await;
    assert_eq!(node.count("idle").await, 2);

    // Reading makes the client answer pings. Read until the server has
    // pinged it for twice the idle timeout.
    let enough_pings = 2 * timings.idle_timeout.as_millis() / timings.ping_after.as_millis();
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while pings < enough_pings {
            match answering.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(_) | Message::Pong(_))) => {}
                other => {
                    return Err(format!(
                        "the answering client was closed after {pings} pings: {other:?}"
                    ));
                }
            }
        }
        Ok(answering)
    });
    eventually(SOON, "the silent connection is closed and uncounted", || async {
        node.count("idle").await == 1
    })
    .await;
    let answering = tokio::time::timeout(SOON, reader)
        .await
        .expect("the server keeps pinging a client that answers")
        .expect("reader task")
        .unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(
        node.count("idle").await,
        1,
        "the client answering pings stays counted past the idle timeout"
    );
    // The client sees its connection end (the close frame may sit behind a
    // ping whose answer can no longer be written, so any ending will do).
    let mut silent = silent;
    let ended = tokio::time::timeout(SOON, async {
        while let Some(Ok(frame)) = silent.next().await {
            if frame.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the silent connection is still open on the client side");
    drop(answering);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_websockets_with_1001() {
    let node = TestNode::start(test_config("a")).await;
    let mut counted = node.connect("bye").await;
    let mut watcher = ws_connect(node.http, "/ws/bye?watch=1").await.expect("watcher upgrade");
    assert_eq!(next_json(&mut counted).await["count"], 1);
    assert_eq!(next_json(&mut watcher).await["count"], 1);
    let http = node.http;

    let stopping = tokio::spawn(node.stop());
    let (counted_code, watcher_code) = tokio::join!(close_code(counted), close_code(watcher));
    assert_eq!(counted_code, Ok(1001), "a counted client is told the server goes away");
    assert_eq!(watcher_code, Ok(1001), "a watcher is told the server goes away");
    tokio::time::timeout(SOON, stopping)
        .await
        .expect("stop() returns within 5 s")
        .expect("stop task");
    assert!(
        reqwest::get(format!("http://{http}/healthz")).await.is_err(),
        "the stopped node no longer serves"
    );
}

// ---------------------------------------------------------------- HTTP API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_listing_orders_rolls_up_and_limits() {
    let node = TestNode::start(test_config("a")).await;
    let mut sockets = Vec::new();
    for (topic, n) in [("b", 3), ("a", 2), ("c", 2), ("d", 1)] {
        sockets.extend(node.connect_n(topic, n).await);
    }
    let ordered = json!({"total": 8, "topics": [
        {"topic": "b", "count": 3},
        {"topic": "a", "count": 2},
        {"topic": "c", "count": 2},
        {"topic": "d", "count": 1},
    ]});
    assert_eq!(
        node.get("/counts").await,
        (200, ordered),
        "biggest first, ties by topic"
    );

    for (topic, n) in [("blog/x", 2), ("blog/y", 1), ("blog/z", 2), ("blogger", 1)] {
        sockets.extend(node.connect_n(topic, n).await);
    }
    assert_eq!(
        node.get("/counts?prefix=blog/&limit=1").await,
        (200, json!({"total": 5, "topics": [{"topic": "blog/x", "count": 2}]})),
        "total rolls up every matching topic, listed or not"
    );
    assert_eq!(
        node.get("/counts?prefix=blog%2F&limit=2").await,
        (
            200,
            json!({"total": 5, "topics": [{"topic": "blog/x", "count": 2}, {"topic": "blog/z", "count": 2}]})
        )
    );
    assert_eq!(
        node.get("/counts?prefix=blog").await.1["total"],
        6,
        "blogger matches the prefix blog"
    );
    assert_eq!(
        node.get("/counts?prefix=zzz").await,
        (200, json!({"total": 0, "topics": []}))
    );
    assert_eq!(
        node.get("/counts?limit=2").await.1["total"],
        14,
        "no prefix: total over all topics"
    );

    // 101 topics of one connection each: the default limit is 100.
    for i in 0..101 {
        sockets.push(node.connect(&format!("many/{i:03}")).await);
    }
    let (status, many) = node.get("/counts?prefix=many/").await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["total"], 101);
    let listed = many["topics"].as_array().expect("topics array");
    assert_eq!(listed.len(), 100, "default limit");
    assert_eq!(listed[0], json!({"topic": "many/000", "count": 1}), "ties by topic");
    assert_eq!(listed[99], json!({"topic": "many/099", "count": 1}));
    let (_, all) = node.get("/counts").await;
    assert_eq!(
        (all["total"].as_u64(), all["topics"].as_array().map(Vec::len)),
        (Some(115), Some(100))
    );
    let (_, max) = node.get("/counts?prefix=many/&limit=10000").await;
    assert_eq!(
        max["topics"].as_array().map(Vec::len),
        Some(101),
        "limit 10000 is allowed"
    );
    assert_eq!(
        node.get("/counts?limit=1").await,
        (200, json!({"total": 115, "topics": [{"topic": "b", "count": 3}]}))
    );

    for bad in ["0", "10001", "x", "-1", "", "1.5"] {
        let (status, body) = node.get(&format!("/counts?limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "limit={bad}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_health_and_unknown_paths() {
    let node = TestNode::start(test_config("a")).await;
    let _x = node.connect_n("x", 3).await;
    let _y = node.connect("y").await;
    let _watcher = ws_connect(node.http, "/ws/x?watch=1").await.expect("watcher upgrade");

    let (status, cluster) = node.get("/cluster").await;
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["self"], "a");
    let members = cluster["members"].as_array().expect("members array");
    assert_eq!(members.len(), 1, "{cluster}");
    let own = &members[0];
    assert_eq!(own["name"], "a");
    assert_eq!(own["addr"], node.gossip.to_string());
    assert_eq!(own["state"], "alive");
    assert_eq!(own["connections"], 4, "counted connections, not the watcher: {own}");
    assert_eq!(own["topics"], 2);
    assert!(own["last_update_ms"].is_u64(), "{own}");

    let (status, content_type, text) = metrics_text(&node).await;
    assert_eq!(status, 200);
    assert!(content_type.contains("text"), "Prometheus text, not {content_type:?}");
    assert!(text.contains("# TYPE headcount_connections gauge"), "{text}");
    assert_eq!(metric(&node, "headcount_connections").await, Some(4.0), "{text}");
    assert_eq!(metric(&node, "headcount_topics").await, Some(2.0), "{text}");

    assert_eq!(node.get("/healthz").await.0, 200);
    assert_eq!(node.get("/readyz").await.0, 200, "ready at once without seeds");

    for path in ["/nope", "/counts/extra", "/ws", "/index.html"] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_seeds_are_joined() {
    // A seed that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a silent seed");
    let seed = silent.local_addr().expect("seed address").to_string();
    let node = TestNode::start(config(|c| c.seeds = vec![seed])).await;
    assert_eq!(node.get("/healthz").await.0, 200, "the process serves");
    let (status, body) = node.get("/readyz").await;
    assert_eq!(status, 503, "not joined yet: {body}");
}

// ------------------------------------------------------------------ memory

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_follows_live_topics_not_topics_ever_seen() {
    const TOPICS: usize = 2_000;
    const WORKERS: usize = 4;
    let node = TestNode::start(test_config("a")).await;
    let http = node.http;
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        workers.push(tokio::spawn(async move {
            for i in (worker..TOPICS).step_by(WORKERS) {
                let mut socket = ws_connect(http, &format!("/ws/seen/{i}"))
                    .await
                    .expect("websocket upgrade");
                assert_eq!(next_json(&mut socket).await["count"], 1, "topic seen/{i} was counted");
                if i % 2 == 0 {
                    close(socket).await;
                } else {
                    drop(socket);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    // A watcher that left leaves nothing behind either.
    let watcher = ws_connect(node.http, "/ws/seen/0?watch=1")
        .await
        .expect("watcher upgrade");
    close(watcher).await;

    eventually(SOON, "no topics and no connections left in /cluster", || async {
        let own = own_member(&node).await;
        own["topics"] == 0 && own["connections"] == 0
    })
    .await;
    assert_eq!(node.get("/counts").await, (200, json!({"total": 0, "topics": []})));
    eventually(SOON, "no topics left in /metrics", || async {
        metric(&node, "headcount_topics").await == Some(0.0)
            && metric(&node, "headcount_connections").await == Some(0.0)
            && metric(&node, "headcount_watched_topics").await == Some(0.0)
    })
    .await;
}
