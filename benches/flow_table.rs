//! Flow-table update at 10 k, 100 k and 1 M live flows, packets arriving in random flow
//! order (as on a busy link). Baseline: the same number of counter updates into a
//! plain vector of entries the size of ours, indexed directly (no hashing, no key
//! compare): the cost of the memory traffic alone. Setup also prints what the table
//! costs per idle flow in anonymous resident memory.
//! Run: `cargo bench --bench flow_table`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mirrorflow::config::{Config, SessionMap};
use mirrorflow::flow::{FlowPacket, FlowTable};
use mirrorflow::parse::FlowKey;
use mirrorflow::runtime::bench::anon_bytes;

const BASE_NS: u64 = 1_700_000_000 * 1_000_000_000;

fn packet(i: u64, seq: u64) -> FlowPacket {
    let src = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let dst = IpAddr::from([198, 51, 100, 7]);
    let (key, side) = FlowKey::new(
        Some(7),
        Some(IpAddr::from([10, 0, 0, 1])),
        (src, 40_000 + (i % 20_000) as u16),
        (dst, 443),
        6,
    );
    FlowPacket::counted(key, side, BASE_NS + seq * 100, 1000, 0x10, seq)
}

/// A table holding `n` flows, and `len` packets of those flows in random order.
fn setup(n: u64, len: usize) -> (FlowTable, Vec<FlowPacket>) {
    let cfg = Config::default();
    let before = anon_bytes();
    let mut t = FlowTable::new(60, &cfg.timeouts, Arc::new(SessionMap::new(&[])));
    let mut out = Vec::new();
    for i in 0..n {
        t.process(&packet(i, i), &[], &mut out);
    }
    let after = anon_bytes();
    println!(
        "flow table with {n} idle flows: {:.0} bytes per flow (anonymous RSS growth)",
        after.saturating_sub(before) as f64 / n as f64
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let pkts = (0..len as u64)
        .map(|j| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            packet(state % n, n + j)
        })
        .collect();
    (t, pkts)
}

fn bench(c: &mut Criterion) {
    let len = 100_000;
    for n in [10_000u64, 100_000, 1_000_000] {
        let (mut table, pkts) = setup(n, len);
        let mut g = c.benchmark_group(format!("flow_table/{n}_flows"));
        g.throughput(Throughput::Elements(len as u64));
        g.sample_size(20);
        let entry = [0u64; 28];
        let mut plain = vec![entry; n as usize];
        let slots: Vec<usize> = pkts
            .iter()
            .map(|p| (p.seq as usize).wrapping_mul(2_654_435_761) % n as usize)
            .collect();
        g.bench_function("indexed counters (baseline)", |b| {
            b.iter(|| {
                for (s, p) in slots.iter().zip(&pkts) {
                    let e = &mut plain[*s];
                    e[0] += 1;
                    e[1] += u64::from(p.ip_len);
                    e[2] = e[2].max(p.ts_ns);
                }
                black_box(&plain);
            })
        });
        let mut out = Vec::new();
        g.bench_function("process", |b| {
            b.iter_batched_ref(
                || (),
                |_| {
                    for p in &pkts {
                        table.process(p, &[], &mut out);
                    }
                    out.clear();
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
