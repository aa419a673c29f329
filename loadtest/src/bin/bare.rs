//! `headcount-bare`: the floor headcount is measured against. A minimal axum websocket server with exactly
//! headcount's per-connection settings (1 KiB read buffer, eager writes, 64 KiB write cap, 1 KiB frames, the same
//! routes and connect-info service) that sends one small count frame on connect and then only reads until the
//! client leaves: whatever headcount costs beyond this is what headcount itself adds. `GET /count/{topic}` answers
//! a constant-shape JSON without looking anything up: the HTTP latency floor.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::{Json, Router, http::Uri, response::Response, routing::get};
use clap::Parser;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

/// The bare baseline websocket server.
#[derive(Debug, Parser)]
#[command(name = "headcount-bare", version, about)]
struct Flags {
    /// HTTP + websocket listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    http: SocketAddr,
}

fn topic_of<'a>(uri: &'a Uri, prefix: &str) -> &'a str {
    uri.path().strip_prefix(prefix).unwrap_or_default()
}

async fn ws(uri: Uri, upgrade: WebSocketUpgrade) -> Response {
    let topic = topic_of(&uri, "/ws/").to_owned();
    // headcount's settings: 1 KiB reads, eager writes, at most 64 KiB buffered, 1 KiB client frames.
    let upgrade = upgrade.read_buffer_size(1024).write_buffer_size(0);
    let upgrade = upgrade.max_write_buffer_size(64 * 1024);
    let upgrade = upgrade.max_message_size(1024).max_frame_size(1024);
    upgrade.on_upgrade(move |socket| session(socket, topic))
}

async fn session(mut socket: WebSocket, topic: String) {
    let text = json!({ "topic": topic, "count": 1 }).to_string();
    drop(topic);
    if socket.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    while let Some(Ok(frame)) = socket.recv().await {
        if matches!(frame, Message::Close(_)) {
            break;
        }
    }
}

async fn count(uri: Uri) -> Json<serde_json::Value> {
    Json(json!({ "topic": topic_of(&uri, "/count/"), "count": 0, "local": 0, "nodes": 1 }))
}

async fn serve(flags: Flags) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(flags.http).await?;
    let app = Router::new().route("/ws/{*topic}", get(ws));
    let app = app.route("/count/{*topic}", get(count));
    let app = app.route("/healthz", get(|| async { "ok" }));
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        served = axum::serve(listener, service) => served?,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Err(error) = serve(Flags::parse()).await else {
        return std::process::ExitCode::SUCCESS;
    };
    eprintln!("error: --http: {error}");
    std::process::ExitCode::FAILURE
}
