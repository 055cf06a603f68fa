//! `query-status` round trips of this crate's client and of a minimal
//! blocking client, alternating in blocks of 200 so that both see the same
//! machine load; prints the median time per round trip of each and the
//! ratio of their rates.
//!
//! Run: `cargo run --release -p qmp-protocol --example roundtrip_interleaved [current|multi]`

// Starts QEMU itself, like the benchmark.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use qmp_protocol::{Client, QueryStatus};

#[path = "../benches/support/mod.rs"]
mod support;

use support::{BlockingClient, QUERY_STATUS, Qemu};

const BLOCK: u32 = 200;
const ROUNDS: usize = 40;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let flavor = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "current".to_owned());
    let runtime = match flavor.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .unwrap();
    let qemu = Qemu::start();
    let mut floor_us = Vec::new();
    let mut client_us = Vec::new();
    for _ in 0..ROUNDS {
        let mut floor = BlockingClient::connect(&qemu);
        let start = Instant::now();
        for _ in 0..BLOCK {
            floor.request(QUERY_STATUS);
        }
        floor_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(BLOCK));
        drop(floor);

        // In a spawned task, as applications call the client.
        let elapsed = runtime.block_on(async {
            let client = Client::connect(&qemu.socket).await.unwrap();
            tokio::spawn(async move {
                let start = Instant::now();
                for _ in 0..BLOCK {
                    client.execute(QueryStatus).await.unwrap();
                }
                start.elapsed()
            })
            .await
            .unwrap()
        });
        client_us.push(elapsed.as_secs_f64() * 1e6 / f64::from(BLOCK));
    }
    let (floor, client) = (median(floor_us), median(client_us));
    println!(
        "{flavor}-thread runtime: floor {floor:.1} us/round trip ({:.0}/s), \
         qmp-protocol {client:.1} us ({:.0}/s), rate ratio {:.3}",
        1e6 / floor,
        1e6 / client,
        floor / client
    );
}
