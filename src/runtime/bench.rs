//! `bench`: end-to-end speed of the replay pipeline on one capture, next to the cheapest
//! loop over the same bytes, all measured in the same run.
//!
//! Baselines first: `walk` visits every frame of the mapped capture and touches its
//! first two cache lines (where every header we read sits), `decode` adds our decap +
//! parse on one thread. Then the whole pipeline (ingest thread, N workers, writer
//! encoding AWS text records to /dev/null) runs per worker count, flows only and with
//! every dissector. Each figure is the median of `runs` runs; each run's ratio to the
//! walk is against a walk of the same capture measured just before it (the "x walk"
//! column is the median of those), so a busy or slower machine shifts both. Memory is
//! the peak of anonymous resident memory (the mapped capture is file-backed and left
//! out) above what the process held before the run, sampled every 2 ms; bytes per flow
//! divide it by the peak number of flows held. With no capture given, the same traffic is
//! generated plain and VXLAN-wrapped, so the cost of decapsulation shows too: the
//! twins are measured in alternation, run by run, and the overhead is the median of
//! the ratios of runs measured side by side.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decap::TunnelPorts;
use crate::gen::{write_capture, GenOptions};
use crate::ingest::CaptureFile;
use crate::parse;

pub struct BenchOptions {
    pub capture: Option<PathBuf>,
    pub workers: Vec<usize>,
    /// Flows to generate when no capture is given.
    pub flows: usize,
    pub runs: usize,
    pub stop: Arc<AtomicBool>,
}

/// One pipeline measurement.
#[derive(Clone, Debug)]
pub struct PipelineRun {
    pub inspect: bool,
    pub workers: usize,
    pub wall: Duration,
    pub cpu: Duration,
    pub cpu_ingest: Duration,
    pub cpu_workers: Duration,
    pub cpu_writer: Duration,
    pub peak_anon_bytes: u64,
    pub peak_flows: u64,
    pub flows: u64,
    pub records: u64,
    /// Batch processing time quantiles in ns: p50, p99, p99.9, max.
    pub batch_ns: [u64; 4],
    /// Serial parts of the wall time: learning passes, and last packet to last record.
    pub learn: Duration,
    pub tail: Duration,
    /// ns per packet of a walk over the same capture measured just before this run:
    /// the run's own baseline (the VM's speed drifts between the baseline passes and
    /// the pipeline runs that come minutes later).
    pub walk_ns: f64,
}

/// Everything measured on one capture.
#[derive(Clone, Debug)]
pub struct CaptureBench {
    pub label: String,
    pub path: PathBuf,
    pub packets: u64,
    pub captured_bytes: u64,
    pub walk_ns: f64,
    pub decode_ns: f64,
    /// Per pipeline configuration, the median run.
    pub runs: Vec<PipelineRun>,
    /// Per configuration (as `runs`), every run in the order measured; and every
    /// decap + parse pass. With twin captures the runs alternate between the twins, so
    /// the k-th runs of the two were measured side by side.
    pub samples: Vec<Vec<PipelineRun>>,
    pub decode_samples: Vec<f64>,
}

pub fn run(opts: &BenchOptions) -> Result<Vec<CaptureBench>, String> {
    let mut scratch = None;
    let captures: Vec<(String, PathBuf)> = match &opts.capture {
        Some(p) => vec![(p.display().to_string(), p.clone())],
        None => {
            let dir = std::env::temp_dir().join(format!("mirrorflow-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut v = Vec::new();
            for (label, vxlan) in [("gen plain", None), ("gen VXLAN", Some(5_569_041))] {
                let path = dir.join(if vxlan.is_some() {
                    "bench-vxlan.pcap"
                } else {
                    "bench-plain.pcap"
                });
                let g = GenOptions {
                    flows: opts.flows,
                    seed: 1,
                    vxlan,
                    truncate: None,
                    ipv6_share: 0.2,
                    // Packet sizes like the peers' benchmark capture (~790 B mean; theirs is 751).
                    delayed_ack: true,
                };
                write_capture(&path, &g).map_err(|e| format!("{}: {e}", path.display()))?;
                // Written back now, so the kernel's writeback of a fresh GB does not run
                // during (and slow) the measurements that follow.
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                v.push((label.to_string(), path));
            }
            scratch = Some(dir);
            v
        }
    };
    let mut out = Vec::new();
    let result = measure(&captures, opts, &mut out);
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    result.map(|_| out)
}

/// Measures every capture, round by round: each baseline pass and each pipeline run
/// goes over the captures in turn. This VM's speed drifts by a third within minutes;
/// measured one capture after the other, the plain and VXLAN twins met different
/// machines, and the VXLAN overhead swung from -13 % to +27 % between two runs of the
/// same binary. Results gathered so far stay in `out` when a run is interrupted.
fn measure(
    captures: &[(String, PathBuf)],
    opts: &BenchOptions,
    out: &mut Vec<CaptureBench>,
) -> Result<(), String> {
    for (label, path) in captures {
        out.push(prepare(label, path)?);
    }
    let runs = opts.runs.max(1);
    // Passes of `pass` over each capture in turn, in ns per packet, per capture.
    let passes = |out: &[CaptureBench], pass: fn(&CaptureFile)| {
        let mut ns = vec![Vec::new(); out.len()];
        for _ in 0..runs.max(3) {
            for (b, n) in out.iter().zip(&mut ns) {
                n.push(pass_ns(b, pass));
            }
        }
        ns
    };
    let walks = passes(out, walk_pass);
    let decodes = passes(out, decode_all);
    for ((b, w), d) in out.iter_mut().zip(walks).zip(decodes) {
        b.walk_ns = median(w.into_iter());
        b.decode_ns = median(d.iter().copied());
        b.decode_samples = d;
    }
    for &workers in &opts.workers {
        for inspect in [false, true] {
            let mut samples = vec![Vec::new(); out.len()];
            'runs: for _ in 0..runs {
                for (b, s) in out.iter().zip(&mut samples) {
                    if opts.stop.load(Ordering::Relaxed) {
                        break 'runs;
                    }
                    let walk_ns = pass_ns(b, walk_pass);
                    let mut run = pipeline(&b.path, workers, inspect, &opts.stop)?;
                    run.walk_ns = walk_ns;
                    s.push(run);
                }
            }
            if samples.iter().any(|s| s.is_empty()) {
                return Ok(());
            }
            for (b, s) in out.iter_mut().zip(samples) {
                let mut sorted = s.clone();
                sorted.sort_by_key(|r| r.wall);
                b.runs.push(sorted[sorted.len() / 2].clone());
                b.samples.push(s);
            }
        }
    }
    Ok(())
}

/// One pass of `pass` over one capture, in ns per packet. Each pass maps the file
/// afresh, as a replay does, so page-mapping costs are in the baseline too.
fn pass_ns(b: &CaptureBench, pass: fn(&CaptureFile)) -> f64 {
    let t = Instant::now();
    if let Ok(cap) = CaptureFile::open(&b.path) {
        pass(&cap);
    }
    t.elapsed().as_nanos() as f64 / b.packets as f64
}

/// The baseline pass: [`walk`], its result unused.
fn walk_pass(cap: &CaptureFile) {
    let _ = walk(cap);
}

/// Opens, warms and counts one capture; the figures come later.
fn prepare(label: &str, path: &Path) -> Result<CaptureBench, String> {
    let cap = CaptureFile::open(path).map_err(|e| e.to_string())?;
    // Warm the page cache and count; every later loop then sees the same memory state.
    let (packets, captured_bytes) = walk(&cap)?;
    if packets == 0 {
        return Err(format!("{}: no packets", path.display()));
    }
    Ok(CaptureBench {
        label: label.to_string(),
        path: path.to_path_buf(),
        packets,
        captured_bytes,
        walk_ns: 0.0,
        decode_ns: 0.0,
        runs: Vec::new(),
        samples: Vec::new(),
        decode_samples: Vec::new(),
    })
}

/// The baseline: every frame visited, its first two cache lines read.
fn walk(cap: &CaptureFile) -> Result<(u64, u64), String> {
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut x = 0u64;
    for frame in cap.frames().map_err(|e| e.to_string())? {
        let frame = frame.map_err(|e| e.to_string())?;
        let d = frame.data;
        for at in [0usize, 64] {
            if let Some(b) = d.get(at..at + 8) {
                x ^= u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            }
        }
        packets += 1;
        bytes += d.len() as u64;
    }
    std::hint::black_box(x);
    Ok((packets, bytes))
}

/// Walk + decap + parse on this thread.
fn decode_all(cap: &CaptureFile) {
    let Ok(frames) = cap.frames() else { return };
    let ports = TunnelPorts::default();
    for frame in frames.flatten() {
        std::hint::black_box(parse::decode(frame.data, frame.link, ports).ok());
    }
}

/// One pipeline run in a fresh process (`replay --bench-report`), so memory and CPU
/// figures belong to that run alone.
fn pipeline(
    path: &Path,
    workers: usize,
    inspect: bool,
    stop: &Arc<AtomicBool>,
) -> Result<PipelineRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let report = std::env::temp_dir().join(format!(
        "mirrorflow-bench-{}-{}.json",
        std::process::id(),
        RUN_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("replay")
        .arg(path)
        .args([
            "--workers",
            &workers.to_string(),
            "--out",
            "/dev/null",
            "-q",
        ])
        .arg("--bench-report")
        .arg(&report);
    if !inspect {
        cmd.arg("--no-inspect");
    }
    let t = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run replay: {e}"))?;
    let wall = t.elapsed();
    if stop.load(Ordering::Relaxed) {
        let _ = std::fs::remove_file(&report);
        return Err("interrupted".into());
    }
    if !status.success() {
        return Err(format!("replay of {} failed: {status}", path.display()));
    }
    let text =
        std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let _ = std::fs::remove_file(&report);
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))?;
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let ns = |k: &str| Duration::from_nanos(n(k));
    Ok(PipelineRun {
        inspect,
        workers,
        // The replay's own clock (from opening the capture to the last record
        // written); process start-up is not the pipeline's.
        wall: if n("wall_ns") > 0 {
            ns("wall_ns")
        } else {
            wall
        },
        cpu: ns("cpu_ns"),
        cpu_ingest: ns("ingest_cpu_ns"),
        cpu_workers: ns("workers_cpu_ns"),
        cpu_writer: ns("writer_cpu_ns"),
        peak_anon_bytes: n("peak_anon_bytes"),
        peak_flows: n("peak_flows"),
        flows: n("flows"),
        records: n("records"),
        batch_ns: [
            n("batch_ns_p50"),
            n("batch_ns_p99"),
            n("batch_ns_p999"),
            n("batch_ns_max"),
        ],
        learn: ns("learn_ns"),
        tail: ns("tail_ns"),
        // Set by the caller, which measures it.
        walk_ns: 0.0,
    })
}

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// What `replay --bench-report` writes: the run's own measurements.
pub fn report_json(outcome: &crate::runtime::ReplayOutcome, sampler: AnonSampler) -> String {
    let peak_anon = sampler.finish();
    let s = &outcome.summary;
    let h = &outcome.batch_ns;
    serde_json::json!({
        "wall_ns": s.elapsed.as_nanos() as u64,
        "cpu_ns": cpu_time().as_nanos() as u64,
        "ingest_cpu_ns": outcome.cpu.ingest.as_nanos() as u64,
        "workers_cpu_ns": outcome.cpu.workers.as_nanos() as u64,
        "writer_cpu_ns": outcome.cpu.writer.as_nanos() as u64,
        "peak_anon_bytes": peak_anon,
        "peak_flows": s.flows.peak_flows,
        "flows": s.flows.flows_created,
        "records": s.records_written,
        "packets": s.ingest.packets,
        "batch_ns_p50": h.value_at_quantile(0.5),
        "batch_ns_p99": h.value_at_quantile(0.99),
        "batch_ns_p999": h.value_at_quantile(0.999),
        "batch_ns_max": h.max(),
        "learn_ns": outcome.learn.as_nanos() as u64,
        "tail_ns": outcome.tail.as_nanos() as u64,
    })
    .to_string()
}

fn median(it: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = it.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Anonymous resident bytes (resident minus file-backed and shared), from /proc/self/statm.
pub fn anon_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let f: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let page = 4096;
    match (f.get(1), f.get(2)) {
        (Some(res), Some(shared)) => res.saturating_sub(*shared) * page,
        _ => 0,
    }
}

/// Samples anonymous memory while a run goes; reports the peak above the start.
pub struct AnonSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    base: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnonSampler {
    pub fn start() -> AnonSampler {
        let base = anon_bytes();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(base));
        let thread = std::thread::Builder::new()
            .name("mf-bench-mem".into())
            .spawn({
                let (stop, peak) = (stop.clone(), peak.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(anon_bytes(), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
            .ok();
        AnonSampler {
            stop,
            peak,
            base,
            thread,
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.fetch_max(anon_bytes(), Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed).saturating_sub(self.base)
    }
}

/// The report: one table per capture, then the VXLAN overhead when both twins ran.
pub fn render(results: &[CaptureBench]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for b in results {
        let avg = b.captured_bytes as f64 / b.packets as f64;
        let _ = writeln!(
            s,
            "# {}: {} packets, {:.1} MB captured, {:.0} B/packet average",
            b.label,
            b.packets,
            b.captured_bytes as f64 / 1e6,
            avg
        );
        let _ = writeln!(
            s,
            "baseline walk (touch headers): {:7.1} ns/packet = {:6.2} Mpps on one core",
            b.walk_ns,
            1e3 / b.walk_ns
        );
        let _ = writeln!(
            s,
            "decap + parse (one thread):    {:7.1} ns/packet = {:6.2} Mpps ({:.1}x walk)",
            b.decode_ns,
            1e3 / b.decode_ns,
            b.decode_ns / b.walk_ns
        );
        let _ = writeln!(
            s,
            "{:<10} {:>7} {:>7} {:>7} {:>8} {:>7} {:>10} {:>18} {:>9} {:>7} {:>8} {:>23} {:>15}",
            "pipeline",
            "workers",
            "Mpps",
            "Gbit/s",
            "ns/pkt",
            "x walk",
            "cpu ns/pkt",
            "ingest/work/write",
            "mem MiB",
            "B/flow",
            "flows",
            "batch us p50/p99/p99.9",
            "learn/tail ms"
        );
        for (r, runs) in b.runs.iter().zip(&b.samples) {
            let secs = r.wall.as_secs_f64().max(1e-9);
            let ns = r.wall.as_nanos() as f64 / b.packets as f64;
            let us = |n: u64| n as f64 / 1e3;
            let per = |d: Duration| d.as_nanos() as f64 / b.packets as f64;
            let _ = writeln!(
                s,
                "{:<10} {:>7} {:>7.2} {:>7.2} {:>8.1} {:>7.1} {:>10.1} {:>18} {:>9.1} {:>7.0} {:>8} {:>23} {:>15}",
                if r.inspect { "full" } else { "flows" },
                r.workers,
                b.packets as f64 / secs / 1e6,
                b.captured_bytes as f64 * 8.0 / secs / 1e9,
                ns,
                x_walk(runs, b.packets),
                per(r.cpu),
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    per(r.cpu_ingest),
                    per(r.cpu_workers),
                    per(r.cpu_writer)
                ),
                r.peak_anon_bytes as f64 / (1 << 20) as f64,
                r.peak_anon_bytes as f64 / r.peak_flows.max(1) as f64,
                r.flows,
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    us(r.batch_ns[0]),
                    us(r.batch_ns[1]),
                    us(r.batch_ns[2])
                ),
                format!(
                    "{:.1}/{:.1}",
                    r.learn.as_secs_f64() * 1e3,
                    r.tail.as_secs_f64() * 1e3
                ),
            );
        }
        // Beside the median ratio, the fastest run against the fastest walk measured
        // before a run: a slow stretch only ever adds time, and on two cores it adds
        // more to the pipeline than to the one-thread walk.
        let best: Vec<String> = b
            .samples
            .iter()
            .filter_map(|runs| {
                let r = runs.first()?;
                let least = |of: &dyn Fn(&PipelineRun) -> f64| {
                    runs.iter().map(of).fold(f64::INFINITY, f64::min)
                };
                let ns = least(&|r| r.wall.as_nanos() as f64 / b.packets.max(1) as f64);
                let walk = least(&|r| r.walk_ns);
                Some(format!(
                    "{} {} workers {:.1}x",
                    if r.inspect { "full" } else { "flows" },
                    r.workers,
                    ns / walk.max(1e-12)
                ))
            })
            .collect();
        if !best.is_empty() {
            let _ = writeln!(s, "fastest run vs fastest walk: {}", best.join(", "));
        }
        let _ = writeln!(s);
    }
    if let (Some(plain), Some(vxlan)) = (
        results.iter().find(|b| b.label == "gen plain"),
        results.iter().find(|b| b.label == "gen VXLAN"),
    ) {
        // Twins carry the same packets, so wall times compare directly; each ratio is
        // of two runs measured one after the other. Pipelines also get the ratio of the
        // CPU time all their threads used: on a VM whose second core comes and goes, the
        // wall time of a run spread over two cores swings by a fifth or more from pair
        // to pair, the CPU time less (a slow stretch still inflates it).
        // And the best run of each against the other's: noise on a shared machine only
        // ever adds time, so the fastest runs come closest to what each capture costs.
        let spread = |pairs: &[(f64, f64)]| {
            let ratios: Vec<f64> = pairs.iter().map(|(p, v)| v / p.max(1e-12)).collect();
            let least =
                |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).fold(f64::INFINITY, f64::min);
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{:+.1}% (median of {} side-by-side pairs; {:+.1}% to {:+.1}%; best vs best {:+.1}%)",
                (median(ratios.iter().copied()) - 1.0) * 100.0,
                ratios.len(),
                (lo - 1.0) * 100.0,
                (hi - 1.0) * 100.0,
                (least(|q| q.1) / least(|q| q.0).max(1e-12) - 1.0) * 100.0,
            )
        };
        let mut line = |what: String, wall: Vec<(f64, f64)>, cpu: Option<Vec<(f64, f64)>>| {
            let _ = write!(
                s,
                "VXLAN vs plain, {what}: time per packet {}",
                spread(&wall)
            );
            if let Some(cpu) = cpu {
                let _ = write!(s, ", CPU time per packet {}", spread(&cpu));
            }
            let _ = writeln!(s);
        };
        for (ps, vs) in plain.samples.iter().zip(&vxlan.samples) {
            let Some(p) = ps.first() else { continue };
            let pairs = |of: fn(&PipelineRun) -> Duration| {
                ps.iter()
                    .zip(vs)
                    .map(|(p, v)| (of(p).as_secs_f64(), of(v).as_secs_f64()))
                    .collect::<Vec<_>>()
            };
            line(
                format!(
                    "{} workers {}",
                    p.workers,
                    if p.inspect { "full" } else { "flows" }
                ),
                pairs(|r| r.wall),
                Some(pairs(|r| r.cpu)),
            );
        }
        let pairs = plain
            .decode_samples
            .iter()
            .copied()
            .zip(vxlan.decode_samples.iter().copied())
            .collect();
        // One thread: its CPU time is its wall time.
        line("decap + parse".into(), pairs, None);
    }
    s
}

/// Pipeline time per packet against the walk, as the median of each run's ratio to
/// the walk measured just before it.
fn x_walk(runs: &[PipelineRun], packets: u64) -> f64 {
    median(runs.iter().map(|r| {
        let ns = r.wall.as_nanos() as f64 / packets.max(1) as f64;
        ns / r.walk_ns.max(1e-12)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(workers: usize, inspect: bool, wall_ms: u64) -> PipelineRun {
        PipelineRun {
            inspect,
            workers,
            wall: Duration::from_millis(wall_ms),
            // Two cores, busy 80 % of the run.
            cpu: Duration::from_millis(wall_ms * 16 / 10),
            cpu_ingest: Duration::ZERO,
            cpu_workers: Duration::ZERO,
            cpu_writer: Duration::ZERO,
            peak_anon_bytes: 0,
            peak_flows: 1,
            flows: 1,
            records: 2,
            batch_ns: [0; 4],
            learn: Duration::ZERO,
            tail: Duration::ZERO,
            walk_ns: 50.0,
        }
    }

    fn twin(label: &str, walls: &[u64], decode: &[f64]) -> CaptureBench {
        let samples = vec![walls
            .iter()
            .map(|&w| run_of(1, false, w))
            .collect::<Vec<_>>()];
        CaptureBench {
            label: label.into(),
            path: PathBuf::from("x.pcap"),
            packets: 1000,
            captured_bytes: 800_000,
            walk_ns: 50.0,
            decode_ns: 60.0,
            runs: vec![run_of(1, false, walls[walls.len() / 2])],
            samples,
            decode_samples: decode.to_vec(),
        }
    }

    /// "x walk" is the median of each run's ratio to the walk measured just before it:
    /// here the machine slows down by half over the runs, and each run still takes
    /// twice its walk.
    #[test]
    fn x_walk_is_each_runs_ratio_to_its_own_walk() {
        let runs: Vec<PipelineRun> = [100, 150, 200]
            .iter()
            .map(|&ms| {
                let mut r = run_of(1, false, ms);
                // 1000 packets: ms * 1e6 / 1000 ns per packet.
                r.walk_ns = ms as f64 * 1e3 / 2.0;
                r
            })
            .collect();
        assert_eq!(x_walk(&runs, 1000), 2.0);
    }

    /// The fastest run against the fastest walk: here the first run's walk was fast
    /// and the run itself slowed (2.5x), the others 2x; the median says 2.0x, the
    /// fastest of each 100 us / 40 us.
    #[test]
    fn fastest_run_is_set_against_the_fastest_walk() {
        let mut b = twin("gen plain", &[100, 150, 200], &[50.0]);
        for (r, walk) in b.samples[0].iter_mut().zip([40e3, 75e3, 100e3]) {
            r.walk_ns = walk;
        }
        let out = render(&[b]);
        assert!(
            out.contains("\nfastest run vs fastest walk: flows 1 workers 2.5x\n"),
            "{out}"
        );
    }

    /// A pair hit by a slow stretch swings its ratio either way; the fastest run of
    /// each capture against the other's does not see it.
    #[test]
    fn best_vs_best_sets_the_fastest_runs_side_by_side() {
        let plain = twin("gen plain", &[100, 300, 120], &[50.0, 50.0, 50.0]);
        let vxlan = twin("gen VXLAN", &[150, 110, 130], &[55.0, 55.0, 55.0]);
        let out = render(&[plain, vxlan]);
        assert!(
            out.contains("VXLAN vs plain, 1 workers flows: time per packet +8.3% (median of 3 side-by-side pairs; -63.3% to +50.0%; best vs best +10.0%)"),
            "{out}"
        );
    }

    /// The overhead is the median of side-by-side ratios, not the ratio of medians:
    /// here the machine slowed down by half between the first and the last pairs, and
    /// each pair still shows VXLAN 10 % slower.
    #[test]
    fn vxlan_overhead_is_the_median_of_side_by_side_ratios() {
        let plain = twin("gen plain", &[100, 150, 200], &[50.0, 75.0, 100.0]);
        let mut vxlan = twin("gen VXLAN", &[110, 165, 220], &[60.0, 90.0, 120.0]);
        // The CPU time: 5 % more in each pair, whatever the wall time did.
        for (v, p) in vxlan.samples[0].iter_mut().zip([100u64, 150, 200]) {
            v.cpu = Duration::from_millis(p * 16 / 10 * 105 / 100);
        }
        let out = render(&[plain, vxlan]);
        assert!(
            out.contains("VXLAN vs plain, 1 workers flows: time per packet +10.0% (median of 3 side-by-side pairs; +10.0% to +10.0%; best vs best +10.0%), CPU time per packet +5.0% (median of 3 side-by-side pairs; +5.0% to +5.0%; best vs best +5.0%)\n"),
            "{out}"
        );
        assert!(
            out.contains("VXLAN vs plain, decap + parse: time per packet +20.0% (median of 3 side-by-side pairs; +20.0% to +20.0%; best vs best +20.0%)\n"),
            "{out}"
        );
    }
}
