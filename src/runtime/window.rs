//! Window: the replay writer's holding area for one aggregation window, and the sealing
//! that writes it in a stable order.
//!
//! A window's records wait until every worker is past it, so that the output (findings
//! included) does not depend on the worker count. The last big window is sealed only
//! after the last packet, when the writer is the one thread left working, so what can
//! be done earlier is: as records arrive, each address gets its slot among the
//! window's distinct addresses, the fields the order is made of are kept compactly,
//! and (when no detectors run) each record's line is encoded and only the line is
//! kept, not the record. Sealing is left with ranking the addresses, sorting one
//! 128-bit key per record, and either copying the lines out in order or the detectors
//! and the encoding. A written window is emptied on a thread of its own, on an idle
//! core, and comes back for reuse.

use std::net::IpAddr;

use crate::detect::Detector;
use crate::record::{FlowRecord, RecordFormat};
use crate::sink::{RecordWriter, ENCODE_CHUNK};

/// Addresses come from traffic (possibly spoofed): per-process random hash keys.
type SlotMap<K> = std::collections::HashMap<K, u32, ahash::RandomState>;

/// An address as it sorts in output: `None` first, IPv4 before IPv6, then by octets.
fn ip_order(a: Option<IpAddr>) -> (u8, u128) {
    match a {
        None => (0, 0),
        Some(IpAddr::V4(v)) => (1, u128::from(u32::from(v))),
        Some(IpAddr::V6(v)) => (2, u128::from(v)),
    }
}

/// A VNI as it sorts in output: `None` (0) first.
fn vni_order(vni: Option<u32>) -> u64 {
    vni.map_or(0, |v| u64::from(v) + 1)
}

/// What a record's place in the output order is made of (bar the tie-breakers end,
/// packets and bytes), kept beside the records as they arrive: sealing reads these 32
/// bytes per record instead of the 168-byte records, twice (placing by start second,
/// then the keys), which had taken ~1.5 ms for the last window after the last packet.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SortFields {
    start: u64,
    /// `vni_order`: 0 for none, else the VNI + 1 (25 bits at most).
    vni: u32,
    /// The slots of the mirror source, srcaddr and dstaddr.
    slots: [u32; 3],
    srcport: u16,
    dstport: u16,
    protocol: u8,
}

/// What orders records equal in their `SortFields`: end, packets, bytes.
type Tie = (u64, u64, u64);

/// The records of one window not yet written, with what sealing needs from each.
#[derive(Default)]
pub struct PendingWindow {
    /// The records themselves, unless their lines were encoded as they arrived
    /// (`append_encoded`), which leaves sealing nothing to read in them.
    records: Vec<FlowRecord>,
    /// Per record, in arrival order: what its sort key is made of; and its
    /// tie-breakers when the record itself is not kept (see `tie`).
    fields: Vec<SortFields>,
    ties: Vec<Tie>,
    /// Each distinct address of the window, in order of first sight (its slot).
    addresses: Vec<(u8, u128)>,
    /// The slot of each IPv4 address, and of every other (IPv6, or no address): an IPv4
    /// entry is 8 bytes where a `(family, u128)` one is 48, and hashes one word. The
    /// writer looks up two or three addresses per record.
    v4_slot_of: SlotMap<u32>,
    slot_of: SlotMap<(u8, u128)>,
    /// The last mirror source seen and its slot: a session's records share one, so
    /// this skips a third of the lookups.
    last_source: Option<((u8, u128), u32)>,
    /// The spans the packed key must cover, kept as records arrive: three passes over
    /// a sealed window's records (~8 MB) for them took about a millisecond after the
    /// last packet. `start` spans (least, greatest); the VNI as in the key (0 = none).
    start_span: Option<(u64, u64)>,
    /// The VNIs' span (least, greatest, as in the key): the packed key holds a VNI as
    /// its distance from the least, so one mirror session's window spends no bits on it
    /// where its full 25 bits had pushed the gen capture's VXLAN twin past the 96-bit
    /// key (twice the bytes to sort: ~15 writer instructions per packet).
    vni_span: Option<(u32, u32)>,
    /// The records' lines, encoded as they arrived (`append_encoded`), and where each
    /// ends: sealing then only copies them out in order (see `append_encoded`).
    text: String,
    line_ends: Vec<usize>,
    /// The payload facts of records whose lines were encoded, held until the recycler
    /// empties the window: the worker allocated them, and freed on the writer as each
    /// record was encoded they cost a full replay's writer ~10 ns per packet and took
    /// the worker's allocator lock from under it.
    retired_facts: Vec<std::sync::Arc<crate::dissect::AppFacts>>,
}

impl PendingWindow {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// One record at a time: the writer takes runs (`append`); the tests build their
    /// reference windows with this.
    #[cfg(test)]
    fn push(&mut self, r: FlowRecord) {
        self.note(&r);
        self.records.push(r);
    }

    /// Takes all of `run` (records of this window), leaving it empty. Moved in one
    /// copy: one at a time, each 168-byte record took a `memcpy` call or two on its way
    /// from the worker's batch into the window.
    pub fn append(&mut self, run: &mut Vec<FlowRecord>) {
        for r in run.iter() {
            self.note(r);
        }
        self.records.append(run);
    }

    /// Takes all of `run` (leaving it empty), encoding each record's line now and
    /// keeping the line, not the record.
    ///
    /// Why now: a record's line does not depend on where it lands in the window's order
    /// unless the detectors may still add findings to it, and an output that prints no
    /// findings runs no detectors (`RecordFormat::prints_findings`). Encoded at sealing,
    /// the last window's ~47k lines (~6 ms of work) came after the last packet, with
    /// the other core idle; here they are encoded while the capture is still being
    /// read, and sealing copies lines. Why not keep the record: sealing then reads only
    /// its sort fields, tie-breakers and line, and the 168-byte records were most of a
    /// window's memory (~8 MB of ~14 for a 47k-record window), copied in from the
    /// worker's batches into pages that were, in a short run, fresh: ~2,000 page
    /// faults on the writer's core, at several microseconds each on a VM.
    pub fn append_encoded(&mut self, run: &mut Vec<FlowRecord>, format: &RecordFormat) {
        if !self.records.is_empty() {
            // Records taken unencoded before: the window is sealed the usual way.
            self.append(run);
            return;
        }
        for r in run.drain(..) {
            self.note(&r);
            self.ties.push((r.end, r.packets, r.bytes));
            format.write(&r, &mut self.text);
            self.line_ends.push(self.text.len());
            if let Some(facts) = r.app {
                self.retired_facts.push(facts);
            }
        }
    }

    /// Whether every record's line was encoded as it arrived.
    fn is_encoded(&self) -> bool {
        !self.fields.is_empty() && self.line_ends.len() == self.fields.len()
    }

    /// The tie-breakers of record `i`: from the record when it is kept, else as kept
    /// when its line was encoded (a flood's million-record window, sealed the usual
    /// way, would otherwise hold them twice: 24 MB).
    fn tie(&self, i: usize) -> Option<Tie> {
        match self.records.get(i) {
            Some(r) => Some((r.end, r.packets, r.bytes)),
            None => self.ties.get(i).copied(),
        }
    }

    /// Whether every record is here to be placed in order and encoded at sealing.
    fn has_records(&self) -> bool {
        self.records.len() == self.fields.len()
    }

    /// Where record `i`'s line starts in `text` (encoded windows only).
    fn line_start(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |before| self.line_ends[before])
    }

    /// The line of record `i` (encoded windows only).
    fn line(&self, i: usize) -> &[u8] {
        &self.text.as_bytes()[self.line_start(i)..self.line_ends[i]]
    }

    /// Asks for the first two cache lines of record `i`'s line (encoded windows only).
    fn prefetch_line(&self, i: usize) {
        let start = self.line_start(i);
        crate::ingest::readahead::prefetch(self.text.as_bytes(), start);
        crate::ingest::readahead::prefetch(self.text.as_bytes(), start + 64);
    }

    /// What sealing needs from a record that joins the window: its sort fields and
    /// the spans they cover.
    fn note(&mut self, r: &FlowRecord) {
        let source = ip_order(r.mirror_source);
        let ms = match self.last_source {
            Some((a, slot)) if a == source => slot,
            _ => {
                let slot = self.slot(source);
                self.last_source = Some((source, slot));
                slot
            }
        };
        self.start_span = Some(match self.start_span {
            Some((lo, hi)) => (lo.min(r.start), hi.max(r.start)),
            None => (r.start, r.start),
        });
        let vni = vni_order(r.vni) as u32;
        self.vni_span = Some(match self.vni_span {
            Some((lo, hi)) => (lo.min(vni), hi.max(vni)),
            None => (vni, vni),
        });
        let src = self.slot(ip_order(Some(r.srcaddr)));
        let dst = self.slot(ip_order(Some(r.dstaddr)));
        self.fields.push(SortFields {
            start: r.start,
            vni,
            slots: [ms, src, dst],
            srcport: r.srcport,
            dstport: r.dstport,
            protocol: r.protocol,
        });
    }

    fn slot(&mut self, a: (u8, u128)) -> u32 {
        let addresses = &mut self.addresses;
        if a.0 == 1 {
            return *self.v4_slot_of.entry(a.1 as u32).or_insert_with(|| {
                addresses.push(a);
                (addresses.len() - 1) as u32
            });
        }
        *self.slot_of.entry(a).or_insert_with(|| {
            addresses.push(a);
            (addresses.len() - 1) as u32
        })
    }

    /// Bytes the window's buffers hold (their capacity, not what is in use).
    fn capacity_bytes(&self) -> usize {
        use std::mem::size_of;
        self.records.capacity() * size_of::<FlowRecord>()
            + self.fields.capacity() * size_of::<SortFields>()
            + self.ties.capacity() * size_of::<Tie>()
            + self.addresses.capacity() * size_of::<(u8, u128)>()
            + self.v4_slot_of.capacity() * (size_of::<(u32, u32)>() + 1)
            + self.slot_of.capacity() * (size_of::<((u8, u128), u32)>() + 1)
            + self.text.capacity()
            + self.line_ends.capacity() * size_of::<usize>()
            + self.retired_facts.capacity() * size_of::<usize>()
    }

    /// Moves the records into `spare`'s buffers, which this window keeps; its own
    /// (empty by then) go with the rest of `spare`.
    fn move_to_buffers_of(&mut self, mut spare: PendingWindow) {
        spare.records.append(&mut self.records);
        spare.fields.append(&mut self.fields);
        spare.ties.append(&mut self.ties);
        spare.text.push_str(&self.text);
        spare.line_ends.append(&mut self.line_ends);
        spare.retired_facts.append(&mut self.retired_facts);
        self.records = std::mem::take(&mut spare.records);
        self.fields = std::mem::take(&mut spare.fields);
        self.ties = std::mem::take(&mut spare.ties);
        self.text = std::mem::take(&mut spare.text);
        self.line_ends = std::mem::take(&mut spare.line_ends);
        self.retired_facts = std::mem::take(&mut spare.retired_facts);
    }

    /// Empties the window, keeping its allocations.
    fn clear(&mut self) {
        self.records.clear();
        self.fields.clear();
        self.ties.clear();
        self.addresses.clear();
        self.v4_slot_of.clear();
        self.slot_of.clear();
        self.last_source = None;
        self.start_span = None;
        self.vni_span = None;
        self.text.clear();
        self.line_ends.clear();
        self.retired_facts.clear();
    }
}

/// Seals windows: orders, detects, writes. Holds the scratch space of sealing and the
/// emptied windows for reuse.
#[derive(Default)]
pub struct WindowWriter {
    by_address: Vec<u32>,
    rank: Vec<u64>,
    keys: Vec<([u64; 7], u32)>,
    /// Keys with the record's index beside them, and with it in their low bits.
    packed: SortBuffers<(u128, u32)>,
    compact: SortBuffers<u128>,
    /// CPU time of the threads that sorted halves: the writer's work too.
    helper_cpu: std::time::Duration,
    order: Vec<u32>,
    recycler: Option<Recycler>,
    /// An emptied window back from the recycler that was too small to take over a
    /// growing window's records (see `make_room`); the next new window gets it.
    spare: Option<PendingWindow>,
}

/// Empties written windows on a thread of its own and hands them back for reuse.
/// Emptying a window of ~50k records (freeing their payload facts and findings) took
/// 6-9 ms, and the last big window is sealed after the last packet, when the writer
/// is the only thread left working: there it delayed the end of the run. Reuse keeps a
/// steady run from asking the kernel for fresh pages for every window.
struct Recycler {
    to_empty: crossbeam_channel::Sender<PendingWindow>,
    emptied: crossbeam_channel::Receiver<PendingWindow>,
}

/// How many lines ahead of the copy `seal` asks for an encoded window's lines.
const LINES_AHEAD: usize = 16;

/// Written windows waiting for the recycler.
const DIRTY_WINDOWS: usize = 2;

/// Emptied windows kept for reuse. The writer fills one window while the one before
/// waits to be sealed, so one spare is all a steady run takes.
const SPARE_WINDOWS: usize = 1;

/// A window whose buffers hold more than this is freed on the writer rather than
/// recycled: recycling is for the steady state (a 47k-record window holds about 10 MB),
/// not for the 200k-record windows of a flood. Those kept in a spare, or freed on
/// another thread while the next one filled, raised the peak memory of a 1M-flow SYN
/// flood by a fifth and doubled the writer's time in the allocator.
const SPARE_MAX_BYTES: usize = 32 << 20;

impl Recycler {
    /// The thread ends when the writer drops its side; windows still queued are
    /// freed by it, not waited for. When no thread can be started, its receiving end
    /// is dropped with the closure: sends fail and the writer frees windows itself.
    ///
    /// It runs only on an otherwise idle core (`run_only_when_idle`): at normal
    /// priority, woken to empty the last big window, it took the writer's core for
    /// ~0.6 ms while the other core was idle. A window it has not got to yet when
    /// `DIRTY_WINDOWS` wait is freed by the writer, so memory stays bounded on a
    /// machine with no idle core.
    fn start() -> Recycler {
        let (to_empty, dirty) = crossbeam_channel::bounded::<PendingWindow>(DIRTY_WINDOWS);
        let (back, emptied) = crossbeam_channel::bounded(SPARE_WINDOWS);
        let _ = std::thread::Builder::new()
            .name("mf-recycle".into())
            .spawn(move || {
                crate::telemetry::run_only_when_idle();
                for mut win in dirty {
                    win.clear();
                    // Beyond the spares (or once the writer is gone) it is freed.
                    let _ = back.try_send(win);
                }
            });
        Recycler { to_empty, emptied }
    }
}

impl WindowWriter {
    /// CPU time the helper threads of sealing used so far.
    pub fn helper_cpu(&self) -> std::time::Duration {
        self.helper_cpu
    }

    /// An empty window: one written earlier and emptied by the recycler, or new.
    pub fn take_window(&mut self) -> PendingWindow {
        self.take_spare().unwrap_or_default()
    }

    fn take_spare(&mut self) -> Option<PendingWindow> {
        self.spare.take().or_else(|| {
            self.recycler
                .as_ref()
                .and_then(|r| r.emptied.try_recv().ok())
        })
    }

    /// Makes room in `win` for `extra` more records. When its buffers are full and an
    /// emptied window with room is back from the recycler, the records move into that
    /// one's buffers instead of growing their own. A window is taken when its first
    /// record arrives, which is before the window ahead of it is written and recycled,
    /// so without this every window of a short run (a 1 GB capture spans two) grew
    /// buffers of fresh pages: ~8 MB per 47k-record window, half of the run's page
    /// faults and, at several microseconds each on a VM, a fifth of the writer's time.
    pub fn make_room(&mut self, win: &mut PendingWindow, extra: usize) {
        let needed = win.len() + extra;
        if needed <= win.fields.capacity() {
            return;
        }
        match self.take_spare() {
            Some(spare) if spare.fields.capacity() >= needed => win.move_to_buffers_of(spare),
            other => self.spare = other,
        }
    }

    /// The window's records in output order: start, VNI (`None` first), mirror source,
    /// srcaddr, srcport, dstaddr, dstport, protocol, end, packets, bytes. That is a
    /// total order on what a record says, so the output does not depend on the worker
    /// count or on thread timing; equal records keep arrival order.
    ///
    /// Why ranks: with the three addresses compared as (family, u128) the key was 176
    /// bytes, and sorting a 47k-record window took 40-110 ms. A window holds few
    /// distinct addresses (thousands), so each is replaced by its rank among them,
    /// which compares the same and takes a few bits.
    fn order(&mut self, win: &PendingWindow) -> &[u32] {
        self.by_address.clear();
        self.by_address.extend(0..win.addresses.len() as u32);
        self.by_address
            .sort_unstable_by_key(|&s| win.addresses[s as usize]);
        self.rank.clear();
        self.rank.resize(win.addresses.len(), 0);
        for (i, s) in self.by_address.iter().enumerate() {
            self.rank[*s as usize] = i as u64;
        }
        if !self.order_packed(win) {
            self.order_wide(win);
        }
        &self.order
    }

    /// The order through one 128-bit key per record: start (from the window's first
    /// second), VNI (from the window's least), the three ranks, ports and protocol, each in as few bits as the
    /// window needs (89 for the gen capture's 47k-record windows). Sorting 32-byte
    /// elements instead of 64 halved the sort; when the key leaves 32 bits free, the
    /// record's index goes into them and the elements are 16 bytes. Records equal in
    /// all of that (rare: one connection's direction split by an idle timeout within
    /// one second) are then ordered by end, packets, bytes and arrival. False when the
    /// window needs more than 128 bits.
    fn order_packed(&mut self, win: &PendingWindow) -> bool {
        let bits = |max: u64| 64 - max.leading_zeros();
        let (first, last) = win.start_span.unwrap_or((0, 0));
        let (vni_first, vni_last) = win.vni_span.unwrap_or((0, 0));
        let (start_bits, vni_bits) = (bits(last - first), bits(u64::from(vni_last - vni_first)));
        let rank_bits = bits(win.addresses.len().saturating_sub(1) as u64);
        let key_bits = start_bits + vni_bits + 3 * rank_bits + 40;
        if key_bits > 128 {
            return false;
        }
        let rank = &self.rank;
        let key = |f: &SortFields| {
            let [ms, src, dst] = f.slots;
            let mut k = u128::from(f.start - first);
            let mut put = |value: u64, width: u32| {
                k = (k << width) | u128::from(value);
            };
            put(u64::from(f.vni - vni_first), vni_bits);
            put(rank[ms as usize], rank_bits);
            put(rank[src as usize], rank_bits);
            put(u64::from(f.srcport), 16);
            put(rank[dst as usize], rank_bits);
            put(u64::from(f.dstport), 16);
            put(u64::from(f.protocol), 8);
            k
        };
        let helper_cpu = if key_bits <= 96 {
            self.compact.sort(win, &key, &mut self.order)
        } else {
            self.packed.sort(win, &key, &mut self.order)
        };
        self.helper_cpu += helper_cpu;
        true
    }

    /// The order through seven 64-bit words per record, for windows whose key does not
    /// fit 128 bits (hundreds of thousands of addresses, or starts spread wide).
    fn order_wide(&mut self, win: &PendingWindow) {
        let rank = &self.rank;
        self.keys.clear();
        self.keys
            .extend(win.fields.iter().enumerate().map(|(i, f)| {
                let (end, packets, bytes) = win.tie(i).unwrap_or_default();
                let [ms, src, dst] = &f.slots;
                let rank_of = |slot: &u32| rank[*slot as usize];
                (
                    [
                        f.start,
                        // A VNI has 24 bits and a window fewer than 2^32 addresses, so
                        // each packed field keeps its place in the order.
                        (u64::from(f.vni) << 32) | rank_of(ms),
                        (rank_of(src) << 16) | u64::from(f.srcport),
                        (rank_of(dst) << 24) | (u64::from(f.dstport) << 8) | u64::from(f.protocol),
                        end,
                        packets,
                        bytes,
                    ],
                    i as u32,
                )
            }));
        // The index is part of the key, so equal records keep arrival order.
        self.keys.sort_unstable();
        self.order.clear();
        self.order.extend(self.keys.iter().map(|(_, i)| *i));
    }

    /// Writes one window in output order after the detectors (if any: see
    /// `RecordFormat::prints_findings`) have seen it in that order, then hands it to
    /// the recycler. `w` is `None` once the output has failed
    /// (the records are still consumed, so workers never block on a dead writer).
    pub fn seal(
        &mut self,
        mut win: PendingWindow,
        detector: Option<&mut Detector>,
        w: Option<&mut RecordWriter>,
    ) -> std::io::Result<()> {
        self.order(&win);
        if win.is_encoded() {
            // Lines encoded as the records arrived: copied out in order, and that is all.
            // The order visits them at random, so each line is asked for a few lines
            // ahead of its copy.
            let order = &self.order;
            let lines = order.iter().enumerate().map(|(k, &i)| {
                if let Some(&ahead) = order.get(k + LINES_AHEAD) {
                    win.prefetch_line(ahead as usize);
                }
                win.line(i as usize)
            });
            let result = match w {
                Some(w) => w.write_lines(lines),
                None => Ok(()),
            };
            self.recycle(win);
            return result;
        }
        if !win.has_records() {
            // Lines were encoded for part of the window only (the writer never mixes
            // the two ways; this keeps a mistake from indexing past the records).
            self.recycle(win);
            return Err(std::io::Error::other(
                "a window's records were neither kept nor encoded",
            ));
        }
        // Records are moved into order once: the detectors and the encoder then read
        // them front to back (visiting them through the order instead cost more in
        // cache misses than the moves). A chunk at a time, so that each chunk goes to
        // the detectors while it is in cache, and on to encoding (on another thread,
        // for a large window) while the next is put in order.
        let (records, order) = (&mut win.records, &mut self.order);
        let result = match w {
            Some(w) if w.encodes_in_chunks() => w.write_in_order(records.len(), |emit| {
                place_in_order(records, order, detector, emit)
            }),
            w => {
                place_in_order(records, order, detector, &mut |_| {});
                match w {
                    Some(w) => w.write_all(records),
                    None => Ok(()),
                }
            }
        };
        self.recycle(win);
        result
    }

    /// Hands a written window to the recycler, or frees it.
    fn recycle(&mut self, win: PendingWindow) {
        if win.capacity_bytes() > SPARE_MAX_BYTES {
            // A flood's window: freed here, not kept (see `SPARE_MAX_BYTES`).
            drop(win);
        } else {
            let recycler = self.recycler.get_or_insert_with(Recycler::start);
            if let Err(e) = recycler.to_empty.try_send(win) {
                // No recycler thread, or it is behind: the window is freed here.
                drop(e.into_inner());
            }
        }
    }
}

/// Windows at least this large build and sort their keys in two halves at once (a
/// 47k-record window: key building and sort ~4.5 ms on one thread).
const PARALLEL_ORDER_MIN: usize = 16_384;

/// A record's sort element: its packed key and its index in the window.
trait SortElement: Ord + Copy + Send {
    fn new(key: u128, index: u32) -> Self;
    /// The packed key alone (records with equal keys tie on it).
    fn key(&self) -> u128;
    fn index(&self) -> u32;
}

impl SortElement for (u128, u32) {
    fn new(key: u128, index: u32) -> Self {
        (key, index)
    }
    fn key(&self) -> u128 {
        self.0
    }
    fn index(&self) -> u32 {
        self.1
    }
}

/// A key of at most 96 bits with the index in the low 32: 16 bytes where the pair takes
/// 32 (a `u128` aligns to 16), so sorting and merging move half the bytes.
impl SortElement for u128 {
    fn new(key: u128, index: u32) -> Self {
        key << 32 | u128::from(index)
    }
    fn key(&self) -> u128 {
        self >> 32
    }
    fn index(&self) -> u32 {
        *self as u32
    }
}

/// The sort elements of a window, and for large windows its second half and the merge,
/// or where each second of `start` begins among them.
#[derive(Default)]
struct SortBuffers<E> {
    front: Vec<E>,
    back: Vec<E>,
    merged: Vec<E>,
    second_at: Vec<u32>,
    next_at: Vec<u32>,
}

/// Windows whose records' starts span fewer seconds than this are sorted a second at a
/// time (`SortBuffers::sort_by_start`): an AWS window is 60 or 600 s.
const START_SECONDS_MAX: u64 = 1 << 16;

/// Orders a run of elements with equal keys by end, packets, bytes and arrival.
fn order_ties<E: SortElement>(sorted: &mut [E], win: &PendingWindow) {
    for run in sorted.chunk_by_mut(|a, b| a.key() == b.key()) {
        if run.len() > 1 {
            run.sort_unstable_by_key(|e| {
                let i = e.index();
                (win.tie(i as usize), i)
            });
        }
    }
}

impl<E: SortElement> SortBuffers<E> {
    /// Puts the window's record indices into `order`, sorted by `key` and then by end,
    /// packets, bytes and arrival. Returns the CPU time of the helper thread, if any.
    fn sort(
        &mut self,
        win: &PendingWindow,
        key: &(impl Fn(&SortFields) -> u128 + Sync),
        order: &mut Vec<u32>,
    ) -> std::time::Duration {
        let mut helper_cpu = std::time::Duration::ZERO;
        // The elements of records `range`, sorted, into `into`.
        let build = |range: std::ops::Range<usize>, into: &mut Vec<E>| {
            into.clear();
            into.extend(
                range
                    .clone()
                    .zip(&win.fields[range])
                    .map(|(i, f)| E::new(key(f), i as u32)),
            );
            into.sort_unstable();
        };
        let n = win.len();
        let (first, last) = win.start_span.unwrap_or((0, 0));
        let sorted = if n < PARALLEL_ORDER_MIN {
            build(0..n, &mut self.front);
            &mut self.front
        } else if last - first < START_SECONDS_MAX {
            return self.sort_by_start(win, key, order, first, (last - first + 1) as usize);
        } else {
            // Built and sorted in two halves, one on a helper thread, then merged: the
            // last window is sealed after the last packet, with the other core idle.
            let mid = n / 2;
            let (front, back) = (&mut self.front, &mut self.back);
            let helper = std::thread::scope(|scope| {
                let helper = std::thread::Builder::new()
                    .name("mf-order".into())
                    .spawn_scoped(scope, || {
                        build(mid..n, back);
                        crate::telemetry::thread_cpu_time()
                    });
                build(0..mid, front);
                helper.ok().and_then(|h| h.join().ok())
            });
            match helper {
                Some(cpu) => helper_cpu = cpu,
                // No helper thread: the second half is done here.
                None => build(mid..n, &mut self.back),
            }
            merge_into(&self.front, &self.back, &mut self.merged);
            &mut self.merged
        };
        order_ties(sorted, win);
        order.clear();
        order.extend(sorted.iter().map(|e| e.index()));
        helper_cpu
    }

    /// `sort` for a large window whose starts span `seconds` from `first`: the elements
    /// are counted and placed by start second (the key's leading field), and the seconds
    /// are sorted one by one, the later half of them on a helper thread. With no merge
    /// and each sort a few hundred elements, the last window's order took ~1 ms after
    /// the last packet where halves sorted and merged took 2-3.5 ms.
    fn sort_by_start(
        &mut self,
        win: &PendingWindow,
        key: &(impl Fn(&SortFields) -> u128 + Sync),
        order: &mut Vec<u32>,
        first: u64,
        seconds: usize,
    ) -> std::time::Duration {
        let fields = &win.fields;
        let n = fields.len();
        // second_at[s]: where second s begins; second_at[seconds] = n.
        let at = &mut self.second_at;
        at.clear();
        at.resize(seconds + 1, 0);
        for f in fields {
            at[(f.start - first) as usize + 1] += 1;
        }
        for s in 1..=seconds {
            at[s] += at[s - 1];
        }
        self.next_at.clear();
        self.next_at.extend_from_slice(&at[..seconds]);
        let placed = &mut self.front;
        placed.clear();
        placed.resize(n, E::new(0, 0));
        for (i, f) in fields.iter().enumerate() {
            let next = &mut self.next_at[(f.start - first) as usize];
            placed[*next as usize] = E::new(key(f), i as u32);
            *next += 1;
        }
        // The halves meet at the first second that begins at or past the middle.
        let split_second = at.partition_point(|&p| (p as usize) < n / 2).min(seconds);
        let split = at[split_second] as usize;
        order.clear();
        order.resize(n, 0);
        let sort_seconds = |placed: &mut [E], at: &[u32], order: &mut [u32]| {
            let base = at[0] as usize;
            for bounds in at.windows(2) {
                let second = &mut placed[bounds[0] as usize - base..bounds[1] as usize - base];
                second.sort_unstable();
                order_ties(second, win);
            }
            for (o, e) in order.iter_mut().zip(placed.iter()) {
                *o = e.index();
            }
        };
        let (placed_front, placed_back) = placed.split_at_mut(split);
        let (order_front, order_back) = order.split_at_mut(split);
        let (at_front, at_back) = (&at[..=split_second], &at[split_second..]);
        let helper = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("mf-order".into())
                .spawn_scoped(scope, || {
                    sort_seconds(placed_back, at_back, order_back);
                    crate::telemetry::thread_cpu_time()
                });
            sort_seconds(placed_front, at_front, order_front);
            helper.ok().and_then(|h| h.join().ok())
        });
        match helper {
            Some(cpu) => cpu,
            None => {
                // No helper thread (or it failed): the later seconds are done here.
                let (placed_back, order_back) = (&mut self.front[split..], &mut order[split..]);
                sort_seconds(placed_back, &self.second_at[split_second..], order_back);
                std::time::Duration::ZERO
            }
        }
    }
}

/// `out` = the sorted `a` and `b` merged (ties: `a` first; elements carry distinct
/// indices, so there are none).
fn merge_into<E: Ord + Copy>(a: &[E], b: &[E], out: &mut Vec<E>) {
    out.clear();
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j] < a[i] {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Puts `records` in the order `order` gives (position k takes the record at
/// `order[k]`), following the chain of earlier swaps as `sort_by_cached_key` does,
/// [`ENCODE_CHUNK`] positions at a time. Each chunk, once in place, goes through the
/// detectors and then to `emit`; later swaps only touch later positions, so it is
/// final. `order` is used up.
fn place_in_order<'a>(
    records: &'a mut [FlowRecord],
    order: &mut [u32],
    mut detector: Option<&mut Detector>,
    emit: &mut dyn FnMut(&'a [FlowRecord]),
) {
    let (mut rest, mut base) = (records, 0);
    while !rest.is_empty() {
        let len = rest.len().min(ENCODE_CHUNK);
        for i in base..base + len {
            let mut at = order[i] as usize;
            while at < i {
                at = order[at] as usize;
            }
            order[i] = at as u32;
            rest.swap(i - base, at - base);
        }
        let (chunk, later) = rest.split_at_mut(len);
        if let Some(d) = detector.as_deref_mut() {
            d.observe(chunk);
        }
        emit(chunk);
        (rest, base) = (later, base + len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LogStatus, RecordFormat};

    /// The output order spelled out field by field, as the doc of `order` says.
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

    /// Many records that tie on the first fields, so the later ones decide; IPv4,
    /// IPv6 and missing mirror sources mixed; `truncated_packets` (not part of the
    /// order) numbers them in arrival order.
    fn records(n: u64, seed: u64) -> Vec<FlowRecord> {
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
        let mut x = seed;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        (0..n)
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
            .collect()
    }

    fn window_of(records: &[FlowRecord]) -> PendingWindow {
        let mut win = PendingWindow::default();
        for r in records {
            win.push(r.clone());
        }
        win
    }

    #[test]
    fn window_order_is_the_field_by_field_order_and_stable() {
        // A small window, and one large enough to sort its keys on two threads: by
        // start second (starts over three seconds, or all in one), or in halves then
        // merged (starts 2^25 s apart); keys of at most 96 bits (the index goes into
        // the element) and of more.
        for n in [5000, 2 * PARALLEL_ORDER_MIN as u64 + 1] {
            for (wide_start, one_second) in [(false, false), (false, true), (true, false)] {
                window_order_matches(n, wide_start, one_second);
            }
        }
    }

    fn window_order_matches(n: u64, wide_start: bool, one_second: bool) {
        let mut batch = records(n, 0x9e37_79b9_7f4a_7c15);
        if one_second {
            for r in &mut batch {
                r.start = 1_700_000_000;
            }
        }
        if wide_start {
            // 26 bits of start, 25 of VNI, three 3-bit ranks and 40: 100 bits.
            batch[3].start += 1 << 25;
        }
        let mut expected = batch.clone();
        expected.sort_by_key(reference_key);
        let mut ww = WindowWriter::default();
        ww.order(&window_of(&batch));
        assert_eq!(
            (ww.compact.front.is_empty(), ww.packed.front.is_empty()),
            (wide_start, !wide_start),
            "the key of {} bits goes in the element it fits",
            if wide_start { 100 } else { 76 }
        );
        // Both key layouts, and a window and scratch used before, give that order.
        for packed in [true, false, true] {
            let win = window_of(&batch);
            ww.order(&win);
            if packed {
                assert!(ww.order_packed(&win));
            } else {
                ww.order_wide(&win);
            }
            let order = ww.order.clone();
            // Put in place chunk by chunk, each chunk handed on once final.
            let mut sorted = win.records.clone();
            let mut emitted = Vec::new();
            place_in_order(
                &mut sorted,
                &mut order.clone(),
                Some(&mut Detector::new(Default::default(), 600)),
                &mut |chunk| emitted.extend_from_slice(chunk),
            );
            assert!(sorted == expected && emitted == expected);
            let in_order: Vec<FlowRecord> =
                order.iter().map(|&i| batch[i as usize].clone()).collect();
            assert!(in_order == expected);
            drop(win);
        }
    }

    #[test]
    fn windows_too_wide_for_128_bits_take_the_wide_key() {
        let mut batch = records(500, 3);
        // Starts 2^60 s apart need 61 bits: with VNIs (25), ranks and ports, over 128.
        batch[7].start = 1 << 60;
        batch[9].vni = Some(0xff_ffff);
        let mut expected = batch.clone();
        expected.sort_by_key(reference_key);
        let mut ww = WindowWriter::default();
        let win = window_of(&batch);
        let order = ww.order(&win).to_vec();
        assert!(!ww.order_packed(&win));
        let in_order: Vec<FlowRecord> = order.iter().map(|&i| batch[i as usize].clone()).collect();
        assert!(in_order == expected);
    }

    /// A sealed window is written as the records sorted field by field, with the
    /// findings the detectors give them in that order, in text and JSON: a small
    /// window on one thread, and one large enough to be encoded by two threads while
    /// it is put in order (ending in a partial chunk).
    #[test]
    fn sealed_window_is_the_sorted_window_with_its_findings() {
        for n in [3000, 9 * ENCODE_CHUNK as u64 + 7] {
            sealed_window_matches(n);
        }
    }

    fn sealed_window_matches(n: u64) {
        let dir = std::env::temp_dir().join(format!("mf-window-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Failed TCP attempts from one source to many ports: the port-scan detector
        // gives findings to some records.
        let mut batch = records(n, 7);
        for (i, r) in batch.iter_mut().enumerate() {
            if i % 3 == 0 {
                r.srcaddr = "10.9.9.9".parse().unwrap();
                r.dstport = 1000 + i as u16;
                r.protocol = 6;
                r.conn_state = "S0";
                r.tcp_flags = 2;
                r.packets = 1;
            }
        }
        for (fmt, format) in [
            ("text", RecordFormat::default_text()),
            ("json", RecordFormat::json()),
        ] {
            let path = dir.join(format!("out.{fmt}"));
            let mut w = RecordWriter::open(
                &crate::sink::Destination::File(path.clone()),
                format.clone(),
            )
            .unwrap();
            let mut ww = WindowWriter::default();
            let mut det = Detector::new(Default::default(), 600);
            let win = window_of(&batch);
            ww.seal(win, Some(&mut det), Some(&mut w)).unwrap();
            w.finish().unwrap();
            let got = std::fs::read_to_string(&path).unwrap();

            let mut expected = batch.clone();
            expected.sort_by_key(reference_key);
            let mut det = Detector::new(Default::default(), 600);
            det.observe(&mut expected);
            assert!(expected.iter().any(|r| !r.detections.is_empty()));
            let mut want = String::new();
            for r in &expected {
                format.write(r, &mut want);
            }
            assert_eq!(got, want, "{fmt}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A full window moves into the buffers of a spare with room, keeping its records,
    /// their sort fields and addresses as they were, and then fills on; a spare without room
    /// is kept for the next window. Sealed, it is the window built without any of that.
    #[test]
    fn a_full_window_moves_into_a_spare_with_room_and_seals_the_same() {
        let batch = records(3000, 11);
        let mut rest = batch.iter().cloned();
        let mut ww = WindowWriter::default();
        let mut win = PendingWindow::default();
        let mut fill = |ww: &mut WindowWriter, win: &mut PendingWindow| {
            while win.len() < win.fields.capacity().max(100) {
                ww.make_room(win, 1);
                win.push(rest.next().unwrap());
            }
        };
        fill(&mut ww, &mut win);
        let mut small = PendingWindow::default();
        small.fields.reserve(1);
        let small_capacity = small.fields.capacity();
        assert!(small_capacity < win.len());
        ww.spare = Some(small);
        ww.make_room(&mut win, 1);
        assert_eq!(
            ww.spare.as_ref().map(|s| s.fields.capacity()),
            Some(small_capacity)
        );

        fill(&mut ww, &mut win);
        ww.spare = None;
        let mut big = PendingWindow::default();
        big.fields.reserve(2000);
        let big_capacity = big.fields.capacity();
        ww.spare = Some(big);
        let before = (
            win.records.clone(),
            win.fields.clone(),
            win.ties.clone(),
            win.addresses.clone(),
        );
        ww.make_room(&mut win, 1);
        assert!(ww.spare.is_none());
        assert_eq!(win.fields.capacity(), big_capacity);
        assert_eq!(
            (&win.records, &win.fields, &win.ties, &win.addresses),
            (&before.0, &before.1, &before.2, &before.3)
        );

        for r in rest {
            ww.make_room(&mut win, 1);
            win.push(r);
        }
        let order = |win: &PendingWindow| WindowWriter::default().order(win).to_vec();
        let plain = window_of(&batch);
        assert_eq!(win.records, plain.records);
        assert_eq!(order(&win), order(&plain));
    }

    /// A window whose lines were encoded as its records arrived, in runs and through a
    /// move into a spare's buffers, writes what sealing its records writes; a window
    /// whose first run was taken unencoded keeps its records and is sealed the usual
    /// way, with the same result. One whose records were encoded and then taken
    /// unencoded (which the writer never does) is an error, not a wrong output.
    #[test]
    fn lines_encoded_on_arrival_seal_to_the_same_output() {
        let dir = std::env::temp_dir().join(format!("mf-encoded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 2 * PARALLEL_ORDER_MIN + 7;
        let batch = records(n as u64, 13);
        let format = RecordFormat::custom(
            crate::record::OutputKind::Text,
            "${start} ${srcaddr} ${srcport} ${dstaddr} ${dstport} ${protocol} ${packets} ${bytes} ${end} ${vni} ${log-status}",
        )
        .unwrap();
        let sealed = |win: PendingWindow, name: &str| {
            let path = dir.join(name);
            let mut w = RecordWriter::open(
                &crate::sink::Destination::File(path.clone()),
                format.clone(),
            )
            .unwrap();
            let encoded = win.is_encoded();
            WindowWriter::default()
                .seal(win, None, Some(&mut w))
                .unwrap();
            assert_eq!(w.finish().unwrap(), n as u64);
            (encoded, std::fs::read_to_string(&path).unwrap())
        };
        let (encoded, want) = sealed(window_of(&batch), "records");
        assert!(!encoded);
        let mut expected = String::new();
        let mut sorted = batch.clone();
        sorted.sort_by_key(reference_key);
        for r in &sorted {
            format.write(r, &mut expected);
        }
        assert_eq!(want, expected);

        for unencoded_run in [None, Some(0), Some(3)] {
            let mut ww = WindowWriter::default();
            let mut win = PendingWindow::default();
            let mut rest = &batch[..];
            for (k, len) in [1, 700, 0, 513, 5000].into_iter().cycle().enumerate() {
                if rest.is_empty() {
                    break;
                }
                if k == 2 {
                    // A spare with room takes the window over.
                    let mut spare = PendingWindow::default();
                    spare.fields.reserve(n);
                    ww.spare = Some(spare);
                }
                let (run, later) = rest.split_at(len.min(rest.len()));
                let mut run = run.to_vec();
                ww.make_room(&mut win, run.len());
                if Some(k) == unencoded_run {
                    win.append(&mut run);
                } else {
                    win.append_encoded(&mut run, &format);
                }
                rest = later;
            }
            if unencoded_run == Some(3) {
                let mut w = RecordWriter::open(
                    &crate::sink::Destination::File(dir.join("mixed")),
                    format.clone(),
                )
                .unwrap();
                assert!(WindowWriter::default()
                    .seal(win, None, Some(&mut w))
                    .is_err());
                continue;
            }
            let (encoded, got) = sealed(win, "encoded");
            assert_eq!(encoded, unencoded_run.is_none());
            assert_eq!(got, want, "unencoded run {unencoded_run:?}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Runs of records appended at once make the window that pushing them one by one
    /// makes: the same records, sort fields, addresses and order.
    #[test]
    fn appended_runs_make_the_pushed_window() {
        let batch = records(5000, 5);
        let mut win = PendingWindow::default();
        let mut ww = WindowWriter::default();
        let mut rest = &batch[..];
        for n in [0, 1, 2, 511, 512, 1, 3000].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (run, later) = rest.split_at(n.min(rest.len()));
            let mut run = run.to_vec();
            ww.make_room(&mut win, run.len());
            win.append(&mut run);
            assert!(run.is_empty());
            rest = later;
        }
        let pushed = window_of(&batch);
        assert_eq!(win.records, pushed.records);
        assert_eq!(win.fields, pushed.fields);
        assert_eq!(win.ties, pushed.ties);
        assert_eq!(win.addresses, pushed.addresses);
        assert_eq!(
            (win.start_span, win.vni_span),
            (pushed.start_span, pushed.vni_span)
        );
        let order = |win: &PendingWindow| WindowWriter::default().order(win).to_vec();
        assert_eq!(order(&win), order(&pushed));
    }
}
