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

use super::window::{PendingWindow, WindowWriter};
use crate::config::{InspectConfig, SessionMap, Timeouts};
use crate::decap::{Tunnel, TunnelPorts};
use crate::dispatch::{Batch, BatchPool, Dispatcher, SessionKey, QUEUE_BATCHES};
use crate::flow::{FlowTable, FlowTableStats};
use crate::ingest::{CaptureError, CaptureFile};
use crate::parse;
use crate::record::{FlowRecord, RecordFormat};
use crate::sink::{Destination, RecordWriter};
use crate::telemetry::{thread_cpu_time, IngestStats, RunSummary};

/// Frames read ahead at the start of each capture to learn interface MACs.
const LEARN_FRAMES: usize = 100_000;

/// The read-ahead ends early after this many frames in a row that showed no session not
/// seen before, once every session seen has its MAC. Decoding all 100k frames took
/// ~10 ms of serial time per capture, mostly spent re-confirming sessions learned in
/// the first few frames, or on plain captures, which have no sessions to learn.
const LEARN_QUIET_FRAMES: usize = 10_000;

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
    /// Wall time in the learning passes over the start of each capture, and from the
    /// last packet read to the last record written (the tail: table flush and the last
    /// windows' ordering and encoding). Both are serial: the other threads wait.
    pub learn: std::time::Duration,
    pub tail: std::time::Duration,
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
            // Only an output that prints findings needs the detectors.
            let detector = opts
                .format
                .prints_findings()
                .then(|| crate::detect::Detector::new(opts.detect.clone(), opts.interval_s));
            let interval = opts.interval_s;
            move || {
                let (r, helpers) = write_records(writer, rec_rx, detector, workers, interval);
                (r, thread_cpu_time() + helpers)
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
                .spawn(move || run_worker(w, table, rx, rec_tx, pool, opts.interval_s))
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
    let mut learn = std::time::Duration::ZERO;
    // The last capture's mapping, held here until the last record is written: unmapping
    // it is a page-table walk over the whole file (~15 % of a flows-only worker's time
    // when the worker dropped the last batch) under the address-space lock, and while
    // that lock is held the writer's allocations wait (40 ms in the tail of a run whose
    // capture was cached in 4 KiB pages).
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
        let learn_t0 = Instant::now();
        learn_sessions(frames.clone(), opts.ports, &mut dispatcher);
        learn += learn_t0.elapsed();
        // Decoded in place, one packet after another (see `parse::decode_into`).
        let mut decoded = Default::default();
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
            if let Err(e) = parse::decode_into(frame.data, frame.link, opts.ports, &mut decoded) {
                ingest.decap_errors[e.index()] += 1;
                continue;
            }
            let (ctx, view) = &decoded;
            ingest.packets += 1;
            ingest.truncated += u64::from(view.truncated);
            ingest.tunnelled += u64::from(ctx.tunnel != Tunnel::None);
            // The payload stays in the mapped file; the batch holds the file, not a copy.
            let payload_at = frame.data.as_ptr() as usize - file.bytes().as_ptr() as usize
                + view.payload.0 as usize;
            dispatcher.push(
                ctx,
                view,
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
    let read_done = started.elapsed();
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
    let (written, writer_cpu) = writer_thread
        .join()
        .map_err(|_| ReplayError::Output("the writer thread panicked".into()))?;
    let elapsed = started.elapsed();
    drop(last_mapping);
    cpu.ingest = thread_cpu_time().saturating_sub(ingest_cpu0);
    cpu.writer = writer_cpu;
    let records_written =
        written.map_err(|e| ReplayError::Output(format!("writing records: {e}")))?;
    Ok(ReplayOutcome {
        summary: RunSummary {
            ingest,
            flows,
            records_written,
            elapsed,
            workers,
        },
        learn,
        tail: elapsed.saturating_sub(read_done),
        capture_errors,
        interrupted: stop.load(Ordering::Relaxed),
        batch_ns,
        cpu,
    })
}

/// The learning read-ahead over the start of one capture: up to `LEARN_FRAMES` frames,
/// or until `LEARN_QUIET_FRAMES` in a row brought no new session while every session
/// seen has its MAC. A session that first shows up later still learns its MAC from its
/// own traffic during dispatch. Returns the frames read.
fn learn_sessions(
    frames: crate::ingest::capture_file::FrameIter<'_>,
    ports: TunnelPorts,
    dispatcher: &mut Dispatcher,
) -> usize {
    let mut seen: std::collections::HashSet<SessionKey> = Default::default();
    let mut unlearned: std::collections::HashSet<SessionKey> = Default::default();
    // Frames come in runs from one session: one whose MAC is known needs no lookups.
    let mut last_learned: Option<SessionKey> = None;
    let mut quiet = 0;
    let mut read = 0;
    let mut decoded = Default::default();
    for frame in frames.take(LEARN_FRAMES).flatten() {
        if quiet >= LEARN_QUIET_FRAMES && unlearned.is_empty() {
            break;
        }
        read += 1;
        quiet += 1;
        if parse::decode_into(frame.data, frame.link, ports, &mut decoded).is_ok() {
            let (ctx, view) = &decoded;
            if ctx.mirror_source.is_some() {
                let session = (ctx.vni, ctx.mirror_source);
                if last_learned == Some(session) {
                    continue;
                }
                if seen.insert(session) {
                    quiet = 0;
                }
                if dispatcher.learn(ctx, view).is_some() {
                    unlearned.remove(&session);
                    last_learned = Some(session);
                } else {
                    unlearned.insert(session);
                }
            }
        }
    }
    read
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

/// The packet time at which a worker's next watermark can let the writer seal a
/// window: the first seal point (a window's end plus `SEAL_AFTER_NS`) after `latest`.
/// Marks in between would wake the writer for nothing.
fn next_seal_point(latest: u64, interval_s: u64) -> u64 {
    let interval_ns = interval_s.max(1).saturating_mul(1_000_000_000);
    let since_first = latest.saturating_sub(SEAL_AFTER_NS);
    (since_first / interval_ns + 1)
        .saturating_mul(interval_ns)
        .saturating_add(SEAL_AFTER_NS)
}

fn run_worker(
    id: usize,
    mut table: FlowTable,
    rx: Receiver<Batch>,
    out: Sender<ToWriter>,
    pool: BatchPool,
    interval_s: u64,
) -> (
    FlowTableStats,
    hdrhistogram::Histogram<u64>,
    std::time::Duration,
) {
    let mut records = Vec::with_capacity(RECORD_BATCH);
    let mut hist = crate::telemetry::metrics::new_histogram();
    let mut mark_due_at = 0u64;
    for batch in rx {
        let t0 = Instant::now();
        let mut latest = 0;
        for p in &batch.packets {
            table.process(p, batch.payload(p), &mut records);
            latest = latest.max(p.ts_ns);
        }
        let _ = hist.record((t0.elapsed().as_nanos() as u64).max(1));
        pool.give(batch);
        // The writer only needs to know when a window can be sealed: a watermark goes
        // out when this worker passes a seal point, once per window. One per batch
        // woke the writer ~5,000 times per GB for nothing (a sixth of its CPU went to
        // sleeping and waking), and one per second of packet time still ~1,300 times
        // in a 22-minute capture, each a switch on a core the worker shares with the
        // writer. Records wait here for a full message or the next watermark.
        let mark_due = latest >= mark_due_at;
        if records.len() >= RECORD_BATCH || (mark_due && !records.is_empty()) {
            let _ = out.send(ToWriter::Records(std::mem::replace(
                &mut records,
                Vec::with_capacity(RECORD_BATCH),
            )));
        }
        if mark_due {
            mark_due_at = next_seal_point(latest, interval_s);
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
/// included, is the same for any number of workers (see `window`). Also returns the CPU
/// time of the writer's helpers (sorting and encoding halves), which is its work too.
fn write_records(
    mut w: RecordWriter,
    rx: Receiver<ToWriter>,
    mut detector: Option<crate::detect::Detector>,
    workers: usize,
    interval_s: u64,
) -> (std::io::Result<u64>, std::time::Duration) {
    let mut failure: Option<std::io::Error> = None;
    let mut pending: std::collections::BTreeMap<u64, PendingWindow> = Default::default();
    let mut windows = WindowWriter::default();
    let mut marks = vec![0u64; workers];
    let mut held = 0usize;
    // Lines are encoded as records arrive when nothing sealing does can change them:
    // no detectors (the output prints no findings) and a line-by-line output.
    let encode_on_arrival = w.encodes_in_chunks() && !w.format().prints_findings();
    let mut write = |win: PendingWindow,
                     windows: &mut WindowWriter,
                     w: &mut RecordWriter,
                     failure: &mut Option<std::io::Error>| {
        // Once the output failed, keep draining so workers never block on a dead writer.
        let out = if failure.is_none() { Some(w) } else { None };
        if let Err(e) = windows.seal(win, detector.as_mut(), out) {
            *failure = Some(e);
        }
    };
    for msg in rx {
        match msg {
            ToWriter::Records(mut recs) => {
                if failure.is_some() {
                    // The output failed: records are drained, not kept, so workers
                    // never block on a dead writer.
                    continue;
                }
                held += recs.len();
                // A message's records nearly always share one window: they join it as
                // one run, and the rare record of another window starts the next run.
                while let Some(first) = recs.first() {
                    let start = first.start - first.start % interval_s;
                    let span = start..start.saturating_add(interval_s);
                    let mut run = match recs.iter().position(|r| !span.contains(&r.start)) {
                        Some(n) => {
                            let rest = recs.split_off(n);
                            std::mem::replace(&mut recs, rest)
                        }
                        None => std::mem::take(&mut recs),
                    };
                    let win = pending
                        .entry(start)
                        .or_insert_with(|| windows.take_window());
                    windows.make_room(win, run.len());
                    if encode_on_arrival {
                        win.append_encoded(&mut run, w.format());
                    } else {
                        win.append(&mut run);
                    }
                }
                while held > MAX_PENDING_RECORDS {
                    let Some((_, win)) = pending.pop_first() else {
                        break;
                    };
                    held -= win.len();
                    write(win, &mut windows, &mut w, &mut failure);
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
                    let Some((_, win)) = pending.pop_first() else {
                        break;
                    };
                    held -= win.len();
                    write(win, &mut windows, &mut w, &mut failure);
                }
            }
        }
    }
    while let Some((_, win)) = pending.pop_first() {
        write(win, &mut windows, &mut w, &mut failure);
    }
    let helpers = w.helper_cpu() + windows.helper_cpu();
    let result = match failure {
        Some(e) => Err(e),
        None => w.finish(),
    };
    // Every record is written by now. What the writer built up (the sealing buffers and
    // a recycled window, the detectors' per-source sets: ~1 ms to free) is freed on a
    // thread of its own, so the run ends when its output does. Without that thread it
    // is freed here.
    let leftovers = (windows, detector);
    let _ = std::thread::Builder::new()
        .name("mf-free".into())
        .spawn(move || {
            crate::telemetry::run_only_when_idle();
            drop(leftovers)
        });
    (result, helpers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seal points are a window's end plus `SEAL_AFTER_NS`; the next one is always
    /// after the packet time given, and only one falls in each interval.
    #[test]
    fn watermarks_are_due_at_each_windows_seal_point() {
        const S: u64 = 1_000_000_000;
        let seal_after = SEAL_AFTER_NS;
        assert_eq!(seal_after, 20 * S);
        for (latest, want) in [
            (0, 620 * S),
            (619 * S, 620 * S),
            (620 * S - 1, 620 * S),
            (620 * S, 1220 * S),
            (1_704_067_200 * S + 30 * S, 1_704_067_800 * S + 20 * S),
            (1_704_067_200 * S + 10 * S, 1_704_067_200 * S + 20 * S),
        ] {
            assert_eq!(next_seal_point(latest, 600), want, "latest {latest}");
        }
        // A one-second interval still steps, and the end of time does not overflow.
        assert_eq!(next_seal_point(25 * S, 1), 26 * S);
        assert!(next_seal_point(u64::MAX - 1, 600) >= u64::MAX - 1);
    }

    /// The read-ahead stops once quiet, and learns what reading all of it learns: on a
    /// plain capture (no sessions) after the quiet stretch, on a VXLAN one soon after
    /// its session's MAC.
    #[test]
    fn learning_stops_once_quiet_and_learns_the_same_macs() {
        let dir = std::env::temp_dir().join(format!("mf-learn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for vxlan in [None, Some(77)] {
            let path = dir.join(format!("learn-{vxlan:?}.pcap"));
            let g = crate::gen::GenOptions {
                flows: 1500,
                seed: 3,
                vxlan,
                truncate: None,
                ipv6_share: 0.2,
                delayed_ack: false,
            };
            crate::gen::write_capture(&path, &g).unwrap();
            let cap = CaptureFile::open(&path).unwrap();
            let frames = cap.frames().unwrap();
            let total = frames.clone().count();
            assert!(total > 2 * LEARN_QUIET_FRAMES, "{total} frames");
            let learned = |d: &Dispatcher| {
                d.learned_macs()
                    .map(|(k, m)| (*k, *m))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            let dispatcher = || {
                let (tx, _rx) = bounded(1);
                Dispatcher::new(vec![tx], Arc::new(SessionMap::default()))
            };
            let mut early = dispatcher();
            let read = learn_sessions(frames.clone(), TunnelPorts::default(), &mut early);
            let mut full = dispatcher();
            for frame in frames.take(LEARN_FRAMES).flatten() {
                if let Ok((ctx, view)) =
                    parse::decode(frame.data, frame.link, TunnelPorts::default())
                {
                    full.learn(&ctx, &view);
                }
            }
            assert_eq!(learned(&early), learned(&full), "{vxlan:?}");
            match vxlan {
                None => assert_eq!(read, LEARN_QUIET_FRAMES),
                Some(_) => {
                    assert_eq!(learned(&early).len(), 1);
                    assert!(read < 2 * LEARN_QUIET_FRAMES, "read {read}");
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
