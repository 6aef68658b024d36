//! Each dissector on one real flow of a generated capture (TLS ClientHello + server
//! flight, an HTTP exchange, a DNS query and answer, an SSH session start), through the
//! whole inspector as a worker runs it: reassembly, protocol choice, parsing,
//! fingerprints. Baseline: reading every payload byte of the same packets once.
//! Run: `cargo bench --bench dissect`.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mirrorflow::dissect::Inspector;

fn bench(c: &mut Criterion) {
    let cap = common::capture(400, false);
    for (name, proto, port) in [
        ("tls", 6u8, 443u16),
        ("http", 6, 80),
        ("dns", 17, 53),
        ("ssh", 6, 22),
    ] {
        let pkts = common::flow_on_port(&cap, proto, port);
        assert!(!pkts.is_empty(), "no {name} flow in the generated capture");
        let bytes: usize = pkts.iter().map(|p| p.payload.len()).sum();
        let mut g = c.benchmark_group(format!("dissect/{name}"));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function("touch payload (baseline)", |b| {
            b.iter(|| {
                let mut x = 0u64;
                for p in &pkts {
                    x = p
                        .payload
                        .iter()
                        .fold(x, |a, b| a.wrapping_add(u64::from(*b)));
                }
                black_box(x)
            })
        });
        let client = pkts[0].side;
        let k = pkts[0].key;
        g.bench_function("inspector", |b| {
            b.iter(|| {
                let mut insp = Inspector::new(client, [k.lo().1, k.hi().1], 16 * 1024);
                for p in &pkts {
                    insp.packet(&p.key, p.side, p.flags, p.seq, &p.payload, false);
                }
                insp.close();
                black_box(insp.facts.clone())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
