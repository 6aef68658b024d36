//! Dispatch: from parsed packets to per-worker batches.
//!
//! Runs on the ingest thread, which sees every packet in order, so the little state that
//! must be global lives here: the fragment tracker (later IPv4/IPv6 fragments get the
//! ports of their first fragment) and the per-session interface MAC used for
//! `flow-direction`. Each packet's flow key is hashed symmetrically (both directions go
//! to the same worker) and appended to that worker's batch; full batches travel over a
//! bounded crossbeam channel, so a worker owns its flows outright.

pub mod fragments;

use std::net::IpAddr;
use std::sync::Arc;

use crossbeam_channel::Sender;
use rustc_hash::FxHashMap;

use crate::config::SessionMap;
use crate::decap::MirrorContext;
use crate::flow::table::LATE_PACKET_GRACE_NS;
use crate::flow::FlowPacket;
use crate::parse::{FlowKey, Fragment, Mac, PacketView};
use crate::record::FlowDirection;
use crate::telemetry::IngestStats;
use fragments::FragmentTracker;

/// Packets per batch: large enough to amortise the channel, small enough to keep
/// per-batch latency low.
pub const BATCH_SIZE: usize = 256;

/// Batches that may wait in one worker's queue.
pub const QUEUE_BATCHES: usize = 64;

pub use crate::flow::Batch;

/// Empty batches on their way back from workers to dispatch. Without it, dispatch
/// allocated ~30 KB per 256 packets and a worker freed it on another thread, which
/// costs glibc malloc about 6 % of the ingest thread (arena locks, consolidation).
/// Bounded: a pool that is full or empty only means a batch is freed or allocated.
#[derive(Clone)]
pub struct BatchPool {
    tx: Sender<Batch>,
    rx: crossbeam_channel::Receiver<Batch>,
}

impl BatchPool {
    /// A pool holding up to `cap` batches (about every batch that can be in flight).
    pub fn new(cap: usize) -> BatchPool {
        let (tx, rx) = crossbeam_channel::bounded(cap.max(1));
        BatchPool { tx, rx }
    }

    /// An empty batch, recycled when one is back.
    pub fn take(&self) -> Batch {
        self.rx
            .try_recv()
            .unwrap_or_else(|_| Batch::with_capacity(BATCH_SIZE))
    }

    /// Returns a processed batch: its buffers are released here, so a receive slab
    /// or capture chunk it pointed into can be reused.
    pub fn give(&self, mut batch: Batch) {
        batch.clear();
        let _ = self.tx.try_send(batch);
    }
}

/// What to do when a worker's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Wait (replay: the capture can wait, nothing may be lost).
    Block,
    /// Drop the batch and count it (serve: the network cannot wait; the loss shows as
    /// SKIPDATA for the interfaces and windows it hit).
    Drop,
}

/// Session key used for NODATA/SKIPDATA bookkeeping: (VNI, mirror source).
pub type SessionKey = (Option<u32>, Option<IpAddr>);

pub struct Dispatcher {
    workers: Vec<Sender<Batch>>,
    pending: Vec<Batch>,
    pool: BatchPool,
    /// The interface MAC of the session the last packet came from: packets come in
    /// runs from one session, and two hash lookups per packet were a tenth of dispatch.
    /// Only a known MAC is kept (config or learned, both fixed until a reload). Looked
    /// at only when `last_v4` cannot answer (an IPv6 mirror source, another session).
    last_mac: Option<(SessionKey, Mac)>,
    /// The same for a session with an IPv4 mirror source (every AWS mirror session), as
    /// ([`v4_session_word`], MAC): one compare where the `SessionKey` took ~25
    /// instructions of enum tags and address bytes per packet.
    last_v4: (u64, Option<Mac>),
    fragments: FragmentTracker,
    sessions: Arc<SessionMap>,
    /// Learned interface MAC per (VNI, mirror source).
    eni_macs: FxHashMap<SessionKey, Mac>,
    seq: u64,
    /// The latest packet time seen, in arrival order (see `push`).
    clock_ns: u64,
    overflow: Overflow,
    interval_s: u64,
    /// Packets dropped on full queues, per session and window start.
    drops: FxHashMap<(SessionKey, u64), u64>,
    /// Per worker: packets and batches dropped; packets handed over.
    pub dropped_packets: Vec<u64>,
    pub dropped_batches: Vec<u64>,
    pub dispatched_packets: u64,
}

impl Dispatcher {
    pub fn new(workers: Vec<Sender<Batch>>, sessions: Arc<SessionMap>) -> Dispatcher {
        Self::with_overflow(workers, sessions, Overflow::Block, 600)
    }

    pub fn with_overflow(
        workers: Vec<Sender<Batch>>,
        sessions: Arc<SessionMap>,
        overflow: Overflow,
        interval_s: u64,
    ) -> Dispatcher {
        let pending = workers
            .iter()
            .map(|_| Batch::with_capacity(BATCH_SIZE))
            .collect();
        let n = workers.len();
        Dispatcher {
            pool: BatchPool::new(n * (QUEUE_BATCHES + 2)),
            last_mac: None,
            last_v4: (0, None),
            workers,
            pending,
            fragments: FragmentTracker::default(),
            sessions,
            eni_macs: FxHashMap::default(),
            seq: 0,
            clock_ns: 0,
            overflow,
            interval_s: interval_s.max(1),
            drops: FxHashMap::default(),
            dropped_packets: vec![0; n],
            dropped_batches: vec![0; n],
            dispatched_packets: 0,
        }
    }

    /// Takes new batches from `pool`, which the workers give processed batches back to.
    pub fn with_pool(mut self, pool: BatchPool) -> Dispatcher {
        self.pool = pool;
        self
    }

    /// Replaces the session map (SIGHUP reload).
    pub fn set_sessions(&mut self, sessions: Arc<SessionMap>) {
        self.sessions = sessions;
        self.last_mac = None;
        self.last_v4 = (0, None);
    }

    /// Sends every partial batch now (serve does this once a drained socket's packets
    /// have waited a millisecond or the link went quiet, so packets never wait long
    /// for a batch to fill).
    pub fn flush(&mut self) {
        for w in 0..self.workers.len() {
            if !self.pending[w].is_empty() {
                self.send(w);
            }
        }
    }

    /// Drops since the last call, per session and window start.
    pub fn take_drops(&mut self) -> Vec<(SessionKey, u64, u64)> {
        self.drops.drain().map(|((k, w), n)| (k, w, n)).collect()
    }

    /// Routes one packet to its worker. Blocks when that worker's queue is full: on
    /// replay nothing may be dropped, the capture simply waits. The transport payload
    /// (`v.payload.1` bytes) sits at `buffer[payload_at..]`.
    #[inline(always)]
    pub fn push(
        &mut self,
        ctx: &MirrorContext,
        v: &PacketView,
        ts_ns: u64,
        buffer: &bytes::Bytes,
        payload_at: usize,
        stats: &mut IngestStats,
    ) {
        // Time does not run backwards here: a packet stamped more than the late-packet
        // grace before the latest one seen counts as of that moment (as Zeek's network
        // time does). Captures merged out of time order (one corpus pcapng has a flow
        // 56 minutes older than the frames before it) otherwise opened flows in windows
        // the writer may already have sealed, and the output order then depended on
        // which worker reported first. Decided here, in arrival order, so it is the
        // same for any number of workers.
        self.clock_ns = self.clock_ns.max(ts_ns);
        let floor = self.clock_ns.saturating_sub(LATE_PACKET_GRACE_NS);
        if ts_ns < floor {
            stats.late_packets += 1;
        }
        let ts_ns = ts_ns.max(floor);
        let (mut src_port, mut dst_port) = (v.src_port, v.dst_port);
        match v.fragment {
            Fragment::First { id } if v.ports_known => {
                self.fragments.first(ctx, v, id, ts_ns, stats);
            }
            Fragment::Later { id } => match self.fragments.later(ctx, v, id) {
                Some((s, d)) => (src_port, dst_port) = (s, d),
                None => stats.orphan_fragments += 1,
            },
            _ => {}
        }
        let (key, side) = FlowKey::new(
            ctx.vni,
            ctx.mirror_source,
            (v.src, src_port),
            (v.dst, dst_port),
            v.protocol,
        );
        let direction = self.direction(ctx, v);
        let seq = self.seq;
        self.seq += 1;
        let w = worker_for(&key, self.workers.len());
        let Some(batch) = self.pending.get_mut(w) else {
            return; // no workers: nothing to hand packets to
        };
        // The packet is written straight into the batch, its payload reference first.
        let payload = batch.payload_ref(buffer, payload_at, v.payload.1 as usize);
        batch.packets.push(FlowPacket {
            key,
            side,
            ts_ns,
            ip_len: v.ip_len,
            tcp_flags: v.tcp_flags,
            truncated: v.truncated,
            direction,
            seq,
            tcp_seq: v.tcp_seq,
            icmp: v.icmp,
            payload,
        });
        if batch.len() >= BATCH_SIZE {
            self.send(w);
        }
    }

    fn send(&mut self, w: usize) {
        let batch = std::mem::replace(&mut self.pending[w], self.pool.take());
        let n = batch.len() as u64;
        match self.overflow {
            Overflow::Block => {
                // A worker that died has already reported; its packets cannot be accounted.
                let _ = self.workers[w].send(batch);
                self.dispatched_packets += n;
            }
            Overflow::Drop => match self.workers[w].try_send(batch) {
                Ok(()) => self.dispatched_packets += n,
                Err(e) => {
                    let mut batch = e.into_inner();
                    for p in &batch.packets {
                        let s = p.ts_ns / 1_000_000_000;
                        let window = s - s % self.interval_s;
                        *self
                            .drops
                            .entry(((p.key.vni(), p.key.mirror_source()), window))
                            .or_default() += 1;
                    }
                    self.dropped_packets[w] += n;
                    self.dropped_batches[w] += 1;
                    // Keep the allocation for the next batch.
                    batch.clear();
                    self.pending[w] = batch;
                }
            },
        }
    }

    /// Sends what is pending and closes the queues, so workers flush and finish.
    pub fn finish(mut self) -> Self {
        self.flush();
        self.workers.clear();
        self
    }

    /// Ingress or egress relative to the mirrored interface (aws-spec §1.5): the
    /// interface's MAC is the inner source on egress and the destination on ingress. The
    /// MAC comes from the config or is learned from a packet whose inner IP address is
    /// the tunnel's outer source (AWS sets that to the interface's primary IP).
    ///
    /// Inlined, with the session's first packet taken out of line: as a call, saving and
    /// restoring registers was a third of what this cost a VXLAN packet, and plain
    /// packets (no mirror source) paid it only to return at once.
    #[inline(always)]
    fn direction(&mut self, ctx: &MirrorContext, v: &PacketView) -> Option<FlowDirection> {
        let source = ctx.mirror_source?;
        let (smac, dmac) = (v.src_mac?, v.dst_mac?);
        let mac = match (source, self.last_v4) {
            (IpAddr::V4(a), (word, Some(m))) if word == v4_session_word(ctx.vni, a) => m,
            _ => self.session_mac(ctx, v)?,
        };
        if smac == mac {
            Some(FlowDirection::Egress)
        } else if dmac == mac {
            Some(FlowDirection::Ingress)
        } else {
            None
        }
    }

    /// The interface MAC of a session other than the last packet's (configured, else
    /// learned), remembered as the last one.
    #[cold]
    #[inline(never)]
    fn session_mac(&mut self, ctx: &MirrorContext, v: &PacketView) -> Option<Mac> {
        let session = (ctx.vni, ctx.mirror_source);
        if let Some((k, m)) = self.last_mac {
            if k == session {
                return Some(m);
            }
        }
        let m = match self
            .sessions
            .lookup(ctx.vni, ctx.mirror_source)
            .and_then(|s| s.eni_mac.map(Mac::new))
        {
            Some(m) => m,
            None => self.learn(ctx, v)?,
        };
        self.last_mac = Some((session, m));
        self.last_v4 = match ctx.mirror_source {
            Some(IpAddr::V4(a)) if ctx.vni.is_none_or(|n| n < VNI_LIMIT) => {
                (v4_session_word(ctx.vni, a), Some(m))
            }
            _ => (0, None),
        };
        Some(m)
    }

    /// Interface MACs learned so far, by session.
    pub fn learned_macs(&self) -> impl Iterator<Item = (&SessionKey, &Mac)> {
        self.eni_macs.iter()
    }

    /// Learns (once) the interface MAC of the packet's session, returning it if known.
    /// `replay` calls this over the start of each capture before dispatching, so flows
    /// that precede the first packet from the interface's own IPv4 (IPv6-only flows,
    /// say) get a direction too.
    pub fn learn(&mut self, ctx: &MirrorContext, v: &PacketView) -> Option<Mac> {
        let source = ctx.mirror_source?;
        let key = (ctx.vni, ctx.mirror_source);
        if let Some(m) = self.eni_macs.get(&key) {
            return Some(*m);
        }
        let learned = if v.src == source {
            v.src_mac?
        } else if v.dst == source {
            v.dst_mac?
        } else {
            return None;
        };
        self.eni_macs.insert(key, learned);
        Some(learned)
    }
}

/// VNIs are 24 bits (VXLAN and GENEVE both carry three bytes); a session with a wider
/// one would not fit [`v4_session_word`] and is never remembered there.
const VNI_LIMIT: u32 = 1 << 24;

/// A session with an IPv4 mirror source as one word: VNI + 1 (0 for none) above the
/// address; distinct for distinct sessions whose VNI is below [`VNI_LIMIT`].
#[inline(always)]
fn v4_session_word(vni: Option<u32>, source: std::net::Ipv4Addr) -> u64 {
    let high = vni.map_or(0, |n| u64::from(n) + 1);
    high << 32 | u64::from(u32::from(source))
}

/// The worker (of `n`) that owns the flow `key`; both directions get the same one.
#[inline]
fn worker_for(key: &FlowKey, n: usize) -> usize {
    match n {
        // One worker: no choice to make, and hashing was a twentieth of dispatch.
        0 | 1 => 0,
        // The hash's high bits scaled to the worker count: a multiply where `%` was a
        // 64-bit division (~40 cycles) on every packet.
        n => ((u128::from(key.symmetric_hash()) * n as u128) >> 64) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_spread_evenly_over_workers_and_directions_stay_together() {
        for n in [2usize, 3, 4, 7] {
            let mut per_worker = vec![0u32; n];
            for i in 0..30_000u32 {
                let client = (
                    IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
                    40_000 + (i % 999) as u16,
                );
                let server = (IpAddr::from([198, 51, 100, (i % 7) as u8]), 443);
                let (k1, _) = FlowKey::new(Some(7), None, client, server, 6);
                let (k2, _) = FlowKey::new(Some(7), None, server, client, 6);
                let w = worker_for(&k1, n);
                assert_eq!(w, worker_for(&k2, n));
                per_worker[w] += 1;
            }
            let fair = 30_000 / n as u32;
            for c in &per_worker {
                assert!(c.abs_diff(fair) < fair / 10, "{n} workers: {per_worker:?}");
            }
        }
    }

    /// Time does not run backwards: a packet more than the grace older than the latest
    /// is counted as of the latest minus the grace (and counted as late); one within
    /// the grace keeps its own time.
    #[test]
    fn packets_older_than_the_grace_count_as_of_the_clock() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let mut d = Dispatcher::new(vec![tx], Arc::new(SessionMap::default()));
        let v = PacketView::ip(
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            17,
            60,
            false,
            Fragment::No,
            None,
            None,
        );
        let s = 1_000_000_000u64;
        let mut stats = IngestStats::default();
        let buffer = bytes::Bytes::new();
        for ts in [100 * s, 101 * s, 40 * s, 98 * s, 102 * s] {
            d.push(&MirrorContext::default(), &v, ts, &buffer, 0, &mut stats);
        }
        drop(d.finish());
        let times: Vec<u64> = rx
            .try_iter()
            .flat_map(|b| b.packets)
            .map(|p| p.ts_ns)
            .collect();
        assert_eq!(times, [100 * s, 101 * s, 96 * s, 98 * s, 102 * s]);
        assert_eq!(stats.late_packets, 1);
    }

    /// flow-direction per session while packets of several sessions interleave: two
    /// VNIs from one source, two sources under one VNI, and an IPv6 source (which the
    /// one-word session cache does not hold). Each session's MAC is learned from its
    /// first packet (sent from the interface's own address); after that a packet is
    /// egress when its source MAC is its own session's, ingress when its destination
    /// is, and neither when it carries another session's MAC.
    #[test]
    fn direction_follows_each_packets_own_session_as_sessions_interleave() {
        let (tx, rx) = crossbeam_channel::bounded(64);
        let mut d = Dispatcher::new(vec![tx], Arc::new(SessionMap::default()));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let sessions: [(Option<u32>, IpAddr, u8); 4] = [
            (Some(1), IpAddr::from([10, 0, 0, 1]), 0xa1),
            (Some(2), IpAddr::from([10, 0, 0, 1]), 0xb2),
            (Some(1), IpAddr::from([10, 0, 0, 2]), 0xc3),
            (Some(1), v6, 0xd4),
        ];
        let mac = |m: u8| Mac::new([2, 0, 0, 0, 0, m]);
        let peer = mac(0xee);
        let packet = |from: IpAddr, smac: Mac, dmac: Mac| {
            let to = if from.is_ipv4() {
                IpAddr::from([192, 0, 2, 9])
            } else {
                "2001:db8::9".parse().unwrap()
            };
            PacketView::ip(
                from,
                to,
                17,
                60,
                false,
                Fragment::No,
                Some(smac),
                Some(dmac),
            )
        };
        let mut stats = IngestStats::default();
        let buffer = bytes::Bytes::new();
        let mut want = Vec::new();
        for round in 0..3 {
            for (vni, source, m) in sessions {
                let ctx = MirrorContext {
                    vni,
                    mirror_source: Some(source),
                    tunnel: crate::decap::Tunnel::Vxlan,
                };
                let other = mac(if m == 0xa1 { 0xb2 } else { 0xa1 });
                let mut cases = vec![
                    (packet(source, mac(m), peer), Some(FlowDirection::Egress)),
                    (packet(source, peer, mac(m)), Some(FlowDirection::Ingress)),
                    (packet(source, other, peer), None),
                ];
                if round == 1 {
                    cases.reverse(); // a session's first packet of a round need not be egress
                }
                for (v, dir) in cases {
                    d.push(&ctx, &v, 1, &buffer, 0, &mut stats);
                    want.push(dir);
                }
            }
        }
        drop(d.finish());
        let got: Vec<_> = rx
            .try_iter()
            .flat_map(|b| b.packets)
            .map(|p| p.direction)
            .collect();
        assert_eq!(got, want);
    }

    /// The one-word session is distinct for every VNI (none, 0 and up to the 24-bit
    /// limit) and address, so a remembered session never answers for another.
    #[test]
    fn v4_session_words_tell_sessions_apart() {
        let a = std::net::Ipv4Addr::new(10, 0, 0, 1);
        let b = std::net::Ipv4Addr::new(10, 0, 0, 2);
        let vnis = [None, Some(0), Some(1), Some(0xff_ffff)];
        let mut words = std::collections::HashSet::new();
        for vni in vnis {
            for src in [
                a,
                b,
                std::net::Ipv4Addr::UNSPECIFIED,
                std::net::Ipv4Addr::BROADCAST,
            ] {
                assert!(words.insert(v4_session_word(vni, src)), "{vni:?} {src}");
            }
        }
    }

    #[test]
    fn pool_recycles_batches_and_releases_their_buffers_at_once() {
        let pool = BatchPool::new(2);
        let slab = bytes::Bytes::from(vec![1u8; 4096]);
        let mut b = pool.take();
        b.buffers.push(slab.clone());
        b.packets.reserve(1000);
        let capacity = b.packets.capacity();
        pool.give(b);
        // The worker's reference is gone as soon as the batch is given back, so the
        // receive slab or capture chunk can be reused in place.
        assert!(slab.try_into_mut().is_ok());
        let again = pool.take();
        assert!(again.is_empty() && again.buffers.is_empty());
        assert_eq!(again.packets.capacity(), capacity, "the same allocation");
        // A full pool frees; an empty one allocates.
        pool.give(Batch::with_capacity(1));
        pool.give(Batch::with_capacity(1));
        pool.give(Batch::with_capacity(1));
        assert_eq!(pool.take().packets.capacity(), 1);
        assert_eq!(pool.take().packets.capacity(), 1);
        assert_eq!(pool.take().packets.capacity(), BATCH_SIZE);
    }
}
