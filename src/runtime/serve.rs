//! `serve`: the appliance. Receiver threads (one SO_REUSEPORT socket each, on the VXLAN
//! and GENEVE ports) decapsulate, filter by source CIDR and VNI, parse and dispatch by
//! the inner flow key to worker threads over bounded queues that drop, never block, when
//! full. Workers keep flow tables in wall-clock windows; a housekeeping thread turns
//! drops into SKIPDATA records and silent configured interfaces into NODATA records; one
//! writer owns the sink. A tokio control plane serves `/healthz` and `/metrics`.
//!
//! Shutdown (SIGTERM/SIGINT): receivers stop and hand over what they hold, workers drain
//! their tables, the writer flushes and completes its file, then the process exits 0.
//! SIGHUP completes the current output file and reloads the session mapping.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::{Config, SessionConfig, SessionMap};
use crate::decap::TunnelPorts;
use crate::dispatch::{Batch, BatchPool, Dispatcher, Overflow, SessionKey};
use crate::flow::FlowTable;
use crate::ingest::udp::{BatchReceiver, TunnelSocket, RECV_BATCH};
use crate::parse;
use crate::record::{FlowRecord, LogStatus, RecordFormat};
use crate::sink::Sink;
use crate::telemetry::metrics::{
    new_histogram, now_ns, ReceiverMetrics, ServeMetrics, SinkMetrics, WorkerMetrics,
};
use crate::telemetry::IngestStats;

const NS: u64 = 1_000_000_000;
/// Batches that may wait in one worker's queue in `serve`: about 64k packets, a few
/// tens of milliseconds of a busy link, so a worker that loses its core for a moment
/// (to the writer, another process) does not cost drops.
const SERVE_QUEUE_BATCHES: usize = 256;
/// How often threads publish metrics and look for a reloaded configuration.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Longest a received packet waits on the receiver for its worker batch to fill once
/// the socket is drained: a thousandth of the shortest aggregation window.
const HANDOVER_AFTER: Duration = Duration::from_millis(1);
/// A window's NODATA/SKIPDATA verdict waits this long after the window ends, so the
/// receivers' reports for it have arrived.
const WINDOW_SETTLE_S: u64 = 7;

/// Who may send, derived from the config; swapped on SIGHUP.
#[derive(Debug, Default)]
pub struct AllowList {
    sources: Vec<ipnet::IpNet>,
    /// `None`: any VNI (no allow-vnis and no sessions configured).
    vnis: Option<FxHashSet<u32>>,
}

impl AllowList {
    pub fn from_config(c: &Config) -> AllowList {
        let mut vnis: FxHashSet<u32> = c.serve.allow_vnis.iter().copied().collect();
        if vnis.is_empty() {
            vnis.extend(c.sessions.iter().map(|s| s.vni));
        }
        AllowList {
            sources: c.serve.allow_sources.clone(),
            vnis: (!vnis.is_empty()).then_some(vnis),
        }
    }

    pub fn source_ok(&self, ip: IpAddr) -> bool {
        self.sources.iter().any(|n| n.contains(&ip))
    }

    pub fn vni_ok(&self, vni: Option<u32>) -> bool {
        match (&self.vnis, vni) {
            (None, _) => true,
            (Some(set), Some(v)) => set.contains(&v),
            (Some(_), None) => false,
        }
    }
}

/// What threads take from the configuration: session map, allowlist, session list.
type ConfigState = (Arc<SessionMap>, Arc<AllowList>, Arc<Vec<SessionConfig>>);

/// Configuration state shared with every thread, replaced as a whole on SIGHUP.
pub struct SharedConfig {
    generation: AtomicU64,
    state: Mutex<ConfigState>,
}

impl SharedConfig {
    fn new(c: &Config) -> SharedConfig {
        SharedConfig {
            generation: AtomicU64::new(0),
            state: Mutex::new(Self::derive(c)),
        }
    }

    fn derive(c: &Config) -> ConfigState {
        (
            Arc::new(SessionMap::new(&c.sessions)),
            Arc::new(AllowList::from_config(c)),
            Arc::new(c.sessions.clone()),
        )
    }

    fn replace(&self, c: &Config) {
        if let Ok(mut s) = self.state.lock() {
            *s = Self::derive(c);
        }
        self.generation.fetch_add(1, Relaxed);
    }

    fn get(&self) -> ConfigState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

pub struct ServeOptions {
    pub config: Config,
    /// Re-read on SIGHUP for the session mapping.
    pub config_path: Option<PathBuf>,
    pub format: RecordFormat,
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// Totals printed when `serve` ends.
#[derive(Debug, Default, Clone)]
pub struct ServeSummary {
    pub datagrams: u64,
    pub rejected: u64,
    pub packets_accepted: u64,
    pub packets_dropped: u64,
    pub packets_in_records: u64,
    pub records_written: u64,
    pub nodata: u64,
    pub skipdata: u64,
}

impl ServeSummary {
    pub fn render(&self) -> String {
        format!(
            "mirrorflow serve summary\n  datagrams received {:>12}\n  datagrams rejected {:>12}\n  packets accepted   {:>12}\n  packets dropped    {:>12}\n  packets in records {:>12}\n  records written    {:>12}\n  NODATA records     {:>12}\n  SKIPDATA records   {:>12}\n",
            self.datagrams, self.rejected, self.packets_accepted, self.packets_dropped, self.packets_in_records, self.records_written, self.nodata, self.skipdata
        )
    }
}

enum Report {
    Seen(Vec<(SessionKey, u64)>),
    Drops(Vec<(SessionKey, u64, u64)>),
}

pub fn serve(opts: ServeOptions) -> Result<ServeSummary, String> {
    let cfg = opts.config;
    if cfg.serve.allow_sources.is_empty() {
        return Err("key 'serve.allow-sources' is empty: list the networks allowed to send mirror traffic (anyone who reaches the port could otherwise forge records)".into());
    }
    let interval = cfg.capture.interval;
    let workers = match cfg.serve.workers {
        0 => thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let ports = TunnelPorts {
        vxlan: cfg.capture.vxlan_port,
        geneve: cfg.capture.geneve_port,
    };
    let shared = Arc::new(SharedConfig::new(&cfg));

    // Sockets and the control port first: a bind error ends the start cleanly.
    let mut sockets = Vec::new();
    let mut bound_ports = Vec::new();
    for wanted in [ports.vxlan, ports.geneve] {
        // Port 0: the first socket gets a free port, the other receivers share it.
        let mut port = wanted;
        for _ in 0..cfg.serve.receivers {
            let s = TunnelSocket::bind(cfg.serve.listen, port, cfg.serve.recv_buffer)
                .map_err(|e| format!("cannot bind UDP {}:{port}: {e}", cfg.serve.listen))?;
            port = s.local_port();
            // Linux reports twice the usable size it granted.
            if s.granted_recv_buffer / 2 < cfg.serve.recv_buffer {
                eprintln!(
                    "mirrorflow: warning: UDP {port}: receive buffer is {} bytes, {} asked; the kernel caps it at net.core.rmem_max (install systemd/99-mirrorflow.conf)",
                    s.granted_recv_buffer / 2,
                    cfg.serve.recv_buffer
                );
            }
            sockets.push(s);
        }
        bound_ports.push(port);
    }
    let ports = TunnelPorts {
        vxlan: bound_ports[0],
        geneve: bound_ports[1],
    };
    let control = std::net::TcpListener::bind(cfg.serve.control).map_err(|e| {
        format!(
            "key 'serve.control' = \"{}\": cannot bind: {e}",
            cfg.serve.control
        )
    })?;
    let control_addr = control
        .local_addr()
        .map_err(|e| format!("control port: {e}"))?;

    let sink = match cfg.sink.kind.as_str() {
        "files" => Sink::Files {
            files: crate::sink::files::RotatingFiles::new(cfg.sink.clone(), opts.format.clone())
                .map(Box::new)
                .map_err(|e| {
                    format!(
                        "{}: cannot create output directory: {e}",
                        cfg.sink.directory.display()
                    )
                })?,
            format: opts.format.clone(),
            line: String::new(),
            written: 0,
        },
        _ => Sink::Stream(
            crate::sink::RecordWriter::open(&crate::sink::Destination::Stdout, opts.format.clone())
                .map_err(|e| format!("stdout: {e}"))?,
        ),
    };

    let sink_metrics = Arc::new(SinkMetrics::default());
    if let Ok(mut k) = sink_metrics.kind.lock() {
        *k = cfg.sink.kind.clone();
    }
    sink_metrics.heartbeat_ns.store(now_ns(), Relaxed);
    let reopen = Arc::new(AtomicBool::new(false));
    let (rec_tx, rec_rx) = bounded::<Vec<FlowRecord>>(1024);
    let writer = {
        let m = sink_metrics.clone();
        let reopen = reopen.clone();
        // Only an output that prints findings needs the detectors.
        let detector = opts
            .format
            .prints_findings()
            .then(|| crate::detect::Detector::new(cfg.detect.clone(), interval));
        spawn("mf-writer", move || {
            run_writer(sink, rec_rx, m, reopen, detector)
        })?
    };

    let mut senders = Vec::new();
    let mut queue_len: Vec<Box<dyn Fn() -> usize + Send + Sync>> = Vec::new();
    let mut worker_metrics = Vec::new();
    let mut worker_threads = Vec::new();
    let pool = BatchPool::new(workers * (SERVE_QUEUE_BATCHES + 2));
    for w in 0..workers {
        let (tx, rx) = bounded::<Batch>(SERVE_QUEUE_BATCHES);
        senders.push(tx);
        let probe = rx.clone();
        queue_len.push(Box::new(move || probe.len()));
        let m = Arc::new(WorkerMetrics::default());
        m.heartbeat_ns.store(now_ns(), Relaxed);
        worker_metrics.push(m.clone());
        let mut table = FlowTable::with_inspection(
            interval,
            &cfg.timeouts,
            shared.get().0,
            cfg.inspect.clone(),
        );
        table.set_max_flows(cfg.limits.max_flows / workers);
        let (out, shared, pool) = (rec_tx.clone(), shared.clone(), pool.clone());
        worker_threads.push(spawn(&format!("mf-worker-{w}"), move || {
            run_worker(table, rx, out, m, shared, pool)
        })?);
    }

    let (report_tx, report_rx) = unbounded::<Report>();
    let receiver_stop = Arc::new(AtomicBool::new(false));
    let mut receiver_metrics = Vec::new();
    let mut receiver_threads = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let m = Arc::new(ReceiverMetrics::new(workers));
        m.port.store(u64::from(socket.port), Relaxed);
        m.recv_buffer_bytes
            .store((socket.granted_recv_buffer / 2) as u64, Relaxed);
        m.heartbeat_ns.store(now_ns(), Relaxed);
        receiver_metrics.push(m.clone());
        let ctx = ReceiverCtx {
            senders: senders.clone(),
            pool: pool.clone(),
            shared: shared.clone(),
            metrics: m,
            reports: report_tx.clone(),
            stop: receiver_stop.clone(),
            ports,
            interval,
        };
        receiver_threads.push(spawn(&format!("mf-recv-{i}"), move || {
            run_receiver(BatchReceiver::new(socket), ctx)
        })?);
    }
    drop(senders);
    drop(report_tx);
    let serve_metrics = Arc::new(ServeMetrics {
        receivers: receiver_metrics,
        workers: worker_metrics,
        sink: sink_metrics.clone(),
        queue_len,
        queue_capacity: SERVE_QUEUE_BATCHES,
        nodata_records: AtomicU64::new(0),
        skipdata_records: AtomicU64::new(0),
    });
    let housekeeping = {
        let (out, shared, m) = (rec_tx.clone(), shared.clone(), serve_metrics.clone());
        spawn("mf-housekeeping", move || {
            run_housekeeping(report_rx, out, shared, m, interval)
        })?
    };
    drop(rec_tx);

    let control_stop = Arc::new(AtomicBool::new(false));
    let control_thread = {
        let (m, stop) = (serve_metrics.clone(), control_stop.clone());
        spawn("mf-control", move || run_control(control, m, stop))?
    };

    eprintln!(
        "mirrorflow: receiving VXLAN on {listen}:{}, GENEVE on {listen}:{}; control on http://{}",
        ports.vxlan,
        ports.geneve,
        control_addr,
        listen = cfg.serve.listen,
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("receiving"),
    ]);
    let watchdog = sd_notify::watchdog_enabled();
    let mut last_ping = Instant::now();
    while !opts.stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(100));
        if opts.reload.swap(false, Relaxed) {
            reopen.store(true, Relaxed);
            if let Some(path) = &opts.config_path {
                match Config::load(path) {
                    Ok(c) if c.serve.allow_sources.is_empty() => eprintln!(
                        "mirrorflow: SIGHUP: keeping the running sessions: {}: key 'serve.allow-sources' is empty",
                        path.display()
                    ),
                    Ok(c) => {
                        shared.replace(&c);
                        eprintln!(
                            "mirrorflow: SIGHUP: reloaded sessions from {}",
                            path.display()
                        );
                    }
                    Err(e) => eprintln!("mirrorflow: SIGHUP: keeping the running sessions: {e}"),
                }
            }
        }
        if watchdog.is_some_and(|w| last_ping.elapsed() >= w / 2) {
            // Only a healthy appliance pets the watchdog, so systemd restarts a wedged one.
            if serve_metrics.health(now_ns()).0 {
                eprintln!(
        "mirrorflow: receiving VXLAN on {listen}:{}, GENEVE on {listen}:{}; control on http://{}",
        ports.vxlan,
        ports.geneve,
        control_addr,
        listen = cfg.serve.listen,
    );
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            last_ping = Instant::now();
        }
    }

    eprintln!(
        "mirrorflow: receiving VXLAN on {listen}:{}, GENEVE on {listen}:{}; control on http://{}",
        ports.vxlan,
        ports.geneve,
        control_addr,
        listen = cfg.serve.listen,
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    receiver_stop.store(true, Relaxed);
    let join_err = |what: &str| format!("the {what} thread panicked");
    for t in receiver_threads {
        t.join().map_err(|_| join_err("receiver"))?;
    }
    for t in worker_threads {
        t.join().map_err(|_| join_err("worker"))?;
    }
    housekeeping.join().map_err(|_| join_err("housekeeping"))?;
    let written = writer.join().map_err(|_| join_err("writer"))?;
    control_stop.store(true, Relaxed);
    let _ = control_thread.join();
    let written = written.map_err(|e| format!("writing records: {e}"))?;

    let m = &serve_metrics;
    let sum = |f: &dyn Fn(&ReceiverMetrics) -> u64| m.receivers.iter().map(|r| f(r)).sum::<u64>();
    Ok(ServeSummary {
        datagrams: sum(&|r| r.datagrams.load(Relaxed)),
        rejected: sum(&|r| {
            r.rejected_source.load(Relaxed)
                + r.rejected_vni.load(Relaxed)
                + r.oversized.load(Relaxed)
        }),
        packets_accepted: sum(&|r| {
            r.packets_dispatched.load(Relaxed) + r.packets_dropped.load(Relaxed)
        }),
        packets_dropped: sum(&|r| r.packets_dropped.load(Relaxed)),
        packets_in_records: m.workers.iter().map(|w| w.packets.load(Relaxed)).sum(),
        records_written: written,
        nodata: m.nodata_records.load(Relaxed),
        skipdata: m.skipdata_records.load(Relaxed),
    })
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, String> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

struct ReceiverCtx {
    senders: Vec<Sender<Batch>>,
    pool: BatchPool,
    shared: Arc<SharedConfig>,
    metrics: Arc<ReceiverMetrics>,
    reports: Sender<Report>,
    stop: Arc<AtomicBool>,
    ports: TunnelPorts,
    interval: u64,
}

fn run_receiver(mut rx: BatchReceiver, c: ReceiverCtx) {
    let m = &c.metrics;
    let (mut sessions, mut allow, _) = c.shared.get();
    let mut generation = c.shared.generation.load(Relaxed);
    let mut dispatcher =
        Dispatcher::with_overflow(c.senders, sessions.clone(), Overflow::Drop, c.interval)
            .with_pool(c.pool);
    let mut ingest = IngestStats::default();
    let mut per_vni: FxHashMap<u32, [u64; 3]> = FxHashMap::default();
    let mut seen: FxHashMap<SessionKey, u64> = FxHashMap::default();
    let mut newly_seen = Vec::new();
    let mut last_publish = Instant::now();
    let mut errors_logged = 0u32;
    let port = rx.port();
    // When the oldest packet not yet handed to a worker arrived.
    let mut pending_since: Option<Instant> = None;
    loop {
        let stopping = c.stop.load(Relaxed);
        if !stopping {
            m.heartbeat_ns.store(now_ns(), Relaxed);
            match rx.recv() {
                Ok((slab, datagrams)) => {
                    // The clock is read once per batch (STYLE 9).
                    let now = now_ns();
                    let window = {
                        let s = now / NS;
                        s - s % c.interval
                    };
                    for d in datagrams {
                        m.datagrams.fetch_add(1, Relaxed);
                        if d.truncated {
                            m.oversized.fetch_add(1, Relaxed);
                            continue;
                        }
                        if !allow.source_ok(d.source) {
                            m.rejected_source.fetch_add(1, Relaxed);
                            continue;
                        }
                        let payload = &slab[d.offset..d.offset + d.len];
                        let (ctx, view) =
                            match parse::decode_datagram(payload, port, d.source, c.ports) {
                                Ok(hit) => hit,
                                Err(e) => {
                                    m.decap_errors[e.index()].fetch_add(1, Relaxed);
                                    continue;
                                }
                            };
                        if !allow.vni_ok(ctx.vni) {
                            m.rejected_vni.fetch_add(1, Relaxed);
                            continue;
                        }
                        if view.truncated {
                            m.truncated_packets.fetch_add(1, Relaxed);
                        }
                        let e = per_vni.entry(ctx.vni.unwrap_or(0)).or_default();
                        e[0] += 1;
                        e[1] += 1;
                        e[2] += u64::from(view.ip_len);
                        let key = (ctx.vni, ctx.mirror_source);
                        if seen.get(&key) != Some(&window) {
                            seen.insert(key, window);
                            newly_seen.push((key, window));
                        }
                        dispatcher.push(
                            &ctx,
                            &view,
                            now,
                            &slab,
                            d.offset + view.payload.0 as usize,
                            &mut ingest,
                        );
                    }
                    // Under load the socket returns full batches: let worker batches fill
                    // up (fewer, larger hand-overs). Once the socket is drained, what is
                    // pending is handed over when it has waited `HANDOVER_AFTER` or the
                    // link went quiet (a receive timed out): handing over each trickle
                    // woke the worker once per datagram at ~150k datagrams/s.
                    if !datagrams.is_empty() && pending_since.is_none() {
                        pending_since = Some(Instant::now());
                    }
                    if datagrams.len() < RECV_BATCH
                        && pending_since
                            .is_some_and(|t| datagrams.is_empty() || t.elapsed() >= HANDOVER_AFTER)
                    {
                        dispatcher.flush();
                        pending_since = None;
                    }
                }
                Err(e) => {
                    if errors_logged < 10 {
                        eprintln!("mirrorflow: receive error on UDP {port}: {e}");
                        errors_logged += 1;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if stopping || last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            dispatcher.flush();
            pending_since = None;
            m.packets_dispatched
                .store(dispatcher.dispatched_packets, Relaxed);
            m.packets_dropped
                .store(dispatcher.dropped_packets.iter().sum(), Relaxed);
            for (w, n) in dispatcher.dropped_packets.iter().enumerate() {
                m.queue_drops[w].store(*n, Relaxed);
                m.queue_drop_batches[w].store(dispatcher.dropped_batches[w], Relaxed);
            }
            if let Ok(mut snap) = m.per_vni.lock() {
                snap.clone_from(&per_vni);
            }
            if !newly_seen.is_empty() {
                let _ = c
                    .reports
                    .send(Report::Seen(std::mem::take(&mut newly_seen)));
            }
            let drops = dispatcher.take_drops();
            if !drops.is_empty() {
                let _ = c.reports.send(Report::Drops(drops));
            }
            let g = c.shared.generation.load(Relaxed);
            if g != generation {
                generation = g;
                let (s, a, _) = c.shared.get();
                sessions = s;
                allow = a;
                dispatcher.set_sessions(sessions.clone());
            }
        }
        if stopping {
            break;
        }
    }
    // Dropping the dispatcher closes this receiver's side of every worker queue.
    drop(dispatcher.finish());
    m.exited.store(1, Relaxed);
}

fn run_worker(
    mut table: FlowTable,
    rx: Receiver<Batch>,
    out: Sender<Vec<FlowRecord>>,
    m: Arc<WorkerMetrics>,
    shared: Arc<SharedConfig>,
    pool: BatchPool,
) {
    let mut records = Vec::new();
    let mut hist = new_histogram();
    let mut generation = shared.generation.load(Relaxed);
    let mut last_publish = Instant::now();
    loop {
        m.heartbeat_ns.store(now_ns(), Relaxed);
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(batch) => {
                let t0 = Instant::now();
                for p in &batch.packets {
                    table.process(p, batch.payload(p), &mut records);
                }
                let _ = hist.record((t0.elapsed().as_nanos() as u64).max(1));
                pool.give(batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            // Wall-clock windows close even when no packet arrives.
            table.sweep(now_ns(), &mut records);
            publish_worker(&table, &m, &hist);
            let g = shared.generation.load(Relaxed);
            if g != generation {
                generation = g;
                table.set_sessions(shared.get().0);
            }
        }
        if !records.is_empty() {
            let _ = out.send(std::mem::take(&mut records));
        }
    }
    table.flush(&mut records);
    if !records.is_empty() {
        let _ = out.send(records);
    }
    publish_worker(&table, &m, &hist);
    m.exited.store(1, Relaxed);
}

fn publish_worker(table: &FlowTable, m: &WorkerMetrics, hist: &hdrhistogram::Histogram<u64>) {
    let s = table.stats();
    m.active_flows.store(table.active_flows() as u64, Relaxed);
    m.flows_created.store(s.flows_created, Relaxed);
    m.idle_expired.store(s.idle_expired, Relaxed);
    m.records.store(s.records, Relaxed);
    m.packets.store(s.packets, Relaxed);
    m.inspect_gaps.store(s.inspect_gaps, Relaxed);
    m.evicted.store(s.evicted, Relaxed);
    m.last_eviction_ns.store(table.last_eviction_ns, Relaxed);
    if let Ok(mut h) = m.batch_ns.lock() {
        *h = Some(hist.clone());
    }
}

fn run_housekeeping(
    rx: Receiver<Report>,
    out: Sender<Vec<FlowRecord>>,
    shared: Arc<SharedConfig>,
    m: Arc<ServeMetrics>,
    interval: u64,
) {
    let start_s = now_ns() / NS;
    let mut next_window = start_s - start_s % interval;
    let mut seen: HashSet<(SessionKey, u64)> = HashSet::new();
    let mut drops: HashMap<(SessionKey, u64), u64> = HashMap::new();
    let emit = |records: Vec<FlowRecord>| {
        for r in &records {
            match r.log_status {
                LogStatus::NoData => m.nodata_records.fetch_add(1, Relaxed),
                _ => m.skipdata_records.fetch_add(1, Relaxed),
            };
        }
        if !records.is_empty() {
            let _ = out.send(records);
        }
    };
    loop {
        let disconnected = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Report::Seen(v)) => {
                seen.extend(v);
                false
            }
            Ok(Report::Drops(v)) => {
                for (k, w, n) in v {
                    *drops.entry((k, w)).or_default() += n;
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let now_s = now_ns() / NS;
        while now_s >= next_window + interval + WINDOW_SETTLE_S {
            let (sessions, _, configured) = shared.get();
            emit(close_window(
                next_window,
                interval,
                &mut seen,
                &mut drops,
                &sessions,
                &configured,
            ));
            next_window += interval;
        }
        if disconnected {
            // Shutdown: drops of unfinished windows still become SKIPDATA records, so
            // every drop stays visible in the output.
            let sessions = shared.get().0;
            emit(skipdata_records(&mut drops, None, interval, &sessions));
            break;
        }
    }
}

/// SKIPDATA records for the drops of windows up to `upto` (all when `None`).
fn skipdata_records(
    drops: &mut HashMap<(SessionKey, u64), u64>,
    upto: Option<u64>,
    interval: u64,
    sessions: &SessionMap,
) -> Vec<FlowRecord> {
    let mut due: Vec<_> = drops
        .keys()
        .filter(|(_, w)| upto.is_none_or(|u| *w <= u))
        .copied()
        .collect();
    due.sort();
    due.into_iter()
        .map(|k| {
            drops.remove(&k);
            let ((vni, src), w) = k;
            let iface = sessions.lookup(vni, src).map(|s| s.info.clone());
            FlowRecord::status_only(iface, vni, src, LogStatus::SkipData, w, w + interval - 1)
        })
        .collect()
}

/// The interface-level records of window `w`: SKIPDATA where packets were dropped,
/// NODATA for each configured session that sent nothing (aws-spec §2.4 log-status).
fn close_window(
    w: u64,
    interval: u64,
    seen: &mut HashSet<(SessionKey, u64)>,
    drops: &mut HashMap<(SessionKey, u64), u64>,
    sessions: &SessionMap,
    configured: &[SessionConfig],
) -> Vec<FlowRecord> {
    let mut recs = skipdata_records(drops, Some(w), interval, sessions);
    for s in configured {
        let active = seen.iter().any(|((vni, src), sw)| {
            *sw == w
                && *vni == Some(s.vni)
                && (s.mirror_source.is_none() || *src == s.mirror_source)
        });
        if !active {
            let iface = sessions
                .lookup(Some(s.vni), s.mirror_source)
                .map(|e| e.info.clone());
            recs.push(FlowRecord::status_only(
                iface,
                Some(s.vni),
                s.mirror_source,
                LogStatus::NoData,
                w,
                w + interval - 1,
            ));
        }
    }
    seen.retain(|(_, sw)| *sw > w);
    recs
}

fn run_writer(
    mut sink: Sink,
    rx: Receiver<Vec<FlowRecord>>,
    m: Arc<SinkMetrics>,
    reopen: Arc<AtomicBool>,
    mut detector: Option<crate::detect::Detector>,
) -> std::io::Result<u64> {
    let mut delay = new_histogram();
    let mut last_tick = Instant::now();
    let mut failure = None;
    loop {
        m.heartbeat_ns.store(now_ns(), Relaxed);
        let done = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(mut batch) => {
                if let Some(d) = detector.as_mut() {
                    d.observe(&mut batch);
                }
                let now_s = now_ns() / NS;
                for r in &batch {
                    let _ = delay.record((now_s.saturating_sub(r.end) * 1000).max(1));
                }
                if let Err(e) = sink.write_all(&batch) {
                    m.write_errors.fetch_add(1, Relaxed);
                    eprintln!("mirrorflow: writing records: {e}");
                    failure = Some(e);
                }
                m.records_written.store(sink.written(), Relaxed);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if reopen.swap(false, Relaxed) {
            if let Err(e) = sink.reopen() {
                eprintln!("mirrorflow: SIGHUP: reopening output: {e}");
            }
        }
        if last_tick.elapsed() >= PUBLISH_EVERY {
            last_tick = Instant::now();
            if let Err(e) = sink.tick() {
                m.write_errors.fetch_add(1, Relaxed);
                eprintln!("mirrorflow: output: {e}");
            }
            if let Ok(mut h) = m.delay_ms.lock() {
                *h = Some(delay.clone());
            }
        }
        if done {
            break;
        }
    }
    let written = sink.finish()?;
    m.records_written.store(written, Relaxed);
    match failure {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// The control plane: a small HTTP/1.1 server on tokio for `/healthz` and `/metrics`.
fn run_control(listener: std::net::TcpListener, m: Arc<ServeMetrics>, stop: Arc<AtomicBool>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mirrorflow: control plane: {e}");
            return;
        }
    };
    rt.block_on(async move {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        while !stop.load(Relaxed) {
            let Ok(accepted) =
                tokio::time::timeout(Duration::from_millis(200), listener.accept()).await
            else {
                continue;
            };
            let Ok((stream, _)) = accepted else { continue };
            let m = m.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), handle_http(stream, m)).await;
            });
        }
    });
}

async fn handle_http(
    mut stream: tokio::net::TcpStream,
    m: Arc<ServeMetrics>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let mut used = 0;
    let (status, ctype, body) = loop {
        let n = stream.read(&mut buf[used..]).await?;
        if n == 0 {
            return Ok(());
        }
        used += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..used]) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
                break match (req.method.unwrap_or(""), path) {
                    ("GET" | "HEAD", "/healthz") => {
                        let (ok, reason) = m.health(now_ns());
                        (
                            if ok {
                                "200 OK"
                            } else {
                                "503 Service Unavailable"
                            },
                            "text/plain",
                            format!("{reason}\n"),
                        )
                    }
                    ("GET" | "HEAD", "/metrics") => {
                        ("200 OK", "text/plain; version=0.0.4", m.render())
                    }
                    ("GET" | "HEAD", _) => (
                        "404 Not Found",
                        "text/plain",
                        "try /healthz or /metrics\n".into(),
                    ),
                    _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
                };
            }
            Ok(httparse::Status::Partial) if used < buf.len() => continue,
            _ => break ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        }
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_close_gives_nodata_and_skipdata() {
        let configured = vec![
            SessionConfig {
                vni: 1,
                interface_id: Some("eni-1".into()),
                ..Default::default()
            },
            SessionConfig {
                vni: 2,
                interface_id: Some("eni-2".into()),
                ..Default::default()
            },
        ];
        let sessions = SessionMap::new(&configured);
        let src: Option<IpAddr> = Some("10.0.0.5".parse().unwrap());
        let mut seen: HashSet<(SessionKey, u64)> = [((Some(1), src), 600)].into_iter().collect();
        let mut drops: HashMap<(SessionKey, u64), u64> =
            [(((Some(1), src), 600), 42)].into_iter().collect();
        let recs = close_window(600, 600, &mut seen, &mut drops, &sessions, &configured);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].log_status, LogStatus::SkipData);
        assert_eq!(recs[0].vni, Some(1));
        assert_eq!(recs[1].log_status, LogStatus::NoData);
        assert_eq!(recs[1].vni, Some(2));
        assert_eq!((recs[1].start, recs[1].end), (600, 1199));
        assert_eq!(
            recs[1].interface.as_ref().unwrap().interface_id.as_deref(),
            Some("eni-2")
        );
        assert!(seen.is_empty() && drops.is_empty());
        let mut s = String::new();
        crate::record::RecordFormat::default_text().write(&recs[1], &mut s);
        assert_eq!(s, "2 - eni-2 - - - - - - - 600 1199 - NODATA\n");
    }

    #[test]
    fn full_queue_drops_and_counts_per_window() {
        let (tx, _rx) = bounded::<Batch>(1);
        let mut d = Dispatcher::with_overflow(
            vec![tx],
            Arc::new(SessionMap::default()),
            Overflow::Drop,
            60,
        );
        let frame = crate::decap::tests_support::aws_frame();
        let dec = crate::decap::decapsulate(
            &frame,
            crate::ingest::LinkType::Ethernet,
            TunnelPorts::default(),
        )
        .unwrap();
        let view = parse::view(&frame, &dec).unwrap();
        let mut stats = IngestStats::default();
        for i in 0..3u64 {
            d.push(
                &dec.ctx,
                &view,
                (120 + i) * NS,
                &bytes::Bytes::new(),
                0,
                &mut stats,
            );
            d.flush();
        }
        // The first batch fits the queue, the next two are dropped, never blocking.
        assert_eq!(d.dispatched_packets, 1);
        assert_eq!(d.dropped_packets, vec![2]);
        let drops = d.take_drops();
        assert_eq!(
            drops,
            vec![(
                (Some(5_569_041), Some("172.31.0.238".parse().unwrap())),
                120,
                2
            )]
        );
    }

    #[test]
    fn allowlist_by_cidr_and_vni() {
        let mut c = Config::default();
        c.serve.allow_sources = vec!["10.0.0.0/8".parse().unwrap()];
        c.sessions.push(SessionConfig {
            vni: 7,
            ..Default::default()
        });
        let a = AllowList::from_config(&c);
        assert!(a.source_ok("10.1.2.3".parse().unwrap()));
        assert!(!a.source_ok("192.0.2.1".parse().unwrap()));
        assert!(a.vni_ok(Some(7)));
        assert!(!a.vni_ok(Some(8)));
        assert!(!a.vni_ok(None));
        c.sessions.clear();
        assert!(AllowList::from_config(&c).vni_ok(Some(8)));
    }
}
