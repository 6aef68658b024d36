//! One worker's flow table: per-direction counters per flow, cut into aggregation windows.
//!
//! A flow is a [`FlowKey`] (session + endpoints + protocol). For each of its two sides
//! the table keeps packets, bytes (from the IP header), the AWS tcp-flags OR, first and
//! last packet time and truncated packets, for the current window only. A record per
//! side with traffic is emitted when the window closes (a packet of the flow arrives in
//! a later window, or the sweep finds the window over), when the connection has been
//! idle past its timeout, or at end of input. Decisions depend on each flow's own packet
//! times, never on when a sweep happens to run, so the records for a capture do not
//! depend on how many workers share it.

use std::sync::Arc;

use indexmap::IndexMap;

use super::conn_state::ConnTracker;
use super::FlowPacket;
use crate::config::{InspectConfig, SessionMap, Timeouts};
use crate::dissect::{AppFacts, Inspector};
use crate::parse::{FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::record::{
    aws_tcp_flags, CommunityInput, FlowDirection, FlowRecord, InterfaceInfo, LogStatus,
};

const NS: u64 = 1_000_000_000;

/// Packets may reach us slightly out of time order (capture merges, multi-queue NICs).
/// A window is closed by the sweep only this long after its end, and an idle flow only
/// this long after its timeout, so such packets still land in the right record.
pub const LATE_PACKET_GRACE_NS: u64 = 5 * NS;

/// How often (in packet time) the table is swept for closed windows and idle flows.
pub const SWEEP_INTERVAL_NS: u64 = 10 * NS;

#[derive(Clone, Copy, Debug, Default)]
struct SideCounters {
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    /// Saturating: 2^32 truncated packets of one direction in one window is beyond any
    /// mirror session, and 4 bytes less per side keeps a flow small.
    truncated: u32,
    tcp_flags: u8,
    direction: Option<FlowDirection>,
}

struct Flow {
    /// Start (Unix seconds) of the window the counters belong to.
    window: u64,
    sides: [SideCounters; 2],
    conn: ConnTracker,
    last_ns: u64,
    /// Arrival order of the flow's first packet: orders records deterministically.
    first_seq: u64,
    interface: Option<Arc<InterfaceInfo>>,
    /// Payload inspection while it runs; dropped once every dissector has decided.
    inspect: Option<Box<Inspector>>,
    /// What inspection learned, shared by every record of the connection.
    facts: Option<Arc<AppFacts>>,
    inspected: bool,
    /// ICMP type and code of the first packet (for Community ID).
    icmp: Option<(u8, u8)>,
}

impl Flow {
    fn has_traffic(&self) -> bool {
        self.sides[0].packets + self.sides[1].packets > 0
    }
}

/// Counters a worker reports at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    pub flows_created: u64,
    pub records: u64,
    pub idle_expired: u64,
    pub packets: u64,
    pub bytes: u64,
    pub truncated_packets: u64,
    /// Connections whose inspection ended at a hole or a truncated segment.
    pub inspect_gaps: u64,
    /// Flows written out early because the table was full.
    pub evicted: u64,
    /// Most flows held at once.
    pub peak_flows: u64,
}

pub struct FlowTable {
    /// Entries live in one dense vector with a small index table beside it (IndexMap):
    /// about 240 bytes per flow at a million flows, where a plain hash map of the same
    /// entries would pay for its empty buckets too.
    /// Hashed with per-process random keys (aHash): the five-tuples are chosen by
    /// whoever sends traffic, so a fixed hash would let them aim for collisions.
    flows: IndexMap<FlowKey, Flow, ahash::RandomState>,
    /// The last packet's flow and its entry index. Packets come in trains (a sender's
    /// burst, a response's segments): in a generated 40k-flow capture 72 % of packets
    /// belong to the flow of the packet before, and comparing the key is cheaper than
    /// hashing it and probing the index. Cleared whenever entries move or go.
    last: Option<(FlowKey, usize)>,
    interval_s: u64,
    /// The aggregation window the last packet fell in: its start in seconds and its
    /// span in ns. Packets arrive in time order, so nearly all fall in it, and the
    /// division that finds a window (two 64-bit `div`s, ~4 % of a flows-only worker)
    /// is done once per window instead of once per packet.
    current_window: (u64, std::ops::Range<u64>),
    timeouts: [u64; 5],
    sessions: Arc<SessionMap>,
    next_sweep_ns: u64,
    stats: FlowTableStats,
    inspect: InspectConfig,
    max_flows: usize,
    /// Packet time of the last eviction for lack of room (health reports it).
    pub last_eviction_ns: u64,
}

/// Share of the table freed at once when it is full: evicting in bulk keeps the cost of
/// finding the oldest flows (a scan) amortised over many new flows.
pub const EVICT_FRACTION: usize = 8;

// Index into `timeouts`.
const T_TCP: usize = 0;
const T_TCP_CLOSED: usize = 1;
const T_UDP: usize = 2;
const T_ICMP: usize = 3;
const T_OTHER: usize = 4;

impl FlowTable {
    pub fn new(interval_s: u64, timeouts: &Timeouts, sessions: Arc<SessionMap>) -> FlowTable {
        Self::with_inspection(
            interval_s,
            timeouts,
            sessions,
            InspectConfig {
                enabled: false,
                ..Default::default()
            },
        )
    }

    pub fn with_inspection(
        interval_s: u64,
        timeouts: &Timeouts,
        sessions: Arc<SessionMap>,
        inspect: InspectConfig,
    ) -> FlowTable {
        FlowTable {
            flows: IndexMap::default(),
            last: None,
            interval_s: interval_s.max(1),
            current_window: (0, 0..0),
            timeouts: [
                timeouts.tcp * NS,
                timeouts.tcp_closed * NS,
                timeouts.udp * NS,
                timeouts.icmp * NS,
                timeouts.other * NS,
            ],
            sessions,
            next_sweep_ns: 0,
            stats: FlowTableStats::default(),
            inspect,
            max_flows: usize::MAX,
            last_eviction_ns: 0,
        }
    }

    /// Caps the flows this table holds (at least 8).
    pub fn set_max_flows(&mut self, n: usize) {
        self.max_flows = n.max(8);
    }

    /// Frees room: the oldest-idle eighth of the table is written out and removed.
    /// Nothing is lost; a flow that comes back starts a new record.
    fn evict_oldest(&mut self, now_ns: u64, out: &mut Vec<FlowRecord>) {
        let n = (self.flows.len() / EVICT_FRACTION).max(1);
        let mut idle: Vec<(u64, u64, usize)> = self
            .flows
            .values()
            .enumerate()
            .map(|(i, f)| (f.last_ns, f.first_seq, i))
            .collect();
        // (last packet, first packet's sequence) is unique per flow: a total order.
        idle.select_nth_unstable_by_key(n - 1, |e| (e.0, e.1));
        idle.truncate(n);
        idle.sort_unstable_by_key(|e| (e.0, e.1));
        let mut gone = Vec::with_capacity(idle.len());
        for (_, _, i) in idle {
            if let Some((key, f)) = self.flows.get_index_mut(i) {
                finish_inspection(f, &mut self.stats);
                emit(key, f, out, &mut self.stats);
                self.stats.evicted += 1;
                gone.push(i);
            }
        }
        self.remove_entries(gone);
        self.last_eviction_ns = now_ns;
    }

    /// Removes the entries at `indices` (distinct). From the highest down: removing
    /// one moves the last entry into its place, and every entry after it that was to
    /// go is gone by then, so the moved one stays. Entries are found by index, not by
    /// hashing their keys again (a sweep or eviction used to look up every flow it had
    /// just visited).
    fn remove_entries(&mut self, mut indices: Vec<usize>) {
        if indices.is_empty() {
            return;
        }
        self.last = None;
        indices.sort_unstable_by(|a, b| b.cmp(a));
        for i in indices {
            self.flows.swap_remove_index(i);
        }
    }

    /// Replaces the session map (SIGHUP reload); flows created from now on use it.
    pub fn set_sessions(&mut self, sessions: Arc<SessionMap>) {
        self.sessions = sessions;
    }

    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }
}

fn timeout_ns(timeouts: &[u64; 5], key: &FlowKey, conn: &ConnTracker) -> u64 {
    timeouts[match key.protocol {
        PROTO_TCP if conn.is_closed() => T_TCP_CLOSED,
        PROTO_TCP => T_TCP,
        PROTO_UDP => T_UDP,
        PROTO_ICMP | PROTO_ICMPV6 => T_ICMP,
        _ => T_OTHER,
    }]
}

impl FlowTable {
    fn window_of(&mut self, ts_ns: u64) -> u64 {
        if self.current_window.1.contains(&ts_ns) {
            return self.current_window.0;
        }
        let s = ts_ns / NS;
        let start = s - s % self.interval_s;
        let span_ns = start.saturating_mul(NS)..(start + self.interval_s).saturating_mul(NS);
        self.current_window = (start, span_ns);
        start
    }

    /// Accounts one packet; records it closes are appended to `out`.
    #[inline(always)]
    pub fn process(&mut self, p: &FlowPacket, payload: &[u8], out: &mut Vec<FlowRecord>) {
        if p.ts_ns >= self.next_sweep_ns {
            self.sweep(p.ts_ns, out);
            self.next_sweep_ns = p.ts_ns + SWEEP_INTERVAL_NS;
        }
        let window = self.window_of(p.ts_ns);
        let stats = &mut self.stats;
        stats.packets += 1;
        stats.bytes += u64::from(p.ip_len);
        stats.truncated_packets += u64::from(p.truncated);
        // Compared in place: the cached key is written only when it changes, not copied
        // out and back (72 bytes) on every packet.
        let known = match &self.last {
            Some((key, i)) if *key == p.key => Some(*i),
            _ => {
                let found = self.flows.get_index_of(&p.key);
                if let Some(i) = found {
                    self.last = Some((p.key, i));
                }
                found
            }
        };
        let flow = match known {
            Some(i) => {
                let f = &mut self.flows[i];
                let timeout = timeout_ns(&self.timeouts, &p.key, &f.conn);
                if p.ts_ns > f.last_ns.saturating_add(timeout) {
                    // Idle past its timeout: that connection is over, this is a new one.
                    finish_inspection(f, stats);
                    emit(&p.key, f, out, stats);
                    stats.idle_expired += 1;
                    stats.flows_created += 1;
                    *f = new_flow(window, p.seq, f.interface.clone());
                } else if window > f.window {
                    // A packet of a later window: the earlier window's records are final.
                    // Emitted before this packet touches the connection state, so the
                    // records' conn-state is the state as of their own window.
                    emit(&p.key, f, out, stats);
                    f.sides = Default::default();
                    f.window = window;
                }
                f
            }
            None => {
                if self.flows.len() >= self.max_flows {
                    self.evict_oldest(p.ts_ns, out);
                }
                let stats = &mut self.stats;
                stats.flows_created += 1;
                // Counted as flows are added (the table only grows here).
                stats.peak_flows = stats.peak_flows.max(self.flows.len() as u64 + 1);
                let interface = self
                    .sessions
                    .lookup(p.key.vni(), p.key.mirror_source())
                    .map(|s| s.info.clone());
                let entry = self.flows.entry(p.key);
                self.last = Some((p.key, entry.index()));
                entry.or_insert_with(|| new_flow(window, p.seq, interface))
            }
        };
        let s = &mut flow.sides[p.side.index()];
        if s.packets == 0 {
            s.first_ns = p.ts_ns;
            s.last_ns = p.ts_ns;
        }
        s.packets += 1;
        s.bytes += u64::from(p.ip_len);
        s.tcp_flags |= aws_tcp_flags(p.tcp_flags);
        s.first_ns = s.first_ns.min(p.ts_ns);
        s.last_ns = s.last_ns.max(p.ts_ns);
        s.truncated = s.truncated.saturating_add(u32::from(p.truncated));
        if s.direction.is_none() {
            s.direction = p.direction;
        }
        flow.conn.observe(p.side, p.tcp_flags);
        flow.last_ns = flow.last_ns.max(p.ts_ns);
        if flow.icmp.is_none() {
            flow.icmp = p.icmp;
        }
        // An inspector is made for the first packet that carries payload: the many
        // flows that never do (scans, floods, bare handshakes) cost nothing extra.
        if self.inspect.enabled
            && !flow.inspected
            && (flow.inspect.is_some() || !payload.is_empty())
        {
            let insp = flow.inspect.get_or_insert_with(|| {
                let client = flow.conn.originator();
                Box::new(Inspector::new(
                    client,
                    [p.key.lo().1, p.key.hi().1],
                    self.inspect.max_bytes,
                ))
            });
            insp.packet(&p.key, p.side, p.tcp_flags, p.tcp_seq, payload, p.truncated);
            if insp.done() {
                finish_inspection(flow, &mut self.stats);
            }
        }
    }

    /// Emits the records of windows that ended and of idle connections, as of `now_ns`.
    pub fn sweep(&mut self, now_ns: u64, out: &mut Vec<FlowRecord>) {
        let interval_ns = self.interval_s * NS;
        let mut due: Vec<(u64, usize, bool)> = Vec::new();
        for (i, (key, f)) in self.flows.iter().enumerate() {
            let idle = now_ns
                > f.last_ns + timeout_ns(&self.timeouts, key, &f.conn) + LATE_PACKET_GRACE_NS;
            let window_over =
                f.has_traffic() && now_ns >= (f.window * NS) + interval_ns + LATE_PACKET_GRACE_NS;
            if idle || window_over {
                due.push((f.first_seq, i, idle));
            }
        }
        // Table iteration order is arbitrary; records come out in flow arrival order.
        due.sort_unstable_by_key(|d| d.0);
        // At most a record per side: room for all of them at once. A window's end
        // emits every flow of the window here (~47k records in the gen capture), and
        // `out`, grown by doubling from its 512, was copied ~11 MB on the way, in the
        // middle of one batch.
        out.reserve(2 * due.len());
        let mut gone = Vec::new();
        for (_, i, idle) in due {
            let Some((key, f)) = self.flows.get_index_mut(i) else {
                continue;
            };
            if idle {
                finish_inspection(f, &mut self.stats);
                emit(key, f, out, &mut self.stats);
                self.stats.idle_expired += 1;
                gone.push(i);
            } else {
                emit(key, f, out, &mut self.stats);
                f.sides = Default::default();
            }
        }
        self.remove_entries(gone);
    }

    /// End of input: every flow's records, in arrival order.
    pub fn flush(&mut self, out: &mut Vec<FlowRecord>) {
        self.flush_with(usize::MAX, |chunk| out.append(chunk));
    }

    /// End of input in chunks: `deliver` gets the records of every `chunk` flows, in
    /// arrival order, so a table of a million flows never has all its records (or a
    /// second copy of itself) in memory at once.
    pub fn flush_with(&mut self, chunk: usize, mut deliver: impl FnMut(&mut Vec<FlowRecord>)) {
        let mut order: Vec<(u64, usize)> = self
            .flows
            .values()
            .enumerate()
            .map(|(i, f)| (f.first_seq, i))
            .collect();
        order.sort_unstable();
        let mut out = Vec::new();
        for (n, (_, i)) in order.into_iter().enumerate() {
            if let Some((key, f)) = self.flows.get_index_mut(i) {
                let key = *key;
                finish_inspection(f, &mut self.stats);
                emit(&key, f, &mut out, &mut self.stats);
                // Inspection state is freed as we go; the entry itself goes with the table.
                f.inspect = None;
            }
            if (n + 1) % chunk.max(1) == 0 && !out.is_empty() {
                deliver(&mut out);
                out.clear();
            }
        }
        if !out.is_empty() {
            deliver(&mut out);
        }
        self.flows = IndexMap::default();
        self.last = None;
    }
}

fn new_flow(window: u64, seq: u64, interface: Option<Arc<InterfaceInfo>>) -> Flow {
    Flow {
        window,
        sides: Default::default(),
        conn: ConnTracker::default(),
        last_ns: 0,
        first_seq: seq,
        interface,
        inspect: None,
        facts: None,
        inspected: false,
        icmp: None,
    }
}

/// Ends a connection's inspection: final findings, buffers freed, facts kept.
fn finish_inspection(f: &mut Flow, stats: &mut FlowTableStats) {
    if let Some(mut insp) = f.inspect.take() {
        insp.close();
        stats.inspect_gaps += u64::from(insp.gap);
        f.facts = Some(Arc::new(std::mem::take(&mut insp.facts)));
    }
    f.inspected = f.facts.is_some() || f.inspected;
}

/// The connection's facts as of now (a snapshot while inspection still runs).
fn current_facts(f: &mut Flow) -> Option<Arc<AppFacts>> {
    if let Some(insp) = &mut f.inspect {
        if insp.dirty || f.facts.is_none() {
            insp.dirty = false;
            f.facts = Some(Arc::new(insp.facts.clone()));
        }
    }
    f.facts.clone().filter(|a| **a != AppFacts::default())
}

/// Appends one record per side that carried traffic in the flow's current window,
/// the originator's side first.
fn emit(key: &FlowKey, f: &mut Flow, out: &mut Vec<FlowRecord>, stats: &mut FlowTableStats) {
    let conn_state = f.conn.state(key.protocol);
    let orig = f.conn.originator();
    let app = current_facts(f);
    for side in [orig, orig.other()] {
        let c = f.sides[side.index()];
        if c.packets == 0 {
            continue;
        }
        let ((srcaddr, srcport), (dstaddr, dstport)) = key.endpoints(side);
        out.push(FlowRecord {
            interface: f.interface.clone(),
            vni: key.vni(),
            mirror_source: key.mirror_source(),
            srcaddr,
            dstaddr,
            srcport,
            dstport,
            protocol: key.protocol,
            packets: c.packets,
            bytes: c.bytes,
            start: c.first_ns / NS,
            end: c.last_ns / NS,
            log_status: LogStatus::Ok,
            tcp_flags: c.tcp_flags,
            flow_direction: c.direction,
            conn_state,
            truncated_packets: u64::from(c.truncated),
            app: app.clone(),
            community: Some(CommunityInput {
                originator_is_src: side == orig,
                icmp: f.icmp,
            }),
            detections: Vec::new(),
        });
        stats.records += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u64, ts_s: f64, fwd: bool, flags: u8, len: u32) -> FlowPacket {
        let a = ("10.0.1.10".parse().unwrap(), 40000);
        let b = ("198.51.100.7".parse().unwrap(), 443);
        let (src, dst) = if fwd { (a, b) } else { (b, a) };
        let (key, side) = FlowKey::new(Some(9), None, src, dst, PROTO_TCP);
        FlowPacket::counted(key, side, (ts_s * 1e9) as u64, len, flags, seq)
    }

    /// The cached window gives what the division gives, at its edges and for a packet
    /// older than the one before (a table fed without dispatch's late-packet floor).
    #[test]
    fn window_of_matches_the_division_in_any_order() {
        let mut t = table();
        let interval = t.interval_s;
        let edge = 3 * interval * NS;
        for ts in [
            edge,
            edge - 1,
            edge + 1,
            0,
            edge + interval * NS,
            edge,
            u64::MAX,
            u64::MAX - 1,
            7,
        ] {
            let s = ts / NS;
            assert_eq!(t.window_of(ts), s - s % interval, "ts {ts}");
        }
    }

    fn table() -> FlowTable {
        FlowTable::new(600, &Timeouts::default(), Arc::new(SessionMap::default()))
    }

    #[test]
    fn payloads_past_4_gib_of_one_buffer_are_the_right_bytes() {
        // A mapped capture larger than 4 GiB: offsets are 32-bit in a batch, so packets
        // past 4 GiB must not wrap onto bytes near the start of the file. The mapping
        // is anonymous and only the touched pages become memory.
        let Ok(mut map) = memmap2::MmapMut::map_anon(5 << 30) else {
            println!("skipped: cannot reserve 5 GiB of address space here");
            return;
        };
        let places = [100usize, (4 << 30) - 3, (4 << 30) + 12_345, (5 << 30) - 10];
        for (i, &at) in places.iter().enumerate() {
            map[at..at + 3].copy_from_slice(&[i as u8 + 1, 0xab, 0xcd]);
        }
        let Ok(ro) = map.make_read_only() else {
            println!("skipped: cannot remap read-only");
            return;
        };
        let buffer = bytes::Bytes::from_owner(ro);
        let mut batch = crate::flow::Batch::with_capacity(8);
        for (i, &at) in places.iter().enumerate() {
            batch.push(pkt(i as u64, 0.0, true, 0x18, 40), &buffer, at, 3);
        }
        for (i, p) in batch.packets.iter().enumerate() {
            assert_eq!(batch.payload(p), &[i as u8 + 1, 0xab, 0xcd], "packet {i}");
        }
        // One reference for the first 4 GiB, one window past it.
        assert_eq!(
            batch.buffers.len(),
            3,
            "the straddling packet starts a window"
        );
    }

    #[test]
    fn handshake_gives_two_directional_records() {
        let mut t = table();
        let mut out = Vec::new();
        let base = 1_704_067_200.0; // 2024-01-01T00:00:00Z, window aligned
        t.process(&pkt(0, base + 1.0, true, 0x02, 60), &[], &mut out);
        t.process(&pkt(1, base + 1.1, false, 0x12, 60), &[], &mut out);
        t.process(&pkt(2, base + 1.2, true, 0x10, 52), &[], &mut out);
        t.process(&pkt(3, base + 2.0, true, 0x11, 52), &[], &mut out);
        t.process(&pkt(4, base + 2.1, false, 0x11, 52), &[], &mut out);
        t.process(&pkt(5, base + 2.2, true, 0x10, 52), &[], &mut out);
        assert!(out.is_empty());
        t.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (
                out[0].srcport,
                out[0].packets,
                out[0].bytes,
                out[0].tcp_flags
            ),
            (40000, 4, 216, 3)
        );
        assert_eq!(
            (
                out[1].srcport,
                out[1].packets,
                out[1].bytes,
                out[1].tcp_flags
            ),
            (443, 2, 112, 19)
        );
        assert_eq!(out[0].conn_state, "SF");
        assert_eq!((out[0].start, out[0].end), (1_704_067_201, 1_704_067_202));
    }

    #[test]
    fn windows_split_long_flows() {
        let mut t = table();
        let mut out = Vec::new();
        let base = 1_704_067_200.0;
        t.process(&pkt(0, base + 590.0, true, 0x02, 60), &[], &mut out);
        t.process(&pkt(1, base + 590.5, false, 0x12, 60), &[], &mut out);
        t.process(&pkt(2, base + 610.0, true, 0x10, 52), &[], &mut out);
        assert_eq!(
            out.len(),
            2,
            "the first window closed when a later packet came"
        );
        assert_eq!(out[0].conn_state, "S1");
        t.flush(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].start, 1_704_067_810);
    }

    #[test]
    fn idle_timeout_splits_and_sweep_agrees() {
        let base = 1_704_067_200.0;
        // Same packets; once processed straight, once with a late unrelated sweep.
        let pkts = [
            pkt(0, base + 1.0, true, 0x02, 60),
            pkt(1, base + 400.0, true, 0x02, 60),
        ];
        let mut a = table();
        let mut out_a = Vec::new();
        for p in &pkts {
            a.process(p, &[], &mut out_a);
        }
        a.flush(&mut out_a);
        let mut b = table();
        let mut out_b = Vec::new();
        b.process(&pkts[0], &[], &mut out_b);
        b.sweep((base as u64 + 399) * NS, &mut out_b);
        b.process(&pkts[1], &[], &mut out_b);
        b.flush(&mut out_b);
        assert_eq!(out_a, out_b);
        assert_eq!(out_a.len(), 2);
        assert_eq!(a.stats().idle_expired, 1);
    }

    /// Extra sweeps that expire flows spread over the entry vector (removed by index,
    /// highest first) give the records the table's own sweeps give, each sweep's in
    /// arrival order, and the flows left behind keep counting as themselves.
    #[test]
    fn extra_sweeps_expiring_many_flows_agree_with_the_tables_own() {
        let base = 1_704_067_200.0;
        let flow = |port: u16, seq: u64, ts: f64| {
            let (key, side) = FlowKey::new(
                None,
                None,
                ("10.0.1.10".parse().unwrap(), port),
                ("198.51.100.7".parse().unwrap(), 53),
                PROTO_UDP,
            );
            let len = 100 + u32::from(port);
            FlowPacket::counted(key, side, (ts * NS as f64) as u64, len, 0, seq)
        };
        let mut pkts = Vec::new();
        let mut seq = 0;
        let mut send = |port: u16, ts: f64| {
            pkts.push(flow(port, seq, ts));
            seq += 1;
        };
        for i in 0..40u16 {
            send(1000 + i, base + f64::from(i) * 0.5);
        }
        for i in 0..40u16 {
            if i % 3 == 0 {
                // Back long after its UDP timeout (60 s): a new connection.
                send(1000 + i, base + 200.0 + f64::from(i));
            } else {
                // Busy within the timeout, before and after the first sweep.
                send(1000 + i, base + 10.0 + f64::from(i) * 0.5);
                send(1000 + i, base + 60.0 + f64::from(i) * 0.5);
            }
        }
        pkts.sort_by_key(|p| (p.ts_ns, p.seq));
        let run = |sweeps: &[f64]| {
            let mut t = table();
            let mut out = Vec::new();
            let mut swept = Vec::new();
            let mut next = sweeps.iter().peekable();
            for p in &pkts {
                while let Some(at) = next.next_if(|at| ((**at) * NS as f64) as u64 <= p.ts_ns) {
                    let before = out.len();
                    t.sweep((at * NS as f64) as u64, &mut out);
                    swept.push(out[before..].iter().map(|r| r.srcport).collect::<Vec<_>>());
                }
                t.process(p, &[], &mut out);
            }
            t.flush(&mut out);
            out.sort_by_key(|r| (r.srcport, r.start));
            (out, t.stats(), swept)
        };
        let (plain, plain_stats, _) = run(&[]);
        let (swept, swept_stats, sweeps) = run(&[base + 70.0, base + 150.0]);
        assert_eq!(swept, plain);
        assert_eq!(swept_stats.idle_expired, plain_stats.idle_expired);
        // At 70 s only flows quiet since before 5 s are past timeout and grace.
        assert_eq!(sweeps[0], [1000, 1003, 1006, 1009], "arrival order");
        // Those busy until 60-80 s, and what the table's own sweeps left.
        assert!(sweeps[1].len() >= 26, "{:?}", sweeps[1]);
        assert!(sweeps[1].is_sorted(), "arrival order: {:?}", sweeps[1]);
        // One record per connection: the every-third flows had two.
        assert_eq!(plain.len(), 26 + 2 * 14);
        assert!(plain
            .iter()
            .all(|r| r.bytes == r.packets * (100 + u64::from(r.srcport))));
        let packets = |port: u16| {
            plain
                .iter()
                .filter(|r| r.srcport == port)
                .map(|r| r.packets)
                .sum::<u64>()
        };
        assert!((1000..1040).all(|p| packets(p) == if (p - 1000) % 3 == 0 { 2 } else { 3 }));
    }

    #[test]
    fn remembered_flow_follows_entries_that_move() {
        // Flow A goes idle; C is the last flow seen, at the end of the entry vector.
        // Removing A moves C into A's place; C's next packet must still count for C.
        let base = 1_704_067_200.0;
        let flow = |port: u16, seq: u64, ts: f64| {
            let (key, side) = FlowKey::new(
                Some(9),
                None,
                ("10.0.1.10".parse().unwrap(), port),
                ("198.51.100.7".parse().unwrap(), 53),
                PROTO_UDP,
            );
            FlowPacket::counted(key, side, (ts * NS as f64) as u64, 100, 0, seq)
        };
        let mut t = table();
        let mut out = Vec::new();
        // Within one sweep interval, so only the sweep below removes anything.
        t.process(&flow(1, 0, base + 1.0), &[], &mut out);
        t.process(&flow(2, 1, base + 20.0), &[], &mut out);
        t.process(&flow(3, 2, base + 21.0), &[], &mut out);
        t.process(&flow(3, 3, base + 22.0), &[], &mut out);
        // Past flow 1's UDP timeout (60 s) and grace, not flow 2's or 3's.
        t.sweep((base as u64 + 70) * NS, &mut out);
        assert_eq!(out.len(), 1, "flow 1 expired");
        t.process(&flow(3, 4, base + 71.0), &[], &mut out);
        t.process(&flow(2, 5, base + 72.0), &[], &mut out);
        t.flush(&mut out);
        let packets = |port: u16| {
            out.iter()
                .filter(|r| r.srcport == port)
                .map(|r| r.packets)
                .sum::<u64>()
        };
        assert_eq!((packets(1), packets(2), packets(3)), (1, 2, 3));
        assert_eq!(t.stats().flows_created, 3);
    }
}
#[cfg(test)]
mod memory {
    /// The per-flow memory budget (256 bytes per idle flow at a million flows) rests on
    /// the entry size: IndexMap keeps hash + key + flow in one vector, plus about 19
    /// bytes of index per flow at a million. An entry that grows past this breaks it.
    #[test]
    fn flow_entry_fits_the_per_flow_budget() {
        let entry =
            8 + std::mem::size_of::<crate::parse::FlowKey>() + std::mem::size_of::<super::Flow>();
        println!(
            "flow entry {entry} bytes (key {}, flow {})",
            std::mem::size_of::<crate::parse::FlowKey>(),
            std::mem::size_of::<super::Flow>()
        );
        assert!(entry <= 232, "flow entry grew to {entry} bytes");
    }
}
