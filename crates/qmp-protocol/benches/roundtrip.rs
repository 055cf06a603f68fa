//! Round trips of `query-status` against a real QEMU (`-machine none -S`),
//! this crate's client next to a minimal blocking client (one request out,
//! one line in, no parsing) as the floor; and connect + handshake time.
//!
//! Both send the same bytes per request: QEMU parses QMP one byte per
//! main-loop iteration, so request length shows in the round trip.
//!
//! On a shared machine, load drifts between criterion's functions; the
//! example `roundtrip_interleaved` alternates the two clients in short
//! blocks for a ratio under equal conditions.
//!
//! Run: `cargo bench -p qmp-protocol --bench roundtrip -- --warm-up-time 1 --measurement-time 3`

// The benchmark starts QEMU itself; see tests/real_qemu.rs.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qmp_protocol::{Client, QueryStatus, RunState};
use tokio::runtime::Runtime;

mod support;

use support::{BlockingClient, QUERY_STATUS, Qemu};

/// `iters` sequential `query-status` round trips, timed inside a spawned
/// task: applications call the client from tasks, and a task's wake-up is
/// cheaper than waking `block_on`'s own future (one `epoll_wait` per round
/// trip instead of two on the current-thread runtime).
fn timed_round_trips(runtime: &Runtime, client: &Client, iters: u64) -> Duration {
    let client = client.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                let status = client.execute(QueryStatus).await.unwrap();
                assert_eq!(status.status, RunState::Prelaunch);
            }
            start.elapsed()
        })
        .await
        .unwrap()
    })
}

fn round_trips(c: &mut Criterion) {
    let qemu = Qemu::start();
    let mut group = c.benchmark_group("query-status round trip");
    group.throughput(Throughput::Elements(1));

    {
        let mut floor = BlockingClient::connect(&qemu);
        group.bench_function("blocking floor", |b| b.iter(|| floor.request(QUERY_STATUS)));
    }

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    {
        let client = current.block_on(Client::connect(&qemu.socket)).unwrap();
        group.bench_function("qmp-protocol, current-thread runtime", |b| {
            b.iter_custom(|iters| timed_round_trips(&current, &client, iters))
        });
        current.block_on(async move {
            drop(client);
        });
    }

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    {
        let client = multi.block_on(Client::connect(&qemu.socket)).unwrap();
        group.bench_function("qmp-protocol, multi-thread runtime", |b| {
            b.iter_custom(|iters| timed_round_trips(&multi, &client, iters))
        });
        multi.block_on(async move {
            drop(client);
        });
    }
    group.finish();

    let mut group = c.benchmark_group("connect + handshake");
    group.bench_function("blocking floor", |b| {
        b.iter(|| drop(BlockingClient::connect(&qemu)))
    });
    group.bench_function("qmp-protocol, current-thread runtime", |b| {
        b.iter(|| {
            current.block_on(async {
                let client = Client::connect(&qemu.socket).await.unwrap();
                drop(client);
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = round_trips
}
criterion_main!(benches);
