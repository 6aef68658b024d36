//! Decap + parse per packet against its baseline, on generated captures (plain and
//! AWS VXLAN): `walk` visits every frame and reads its first two cache lines (where
//! every header sits), the cheapest loop over the same bytes; `decode` is what the
//! ingest thread runs (fast path, general path when needed); `general` forces the
//! general etherparse path, to show what the fast path saves.
//! Run: `cargo bench --bench decap_parse`.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mirrorflow::decap::{decapsulate, TunnelPorts};
use mirrorflow::parse;

fn bench(c: &mut Criterion) {
    for vxlan in [false, true] {
        let cap = common::capture(2000, vxlan);
        let frames: Vec<_> = cap.file.frames().unwrap().flatten().collect();
        let mut g = c.benchmark_group(if vxlan {
            "decap_parse/vxlan"
        } else {
            "decap_parse/plain"
        });
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function("walk (baseline)", |b| {
            b.iter(|| {
                let mut x = 0u64;
                for f in &frames {
                    for at in [0usize, 64] {
                        if let Some(s) = f.data.get(at..at + 8) {
                            x ^= u64::from_le_bytes(s.try_into().unwrap());
                        }
                    }
                }
                black_box(x)
            })
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                for f in &frames {
                    black_box(parse::decode(f.data, f.link, TunnelPorts::default()).ok());
                }
            })
        });
        g.bench_function("general path only", |b| {
            b.iter(|| {
                for f in &frames {
                    if let Ok(d) = decapsulate(f.data, f.link, TunnelPorts::default()) {
                        black_box(parse::view(f.data, &d).ok());
                    }
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
