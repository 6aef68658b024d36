//! Every capture of ../shared/corpus (and pcaps/) damaged on purpose: random bit flips
//! anywhere, and truncation at random offsets. Each damaged file is replayed by the real
//! binary under a time limit: it must never panic or hang, must name the file and byte
//! offset when it stops early, and must put every packet it read into a record.
//! Prints its tally; uses pcaps/ alone, saying so, when ../shared is absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Damaged variants per capture.
const MUTANTS_PER_CAPTURE: usize = 4;

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            captures(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        ) {
            out.push(p);
        }
    }
}

#[test]
fn damaged_captures_never_panic_or_hang_and_keep_what_was_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    captures(&root.join("pcaps"), &mut files);
    let shared = root.join("../shared/corpus");
    if shared.exists() {
        captures(&shared, &mut files);
    } else {
        println!("note: ../shared/corpus absent; damaging pcaps/ only");
    }
    files.sort();
    let dir = scratch("mutation");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut tried, mut damaged_reported, mut packets_total) = (0u64, 0u64, 0u64);
    for f in &files {
        let original = std::fs::read(f).unwrap();
        if original.len() < 32 {
            continue;
        }
        for m in 0..MUTANTS_PER_CAPTURE {
            let mut data = original.clone();
            if m % 2 == 0 {
                for _ in 0..1 + next() % 16 {
                    let i = (next() % data.len() as u64) as usize;
                    data[i] ^= 1 << (next() % 8);
                }
            } else {
                let cut = 24 + (next() % (data.len() as u64 - 24)) as usize;
                data.truncate(cut);
            }
            let path = dir.join(format!(
                "m{tried}.{}",
                f.extension().unwrap().to_str().unwrap()
            ));
            std::fs::write(&path, &data).unwrap();
            let out = dir.join("out.txt");
            let o = Command::new("timeout")
                .args([
                    "60",
                    bin(),
                    "replay",
                    "--format",
                    "${packets}",
                    "--out",
                    out.to_str().unwrap(),
                    path.to_str().unwrap(),
                ])
                .output()
                .expect("coreutils timeout");
            let stderr = String::from_utf8_lossy(&o.stderr);
            let code = o.status.code();
            let origin = format!("{} mutant {m}", f.display());
            assert_ne!(code, Some(124), "{origin}: hung");
            assert!(
                code == Some(0) || code == Some(3),
                "{origin}: exit {code:?} (101 is a panic): {stderr}"
            );
            if code == Some(3) {
                assert!(
                    stderr.contains(path.to_str().unwrap()) && stderr.contains("byte offset"),
                    "{origin}: {stderr}"
                );
                damaged_reported += 1;
            }
            let in_records: u64 = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse::<u64>().ok())
                .sum();
            let read = summary_value(&stderr, "packets")
                .unwrap_or_else(|| panic!("{origin}: no summary: {stderr}"));
            assert_eq!(
                in_records, read,
                "{origin}: every packet read is in a record"
            );
            packets_total += read;
            tried += 1;
            let _ = std::fs::remove_file(&path);
        }
    }
    println!(
        "mutation: {tried} damaged captures from {} originals replayed, 0 panics, 0 hangs, {damaged_reported} stopped at named damage, {packets_total} packets read = in records",
        files.len()
    );
    assert!(tried > 0);
}
