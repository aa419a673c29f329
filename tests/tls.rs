//! A node serving HTTP, websockets and gRPC over TLS (`--tls-cert`,
//! `--tls-key`), and picking up a renewed certificate without a restart.
//! Certificates are made by the test (rcgen); clients trust exactly the one
//! they expect, so a test passes only if the node presents it.

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use futures_util::StreamExt;
use headcount_proto::v1::{GetCountRequest, counter_client::CounterClient};
use headcount_server::{ClusterSecret, NodeConfig, NodeName, TlsFiles};
use headcount_tests::{TestNode, eventually, test_config};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Endpoint;

const SOON: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().to_vec(),
    )
}

/// A directory for this test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("headcount-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        // Write then rename, as certificate tools do, so the node never
        // reads half a file.
        let part = self.0.join(format!("{file}.part"));
        std::fs::write(&part, text).expect("write");
        std::fs::rename(&part, &path).expect("rename");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn trusting(der: &[u8], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(der.to_vec().into()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, connector: &TlsConnector) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

async fn https_get(addr: SocketAddr, connector: &TlsConnector, path: &str) -> io::Result<String> {
    let mut stream = connect(addr, connector).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A sample of the node's `/metrics`, read over TLS (0 when absent).
async fn metric(node: &TestNode, connector: &TlsConnector, sample: &str) -> f64 {
    let text = https_get(node.http, connector, "/metrics").await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn tls_node(dir: &Dir, cert: &str, key: &str) -> TestNode {
    tls_node_with(dir, cert, key, |_| {}).await
}

async fn tls_node_with(dir: &Dir, cert: &str, key: &str, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let mut config = test_config("a");
    config.tls = Some(TlsFiles {
        cert: dir.write("cert.pem", cert),
        key: dir.write("key.pem", key),
    });
    tweak(&mut config);
    TestNode::start(config).await
}

/// The cluster-wide count of `topic` on `node`, read over TLS.
async fn count(node: &TestNode, connector: &TlsConnector, topic: &str) -> Option<u64> {
    let answer = https_get(node.http, connector, &format!("/count/{topic}")).await.ok()?;
    let body = answer.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(body).ok()?["count"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_websockets_and_grpc_are_served_over_tls() {
    let dir = Dir::new("tls-serve");
    let (cert, key, der) = certificate();
    let node = tls_node(&dir, &cert, &key).await;
    let http = trusting(&der, &[b"http/1.1"]);

    let answer = https_get(node.http, &http, "/healthz").await.expect("https");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut plain = TcpStream::connect(node.http).await.expect("tcp");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(SOON, plain.read(&mut buf))
        .await
        .expect("answered or closed");
    assert!(
        !String::from_utf8_lossy(&buf[..read.unwrap_or(0)]).starts_with("HTTP/1.1 200"),
        "plain HTTP is not served on a TLS port"
    );

    let stream = connect(node.http, &http).await.expect("tls");
    let (mut socket, _) = tokio_tungstenite::client_async("wss://localhost/ws/news", stream)
        .await
        .expect("websocket over TLS");
    let first = socket.next().await.expect("a frame").expect("ok");
    assert!(
        matches!(first, Message::Text(ref text) if text.contains("\"count\":1")),
        "{first:?}"
    );

    let grpc = trusting(&der, &[b"h2"]);
    let addr = node.grpc;
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let grpc = grpc.clone();
            async move { connect(addr, &grpc).await.map(TokioIo::new) }
        }))
        .await
        .expect("grpc over TLS");
    let count = CounterClient::new(channel)
        .get_count(GetCountRequest { topic: "news".into() })
        .await
        .expect("GetCount")
        .into_inner();
    assert_eq!(count.count, 1, "the websocket above is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = Dir::new("tls-reload");
    let (old_cert, old_key, old_der) = certificate();
    let node = tls_node(&dir, &old_cert, &old_key).await;
    let old = trusting(&old_der, &[b"http/1.1"]);
    assert!(https_get(node.http, &old, "/healthz").await.is_ok());

    let (new_cert, new_key, new_der) = certificate();
    dir.write("key.pem", &new_key);
    dir.write("cert.pem", &new_cert);
    let new = trusting(&new_der, &[b"http/1.1"]);
    eventually(SOON, "the new certificate is served", || async {
        https_get(node.http, &new, "/healthz").await.is_ok()
    })
    .await;
    // A fresh client: one that connected before may resume its session.
    let old = trusting(&old_der, &[b"http/1.1"]);
    assert!(
        https_get(node.http, &old, "/healthz").await.is_err(),
        "the old one is gone"
    );

    dir.write("cert.pem", "not a certificate");
    eventually(SOON, "the broken file is tried", || async {
        metric(&node, &new, "headcount_tls_reloads_total{result=\"error\"}").await >= 1.0
    })
    .await;
    assert!(
        https_get(node.http, &new, "/healthz").await.is_ok(),
        "a broken file keeps the last good certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_repairs_by_pulling_over_tls() {
    let dir = Dir::new("tls-cluster");
    let (cert, key, der) = certificate();
    let secret = || Some(ClusterSecret::new(b"a-cluster-secret-for-tls".to_vec()).expect("long enough"));
    let a = tls_node_with(&dir, &cert, &key, |config| config.cluster_secret = secret()).await;
    let http = trusting(&der, &[b"http/1.1"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = connect(a.http, &http).await.expect("tls");
        let (socket, _) = tokio_tungstenite::client_async("wss://localhost/ws/news", stream)
            .await
            .expect("websocket over TLS");
        held.push(socket);
    }
    eventually(SOON, "a counts its 3 visitors", || async {
        count(&a, &http, "news").await == Some(3)
    })
    .await;

    // b joins and hears a's counts; once b counts them, a has published
    // them and sends only digests.
    let b = tls_node_with(&dir, &cert, &key, |config| {
        config.node_name = NodeName::new("b").expect("valid");
        config.cluster_secret = secret();
        config.seeds = vec![a.gossip.to_string()];
    })
    .await;
    eventually(SOON, "b counts a's visitors", || async {
        count(&b, &http, "news").await == Some(3)
    })
    .await;

    // c joins later: a's digest shows c a gap that only a full-state pull,
    // over TLS to a's gRPC port, can close.
    let c = tls_node_with(&dir, &cert, &key, |config| {
        config.node_name = NodeName::new("c").expect("valid");
        config.cluster_secret = secret();
        config.seeds = vec![a.gossip.to_string()];
    })
    .await;
    eventually(SOON, "c counts a's visitors", || async {
        count(&c, &http, "news").await == Some(3)
    })
    .await;
    assert!(
        metric(&c, &http, "headcount_cluster_pulls_total{result=\"ok\"}").await >= 1.0,
        "c pulled a's state"
    );
    assert_eq!(
        metric(&c, &http, "headcount_cluster_pulls_total{result=\"error\"}").await,
        0.0,
        "no pull failed"
    );
}
