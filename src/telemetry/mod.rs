//! Telemetry: the pipeline's counters and the end-of-run summary.
//!
//! Each stage owns its counters (the reader its frame and decap counters, each worker
//! its flow-table stats); they are added up once at the end, never shared while hot.

pub mod metrics;

use std::fmt::Write as _;
use std::time::Duration;

use crate::decap::DecapError;
use crate::flow::FlowTableStats;

/// Counters of the ingest/decap/parse/dispatch stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub captures: u64,
    pub frames: u64,
    /// Captured bytes of all frames (outer headers included).
    pub frame_bytes: u64,
    /// Frames that yielded an inner IP packet.
    pub packets: u64,
    /// Frames dropped by decap, by [`DecapError::KINDS`] index.
    pub decap_errors: [u64; DecapError::KINDS.len()],
    /// Packets captured shorter than their IP length.
    pub truncated: u64,
    /// Packets that came through a VXLAN or GENEVE tunnel.
    pub tunnelled: u64,
    /// IP fragments after the first whose first fragment was not seen: counted to the
    /// flow with ports 0 between the same addresses.
    pub orphan_fragments: u64,
    /// Fragment-tracker entries dropped because the tracker was full.
    pub fragment_evictions: u64,
    /// Capture files with damage (their intact part was processed).
    pub damaged_captures: u64,
    /// Packets stamped more than the late-packet grace before the latest packet seen,
    /// counted as of that moment instead (captures not in time order).
    pub late_packets: u64,
}

impl IngestStats {
    pub fn decap_error_total(&self) -> u64 {
        // ARP and other non-IP frames are not errors of the capture, only of interest.
        self.decap_errors
            .iter()
            .enumerate()
            .filter(|(i, _)| DecapError::KINDS[*i] != "not_ip")
            .map(|(_, n)| n)
            .sum()
    }

    pub fn not_ip(&self) -> u64 {
        DecapError::KINDS
            .iter()
            .position(|k| *k == "not_ip")
            .map(|i| self.decap_errors[i])
            .unwrap_or(0)
    }
}

/// Totals of a run.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub ingest: IngestStats,
    pub flows: FlowTableStats,
    pub records_written: u64,
    pub elapsed: Duration,
    pub workers: usize,
}

impl RunSummary {
    /// The one-screen summary printed at the end of `replay`.
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let i = &self.ingest;
        let mut s = String::new();
        let _ = writeln!(s, "mirrorflow replay summary");
        let _ = writeln!(s, "  captures          {:>14}", i.captures);
        let _ = writeln!(
            s,
            "  frames            {:>14}   ({} bytes captured)",
            i.frames, i.frame_bytes
        );
        let _ = writeln!(
            s,
            "  packets           {:>14}   ({} tunnelled)",
            i.packets, i.tunnelled
        );
        let _ = writeln!(s, "  bytes (IP)        {:>14}", self.flows.bytes);
        let _ = writeln!(s, "  flows             {:>14}", self.flows.flows_created);
        let _ = writeln!(s, "  flows held (peak) {:>14}", self.flows.peak_flows);
        let _ = writeln!(
            s,
            "  flows evicted     {:>14}   (table full; written out, nothing lost)",
            self.flows.evicted
        );
        let _ = writeln!(s, "  records           {:>14}", self.records_written);
        let _ = writeln!(s, "  decap errors      {:>14}", i.decap_error_total());
        for (k, n) in DecapError::KINDS.iter().zip(i.decap_errors.iter()) {
            if *n > 0 {
                let _ = writeln!(s, "    {k:<22}{n:>10}");
            }
        }
        let _ = writeln!(s, "  non-IP frames     {:>14}", i.not_ip());
        let _ = writeln!(s, "  truncated packets {:>14}", i.truncated);
        let _ = writeln!(s, "  orphan fragments  {:>14}", i.orphan_fragments);
        let _ = writeln!(s, "  late packets      {:>14}", i.late_packets);
        let _ = writeln!(s, "  inspection gaps   {:>14}", self.flows.inspect_gaps);
        let _ = writeln!(s, "  damaged captures  {:>14}", i.damaged_captures);
        let _ = writeln!(s, "  workers           {:>14}", self.workers);
        let _ = writeln!(s, "  time              {:>13.3}s", secs);
        let _ = writeln!(
            s,
            "  rate              {:>13.3} Mpps",
            i.frames as f64 / secs / 1e6
        );
        if let Some(kb) = peak_rss_kb() {
            let _ = writeln!(s, "  peak memory       {:>10} MiB", kb / 1024);
        }
        s
    }
}

/// Peak resident memory of this process (VmHWM), in KiB, where /proc tells it.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes the calling thread run only on a CPU that has nothing else to do
/// (`SCHED_IDLE`): for housekeeping (freeing what was written) that must never take a
/// core from the pipeline. Woken, such a thread neither preempts the thread that woke
/// it nor is put beside it while another core is idle. Returns whether it took.
pub fn run_only_when_idle() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is this thread; `param` is a valid sched_param.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
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
