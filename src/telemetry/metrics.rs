//! Live metrics of `serve`, rendered in the Prometheus text exposition format, and the
//! health verdict for load-balancer checks.
//!
//! Every thread owns its metrics block and is its only writer (relaxed atomic stores,
//! or a snapshot swapped in about once a second for maps and histograms); the control
//! plane only reads. Nothing here is shared between workers on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use crate::decap::DecapError;

/// A thread that has not reported for this long is considered dead.
pub const HEARTBEAT_STALE_NS: u64 = 3_000_000_000;

/// Health stays degraded this long after a flow table had to evict for lack of room.
pub const EVICTION_DEGRADED_NS: u64 = 10_000_000_000;

/// A worker queue this full (share of capacity) marks the appliance unhealthy.
pub const QUEUE_SATURATED: f64 = 0.9;

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Per-VNI traffic: datagrams, inner packets, inner IP bytes.
pub type VniCounters = FxHashMap<u32, [u64; 3]>;

#[derive(Default)]
pub struct ReceiverMetrics {
    pub port: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    pub exited: AtomicU64,
    pub recv_buffer_bytes: AtomicU64,
    pub datagrams: AtomicU64,
    pub rejected_source: AtomicU64,
    pub rejected_vni: AtomicU64,
    pub oversized: AtomicU64,
    pub decap_errors: [AtomicU64; DecapError::KINDS.len()],
    pub truncated_packets: AtomicU64,
    /// Packets handed to a worker queue, and packets dropped because it was full.
    pub packets_dispatched: AtomicU64,
    pub packets_dropped: AtomicU64,
    /// Per destination worker: packets and batches dropped on a full queue.
    pub queue_drops: Vec<AtomicU64>,
    pub queue_drop_batches: Vec<AtomicU64>,
    pub per_vni: Mutex<VniCounters>,
}

impl ReceiverMetrics {
    pub fn new(workers: usize) -> ReceiverMetrics {
        ReceiverMetrics {
            queue_drops: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            queue_drop_batches: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }
}

#[derive(Default)]
pub struct WorkerMetrics {
    pub heartbeat_ns: AtomicU64,
    pub exited: AtomicU64,
    pub active_flows: AtomicU64,
    pub flows_created: AtomicU64,
    pub idle_expired: AtomicU64,
    pub records: AtomicU64,
    pub packets: AtomicU64,
    /// Connections whose inspection ended at a hole or a truncated segment.
    pub inspect_gaps: AtomicU64,
    /// Flows written out early because the table was full, and when that last happened.
    pub evicted: AtomicU64,
    pub last_eviction_ns: AtomicU64,
    /// Batch processing time in ns (snapshot).
    pub batch_ns: Mutex<Option<Histogram<u64>>>,
}

#[derive(Default)]
pub struct SinkMetrics {
    pub kind: Mutex<String>,
    pub records_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    /// Delay from a record's last packet to its write, in ms (snapshot).
    pub delay_ms: Mutex<Option<Histogram<u64>>>,
}

/// Everything the control plane can see.
pub struct ServeMetrics {
    pub receivers: Vec<Arc<ReceiverMetrics>>,
    pub workers: Vec<Arc<WorkerMetrics>>,
    pub sink: Arc<SinkMetrics>,
    /// Current length of each worker queue, read from the queue itself.
    pub queue_len: Vec<Box<dyn Fn() -> usize + Send + Sync>>,
    pub queue_capacity: usize,
    pub nodata_records: AtomicU64,
    pub skipdata_records: AtomicU64,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("static histogram bounds are valid")
}

impl ServeMetrics {
    /// `(healthy, reason)`: every receiver and worker alive, no queue saturated.
    pub fn health(&self, now: u64) -> (bool, String) {
        for (i, r) in self.receivers.iter().enumerate() {
            if r.exited.load(Relaxed) != 0
                || now.saturating_sub(r.heartbeat_ns.load(Relaxed)) > HEARTBEAT_STALE_NS
            {
                return (false, format!("receiver {i} is not running"));
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            if w.exited.load(Relaxed) != 0
                || now.saturating_sub(w.heartbeat_ns.load(Relaxed)) > HEARTBEAT_STALE_NS
            {
                return (false, format!("worker {i} is not running"));
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            if now.saturating_sub(w.last_eviction_ns.load(Relaxed)) < EVICTION_DEGRADED_NS {
                return (
                    false,
                    format!("degraded: worker {i} flow table full, evicting oldest flows"),
                );
            }
        }
        for (i, len) in self.queue_len.iter().enumerate() {
            if len() as f64 >= self.queue_capacity as f64 * QUEUE_SATURATED {
                return (false, format!("worker {i} queue saturated"));
            }
        }
        if now.saturating_sub(self.sink.heartbeat_ns.load(Relaxed)) > HEARTBEAT_STALE_NS {
            return (false, "writer is not running".into());
        }
        (true, "ok".into())
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8192);
        let family = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let mut vni = VniCounters::default();
        for r in &self.receivers {
            if let Ok(m) = r.per_vni.lock() {
                for (k, v) in m.iter() {
                    let e = vni.entry(*k).or_default();
                    for i in 0..3 {
                        e[i] += v[i];
                    }
                }
            }
        }
        let mut vnis: Vec<_> = vni.into_iter().collect();
        vnis.sort_unstable();
        for (i, (name, help)) in [
            (
                "mirrorflow_datagrams_total",
                "Tunnel datagrams accepted, by VNI.",
            ),
            (
                "mirrorflow_packets_total",
                "Mirrored packets decapsulated, by VNI.",
            ),
            (
                "mirrorflow_bytes_total",
                "IP bytes (from the IP header) of mirrored packets, by VNI.",
            ),
        ]
        .iter()
        .enumerate()
        {
            family(&mut s, name, "counter", help);
            for (v, c) in &vnis {
                let _ = writeln!(s, "{name}{{vni=\"{v}\"}} {}", c[i]);
            }
        }
        let sum =
            |f: &dyn Fn(&ReceiverMetrics) -> u64| self.receivers.iter().map(|r| f(r)).sum::<u64>();
        family(
            &mut s,
            "mirrorflow_datagrams_received_total",
            "counter",
            "Datagrams read from the tunnel sockets.",
        );
        let _ = writeln!(
            s,
            "mirrorflow_datagrams_received_total {}",
            sum(&|r| r.datagrams.load(Relaxed))
        );
        family(
            &mut s,
            "mirrorflow_datagrams_rejected_total",
            "counter",
            "Datagrams dropped by the allowlists or for size.",
        );
        let _ = writeln!(
            s,
            "mirrorflow_datagrams_rejected_total{{reason=\"source\"}} {}",
            sum(&|r| r.rejected_source.load(Relaxed))
        );
        let _ = writeln!(
            s,
            "mirrorflow_datagrams_rejected_total{{reason=\"vni\"}} {}",
            sum(&|r| r.rejected_vni.load(Relaxed))
        );
        let _ = writeln!(
            s,
            "mirrorflow_datagrams_rejected_total{{reason=\"oversized\"}} {}",
            sum(&|r| r.oversized.load(Relaxed))
        );
        family(
            &mut s,
            "mirrorflow_decap_errors_total",
            "counter",
            "Datagrams that gave no IP packet, by kind.",
        );
        for (i, k) in DecapError::KINDS.iter().enumerate() {
            let _ = writeln!(
                s,
                "mirrorflow_decap_errors_total{{kind=\"{k}\"}} {}",
                sum(&|r| r.decap_errors[i].load(Relaxed))
            );
        }
        family(
            &mut s,
            "mirrorflow_truncated_packets_total",
            "counter",
            "Packets captured shorter than their IP length.",
        );
        let _ = writeln!(
            s,
            "mirrorflow_truncated_packets_total {}",
            sum(&|r| r.truncated_packets.load(Relaxed))
        );
        family(
            &mut s,
            "mirrorflow_queue_drops_total",
            "counter",
            "Packets dropped because a worker queue was full, by worker.",
        );
        for w in 0..self.workers.len() {
            let n: u64 = self
                .receivers
                .iter()
                .map(|r| r.queue_drops.get(w).map(|a| a.load(Relaxed)).unwrap_or(0))
                .sum();
            let _ = writeln!(s, "mirrorflow_queue_drops_total{{worker=\"{w}\"}} {n}");
        }
        family(
            &mut s,
            "mirrorflow_queue_length",
            "gauge",
            "Batches waiting in each worker queue.",
        );
        for (w, len) in self.queue_len.iter().enumerate() {
            let _ = writeln!(s, "mirrorflow_queue_length{{worker=\"{w}\"}} {}", len());
        }
        family(
            &mut s,
            "mirrorflow_active_flows",
            "gauge",
            "Flows in each worker's table.",
        );
        for (w, m) in self.workers.iter().enumerate() {
            let _ = writeln!(
                s,
                "mirrorflow_active_flows{{worker=\"{w}\"}} {}",
                m.active_flows.load(Relaxed)
            );
        }
        family(
            &mut s,
            "mirrorflow_flow_evictions_total",
            "counter",
            "Flows removed from a table after their idle timeout, by worker.",
        );
        for (w, m) in self.workers.iter().enumerate() {
            let _ = writeln!(
                s,
                "mirrorflow_flow_evictions_total{{worker=\"{w}\",reason=\"idle\"}} {}",
                m.idle_expired.load(Relaxed)
            );
            let _ = writeln!(
                s,
                "mirrorflow_flow_evictions_total{{worker=\"{w}\",reason=\"capacity\"}} {}",
                m.evicted.load(Relaxed)
            );
        }
        family(
            &mut s,
            "mirrorflow_records_total",
            "counter",
            "Flow-log records produced, by log-status.",
        );
        let ok: u64 = self.workers.iter().map(|m| m.records.load(Relaxed)).sum();
        let _ = writeln!(s, "mirrorflow_records_total{{log_status=\"OK\"}} {ok}");
        let _ = writeln!(
            s,
            "mirrorflow_records_total{{log_status=\"NODATA\"}} {}",
            self.nodata_records.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "mirrorflow_records_total{{log_status=\"SKIPDATA\"}} {}",
            self.skipdata_records.load(Relaxed)
        );
        family(
            &mut s,
            "mirrorflow_records_written_total",
            "counter",
            "Records written, by sink.",
        );
        let kind = self.sink.kind.lock().map(|k| k.clone()).unwrap_or_default();
        let _ = writeln!(
            s,
            "mirrorflow_records_written_total{{sink=\"{kind}\"}} {}",
            self.sink.records_written.load(Relaxed)
        );
        family(
            &mut s,
            "mirrorflow_sink_write_errors_total",
            "counter",
            "Failed writes to the sink.",
        );
        let _ = writeln!(
            s,
            "mirrorflow_sink_write_errors_total {}",
            self.sink.write_errors.load(Relaxed)
        );
        family(
            &mut s,
            "mirrorflow_receive_buffer_bytes",
            "gauge",
            "SO_RCVBUF granted by the kernel, by receiver.",
        );
        for (i, r) in self.receivers.iter().enumerate() {
            let _ = writeln!(
                s,
                "mirrorflow_receive_buffer_bytes{{receiver=\"{i}\",port=\"{}\"}} {}",
                r.port.load(Relaxed),
                r.recv_buffer_bytes.load(Relaxed)
            );
        }
        if let Some(n) = crate::ingest::udp::kernel_rcvbuf_errors() {
            family(&mut s, "mirrorflow_kernel_udp_rcvbuf_errors_total", "counter", "UDP datagrams the kernel dropped for full socket buffers (/proc/net/snmp, whole host).");
            let _ = writeln!(s, "mirrorflow_kernel_udp_rcvbuf_errors_total {n}");
        }
        let mut batch = new_histogram();
        for w in &self.workers {
            if let Ok(h) = w.batch_ns.lock() {
                if let Some(h) = h.as_ref() {
                    let _ = batch.add(h);
                }
            }
        }
        quantiles(
            &mut s,
            "mirrorflow_batch_processing_seconds",
            "Time a worker spends on one batch.",
            &batch,
            1e-9,
        );
        let delay = self
            .sink
            .delay_ms
            .lock()
            .ok()
            .and_then(|h| h.clone())
            .unwrap_or_else(new_histogram);
        quantiles(
            &mut s,
            "mirrorflow_packet_to_record_delay_seconds",
            "From a record's last packet to its write.",
            &delay,
            1e-3,
        );
        s
    }
}

fn quantiles(s: &mut String, name: &str, help: &str, h: &Histogram<u64>, unit: f64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let _ = writeln!(
            s,
            "{name}{{quantile=\"{q}\"}} {}",
            h.value_at_quantile(q) as f64 * unit
        );
    }
    let _ = writeln!(s, "{name}_count {}", h.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(queue: usize) -> ServeMetrics {
        let now = now_ns();
        let r = Arc::new(ReceiverMetrics::new(1));
        r.heartbeat_ns.store(now, Relaxed);
        let w = Arc::new(WorkerMetrics::default());
        w.heartbeat_ns.store(now, Relaxed);
        let sink = Arc::new(SinkMetrics::default());
        sink.heartbeat_ns.store(now, Relaxed);
        ServeMetrics {
            receivers: vec![r],
            workers: vec![w],
            sink,
            queue_len: vec![Box::new(move || queue)],
            queue_capacity: 64,
            nodata_records: AtomicU64::new(0),
            skipdata_records: AtomicU64::new(0),
        }
    }

    #[test]
    fn health_follows_threads_and_queues() {
        assert_eq!(metrics(3).health(now_ns()), (true, "ok".into()));
        let (ok, why) = metrics(60).health(now_ns());
        assert!(!ok && why.contains("queue saturated"), "{why}");
        let m = metrics(0);
        m.workers[0].exited.store(1, Relaxed);
        assert!(!m.health(now_ns()).0);
        let m = metrics(0);
        assert!(
            !m.health(now_ns() + 2 * HEARTBEAT_STALE_NS).0,
            "a silent thread is dead"
        );
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let m = metrics(0);
        m.receivers[0]
            .per_vni
            .lock()
            .unwrap()
            .insert(77, [3, 3, 180]);
        let text = m.render();
        assert!(text.contains("mirrorflow_bytes_total{vni=\"77\"} 180\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("mirrorflow_"), "{line}");
        }
    }
}
