//! Cost of counting one connection: a join + leave pair on one hot topic,
//! including the topic lookup, from 1 and 2 threads, against the obvious
//! `Mutex<HashMap>` design.
//!
//! The 2-thread cases report time per pair *per thread*: equal times for 1
//! and 2 threads mean perfect scaling (2x throughput). Each bench thread is
//! pinned to its own core: criterion runs many short samples, and fresh
//! threads start on their parent's core, so unpinned they often share one
//! core for a whole sample and the bench would measure the scheduler.

#![allow(missing_docs)]

use std::{
    collections::HashMap,
    hint::black_box,
    sync::{Barrier, Mutex},
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use headcount_counter::{CounterTable, Topic};

/// Runs `pair` `iters` times on each of `threads` threads, thread `i` pinned
/// to core `i`; returns the slowest thread's time.
fn on_threads(threads: usize, iters: u64, pair: &(impl Fn() + Sync)) -> Duration {
    let start = Barrier::new(threads);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (start, core) = (&start, cores.get(thread % cores.len().max(1)).copied());
                scope.spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..iters {
                        pair();
                    }
                    began.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn join_leave(c: &mut Criterion) {
    let mut group = c.benchmark_group("join_leave_hot_topic");
    let topic = Topic::new("/blog/a-hot-post").expect("valid topic");

    let table = CounterTable::new(2, 100_000);
    // Other visitors keep the topic alive, as on a real hot page.
    let _others: Vec<_> = (0..64)
        .map(|shard| table.join_on_shard(&topic, shard).expect("room"))
        .collect();
    let headcount = || drop(black_box(table.join(black_box(&topic)).expect("room")));

    let baseline: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::from([(topic.to_string(), 64)]));
    let mutex_map = || {
        let name = black_box(topic.as_str());
        *baseline.lock().expect("lock").entry(name.to_owned()).or_default() += 1;
        let mut map = baseline.lock().expect("lock");
        if let Some(count) = map.get_mut(name) {
            *count -= 1;
        }
    };

    for threads in [1, 2] {
        group.bench_function(format!("headcount/{threads}_threads"), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &headcount))
        });
        group.bench_function(format!("mutex_hashmap/{threads}_threads"), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &mutex_map))
        });
    }
    group.finish();
}

fn drain(c: &mut Criterion) {
    let table = CounterTable::new(2, 200_000);
    let topics: Vec<Topic> = (0..100_000)
        .map(|i| Topic::new(&format!("/page/{i}")).expect("valid"))
        .collect();
    let _held: Vec<_> = topics.iter().map(|topic| table.join(topic).expect("room")).collect();
    table.drain_changed();
    c.bench_function("drain_changed/100k_quiet_topics", |b| {
        b.iter(|| black_box(table.drain_changed()))
    });
}

criterion_group!(benches, join_leave, drain);
criterion_main!(benches);
