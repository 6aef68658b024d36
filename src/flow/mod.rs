//! Flow: per-worker flow tables. A worker receives [`FlowPacket`]s from `dispatch`, keeps
//! per-direction counters per flow in its own table (never shared), cuts them at
//! aggregation-window boundaries and idle timeouts, and hands `FlowRecord`s to the sinks.

pub mod conn_state;
pub mod table;

use bytes::Bytes;

use crate::parse::{FlowKey, Side};
use crate::record::FlowDirection;

pub use table::{FlowTable, FlowTableStats};

/// What a worker needs of one packet: its flow, side, time and the counted facts.
#[derive(Clone, Debug)]
pub struct FlowPacket {
    pub key: FlowKey,
    pub side: Side,
    /// Capture (replay) or receive (serve) time, ns since the epoch.
    pub ts_ns: u64,
    /// Bytes per the IP header.
    pub ip_len: u32,
    /// Raw TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    pub truncated: bool,
    /// Direction relative to the observing interface, when known.
    pub direction: Option<FlowDirection>,
    /// Arrival order, so records come out in a stable order.
    pub seq: u64,
    /// TCP sequence number of the segment (0 otherwise).
    pub tcp_seq: u32,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// Where the transport payload as captured sits in the batch's buffers (the mapped
    /// capture or a receive slab): no copy, and no reference count per packet.
    pub payload: PayloadRef,
}

impl FlowPacket {
    /// A packet with only the counted facts: not truncated, no direction, no TCP
    /// sequence, ICMP type or payload (benches and tests build these).
    pub fn counted(
        key: FlowKey,
        side: Side,
        ts_ns: u64,
        ip_len: u32,
        tcp_flags: u8,
        seq: u64,
    ) -> FlowPacket {
        FlowPacket {
            key,
            side,
            ts_ns,
            ip_len,
            tcp_flags,
            truncated: false,
            direction: None,
            seq,
            tcp_seq: 0,
            icmp: None,
            payload: PayloadRef::default(),
        }
    }
}

/// Alignment of the window a batch holds of a buffer larger than 4 GiB
/// (`Batch::payload_ref`).
const PAYLOAD_WINDOW: usize = 1 << 31;

/// A transport payload inside one of a batch's shared buffers; `len` 0 when none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadRef {
    pub buffer: u32,
    pub offset: u32,
    pub len: u32,
}

/// Packets for one worker and the buffers their payloads point into. The buffers are
/// reference-counted once per batch rather than once per packet: a per-packet count
/// would bounce one cache line between the ingest thread and every worker.
#[derive(Debug, Default)]
pub struct Batch {
    pub packets: Vec<FlowPacket>,
    pub buffers: Vec<Bytes>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            packets: Vec::with_capacity(n),
            buffers: Vec::new(),
        }
    }

    /// The payload of `p` (empty if its reference does not fit, which dispatch never
    /// produces).
    #[inline]
    pub fn payload(&self, p: &FlowPacket) -> &[u8] {
        let r = p.payload;
        if r.len == 0 {
            return &[];
        }
        self.buffers
            .get(r.buffer as usize)
            .and_then(|b| b.get(r.offset as usize..r.offset as usize + r.len as usize))
            .unwrap_or(&[])
    }

    /// Adds `p` with its payload at `buffer[at..at + len]`.
    #[inline(always)]
    pub fn push(&mut self, mut p: FlowPacket, buffer: &Bytes, at: usize, len: usize) {
        p.payload = self.payload_ref(buffer, at, len);
        self.packets.push(p);
    }

    /// The reference to a payload at `buffer[at..at + len]`, the buffer taken into the
    /// batch if it is not the last one taken (dispatch asks first, then writes the
    /// packet straight into the batch).
    ///
    /// Offsets are 32-bit, so past 4 GiB of one buffer (a mapped capture larger than
    /// that) the batch holds a 2 GiB-aligned window of it instead of the whole, and
    /// the offset is taken inside the window.
    #[inline(always)]
    pub fn payload_ref(&mut self, buffer: &Bytes, at: usize, len: usize) -> PayloadRef {
        if len == 0 {
            return PayloadRef::default();
        }
        let (base, end) = if at + len <= u32::MAX as usize {
            (0, buffer.len())
        } else {
            let base = at & !(PAYLOAD_WINDOW - 1);
            (base, buffer.len().min(base + u32::MAX as usize))
        };
        let start = buffer.as_ptr().wrapping_add(base);
        let same = self
            .buffers
            .last()
            .is_some_and(|b| b.as_ptr() == start && b.len() == end - base);
        if !same {
            self.buffers.push(if base == 0 && end == buffer.len() {
                buffer.clone()
            } else {
                buffer.slice(base..end)
            });
        }
        PayloadRef {
            buffer: (self.buffers.len() - 1) as u32,
            offset: (at - base) as u32,
            len: len as u32,
        }
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn clear(&mut self) {
        self.packets.clear();
        self.buffers.clear();
    }
}
