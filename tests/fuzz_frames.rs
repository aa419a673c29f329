//! Fuzzing a real node's edges with proptest: random websocket frame
//! sequences, and random listing prefixes over HTTP.
//!
//! **Frames.** Each case opens two counted websockets on a topic of its own
//! (the fuzzed session and a bystander), then sends the fuzzed session a
//! random sequence of text and binary frames (0 to 2048 bytes, weighted
//! around the 1 KiB limit), pings, pongs, hand-built frames written straight
//! to the TCP stream (any opcode, reserved bits, unmasked, lying lengths)
//! and raw garbage. Then:
//!
//! - a session that only got valid frames of at most 1 KiB is still served
//!   (it answers a ping);
//! - a session that got a data frame over 1 KiB is closed with 1009 (or
//!   reset, never another close code);
//! - the bystander is still served, whatever happened to its neighbour;
//! - `/healthz` answers 200;
//! - once both sockets are closed, the topic's count returns to exactly 0.
//!
//! The last check is made by one background task with a deadline per case,
//! so that cases whose server side lingers (an oversized frame is followed
//! by a 1 s close grace) do not each cost a second; a topic that never
//! returns to 0 fails the test at the end with the sequence that left it.
//!
//! **Prefixes.** `/counts?prefix=…&limit=…` with hostile prefixes
//! (form-encoded, so the node decodes exactly the generated string) and
//! limits, against a node holding a few counted topics: the answer is 200
//! exactly when the prefix follows its rule (at most 256 bytes, no control
//! character) and the limit is 1 to 10,000, and then its total is the sum
//! of the held topics that start with the prefix; otherwise 400 with a JSON
//! error. Raw query strings of hostile characters only ever get 200 or 400.
//!
//! Cases: `HEADCOUNT_FRAME_CASES` (default 200) and
//! `HEADCOUNT_PREFIX_CASES` (default 1,000); `PROPTEST_CASES` does not apply
//! here, so a long crate-level run does not turn into hours of sockets.
//! Failing inputs are saved in `tests/proptest-regressions/fuzz_frames.txt`
//! (committed, replayed first).

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use headcount_tests::{TestNode, Ws, close, get_json, percent_encode, test_config, ws_connect};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use tokio::{io::AsyncWriteExt, sync::mpsc, time::Instant};
use tokio_tungstenite::{MaybeTlsStream, tungstenite::Message};

/// The largest data frame a client may send (`ws::MAX_CLIENT_FRAME`).
const MAX_CLIENT_FRAME: usize = 1024;
/// Generous bound for anything that should happen at once.
const SOON: Duration = Duration::from_secs(5);
/// How long a closed case's topic may take to return to 0.
const UNCOUNT_WITHIN: Duration = Duration::from_secs(10);
/// Where proptest keeps the seeds of failing inputs (committed).
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz_frames.txt");

/// `var` parsed as a case count, else `default`.
fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A proptest runner for `name`: `cases` cases, bounded shrinking (each
/// step talks to a real node), failures persisted in [`REGRESSIONS`].
fn runner(name: &'static str, cases: u32) -> TestRunner {
    let config = Config {
        cases,
        max_shrink_iters: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        source_file: Some(file!()),
        test_name: Some(name),
        ..Config::default()
    };
    TestRunner::new(config)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

// ------------------------------------------------------------------ frames

/// A frame built by hand and written to the TCP stream under the client.
#[derive(Debug, Clone)]
struct RawFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    /// A length to announce instead of the payload's.
    declared: Option<u64>,
    payload: Vec<u8>,
}

impl RawFrame {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | ((self.rsv & 7) << 4) | (self.opcode & 15)];
        let len = self
            .declared
            .unwrap_or_else(|| u64::try_from(self.payload.len()).expect("a small payload"));
        let mask = u8::from(self.masked) << 7;
        match len {
            0..=125 => out.push(mask | u8::try_from(len).expect("at most 125")),
            126..=0xffff => {
                out.push(mask | 126);
                out.extend_from_slice(&u16::try_from(len).expect("at most 0xffff").to_be_bytes());
            }
            _ => {
                out.push(mask | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if self.masked {
            out.extend_from_slice(&key);
        }
        out.extend(
            self.payload
                .iter()
                .enumerate()
                .map(|(i, byte)| if self.masked { byte ^ key[i % 4] } else { *byte }),
        );
        out
    }
}

/// One thing the fuzzed client does.
#[derive(Debug, Clone)]
enum Step {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Raw(RawFrame),
    Garbage(Vec<u8>),
}

/// Data frame sizes, weighted around the 1 KiB limit.
fn data_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        12 => 0..=MAX_CLIENT_FRAME,
        1 => Just(MAX_CLIENT_FRAME),
        1 => Just(MAX_CLIENT_FRAME + 1),
        1 => MAX_CLIENT_FRAME + 1..=2 * MAX_CLIENT_FRAME,
    ]
}

/// Text of exactly `data_size()` bytes, in one to four-byte characters.
fn text() -> impl Strategy<Value = String> {
    (data_size(), prop::sample::select(vec!['a', 'é', '€', '😀', '"', '{'])).prop_map(|(size, fill)| {
        let mut text = String::new();
        while text.len() + fill.len_utf8() <= size {
            text.push(fill);
        }
        while text.len() < size {
            text.push('a');
        }
        text
    })
}

fn raw_frame() -> impl Strategy<Value = RawFrame> {
    (
        any::<bool>(),
        prop_oneof![3 => Just(0u8), 1 => 0u8..8],
        0u8..16,
        prop_oneof![3 => Just(true), 1 => Just(false)],
        prop_oneof![
            3 => Just(None),
            1 => prop::sample::select(vec![126u64, 1024, 1025, 65_535, 65_536, 1 << 32, u64::MAX >> 1, u64::MAX]).prop_map(Some),
        ],
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(fin, rsv, opcode, masked, declared, payload)| RawFrame {
            fin,
            rsv,
            opcode,
            masked,
            declared,
            payload,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => text().prop_map(Step::Text),
        6 => data_size()
            .prop_flat_map(|size| proptest::collection::vec(any::<u8>(), size))
            .prop_map(Step::Binary),
        3 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Step::Ping),
        2 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Step::Pong),
        1 => raw_frame().prop_map(Step::Raw),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Step::Garbage),
    ]
}

/// What the fuzzed session may expect after its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Only valid frames of at most 1 KiB: still served.
    Served,
    /// A data frame over 1 KiB while served: 1009 or a reset.
    TooBig,
    /// Raw bytes went in: anything may happen to this session, but only
    /// to this session.
    Anything,
}

/// Sends a ping and reads until its pong: the session is still served.
async fn answers_ping(socket: &mut Ws, who: &str) -> Result<(), TestCaseError> {
    let marker = b"fuzz-still-there".to_vec();
    if let Err(error) = socket.send(Message::Ping(marker.clone().into())).await {
        return Err(TestCaseError::fail(format!(
            "{who}: the ping could not be sent: {error}"
        )));
    }
    let deadline = Instant::now() + SOON;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(TestCaseError::fail(format!("{who}: no pong within {SOON:?}"))),
            Ok(Some(Ok(Message::Pong(payload)))) if payload.as_ref() == marker.as_slice() => return Ok(()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(TestCaseError::fail(format!("{who}: closed by the server: {frame:?}")));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => return Err(TestCaseError::fail(format!("{who}: the connection failed: {error}"))),
            Ok(None) => return Err(TestCaseError::fail(format!("{who}: the connection ended"))),
        }
    }
}

/// How a case's fuzzed session ended, for the run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Still served, closed by the client.
    Served,
    /// Closed by the server with 1009.
    Closed1009,
    /// Reset or ended by the server without a close frame.
    Reset,
    /// Raw bytes went in; dropped by the client.
    Raw,
}

/// Reads until the server ends a session that sent an oversized frame:
/// close code 1009, or a reset or end of stream without a close frame.
async fn ends_with_1009(socket: &mut Ws) -> Result<Ending, TestCaseError> {
    let deadline = Instant::now() + SOON;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(TestCaseError::fail("an oversized frame did not end the session")),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                let code = u16::from(frame.code);
                prop_assert_eq!(code, 1009, "an oversized frame closed the session with {:?}", frame);
                return Ok(Ending::Closed1009);
            }
            Ok(Some(Ok(Message::Close(None)))) => {
                return Err(TestCaseError::fail(
                    "an oversized frame closed the session without a code",
                ));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Ok(Ending::Reset),
        }
    }
}

/// Writes `bytes` to the TCP stream under the websocket.
async fn write_raw(socket: &mut Ws, bytes: &[u8]) {
    if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
        // The server may already have closed the connection.
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
    }
}

/// One case: the fuzzed session and a bystander on `topic`.
async fn frame_case(http: SocketAddr, topic: &str, steps: &[Step]) -> Result<Ending, TestCaseError> {
    let path = format!("/ws/{topic}");
    let mut bystander = ws_connect(http, &path).await.expect("the bystander is admitted");
    let mut socket = ws_connect(http, &path).await.expect("the fuzzed session is admitted");
    let mut expect = Expect::Served;
    for step in steps {
        let sent = match step {
            Step::Text(text) => {
                let too_big = text.len() > MAX_CLIENT_FRAME;
                let sent = socket.send(Message::Text(text.clone().into())).await;
                if too_big && expect == Expect::Served {
                    expect = Expect::TooBig;
                    break;
                }
                sent
            }
            Step::Binary(bytes) => {
                let too_big = bytes.len() > MAX_CLIENT_FRAME;
                let sent = socket.send(Message::Binary(bytes.clone().into())).await;
                if too_big && expect == Expect::Served {
                    expect = Expect::TooBig;
                    break;
                }
                sent
            }
            Step::Ping(payload) => socket.send(Message::Ping(payload.clone().into())).await,
            Step::Pong(payload) => socket.send(Message::Pong(payload.clone().into())).await,
            Step::Raw(frame) => {
                write_raw(&mut socket, &frame.encode()).await;
                expect = Expect::Anything;
                Ok(())
            }
            Step::Garbage(bytes) => {
                write_raw(&mut socket, bytes).await;
                expect = Expect::Anything;
                Ok(())
            }
        };
        if expect == Expect::Served {
            prop_assert!(sent.is_ok(), "a valid frame could not be sent: {sent:?}");
        }
    }
    let ending = match expect {
        Expect::Served => {
            answers_ping(&mut socket, "a session sent only valid frames").await?;
            close(socket).await;
            Ending::Served
        }
        Expect::TooBig => {
            let ending = ends_with_1009(&mut socket).await?;
            drop(socket);
            ending
        }
        Expect::Anything => {
            drop(socket);
            Ending::Raw
        }
    };
    answers_ping(&mut bystander, "the bystander").await?;
    close(bystander).await;
    let (status, body) = get_json(http, "/healthz").await;
    prop_assert_eq!(status, 200, "/healthz: {}", body);
    Ok(ending)
}

/// The cluster-wide count of `topic` (plain ASCII).
async fn count(http: SocketAddr, topic: &str) -> u64 {
    let (status, body) = get_json(http, &format!("/count/{topic}")).await;
    assert_eq!(status, 200, "GET /count/{topic}: {body}");
    body["count"].as_u64().expect("a count")
}

/// Waits for every closed case's topic to return to 0, each by its own
/// deadline; returns the cases whose topic did not.
async fn uncount_checker(
    http: SocketAddr,
    mut closed: mpsc::UnboundedReceiver<(String, String, Instant)>,
) -> Vec<String> {
    let mut leaks = Vec::new();
    while let Some((topic, steps, deadline)) = closed.recv().await {
        loop {
            let now = count(http, &topic).await;
            if now == 0 {
                break;
            }
            if Instant::now() >= deadline {
                leaks.push(format!("{topic} still counts {now}, {UNCOUNT_WITHIN:?} after: {steps}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    leaks
}

/// Random frame sequences on counted sessions of a real node.
#[test]
fn websocket_frames() {
    let runtime = runtime();
    let node = runtime.block_on(TestNode::start(test_config("a")));
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    let checker = runtime.spawn(uncount_checker(node.http, closed_rx));
    let case = AtomicUsize::new(0);
    let endings: [AtomicUsize; 4] = Default::default();
    let strategy = proptest::collection::vec(step(), 1..6);
    let mut runner = runner("websocket_frames", cases("HEADCOUNT_FRAME_CASES", 200));
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |steps| {
        let topic = format!("fuzz-{}", case.fetch_add(1, Ordering::Relaxed));
        let result = runtime.block_on(frame_case(node.http, &topic, &steps)).map(|ending| {
            endings[ending as usize].fetch_add(1, Ordering::Relaxed);
        });
        let deadline = Instant::now() + UNCOUNT_WITHIN;
        let _ = closed_tx.send((topic, format!("{steps:?}"), deadline));
        result
    });
    drop(closed_tx);
    let leaks = runtime.block_on(checker).expect("the uncount checker ends");
    let [served, closed, reset, raw] = endings.map(|count| count.into_inner());
    eprintln!(
        "websocket_frames: {} cases in {:.1?}: {served} still served, {closed} closed with 1009, \
         {reset} reset after an oversized frame, {raw} fed raw bytes",
        case.load(Ordering::Relaxed),
        started.elapsed()
    );
    if let Err(error) = result {
        panic!("websocket_frames: {error}\n{runner}");
    }
    assert!(leaks.is_empty(), "topics left counted:\n{}", leaks.join("\n"));
    runtime.block_on(node.stop());
}

// ---------------------------------------------------------------- prefixes

/// Topics held open while prefixes are listed, and how many sockets each.
const HELD: [(&str, usize); 5] = [("news/a", 2), ("news/b", 1), ("café/x", 1), ("%", 1), ("a b", 1)];

/// A listing request: a prefix (or none), a limit (or none), or a raw query.
#[derive(Debug, Clone)]
enum Listing {
    Encoded {
        prefix: Option<String>,
        limit: Option<String>,
    },
    Raw(String),
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["", "n", "news", "news/", "news/a", "café", "caf", "%", "a b", "a", "x"]).prop_map(str::to_owned),
        2 => proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => (prop::sample::select(vec!['a', 'é', '😀']), 250usize..262).prop_map(|(fill, size)| {
            let mut prefix = String::new();
            while prefix.len() + fill.len_utf8() <= size {
                prefix.push(fill);
            }
            prefix
        }),
    ]
}

fn limit() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (1u32..=10_000).prop_map(|limit| limit.to_string()),
        1 => prop::sample::select(vec!["0", "10000", "10001", "-1", "ten", "", "1e3", "+5", " 5", "18446744073709551616"]).prop_map(str::to_owned),
    ]
}

fn listing() -> impl Strategy<Value = Listing> {
    prop_oneof![
        4 => (proptest::option::of(prefix()), proptest::option::of(limit()))
            .prop_map(|(prefix, limit)| Listing::Encoded { prefix, limit }),
        1 => proptest::collection::vec(
                prop::sample::select(vec!["prefix=", "limit=", "&", "=", "%", "%2", "%zz", "%FF", "%C3", "+", "#", "a", "é", "1", "%00", "%0A"]),
                0..12,
            )
            .prop_map(|pieces| Listing::Raw(pieces.concat())),
    ]
}

/// The prefix rule: at most 256 bytes, no control character (empty: all).
fn is_valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 256 && !prefix.chars().any(char::is_control)
}

fn is_valid_limit(limit: &str) -> bool {
    limit.parse::<usize>().is_ok_and(|limit| (1..=10_000).contains(&limit))
}

async fn listing_case(http: SocketAddr, listing: &Listing) -> Result<(), TestCaseError> {
    let query = match listing {
        Listing::Encoded { prefix, limit } => {
            let mut pairs = Vec::new();
            if let Some(prefix) = prefix {
                pairs.push(format!("prefix={}", percent_encode(prefix)));
            }
            if let Some(limit) = limit {
                pairs.push(format!("limit={}", percent_encode(limit)));
            }
            pairs.join("&")
        }
        Listing::Raw(query) => query.clone(),
    };
    let (status, body) = get_json(http, &format!("/counts?{query}")).await;
    prop_assert!(status == 200 || status == 400, "/counts?{query}: {status} {body}");
    if status == 400 {
        prop_assert!(
            body["error"].as_str().is_some_and(|error| !error.is_empty()),
            "/counts?{query}: {body}"
        );
    }
    if let Listing::Encoded { prefix, limit } = listing {
        let prefix = prefix.clone().unwrap_or_default();
        let valid = is_valid_prefix(&prefix) && limit.as_deref().is_none_or(is_valid_limit);
        prop_assert_eq!(status == 200, valid, "/counts?{}: {} {}", query, status, body);
        if status == 200 {
            let expected: usize = HELD
                .iter()
                .filter(|(topic, _)| topic.starts_with(prefix.as_str()))
                .map(|(_, n)| n)
                .sum();
            prop_assert_eq!(
                body["total"].as_u64(),
                Some(expected as u64),
                "/counts?{}: {}",
                query,
                body
            );
            let topics = body["topics"].as_array().cloned().unwrap_or_default();
            for topic in &topics {
                let name = topic["topic"].as_str().unwrap_or_default();
                prop_assert!(
                    name.starts_with(prefix.as_str()),
                    "{name:?} listed for prefix {prefix:?}"
                );
            }
        }
    }
    Ok(())
}

/// Hostile listing prefixes and limits against a node holding a few topics.
#[test]
fn listing_prefixes() {
    let runtime = runtime();
    let node = runtime.block_on(TestNode::start(test_config("a")));
    // Held sockets are read all along, so they answer the node's pings
    // and are never closed as idle during a long run.
    let held: Vec<tokio::task::JoinHandle<()>> = runtime.block_on(async {
        let mut held = Vec::new();
        for (topic, n) in HELD {
            for mut socket in node.connect_n(&percent_encode(topic), n).await {
                held.push(tokio::spawn(
                    async move { while let Some(Ok(_)) = socket.next().await {} },
                ));
            }
        }
        held
    });
    let count = cases("HEADCOUNT_PREFIX_CASES", 1_000);
    let mut runner = runner("listing_prefixes", count);
    let started = std::time::Instant::now();
    let result = runner.run(&listing(), |listing| {
        runtime.block_on(listing_case(node.http, &listing))
    });
    eprintln!("listing_prefixes: {} cases in {:.1?}", count, started.elapsed());
    for socket in &held {
        assert!(!socket.is_finished(), "a held socket was closed during the run");
        socket.abort();
    }
    if let Err(error) = result {
        panic!("listing_prefixes: {error}\n{runner}");
    }
}
