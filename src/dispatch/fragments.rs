//! Fragment tracker: remembers the ports of first fragments so later fragments of the
//! same datagram (which carry no transport header) count to the same flow.
//!
//! Keyed by session, addresses, protocol and IP identification (RFC 791 / RFC 8200 §4.5).
//! A later fragment whose first fragment was not seen (lost, reordered, or never
//! mirrored) goes to the flow with ports 0 between the same addresses: a documented
//! bucket, counted as an orphan, never dropped.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::decap::MirrorContext;
use crate::parse::PacketView;
use crate::telemetry::IngestStats;

/// Datagrams tracked at once. A fragment flood cannot grow the tracker past this; when
/// full, entries older than [`FRAGMENT_TTL_NS`] go first, then everything.
pub const MAX_TRACKED_DATAGRAMS: usize = 65_536;

/// How long a first fragment's ports are remembered (Linux ipfrag_time is 30 s).
pub const FRAGMENT_TTL_NS: u64 = 30_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct DatagramKey {
    vni: Option<u32>,
    mirror_source: Option<IpAddr>,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    id: u32,
}

#[derive(Default)]
pub struct FragmentTracker {
    ports: FxHashMap<DatagramKey, (u16, u16, u64)>,
}

impl FragmentTracker {
    fn key(ctx: &MirrorContext, v: &PacketView, id: u32) -> DatagramKey {
        DatagramKey {
            vni: ctx.vni,
            mirror_source: ctx.mirror_source,
            src: v.src,
            dst: v.dst,
            protocol: v.protocol,
            id,
        }
    }

    pub fn first(
        &mut self,
        ctx: &MirrorContext,
        v: &PacketView,
        id: u32,
        ts_ns: u64,
        stats: &mut IngestStats,
    ) {
        if self.ports.len() >= MAX_TRACKED_DATAGRAMS {
            let before = self.ports.len();
            self.ports.retain(|_, e| e.2 + FRAGMENT_TTL_NS > ts_ns);
            if self.ports.len() >= MAX_TRACKED_DATAGRAMS {
                self.ports.clear();
            }
            stats.fragment_evictions += (before - self.ports.len()) as u64;
        }
        self.ports
            .insert(Self::key(ctx, v, id), (v.src_port, v.dst_port, ts_ns));
    }

    pub fn later(&mut self, ctx: &MirrorContext, v: &PacketView, id: u32) -> Option<(u16, u16)> {
        self.ports
            .get(&Self::key(ctx, v, id))
            .map(|(s, d, _)| (*s, *d))
    }
}
