//! Stable-toolchain fuzzing: every `mirrorflow::fuzzing` target (the same functions the
//! cargo-fuzz targets in `fuzz/` drive) runs on seeds from real captures (../shared/corpus
//! when present, pcaps/ always) and on deterministic mutations of them: bit flips, byte
//! overwrites, truncations, splices, insertions. Any panic fails the test with the input
//! that caused it. Prints its tally: inputs tried per target, crashes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use mirrorflow::decap::{decapsulate, TunnelPorts};
use mirrorflow::fuzzing::TARGETS;
use mirrorflow::ingest::CaptureFile;

/// Mutated inputs per target (bounded so CI time stays fixed).
const MUTATIONS_PER_TARGET: usize = 30_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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

/// Seed inputs, one list per kind of input.
struct Seeds {
    heads: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
}

/// File prefixes, frames and transport payloads from real captures.
fn seeds() -> Seeds {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    captures(&root.join("pcaps"), &mut files);
    let shared = root.join("../shared/corpus");
    if shared.exists() {
        captures(&shared, &mut files);
    } else {
        println!("note: ../shared/corpus absent; seeding from pcaps/ only");
    }
    files.sort();
    let (mut heads, mut frames, mut payloads) = (Vec::new(), Vec::new(), Vec::new());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        heads.push(data[..data.len().min(4096)].to_vec());
        let cf = CaptureFile::from_bytes(&f, Bytes::from(data));
        let Ok(it) = cf.frames() else { continue };
        for fr in it.take(200).flatten() {
            frames.push(fr.data.to_vec());
            if let Ok(d) = decapsulate(fr.data, fr.link, TunnelPorts::default()) {
                if let Ok(v) = mirrorflow::parse::view(fr.data, &d) {
                    let (off, len) = (v.payload.0 as usize, v.payload.1 as usize);
                    if len > 0 {
                        payloads.push(fr.data[off..off + len].to_vec());
                    }
                }
            }
        }
    }
    Seeds {
        heads,
        frames,
        payloads,
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 0xff, 0x7f, 0x80, 0x01][rng.below(5)];
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 if !other.is_empty() => {
                // Splice: our head, another seed's tail.
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            4 => {
                let at = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            _ => {
                if v.len() > 4 {
                    // Large length fields are where parsers go wrong.
                    let i = rng.below(v.len() - 2);
                    v[i] = 0xff;
                    v[i + 1] = 0xff;
                }
            }
        }
    }
    v
}

#[test]
fn fuzz_targets_never_panic_on_mutated_real_inputs() {
    let Seeds {
        heads,
        frames,
        payloads,
    } = seeds();
    assert!(!frames.is_empty() && !payloads.is_empty());
    // Silence the default hook: a panic is reported once, below, with its input.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| eprintln!("parser panic: {info}")));
    let mut crashes = Vec::new();
    for (name, target) in TARGETS {
        let seeds: &Vec<Vec<u8>> = match *name {
            "capture_file" => &heads,
            "decap_parse" => &frames,
            _ => &payloads,
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let mut tried = 0;
        for s in seeds.iter() {
            tried += 1;
            if catch_unwind(AssertUnwindSafe(|| target(s))).is_err() {
                crashes.push((name.to_string(), s.clone()));
            }
        }
        for _ in 0..MUTATIONS_PER_TARGET {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, a, b);
            tried += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                crashes.push((name.to_string(), input));
            }
        }
        println!(
            "fuzz {name:<13} {tried:>7} inputs, {} crashes",
            crashes.iter().filter(|c| c.0 == *name).count()
        );
    }
    std::panic::set_hook(hook);
    for (name, input) in crashes.iter().take(5) {
        println!(
            "CRASH in {name}: {} bytes: {:02x?}",
            input.len(),
            &input[..input.len().min(256)]
        );
    }
    assert!(
        crashes.is_empty(),
        "{} inputs made a parser panic",
        crashes.len()
    );
}
