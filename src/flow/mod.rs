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
    /// Transport payload as captured: a slice of the capture or receive slab, not a
    /// copy; empty when there is none.
    pub payload: Bytes,
}
