//! `hostile`: what honest clients see while a node is attacked. Each scenario starts a fresh node (per-IP cap 1,000,
//! so 1,064 sockets per address) and an attacker from 127.0.0.9 on a thread and runtime of its own; 2 s later 2,000
//! counted websockets over 4 topics from 127.0.0.2–5 connect and hold (a `hold` process) while GET /count runs at
//! 1,000 requests/s for 18 s, then every topic's count (exact: 500 each), the node's RSS and what its /metrics and
//! the kernel counted are read. Attacks (25 s): none (calm, the same run's baseline); `slowloris`, 2,000 half-sent
//! requests (a header line every 2 s) opened again a second after the node drops them; `grpc-flood`, 150 WatchCount
//! streams with distinct 256-byte topics on each of 12 connections, asked again a second after a refusal;
//! `garbage-udp`, random datagrams of 0 to 1,500 bytes to the gossip port as fast as a thread sends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use headcount_proto::v1::{WatchCountRequest, counter_client::CounterClient};
use rand::{Rng, RngExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant as Deadline, sleep, sleep_until, timeout_at};

use super::lab::{Lab, Server};
use super::{flags, now_utc, say};
use crate::measure::{self, client, client::samples, count, summary};

const ATTACKS: [&str; 4] = ["calm", "slowloris", "grpc-flood", "garbage-udp"];
const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));

/// An attacker's counts: three kinds of event, what it holds open now, and the most it held at once.
#[derive(Default)]
struct Counts([AtomicU64; 3], AtomicU64, AtomicU64);

impl Counts {
    fn event(&self, kind: usize) {
        self.0[kind].fetch_add(1, Relaxed);
    }

    fn open(&self, by: i64) {
        let open = self.1.fetch_add(by as u64, Relaxed).wrapping_add(by as u64);
        self.2.fetch_max(open, Relaxed);
    }

    fn tally(&self, names: [&str; 4]) -> Value {
        let counts = self.0.iter().chain([&self.2]).map(|n| n.load(Relaxed));
        let named = names.into_iter().zip(counts).map(|(name, n)| (name.into(), n.into()));
        Value::Object(named.collect())
    }
}

/// Runs `hostile`: the calm baseline, then each attack; also saved as `target/loadtest/hostile.json`.
pub async fn run() -> anyhow::Result<Value> {
    let (lab, started, mut machine, mut scenarios) = (Lab::new()?, now_utc(), measure::machine(), Vec::new());
    for attack in ATTACKS {
        let scenario = scenario(&lab, attack).await?;
        say("hostile", summary(&scenario));
        scenarios.push(scenario);
    }
    machine.load_end = measure::loadavg();
    let results = json!({ "started": started, "machine": machine, "scenarios": scenarios });
    std::fs::write(lab.dir.join("hostile.json"), serde_json::to_string_pretty(&results)?)?;
    Ok(results)
}

/// The node's refusal, drop and watcher counters by series, and the datagrams the kernel dropped.
async fn counters(lab: &Lab, node: SocketAddr) -> BTreeMap<String, f64> {
    let metrics = lab.api.text(node, "/metrics").await.unwrap_or_default();
    let counted = |(s, _): &(String, f64)| ["_refused", "_dropped", "_watchers"].iter().any(|w| s.contains(w));
    let mut seen: BTreeMap<_, _> = samples(&metrics).into_iter().filter(counted).collect();
    let dropped = measure::net_counter("/proc/net/snmp", "Udp:", "RcvbufErrors").unwrap_or(0);
    seen.insert("kernel Udp RcvbufErrors (machine-wide)".into(), dropped as f64);
    seen
}

async fn scenario(lab: &Lab, attack: &'static str) -> anyhow::Result<Value> {
    let (name, second) = (format!("hostile-{attack}"), Some(Duration::from_secs(1)));
    let mut node = [lab.server(&name, second, "--max-connections-per-ip 1000")?];
    lab.wait_up(&mut node, 1).await?;
    let (http, grpc, gossip) = (node[0].http, node[0].grpc, node[0].gossip);
    let (before, until) = (counters(lab, http).await, Instant::now() + Duration::from_secs(25));
    let attacker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let until = Deadline::from_std(until);
        anyhow::Ok(match attack {
            "slowloris" => runtime.block_on(slowloris(http, until)),
            "grpc-flood" => runtime.block_on(grpc_flood(grpc, until)),
            "garbage-udp" => garbage_udp(gossip, until.into_std())?,
            _ => json!({}),
        })
    });
    sleep(Duration::from_secs(2)).await;
    let honest = format!("--targets {http} --connections 2000 --topics 4 --topic-prefix honest/ --settle 0s");
    let mut holder = lab.holder(&format!("{name}-honest"), &honest)?;
    let ready = holder.report(Duration::from_secs(60)).await?;
    let load = format!("--targets {http} --topics 4 --topic-prefix honest/ --rate 1000 --duration 18s");
    let (count, _) = count::run(flags(&load)?).await?;
    let counts = lab.api.counts(http, "honest/", 10).await?;
    let counts: Vec<u64> = counts.into_iter().map(|(_, n)| n).collect();
    let exact = ready.held == 2000 && counts.len() == 4 && counts.iter().all(|&n| n == 500);
    let (rss_kib, mut counted) = (measure::rss_kib(node[0].pid).unwrap_or(0), counters(lab, http).await);
    for (series, n) in &mut counted {
        *n -= before.get(series).copied().unwrap_or(0.0);
    }
    counted.retain(|_, n| *n != 0.0);
    let dropped = holder.release(Duration::from_secs(60)).await?.dropped_while_held;
    let attacker = attacker.join().map_err(|_| anyhow::anyhow!("attacker panicked"))??;
    let mut problems = Vec::new();
    Server::stop(node.into(), &mut problems).await;
    let (connect_p99_ms, count_p99_ms, errors) = (ready.first_frame.p99_ms, count.latency.p99_ms, count.errors);
    Ok(json!({
        "attack": attack, "held": ready.held, "connect_p99_ms": connect_p99_ms, "dropped_while_held": dropped,
        "count_p99_ms": count_p99_ms, "count_errors": errors, "counts": counts, "exact": exact, "rss_kib": rss_kib,
        "node_and_kernel_counted": counted, "attacker": attacker, "problems": problems,
    }))
}

async fn slowloris(to: SocketAddr, until: Deadline) -> Value {
    let c = Counts::default();
    join_all((0..2_000).map(|_| async {
        while Deadline::now() < until {
            c.event(0);
            if let Ok(mut socket) = client::connect(to, Some(ATTACKER)).await {
                let (mut buf, mut held) = ([0; 64], false);
                let mut alive = socket.write_all(b"GET /count/x HTTP/1.1\r\nHost: x\r\n").await.is_ok();
                while alive {
                    tokio::select! {
                        read = socket.read(&mut buf) => alive = matches!(read, Ok(n) if n > 0),
                        () = sleep(Duration::from_secs(2)) => {
                            // Held past its first 2 s: the node let it in.
                            c.open(i64::from(!held));
                            held = true;
                            alive = socket.write_all(b"X-Slow: 1\r\n").await.is_ok();
                        }
                        () = sleep_until(until) => return,
                    }
                }
                c.open(-i64::from(held));
                c.event(1 + usize::from(held));
            }
            sleep(Duration::from_secs(1)).await;
        }
    }))
    .await;
    c.tally(["attempts", "closed_within_2s", "closed_later", "held_2s_most_at_once"])
}

async fn grpc_flood(to: SocketAddr, until: Deadline) -> Value {
    let (c, each, most): (Counts, [AtomicU64; 12], AtomicU64) = Default::default();
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{to}")) else {
        return json!({});
    };
    let channels: [_; 12] = std::array::from_fn(|_| endpoint.clone().local_address(Some(ATTACKER)).connect_lazy());
    join_all((0..12 * 150).map(|i| {
        let (mut client, c, (each, most)) = (CounterClient::new(channels[i % 12].clone()), &c, (&each[i % 12], &most));
        async move {
            while Deadline::now() < until {
                c.event(0);
                let topic = format!("{i:0>256}");
                let request = WatchCountRequest { topic };
                match timeout_at(until, client.watch_count(request)).await {
                    Ok(Ok(stream)) => {
                        let mut stream = stream.into_inner();
                        c.open(1);
                        most.fetch_max(each.fetch_add(1, Relaxed) + 1, Relaxed);
                        while let Ok(Ok(Some(_))) = timeout_at(until, stream.message()).await {}
                        c.open(-1);
                        each.fetch_sub(1, Relaxed);
                    }
                    Ok(Err(_)) => {
                        c.event(1);
                        sleep(Duration::from_secs(1)).await;
                    }
                    Err(_) => c.event(2),
                }
            }
        }
    }))
    .await;
    let mut tally = c.tally(["asked", "refused", "waiting_for_a_stream_at_end", "open_most_at_once"]);
    tally["open_most_on_one_connection"] = most.load(Relaxed).into();
    tally
}

fn garbage_udp(to: SocketAddr, until: Instant) -> anyhow::Result<Value> {
    let (socket, mut noise, mut rng) = (UdpSocket::bind((ATTACKER, 0))?, vec![0u8; 65_536], rand::rng());
    let (mut sent, mut bytes) = (0u64, 0);
    rng.fill_bytes(&mut noise);
    while Instant::now() < until {
        for _ in 0..256 {
            let (at, len) = (rng.random_range(0..60_000), rng.random_range(0..=1500));
            if socket.send_to(&noise[at..at + len], to).is_ok() {
                (sent, bytes) = (sent + 1, bytes + len);
            }
        }
    }
    Ok(json!({ "datagrams_sent": sent, "bytes_sent": bytes }))
}
