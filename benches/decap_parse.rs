//! Decap + parse throughput against its baseline, on a generated VXLAN capture.
//!
//! Baseline: walk every frame of the mapped capture and touch its headers (read the
//! bytes where the inner IP addresses and ports sit), the cheapest loop over the same
//! bytes. Reported as ns per packet for both and their ratio, measured in the same run.
//! Run with `cargo bench --bench decap_parse`. (Criterion benches per stage come with
//! the performance work; this one needs no extra dependency.)

use std::hint::black_box;
use std::time::Instant;

use mirrorflow::decap::{decapsulate, TunnelPorts};
use mirrorflow::gen::{write_capture, GenOptions};
use mirrorflow::ingest::CaptureFile;
use mirrorflow::parse;

fn main() {
    let dir = std::env::temp_dir().join(format!("mirrorflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.pcap");
    let opts = GenOptions {
        flows: 2000,
        seed: 1,
        vxlan: Some(5_569_041),
        truncate: None,
        ipv6_share: 0.2,
    };
    write_capture(&path, &opts).unwrap();
    let cap = CaptureFile::open(&path).unwrap();
    let frames: Vec<_> = cap.frames().unwrap().map(|f| f.unwrap()).collect();
    let rounds = 20;

    let t = Instant::now();
    for _ in 0..rounds {
        for f in &frames {
            // Inner IPv4 addresses and ports of an AWS VXLAN frame sit at 76..88.
            let d = f.data;
            let mut x = 0u64;
            for i in [76usize, 80, 84, 86] {
                if let Some(b) = d.get(i..i + 2) {
                    x ^= u64::from(u16::from_be_bytes([b[0], b[1]]));
                }
            }
            black_box(x);
        }
    }
    let base = t.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64;

    let t = Instant::now();
    for _ in 0..rounds {
        for f in &frames {
            if let Ok(d) = decapsulate(f.data, f.link, TunnelPorts::default()) {
                black_box(parse::view(f.data, &d).ok());
            }
        }
    }
    let full = t.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64;
    println!("frames: {}", frames.len());
    println!("baseline (touch headers): {base:8.1} ns/packet");
    println!(
        "decap + parse:            {full:8.1} ns/packet  ({:.1}x baseline, {:.2} Mpps on one core)",
        full / base,
        1e3 / full
    );
    let _ = std::fs::remove_dir_all(&dir);
}
