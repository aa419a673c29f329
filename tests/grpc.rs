//! The public gRPC API (`headcount.v1`) against real nodes on loopback, with
//! the generated tonic clients a Rust user would use: Counter (GetCount,
//! ListTopics, WatchCount), Cluster (ListMembers), Stats (GetStats,
//! ListStats), topic validation, the standard health service and server
//! reflection.

use std::time::Duration;

use futures_util::StreamExt;
use headcount_proto::v1::{
    GetCountRequest, GetStatsRequest, ListMembersRequest, ListStatsRequest, ListTopicsRequest, MemberState, TopicCount,
    TopicTotal, WatchCountRequest, cluster_client::ClusterClient, counter_client::CounterClient,
    stats_client::StatsClient,
};
use headcount_tests::{TestNode, Ws, close, eventually, test_config, wait_for_members};
use tokio::time::Instant;
use tonic::{Code, Status, Streaming, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// How long anything that should happen "soon" may take.
const SOON: Duration = Duration::from_secs(5);

fn endpoint(node: &TestNode) -> String {
    format!("http://{}", node.grpc)
}

async fn channel(node: &TestNode) -> Channel {
    Channel::from_shared(endpoint(node))
        .expect("a gRPC endpoint")
        .connect()
        .await
        .expect("connect over gRPC")
}

async fn counter(node: &TestNode) -> CounterClient<Channel> {
    CounterClient::connect(endpoint(node))
        .await
        .expect("connect to the Counter service")
}

async fn cluster(node: &TestNode) -> ClusterClient<Channel> {
    ClusterClient::connect(endpoint(node))
        .await
        .expect("connect to the Cluster service")
}

async fn get_count(client: &mut CounterClient<Channel>, topic: &str) -> TopicCount {
    client
        .get_count(GetCountRequest { topic: topic.into() })
        .await
        .unwrap_or_else(|status| panic!("GetCount {topic:?}: {status}"))
        .into_inner()
}

async fn list_topics(
    client: &mut CounterClient<Channel>,
    prefix: &str,
    limit: u32,
) -> Result<(u64, Vec<(String, u64)>), Status> {
    let response = client
        .list_topics(ListTopicsRequest {
            prefix: prefix.into(),
            limit,
        })
        .await?
        .into_inner();
    let topics = response
        .topics
        .into_iter()
        .map(|TopicTotal { topic, count }| (topic, count))
        .collect();
    Ok((response.total, topics))
}

async fn watch(client: &mut CounterClient<Channel>, topic: &str) -> Streaming<TopicCount> {
    client
        .watch_count(WatchCountRequest { topic: topic.into() })
        .await
        .unwrap_or_else(|status| panic!("WatchCount {topic:?}: {status}"))
        .into_inner()
}

/// What a watch stream did next.
#[derive(Debug)]
enum Next {
    Message(TopicCount),
    /// The stream ended with status OK.
    Ended,
    /// Nothing arrived in time.
    Quiet,
}

async fn next_watch(stream: &mut Streaming<TopicCount>, within: Duration) -> Next {
    match tokio::time::timeout(within, stream.message()).await {
        Err(_) => Next::Quiet,
        Ok(Ok(Some(message))) => Next::Message(message),
        Ok(Ok(None)) => Next::Ended,
        Ok(Err(status)) => panic!("watch stream failed instead of ending with OK: {status}"),
    }
}

/// Reads the stream until a message has `count`; panics after `within`.
async fn wait_for_watch(stream: &mut Streaming<TopicCount>, count: u64, within: Duration) -> TopicCount {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match next_watch(stream, deadline.saturating_duration_since(Instant::now())).await {
            Next::Message(message) if message.count == count => return message,
            Next::Message(message) => seen.push(message.count),
            other => panic!("no watch message with count {count} within {within:?} ({other:?}); saw {seen:?}"),
        }
    }
}

async fn open(node: &TestNode, topic: &str, n: usize) -> Vec<Ws> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(node.connect(topic).await);
    }
    sockets
}

async fn two_node_cluster() -> (TestNode, TestNode) {
    let a = TestNode::start(test_config("a")).await;
    let mut config = test_config("b");
    config.seeds = vec![a.gossip.to_string()];
    let b = TestNode::start(config).await;
    wait_for_members(&[&a, &b], 2, Duration::from_secs(10)).await;
    (a, b)
}

fn assert_invalid_argument(result: Result<impl std::fmt::Debug, Status>, what: &str, expected_message: &str) {
    let status = result.expect_err(&format!("{what} must be refused"));
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status}");
    assert!(
        status.message().contains(expected_message),
        "{what}: message {:?} should say {expected_message:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_count_matches_http_and_an_unknown_topic_is_zero() {
    let node = TestNode::start(test_config("a")).await;
    let _news = open(&node, "news", 3).await;
    let _blog = open(&node, "blog/post-1", 1).await;
    // `/ws/100%25` names the topic `100%`; over gRPC a topic is given as is.
    let _percent = open(&node, "100%25", 2).await;
    eventually(SOON, "HTTP counts the websockets", || async {
        node.count("news").await == 3
    })
    .await;
    let mut client = counter(&node).await;

    for (topic, path, count) in [
        ("news", "news", 3),
        ("blog/post-1", "blog/post-1", 1),
        ("100%", "100%25", 2),
    ] {
        let grpc = get_count(&mut client, topic).await;
        assert_eq!(
            grpc,
            TopicCount {
                topic: topic.into(),
                count,
                local: count,
                nodes: 1
            },
            "GetCount {topic:?}"
        );
        let (status, http) = node.get(&format!("/count/{path}")).await;
        assert_eq!(status, 200, "GET /count/{path}: {http}");
        assert_eq!(http["topic"].as_str(), Some(grpc.topic.as_str()), "topic of {topic:?}");
        assert_eq!(http["count"].as_u64(), Some(grpc.count), "count of {topic:?}");
        assert_eq!(http["local"].as_u64(), Some(grpc.local), "local of {topic:?}");
        assert_eq!(
            http["nodes"].as_u64(),
            Some(u64::from(grpc.nodes)),
            "nodes of {topic:?}"
        );
    }

    for unknown in ["nobody-here", "/blog/post-1", "100%25"] {
        assert_eq!(
            get_count(&mut client, unknown).await,
            TopicCount {
                topic: unknown.into(),
                count: 0,
                local: 0,
                nodes: 1
            },
            "GetCount of the unknown topic {unknown:?}"
        );
    }
    let longest = "é".repeat(128);
    assert_eq!(
        get_count(&mut client, &longest).await.count,
        0,
        "a 256-byte topic is valid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_topics_sorts_rolls_up_a_prefix_and_bounds_the_limit() {
    let node = TestNode::start(test_config("a")).await;
    let mut held = Vec::new();
    for (topic, n) in [("blog/a", 2), ("blog/b", 3), ("blog/c", 2), ("news", 4)] {
        held.extend(open(&node, topic, n).await);
    }
    for i in 0..101 {
        held.extend(open(&node, &format!("many/{i:03}"), 1).await);
    }
    eventually(SOON, "every websocket counted", || async {
        node.count("many%2F100").await == 1
    })
    .await;
    let mut client = counter(&node).await;

    let (total, topics) = list_topics(&mut client, "blog/", 0).await.expect("ListTopics blog/");
    assert_eq!(total, 7, "blog/ rolls up");
    let expected: Vec<(String, u64)> = [("blog/b", 3), ("blog/a", 2), ("blog/c", 2)]
        .iter()
        .map(|(t, c)| ((*t).to_string(), *c))
        .collect();
    assert_eq!(topics, expected, "biggest first, ties by topic");

    let (total, topics) = list_topics(&mut client, "blog/", 2)
        .await
        .expect("ListTopics blog/ limit 2");
    assert_eq!(total, 7, "the total counts topics past the limit");
    assert_eq!(topics, expected[..2], "the limit keeps the biggest");

    let (total, topics) = list_topics(&mut client, "", 3).await.expect("ListTopics all, limit 3");
    assert_eq!(total, 11 + 101, "no prefix: every topic");
    let first: Vec<(&str, u64)> = topics.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    assert_eq!(first, vec![("news", 4), ("blog/b", 3), ("blog/a", 2)]);

    let (total, topics) = list_topics(&mut client, "many/", 0)
        .await
        .expect("ListTopics many/ limit 0");
    assert_eq!(total, 101);
    assert_eq!(topics.len(), 100, "limit 0 means the default, 100");
    assert_eq!(
        topics.first().map(|(t, _)| t.as_str()),
        Some("many/000"),
        "ties by topic"
    );
    assert_eq!(
        topics.last().map(|(t, _)| t.as_str()),
        Some("many/099"),
        "ties by topic"
    );
    let (_, http) = node.get("/counts?prefix=many%2F").await;
    let http_topics = http["topics"].as_array().expect("HTTP /counts lists topics");
    assert_eq!(http_topics.len(), topics.len(), "same default limit as HTTP");

    let (total, topics) = list_topics(&mut client, "many/", 10_000)
        .await
        .expect("limit 10000 is allowed");
    assert_eq!((total, topics.len()), (101, 101));
    let (total, topics) = list_topics(&mut client, "nothing/", 5)
        .await
        .expect("ListTopics of no match");
    assert_eq!((total, topics.len()), (0, 0));

    assert_invalid_argument(list_topics(&mut client, "", 10_001).await, "limit 10001", "limit");
    assert_invalid_argument(list_topics(&mut client, "", u32::MAX).await, "limit u32::MAX", "limit");
    assert_invalid_argument(
        list_topics(&mut client, "a\u{1}", 0).await,
        "a prefix with a control character",
        "prefix",
    );
    assert_invalid_argument(
        list_topics(&mut client, &"p".repeat(257), 0).await,
        "a 257-byte prefix",
        "prefix",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_members_names_self_and_every_alive_member_with_its_connections() {
    let (a, b) = two_node_cluster().await;
    let _on_a = open(&a, "x", 1).await;
    let _on_b = open(&b, "y", 2).await;
    let _on_b_too = open(&b, "z", 1).await;
    let mut client = cluster(&a).await;
    let deadline = Instant::now() + SOON;
    let members = loop {
        let members = client
            .list_members(ListMembersRequest {})
            .await
            .expect("ListMembers")
            .into_inner();
        let b_seen = members
            .members
            .iter()
            .find(|m| m.name == "b")
            .map(|m| (m.connections, m.topics));
        if b_seen == Some((3, 2)) {
            break members;
        }
        assert!(
            Instant::now() < deadline,
            "a never saw b's 3 connections on 2 topics: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(members.self_, "a");
    assert_eq!(members.members.len(), 2, "{members:?}");
    let own = &members.members[0];
    assert_eq!(own.name, "a", "this node first");
    assert_eq!(own.addr, a.gossip.to_string());
    assert_eq!(own.state(), MemberState::Alive);
    assert_eq!(
        (own.connections, own.topics, own.last_update_ms, own.stale),
        (1, 1, 0, false)
    );
    let other = &members.members[1];
    assert_eq!(other.name, "b");
    assert_eq!(other.addr, b.gossip.to_string());
    assert_eq!(other.state(), MemberState::Alive);
    assert!(!other.stale, "b gossips");
    assert!(other.last_update_ms < 5_000, "b was heard recently: {other:?}");

    let from_b = cluster(&b)
        .await
        .list_members(ListMembersRequest {})
        .await
        .expect("ListMembers on b")
        .into_inner();
    assert_eq!(from_b.self_, "b");
    let names: Vec<&str> = from_b.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["b", "a"], "the answering node first");
    assert!(
        from_b.members.iter().all(|m| m.state() == MemberState::Alive),
        "{from_b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_count_sends_the_count_at_once_and_nothing_while_it_stays() {
    let mut config = test_config("a");
    // A long push interval: the first message must not wait for a tick.
    config.push_interval = Duration::from_secs(30);
    let node = TestNode::start(config).await;
    let _held = open(&node, "live", 2).await;
    eventually(SOON, "counted", || async { node.count("live").await == 2 }).await;
    let mut client = counter(&node).await;
    for _ in 0..2 {
        let mut stream = watch(&mut client, "live").await;
        match next_watch(&mut stream, Duration::from_secs(2)).await {
            Next::Message(first) => {
                assert_eq!(
                    first,
                    TopicCount {
                        topic: "live".into(),
                        count: 2,
                        local: 2,
                        nodes: 1
                    }
                );
            }
            other => panic!("no first message at once: {other:?}"),
        }
        match next_watch(&mut stream, Duration::from_millis(300)).await {
            Next::Quiet => {}
            other => panic!("nothing changed, nothing should be sent: {other:?}"),
        }
    }
    let mut unknown = watch(&mut client, "nobody").await;
    match next_watch(&mut unknown, Duration::from_secs(2)).await {
        Next::Message(first) => assert_eq!(
            first,
            TopicCount {
                topic: "nobody".into(),
                count: 0,
                local: 0,
                nodes: 1
            }
        ),
        other => panic!("no first message for an unknown topic: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_count_follows_the_cluster_and_ends_ok_on_graceful_shutdown() {
    let (a, b) = two_node_cluster().await;
    let _on_a = a.connect("live").await;
    eventually(SOON, "a counts its websocket", || async { a.count("live").await == 1 }).await;
    let mut client = counter(&a).await;
    let mut stream = watch(&mut client, "live").await;
    match next_watch(&mut stream, Duration::from_secs(2)).await {
        Next::Message(first) => {
            assert_eq!(
                first,
                TopicCount {
                    topic: "live".into(),
                    count: 1,
                    local: 1,
                    nodes: 2
                }
            );
        }
        other => panic!("no first message: {other:?}"),
    }

    let on_b = b.connect("live").await;
    let joined = wait_for_watch(&mut stream, 2, SOON).await;
    assert_eq!(
        joined,
        TopicCount {
            topic: "live".into(),
            count: 2,
            local: 1,
            nodes: 2
        },
        "b's websocket counts"
    );

    close(on_b).await;
    let left = wait_for_watch(&mut stream, 1, SOON).await;
    assert_eq!(left.local, 1);

    a.begin_stop();
    let deadline = Instant::now() + SOON;
    loop {
        match next_watch(&mut stream, deadline.saturating_duration_since(Instant::now())).await {
            Next::Ended => break,
            Next::Message(_) => {}
            Next::Quiet => panic!("the watch stream did not end within {SOON:?} of a graceful shutdown"),
        }
    }
    tokio::time::timeout(SOON, a.stop())
        .await
        .expect("a stops once its watch stream ended");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topics_are_invalid_argument_for_get_and_watch() {
    let node = TestNode::start(test_config("a")).await;
    let mut client = counter(&node).await;
    let too_long = "x".repeat(257);
    let multibyte_too_long = format!("{}a", "é".repeat(128));
    let cases = [
        ("an empty topic", "", "topic is empty"),
        (
            "a 257-byte topic",
            too_long.as_str(),
            "257 bytes long; the limit is 256",
        ),
        (
            "a 257-byte multibyte topic",
            multibyte_too_long.as_str(),
            "257 bytes long; the limit is 256",
        ),
        ("a topic with BEL", "a\u{7}b", "control character"),
        ("a topic with a newline", "news\n", "control character"),
        ("a topic with DEL", "a\u{7f}", "control character"),
        ("a topic with a C1 control", "a\u{85}", "control character"),
    ];
    for (what, topic, message) in cases {
        let got = client.get_count(GetCountRequest { topic: topic.into() }).await;
        assert_invalid_argument(got, &format!("GetCount of {what}"), message);
        let watched = client.watch_count(WatchCountRequest { topic: topic.into() }).await;
        assert_invalid_argument(watched.map(|_| ()), &format!("WatchCount of {what}"), message);
    }
    let (total, topics) = list_topics(&mut client, "", 0).await.expect("ListTopics");
    assert_eq!((total, topics.len()), (0, 0), "no invalid topic reached a counter");
}

async fn health_status(client: &mut HealthClient<Channel>, service: &str) -> Result<ServingStatus, Status> {
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner();
    Ok(response.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_while_running() {
    let node = TestNode::start(test_config("a")).await;
    let mut client = HealthClient::new(channel(&node).await);
    for service in ["", "headcount.v1.Counter", "headcount.v1.Cluster"] {
        assert_eq!(
            health_status(&mut client, service).await.expect("health check"),
            ServingStatus::Serving,
            "health of {service:?} while running"
        );
    }
    let unknown = health_status(&mut client, "no.such.Service")
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watch_sees_not_serving_and_does_not_block_shutdown() {
    let node = TestNode::start(test_config("a")).await;
    let mut client = HealthClient::new(channel(&node).await);

    let mut watch = client
        .watch(HealthCheckRequest {
            service: "headcount.v1.Counter".into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = tokio::time::timeout(SOON, watch.next())
        .await
        .expect("first health status in time");
    let first = first.expect("a first health status").expect("health watch status");
    assert_eq!(first.status(), ServingStatus::Serving);

    node.begin_stop();
    let deadline = Instant::now() + SOON;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(update))) if update.status() == ServingStatus::NotServing => break,
            Ok(Some(Ok(update))) => seen.push(update.status()),
            Ok(other) => panic!("health watch ended before NOT_SERVING ({other:?}); saw {seen:?}"),
            Err(_) => panic!("health did not turn NOT_SERVING within {SOON:?}; saw {seen:?}"),
        }
    }
    // A client still watching health must not keep the node from stopping.
    tokio::time::timeout(SOON, node.stop())
        .await
        .expect("the node stops although a health watch is open");
    drop(watch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_public_services_and_describes_them() {
    let node = TestNode::start(test_config("a")).await;
    let mut client = ServerReflectionClient::new(channel(&node).await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("headcount.v1.Counter".into()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut responses = client
        .server_reflection_info(futures_util::stream::iter(requests))
        .await
        .expect("reflection stream")
        .into_inner();

    let listed = responses
        .message()
        .await
        .expect("list services")
        .expect("an answer to list services");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a list of services: {listed:?}");
    };
    let services: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["headcount.v1.Counter", "headcount.v1.Cluster", "grpc.health.v1.Health"] {
        assert!(services.contains(&expected), "{expected} is not listed: {services:?}");
    }
    assert!(
        !services.iter().any(|name| name.starts_with("headcount.cluster")),
        "the protocol between nodes is not advertised: {services:?}"
    );

    let described = responses
        .message()
        .await
        .expect("file containing symbol")
        .expect("an answer for the symbol");
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("no file descriptor for headcount.v1.Counter: {described:?}");
    };
    let found = files.file_descriptor_proto.iter().any(|file| {
        let bytes = file.as_slice();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        has(b"headcount/v1/headcount.proto") && has(b"WatchCount") && has(b"ListMembers")
    });
    assert!(found, "the descriptor of headcount/v1/headcount.proto is served");
}

/// Many deployed clients discover services through the older
/// `grpc.reflection.v1alpha` protocol only: grpcurl before 1.8.8 and the
/// reflection client of Python's grpcio-reflection, for example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_is_served_for_older_clients() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let node = TestNode::start(test_config("a")).await;
    let mut client = ServerReflectionClient::new(channel(&node).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("grpc.reflection.v1alpha.ServerReflection is served")
        .into_inner();
    let listed = responses
        .message()
        .await
        .expect("list services over v1alpha")
        .expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a list of services: {listed:?}");
    };
    let services: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(services.contains(&"headcount.v1.Counter"), "{services:?}");
    assert!(services.contains(&"headcount.v1.Cluster"), "{services:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_answer_like_http() {
    let node = TestNode::start(test_config("a")).await;
    for socket in node.connect_n("example.com/grpc", 3).await {
        close(socket).await;
    }
    let mut stats = StatsClient::connect(endpoint(&node)).await.expect("connect to Stats");
    let (_, http) = node.get("/stats/example.com/grpc").await;
    let answer = stats
        .get_stats(GetStatsRequest {
            topic: "example.com/grpc".into(),
            ..Default::default()
        })
        .await
        .expect("GetStats")
        .into_inner();
    assert_eq!((answer.views, answer.visitors), (3, 1));
    assert_eq!(answer.days.len(), 30);
    assert_eq!(Some(answer.from.as_str()), http["from"].as_str());
    assert_eq!(answer.days.last().map(|day| day.views), Some(3));
    let list = stats
        .list_stats(ListStatsRequest {
            prefix: "example.com/".into(),
            ..Default::default()
        })
        .await
        .expect("ListStats")
        .into_inner();
    assert_eq!((list.views, list.topics.len()), (3, 1));
    for (request, field) in [
        (
            GetStatsRequest {
                topic: String::new(),
                ..Default::default()
            },
            "topic",
        ),
        (
            GetStatsRequest {
                topic: "t".into(),
                from: "2026-13-01".into(),
                ..Default::default()
            },
            "from",
        ),
    ] {
        let refused = stats.get_stats(request).await.expect_err("invalid");
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}: {refused}");
    }
    node.stop().await;
}
