//! The writer's work per record. Encoding: the records written as AWS default-format
//! text and as JSON lines; baseline: copying already-encoded lines of the same length
//! into the output buffer (the bytes have to be written either way). Detectors: the
//! records of a window observed in write order; baseline: reading the fields they
//! look at. Run: `cargo bench --bench record_encoding`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mirrorflow::detect::Detector;
use mirrorflow::record::{FlowRecord, LogStatus, RecordFormat};

fn records(n: u64) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let mut r = FlowRecord::status_only(None, Some(7), None, LogStatus::Ok, 0, 0);
            r.srcaddr = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            r.dstaddr = IpAddr::from([198, 51, 100, (i % 250) as u8]);
            r.srcport = 40_000 + (i % 20_000) as u16;
            r.dstport = 443;
            r.protocol = 6;
            r.packets = 10 + i % 100;
            r.bytes = 1_000 + i * 37 % 100_000;
            r.start = 1_700_000_000 + i % 600;
            r.end = r.start + 5;
            r.tcp_flags = 19;
            r.conn_state = "SF";
            if i % 10 == 0 {
                // An unanswered attempt: the scan and flood detectors track it.
                (r.tcp_flags, r.conn_state, r.packets) = (2, "S0", 1);
            }
            r
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let recs = records(10_000);
    for (name, format) in [
        ("text", RecordFormat::default_text()),
        ("json", RecordFormat::json()),
    ] {
        let mut encoded = Vec::new();
        for r in &recs {
            let mut s = String::new();
            format.write(r, &mut s);
            encoded.push(s);
        }
        let bytes: usize = encoded.iter().map(|s| s.len()).sum();
        let mut g = c.benchmark_group(format!("record_encoding/{name}"));
        g.throughput(Throughput::Elements(recs.len() as u64));
        let mut out = String::with_capacity(bytes + 1024);
        g.bench_function("copy encoded lines (baseline)", |b| {
            b.iter(|| {
                out.clear();
                for s in &encoded {
                    out.push_str(s);
                }
                black_box(out.len())
            })
        });
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                for r in &recs {
                    format.write(r, &mut out);
                }
                black_box(out.len())
            })
        });
        g.finish();
    }
}

fn bench_detectors(c: &mut Criterion) {
    let mut recs = records(47_000);
    for r in &mut recs {
        // One window, as the writer seals it.
        r.start = 1_700_000_400;
    }
    let mut g = c.benchmark_group("record_detectors");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("read the fields (baseline)", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for r in &recs {
                acc = acc.wrapping_add(
                    r.start ^ r.bytes ^ u64::from(r.dstport) ^ u64::from(r.tcp_flags),
                );
                acc ^= u64::from(r.srcaddr.is_ipv4()) ^ u64::from(r.dstaddr.is_ipv6());
                acc ^= r.conn_state.len() as u64 ^ r.flow_direction.is_some() as u64;
            }
            black_box(acc)
        })
    });
    g.bench_function("observe a window", |b| {
        b.iter_batched_ref(
            || (Detector::new(Default::default(), 600), recs.clone()),
            |(d, window)| d.observe(window),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench, bench_detectors);
criterion_main!(benches);
