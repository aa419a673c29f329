//! What history costs: one view on the join path (`record_view`: salted
//! SHA-256, two sketch inserts, two map entries), and one flush of 100,000
//! (day, topic) rows into a fresh store, the first write of a busy day.
//! Before the timings it prints the store's size per topic-day after that
//! flush (`disk bytes per topic-day`), with 3 views by 3 visitors per topic.

#![allow(missing_docs)]

use std::{hint::black_box, net::IpAddr, time::Duration};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use headcount_counter::Topic;
use headcount_history::{
    Day, History, HistoryConfig,
    sketch::Visitors,
    store::{FILE_NAME, Store},
    tally::{Pending, TopicTally},
};
use prometheus_client::registry::Registry;

const ROWS: u64 = 100_000;
const SITES: u64 = 1_000;
const VISITORS_PER_TOPIC: u64 = 3;

fn busy_day() -> Pending {
    let pending = Pending::default();
    let day = Day::today();
    for i in 0..ROWS {
        let topic = Topic::new(&format!("site-{}.example/page-{i}", i % SITES)).expect("valid");
        let mut tally = TopicTally {
            views: VISITORS_PER_TOPIC,
            peak: 2,
            visitors: Visitors::new(),
        };
        for visitor in 0..VISITORS_PER_TOPIC {
            tally.visitors.insert(i * VISITORS_PER_TOPIC + visitor);
        }
        pending.topics.insert((day, topic), tally);
    }
    pending
}

fn disk_bytes_per_topic_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.flush(&busy_day(), Day::today().minus(400)).expect("flush");
    drop(store);
    let bytes = std::fs::metadata(dir.path().join(FILE_NAME)).expect("store file").len();
    println!(
        "disk bytes per topic-day: {:.0} ({bytes} bytes for {ROWS} topics, {VISITORS_PER_TOPIC} visitors each, {SITES} sites)",
        bytes as f64 / ROWS as f64
    );
}

fn flush(c: &mut Criterion) {
    disk_bytes_per_topic_day();
    let mut group = c.benchmark_group("history");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("flush 100k topic-days into a fresh store", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = Store::open(dir.path()).expect("open");
                (dir, store, busy_day())
            },
            |(dir, store, pending)| {
                store.flush(&pending, Day::today().minus(400)).expect("flush");
                (dir, store)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn record_view(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HistoryConfig {
        data_dir: dir.path().to_path_buf(),
        ..HistoryConfig::default()
    };
    let history = History::open(config, &mut Registry::default()).expect("open");
    let topics: Vec<Topic> = (0..100)
        .map(|i| Topic::new(&format!("example.com/page-{i}")).expect("valid"))
        .collect();
    let mut i = 0u32;
    c.bench_function("history record_view (join path)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let client = IpAddr::from((0x0a00_0000u32 + i % 50_000).to_be_bytes());
            history.record_view(
                black_box(&topics[(i % 100) as usize]),
                client,
                "Mozilla/5.0 (X11; Linux)",
            );
        });
    });
}

criterion_group!(benches, flush, record_view);
criterion_main!(benches);
