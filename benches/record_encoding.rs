//! Record encoding: the records of a generated capture written as AWS default-format
//! text and as JSON lines. Baseline: copying already-encoded lines of the same length
//! into the output buffer (the bytes have to be written either way).
//! Run: `cargo bench --bench record_encoding`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

criterion_group!(benches, bench);
criterion_main!(benches);
