//! `replay`: capture files through the whole pipeline, packet time driving windows and
//! timeouts.
//!
//! The ingest thread maps each capture and walks its frames; damage in a file stops that
//! file at the damaged record (its error names the file and byte offset) and the run
//! goes on with the next file. SIGINT/SIGTERM stop reading the same way. In every case
//! the workers then drain their tables and the writer flushes, so every record of what
//! was read is written.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::config::{InspectConfig, SessionMap, Timeouts};
use crate::decap::{Tunnel, TunnelPorts};
use crate::dispatch::{Batch, BatchPool, Dispatcher, QUEUE_BATCHES};
use crate::flow::{FlowTable, FlowTableStats};
use crate::ingest::{CaptureError, CaptureFile};
use crate::parse;
use crate::record::{FlowRecord, RecordFormat};
use crate::sink::{Destination, RecordWriter};
use crate::telemetry::{IngestStats, RunSummary};

/// Frames read ahead at the start of each capture to learn interface MACs.
const LEARN_FRAMES: usize = 100_000;

/// Records a worker gathers before handing them to the writer.
const RECORD_BATCH: usize = 512;

pub struct ReplayOptions {
    pub captures: Vec<PathBuf>,
    pub workers: usize,
    pub interval_s: u64,
    pub timeouts: Timeouts,
    pub inspect: InspectConfig,
    pub detect: crate::detect::DetectConfig,
    /// Flows held at once across all workers.
    pub max_flows: usize,
    pub ports: TunnelPorts,
    pub sessions: Arc<SessionMap>,
    pub format: RecordFormat,
    pub destination: Destination,
    pub progress: bool,
    /// Set (by a SIGINT/SIGTERM handler) to stop reading; what was read is still written.
    pub stop: Arc<AtomicBool>,
}

/// Installs SIGINT and SIGTERM handlers that set the returned flag instead of killing
/// the process, so a run can drain its flow tables and flush. Call it first thing.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// What a run produced: the summary and any damaged captures.
pub struct ReplayOutcome {
    pub summary: RunSummary,
    /// Time each worker spent on one batch, in ns (all workers merged).
    pub batch_ns: hdrhistogram::Histogram<u64>,
    /// CPU time per thread role: where a run's time went.
    pub cpu: ThreadCpu,
    pub capture_errors: Vec<CaptureError>,
    pub interrupted: bool,
}

/// CPU time of a run's threads, by role.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCpu {
    /// The ingest thread: read, decap, parse, dispatch.
    pub ingest: std::time::Duration,
    /// All workers together: flow tables and dissectors.
    pub workers: std::time::Duration,
    /// The writer: ordering, detectors, encoding, output.
    pub writer: std::time::Duration,
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> std::time::Duration {
    // SAFETY: clock_gettime writes the timespec we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A failure that stopped the run as a whole (the output could not be written).
#[derive(Debug)]
pub enum ReplayError {
    Output(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Output(m) => f.write_str(m),
        }
    }
}

pub fn replay(opts: ReplayOptions) -> Result<ReplayOutcome, ReplayError> {
    let started = Instant::now();
    let ingest_cpu0 = thread_cpu_time();
    let workers = opts.workers.max(1);
    let writer = RecordWriter::open(&opts.destination, opts.format.clone()).map_err(|e| {
        ReplayError::Output(match &opts.destination {
            Destination::File(p) => format!("{}: cannot create output: {e}", p.display()),
            Destination::Stdout => format!("stdout: {e}"),
        })
    })?;
    let stop = opts.stop.clone();

    let (rec_tx, rec_rx) = bounded::<ToWriter>(workers * 8);
    let writer_thread = thread::Builder::new()
        .name("mf-writer".into())
        .spawn({
            let detector = crate::detect::Detector::new(opts.detect.clone(), opts.interval_s);
            let interval = opts.interval_s;
            move || {
                let r = write_records(writer, rec_rx, detector, workers, interval);
                (r, thread_cpu_time())
            }
        })
        .map_err(|e| ReplayError::Output(format!("cannot start writer thread: {e}")))?;

    let mut senders = Vec::with_capacity(workers);
    let mut worker_threads = Vec::with_capacity(workers);
    let pool = BatchPool::new(workers * (QUEUE_BATCHES + 2));
    for w in 0..workers {
        let (tx, rx) = bounded::<Batch>(QUEUE_BATCHES);
        senders.push(tx);
        let mut table = FlowTable::with_inspection(
            opts.interval_s,
            &opts.timeouts,
            opts.sessions.clone(),
            opts.inspect.clone(),
        );
        table.set_max_flows(opts.max_flows / workers);
        let rec_tx = rec_tx.clone();
        let pool = pool.clone();
        worker_threads.push(
            thread::Builder::new()
                .name(format!("mf-worker-{w}"))
                .spawn(move || run_worker(w, table, rx, rec_tx, pool))
                .map_err(|e| ReplayError::Output(format!("cannot start worker thread: {e}")))?,
        );
    }
    drop(rec_tx);

    let mut dispatcher = Dispatcher::new(senders, opts.sessions.clone()).with_pool(pool);
    let mut ingest = IngestStats::default();
    let mut capture_errors = Vec::new();
    let total_bytes: u64 = opts
        .captures
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut done_bytes = 0u64;
    // The last capture's mapping, held here so that unmapping it (a page-table walk
    // over the whole file, ~15 % of a flows-only worker's time when the worker dropped
    // the last batch) happens on this thread while the writer finishes.
    let mut last_mapping = None;
    'files: for path in &opts.captures {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        ingest.captures += 1;
        let file = match CaptureFile::open(path) {
            Ok(f) => f,
            Err(e) => {
                ingest.damaged_captures += 1;
                capture_errors.push(e);
                continue;
            }
        };
        let frames = match file.frames() {
            Ok(it) => it,
            Err(e) => {
                ingest.damaged_captures += 1;
                capture_errors.push(e);
                continue;
            }
        };
        last_mapping = Some(file.bytes().clone());
        if let Some(b) = &bar {
            b.set_message(path.display().to_string());
        }
        // Learn each session's interface MAC from the start of the capture first, so
        // flow-direction does not depend on which flow happened to come first.
        for frame in frames.clone().take(LEARN_FRAMES).flatten() {
            if let Ok((ctx, view)) = parse::decode(frame.data, frame.link, opts.ports) {
                dispatcher.learn(&ctx, &view);
            }
        }
        for (n, frame) in frames.enumerate() {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    ingest.damaged_captures += 1;
                    capture_errors.push(e);
                    break;
                }
            };
            ingest.frames += 1;
            ingest.frame_bytes += frame.data.len() as u64;
            if n % 4096 == 0 {
                if let Some(b) = &bar {
                    b.set_position(done_bytes + frame.record_offset as u64);
                }
                if stop.load(Ordering::Relaxed) {
                    break 'files;
                }
            }
            let (ctx, view) = match parse::decode(frame.data, frame.link, opts.ports) {
                Ok(hit) => hit,
                Err(e) => {
                    ingest.decap_errors[e.index()] += 1;
                    continue;
                }
            };
            ingest.packets += 1;
            ingest.truncated += u64::from(view.truncated);
            ingest.tunnelled += u64::from(ctx.tunnel != Tunnel::None);
            // The payload stays in the mapped file; the batch holds the file, not a copy.
            let payload_at = frame.data.as_ptr() as usize - file.bytes().as_ptr() as usize
                + view.payload.0 as usize;
            dispatcher.push(
                &ctx,
                &view,
                frame.ts_ns,
                file.bytes(),
                payload_at,
                &mut ingest,
            );
        }
        done_bytes += file.bytes().len() as u64;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    dispatcher.finish();
    let mut cpu = ThreadCpu::default();

    let mut flows = FlowTableStats::default();
    let mut batch_ns = crate::telemetry::metrics::new_histogram();
    for t in worker_threads {
        let (s, hist, worker_cpu) = t
            .join()
            .map_err(|_| ReplayError::Output("a worker thread panicked".into()))?;
        cpu.workers += worker_cpu;
        let _ = batch_ns.add(&hist);
        flows.flows_created += s.flows_created;
        flows.records += s.records;
        flows.idle_expired += s.idle_expired;
        flows.packets += s.packets;
        flows.bytes += s.bytes;
        flows.truncated_packets += s.truncated_packets;
        flows.inspect_gaps += s.inspect_gaps;
        flows.evicted += s.evicted;
        flows.peak_flows += s.peak_flows;
    }
    drop(last_mapping);
    cpu.ingest = thread_cpu_time().saturating_sub(ingest_cpu0);
    let (written, writer_cpu) = writer_thread
        .join()
        .map_err(|_| ReplayError::Output("the writer thread panicked".into()))?;
    cpu.writer = writer_cpu;
    let records_written =
        written.map_err(|e| ReplayError::Output(format!("writing records: {e}")))?;
    Ok(ReplayOutcome {
        summary: RunSummary {
            ingest,
            flows,
            records_written,
            elapsed: started.elapsed(),
            workers,
        },
        capture_errors,
        interrupted: stop.load(Ordering::Relaxed),
        batch_ns,
        cpu,
    })
}

/// What workers tell the writer: records, and how far in packet time they have got.
enum ToWriter {
    Records(Vec<FlowRecord>),
    Watermark { worker: usize, ns: u64 },
}

/// Records the writer holds back for stable ordering; past this (a flood of one-packet
/// flows in one window), the oldest window is written early: nothing is lost, only the
/// order of that window may then depend on the worker count.
const MAX_PENDING_RECORDS: usize = 200_000;

/// A window's records are all emitted once every worker is this far past its end: the
/// late-packet grace, a sweep interval, and a margin (see `flow::table`).
const SEAL_AFTER_NS: u64 = crate::flow::table::LATE_PACKET_GRACE_NS
    + crate::flow::table::SWEEP_INTERVAL_NS
    + 5_000_000_000;

/// Packet time between two watermarks of one worker.
const WATERMARK_STEP_NS: u64 = 1_000_000_000;

fn run_worker(
    id: usize,
    mut table: FlowTable,
    rx: Receiver<Batch>,
    out: Sender<ToWriter>,
    pool: BatchPool,
) -> (
    FlowTableStats,
    hdrhistogram::Histogram<u64>,
    std::time::Duration,
) {
    let mut records = Vec::with_capacity(RECORD_BATCH);
    let mut hist = crate::telemetry::metrics::new_histogram();
    let mut mark_sent = 0u64;
    for batch in rx {
        let t0 = Instant::now();
        let mut latest = 0;
        for p in &batch.packets {
            table.process(p, batch.payload(p), &mut records);
            latest = latest.max(p.ts_ns);
        }
        let _ = hist.record((t0.elapsed().as_nanos() as u64).max(1));
        pool.give(batch);
        // The writer only needs to know when a window can be sealed, which is seconds
        // after it ends: a watermark per second of packet time is enough. One per
        // batch woke the writer ~5,000 times per GB for nothing (a sixth of its CPU
        // went to sleeping and waking). Records wait here for a full message or the
        // next watermark too: a twentieth as many messages as one per batch (~20
        // records each), though the writer's CPU did not move measurably with it.
        let mark_due = latest >= mark_sent.saturating_add(WATERMARK_STEP_NS);
        if records.len() >= RECORD_BATCH || (mark_due && !records.is_empty()) {
            let _ = out.send(ToWriter::Records(std::mem::replace(
                &mut records,
                Vec::with_capacity(RECORD_BATCH),
            )));
        }
        if mark_due {
            mark_sent = latest;
            let _ = out.send(ToWriter::Watermark {
                worker: id,
                ns: latest,
            });
        }
    }
    if !records.is_empty() {
        let _ = out.send(ToWriter::Records(std::mem::take(&mut records)));
    }
    table.flush_with(RECORD_BATCH, |chunk| {
        let _ = out.send(ToWriter::Records(std::mem::take(chunk)));
    });
    let _ = out.send(ToWriter::Watermark {
        worker: id,
        ns: u64::MAX,
    });
    (table.stats(), hist, thread_cpu_time())
}

/// Holds each window's records until every worker is past it, then writes them in a
/// stable order after the detectors have seen the whole window: so the output, findings
/// included, is the same for any number of workers.
fn write_records(
    mut w: RecordWriter,
    rx: Receiver<ToWriter>,
    mut detector: crate::detect::Detector,
    workers: usize,
    interval_s: u64,
) -> std::io::Result<u64> {
    let mut failure = None;
    let mut pending: std::collections::BTreeMap<u64, Vec<FlowRecord>> = Default::default();
    let mut marks = vec![0u64; workers];
    let mut held = 0usize;
    let mut write = |batch: &mut Vec<FlowRecord>,
                     w: &mut RecordWriter,
                     failure: &mut Option<std::io::Error>| {
        sort_window(batch);
        detector.observe(batch);
        if failure.is_none() {
            if let Err(e) = w.write_all(batch) {
                // Keep draining so workers never block on a dead writer.
                *failure = Some(e);
            }
        }
    };
    for msg in rx {
        match msg {
            ToWriter::Records(recs) => {
                held += recs.len();
                for r in recs {
                    pending
                        .entry(r.start - r.start % interval_s)
                        .or_default()
                        .push(r);
                }
                while held > MAX_PENDING_RECORDS {
                    let Some((_, mut batch)) = pending.pop_first() else {
                        break;
                    };
                    held -= batch.len();
                    write(&mut batch, &mut w, &mut failure);
                }
            }
            ToWriter::Watermark { worker, ns } => {
                marks[worker] = marks[worker].max(ns);
                let sealed_before = marks.iter().min().copied().unwrap_or(0);
                while let Some((&start, _)) = pending.first_key_value() {
                    let end_ns = (start + interval_s).saturating_mul(1_000_000_000);
                    if sealed_before != u64::MAX
                        && end_ns.saturating_add(SEAL_AFTER_NS) > sealed_before
                    {
                        break;
                    }
                    let Some((_, mut batch)) = pending.pop_first() else {
                        break;
                    };
                    held -= batch.len();
                    write(&mut batch, &mut w, &mut failure);
                }
            }
        }
    }
    while let Some((_, mut batch)) = pending.pop_first() {
        write(&mut batch, &mut w, &mut failure);
    }
    match failure {
        Some(e) => Err(e),
        None => w.finish(),
    }
}

/// An address as it sorts in output: `None` first, IPv4 before IPv6, then by octets.
fn ip_order(a: Option<std::net::IpAddr>) -> (u8, u128) {
    match a {
        None => (0, 0),
        Some(std::net::IpAddr::V4(v)) => (1, u128::from(u32::from(v))),
        Some(std::net::IpAddr::V6(v)) => (2, u128::from(v)),
    }
}

/// Puts one window's records in output order: start, VNI (`None` first), mirror source,
/// srcaddr, srcport, dstaddr, dstport, protocol, end, packets, bytes. That is a total
/// order on what a record says, so the output does not depend on the worker count or
/// on thread timing.
///
/// Why ranks: with the three addresses compared as (family, u128) the key was 176
/// bytes, and sorting a 47k-record window took 40-110 ms of the writer, serially after
/// the last packet. A window holds few distinct addresses (thousands), so each is
/// replaced by its rank among them, which compares the same and packs the key into
/// seven words. Ranks come from one hash lookup per address and a sort of the distinct
/// ones (a rank map filled and then looked up again was a third of the sort).
fn sort_window(batch: &mut [FlowRecord]) {
    // Each distinct address gets a slot in order of first sight (one hash lookup per
    // address of a record), then a rank by sorting the slots.
    let mut slot_of: std::collections::HashMap<(u8, u128), u32, ahash::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(batch.len(), Default::default());
    let mut addresses: Vec<(u8, u128)> = Vec::new();
    let slots: Vec<[u32; 3]> = batch
        .iter()
        .map(|r| {
            [r.mirror_source, Some(r.srcaddr), Some(r.dstaddr)].map(|a| {
                let a = ip_order(a);
                *slot_of.entry(a).or_insert_with(|| {
                    addresses.push(a);
                    (addresses.len() - 1) as u32
                })
            })
        })
        .collect();
    drop(slot_of);
    let mut by_address: Vec<u32> = (0..addresses.len() as u32).collect();
    by_address.sort_unstable_by_key(|&s| addresses[s as usize]);
    let mut rank = vec![0u64; addresses.len()];
    for (i, s) in by_address.iter().enumerate() {
        rank[*s as usize] = i as u64;
    }
    let rank_of = |slot: u32| rank[slot as usize];
    // Each key carries its record's index, so equal keys keep arrival order.
    let mut keys: Vec<([u64; 7], u32)> = batch
        .iter()
        .zip(&slots)
        .enumerate()
        .map(|(i, (r, [ms, src, dst]))| {
            (
                [
                    r.start,
                    // A VNI has 24 bits and a window fewer than 2^32 addresses, so each
                    // packed field keeps its place in the order.
                    (r.vni.map_or(0, |v| u64::from(v) + 1) << 32) | rank_of(*ms),
                    (rank_of(*src) << 16) | u64::from(r.srcport),
                    (rank_of(*dst) << 24) | (u64::from(r.dstport) << 8) | u64::from(r.protocol),
                    r.end,
                    r.packets,
                    r.bytes,
                ],
                i as u32,
            )
        })
        .collect();
    keys.sort_unstable();
    // Apply the order in place: position i takes the record the i-th key names,
    // following the chain of earlier swaps (as `sort_by_cached_key` does).
    let mut order: Vec<u32> = keys.into_iter().map(|(_, i)| i).collect();
    for i in 0..order.len() {
        let mut at = order[i] as usize;
        while at < i {
            at = order[at] as usize;
        }
        order[i] = at as u32;
        batch.swap(i, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LogStatus;
    use std::net::IpAddr;

    /// The output order spelled out field by field, as the doc of `sort_window` says.
    fn reference_key(r: &FlowRecord) -> impl Ord {
        (
            r.start,
            r.vni.map_or(0, |v| u64::from(v) + 1),
            ip_order(r.mirror_source),
            ip_order(Some(r.srcaddr)),
            r.srcport,
            ip_order(Some(r.dstaddr)),
            r.dstport,
            r.protocol,
            (r.end, r.packets, r.bytes),
        )
    }

    #[test]
    fn window_order_is_the_field_by_field_order() {
        // Few distinct values per field, so most records tie on the first fields and
        // the later ones decide; IPv4, IPv6 and missing mirror sources mixed.
        let addrs: Vec<IpAddr> = [
            "10.0.0.1",
            "10.0.0.2",
            "255.255.255.255",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "0.0.0.0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        // Many records share a key; their `truncated_packets` (not part of the key)
        // shows they keep arrival order.
        let batch: Vec<FlowRecord> = (0..5000)
            .map(|i| {
                let pick = |k: u64| addrs[k as usize];
                let mut r = FlowRecord::status_only(
                    None,
                    [None, Some(0), Some(7), Some(0xff_ffff)][next(4) as usize],
                    [None, Some(pick(next(7)))][next(2) as usize],
                    LogStatus::Ok,
                    1_700_000_000 + next(3),
                    1_700_000_000 + next(5),
                );
                r.srcaddr = pick(next(7));
                r.dstaddr = pick(next(7));
                r.srcport = [0, 80, 443, 65535][next(4) as usize];
                r.dstport = [0, 53, 65535][next(3) as usize];
                r.protocol = [1, 6, 17, 255][next(4) as usize];
                r.packets = next(3);
                r.bytes = next(2);
                r.truncated_packets = i;
                r
            })
            .collect();
        let mut expected = batch.clone();
        expected.sort_by_key(reference_key);
        let mut sorted = batch.clone();
        sort_window(&mut sorted);
        assert!(sorted == expected);
    }
}
