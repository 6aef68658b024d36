//! `FlowKey`: the identity of a bidirectional flow as seen by one mirror session.
//!
//! The key holds the VNI and mirror source (so overlapping VPC address ranges of
//! different sessions stay apart), the two endpoints in a canonical order, and the IP
//! protocol. Both directions of a conversation build the same key; [`Side`] says which
//! way a packet went relative to that order. Hashing the key is therefore symmetric.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// Which way a packet travels relative to the key's canonical endpoint order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// From `lo` to `hi`.
    LoToHi = 0,
    /// From `hi` to `lo`.
    HiToLo = 1,
}

impl Side {
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Side {
        match self {
            Side::LoToHi => Side::HiToLo,
            Side::HiToLo => Side::LoToHi,
        }
    }
}

/// The key, packed into fixed-width words: 64 bytes where `IpAddr` fields took 68,
/// and built, compared and hashed as whole words. `IpAddr` is a one-byte tag and up to
/// 16 bytes of address: building it wrote bytes at odd offsets that the next copy read
/// back as 16-byte words, a store-forwarding stall on every packet in dispatch, and
/// equality compared tags and bytes one after another. Absent parts (no VNI, no mirror
/// source) are zero with their flag clear, so derived equality is exact.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Addresses as 128 bits, high word first (IPv4: the 32-bit value, flag clear).
    lo_addr: [u64; 2],
    hi_addr: [u64; 2],
    source_addr: [u64; 2],
    vni: u32,
    lo_port: u16,
    hi_port: u16,
    pub protocol: u8,
    /// `HAS_VNI`, `HAS_SOURCE`, and which addresses are IPv6.
    flags: u8,
}

const HAS_VNI: u8 = 1;
const HAS_SOURCE: u8 = 2;
const LO_V6: u8 = 4;
const HI_V6: u8 = 8;
const SOURCE_V6: u8 = 16;

/// An address as (is IPv6, 128 bits high word first).
#[inline(always)]
fn split(a: IpAddr) -> (bool, [u64; 2]) {
    match a {
        IpAddr::V4(v) => (false, [0, u64::from(u32::from(v))]),
        IpAddr::V6(v) => {
            let b = u128::from(v);
            (true, [(b >> 64) as u64, b as u64])
        }
    }
}

#[inline(always)]
fn join(v6: bool, w: [u64; 2]) -> IpAddr {
    if v6 {
        IpAddr::V6((u128::from(w[0]) << 64 | u128::from(w[1])).into())
    } else {
        IpAddr::V4((w[1] as u32).into())
    }
}

/// `a <= b` in the derived order of `(IpAddr, u16)` (IPv4 before IPv6, then address,
/// then port), as integer comparisons: the derived one chains enum and byte compares
/// and was not inlined (3 % of a flows-only run).
#[inline(always)]
fn endpoint_le(a: (IpAddr, u16), b: (IpAddr, u16)) -> bool {
    match (a.0, b.0) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            (u64::from(u32::from(x)) << 16 | u64::from(a.1))
                <= (u64::from(u32::from(y)) << 16 | u64::from(b.1))
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => (u128::from(x), a.1) <= (u128::from(y), b.1),
        (IpAddr::V4(_), IpAddr::V6(_)) => true,
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// Hashes the key as five words: one flow-table lookup (and, with several workers, the
/// choice of worker) per packet makes this the table's hottest code. The mirror
/// source's words are folded into one: flows that differ only in it are rare, and
/// they still compare unequal. Equal keys give equal words.
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let meta =
            u64::from(self.vni) | u64::from(self.lo_port) << 32 | u64::from(self.hi_port) << 48;
        state.write_u64(self.lo_addr[0] ^ self.hi_addr[0].rotate_left(32));
        state.write_u64(self.lo_addr[1]);
        state.write_u64(self.hi_addr[1]);
        state.write_u64(meta);
        state.write_u64(
            self.source_addr[0]
                ^ self.source_addr[1]
                ^ u64::from(self.protocol) << 8
                ^ u64::from(self.flags),
        );
    }
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowKey")
            .field("vni", &self.vni())
            .field("mirror_source", &self.mirror_source())
            .field("lo", &self.lo())
            .field("hi", &self.hi())
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and the packet's side.
    #[inline]
    pub fn new(
        vni: Option<u32>,
        mirror_source: Option<IpAddr>,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        protocol: u8,
    ) -> (FlowKey, Side) {
        let (lo, hi, side) = if endpoint_le(src, dst) {
            (src, dst, Side::LoToHi)
        } else {
            (dst, src, Side::HiToLo)
        };
        let (lo_v6, lo_addr) = split(lo.0);
        let (hi_v6, hi_addr) = split(hi.0);
        let (source_v6, source_addr) = mirror_source.map_or((false, [0, 0]), split);
        let flags = if vni.is_some() { HAS_VNI } else { 0 }
            | if mirror_source.is_some() {
                HAS_SOURCE
            } else {
                0
            }
            | if lo_v6 { LO_V6 } else { 0 }
            | if hi_v6 { HI_V6 } else { 0 }
            | if source_v6 { SOURCE_V6 } else { 0 };
        (
            FlowKey {
                lo_addr,
                hi_addr,
                source_addr,
                vni: vni.unwrap_or(0),
                lo_port: lo.1,
                hi_port: hi.1,
                protocol,
                flags,
            },
            side,
        )
    }

    /// The mirror session's VNI (none for plain captures).
    #[inline]
    pub fn vni(&self) -> Option<u32> {
        (self.flags & HAS_VNI != 0).then_some(self.vni)
    }

    /// The tunnel's outer source (the mirrored interface's address), when tunnelled.
    #[inline]
    pub fn mirror_source(&self) -> Option<IpAddr> {
        (self.flags & HAS_SOURCE != 0).then(|| join(self.flags & SOURCE_V6 != 0, self.source_addr))
    }

    /// The endpoint first in the canonical order.
    #[inline]
    pub fn lo(&self) -> (IpAddr, u16) {
        (join(self.flags & LO_V6 != 0, self.lo_addr), self.lo_port)
    }

    /// The other endpoint.
    #[inline]
    pub fn hi(&self) -> (IpAddr, u16) {
        (join(self.flags & HI_V6 != 0, self.hi_addr), self.hi_port)
    }

    /// Source and destination endpoints of traffic travelling on `side`.
    #[inline]
    pub fn endpoints(&self, side: Side) -> ((IpAddr, u16), (IpAddr, u16)) {
        match side {
            Side::LoToHi => (self.lo(), self.hi()),
            Side::HiToLo => (self.hi(), self.lo()),
        }
    }

    /// A stable 64-bit hash of the key (the same for both directions), used to pick the
    /// worker. FxHash: fast, deterministic across runs, good enough for spreading. Its
    /// high bits are the well-mixed ones, and dispatch scales those to the worker count.
    pub fn symmetric_hash(&self) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str, p: u16) -> (IpAddr, u16) {
        (s.parse().unwrap(), p)
    }

    #[test]
    fn both_directions_share_key_and_hash() {
        let (a, sa) = FlowKey::new(
            Some(7),
            None,
            ep("10.0.1.10", 40000),
            ep("198.51.100.7", 443),
            6,
        );
        let (b, sb) = FlowKey::new(
            Some(7),
            None,
            ep("198.51.100.7", 443),
            ep("10.0.1.10", 40000),
            6,
        );
        assert_eq!(a, b);
        assert_eq!(a.symmetric_hash(), b.symmetric_hash());
        assert_eq!(sa.other(), sb);
        assert_eq!(a.endpoints(sa).0, ep("10.0.1.10", 40000));
    }

    #[test]
    fn endpoint_order_is_the_derived_one() {
        let eps = [
            ep("0.0.0.0", 0),
            ep("10.0.0.1", 1),
            ep("10.0.0.1", 65535),
            ep("10.0.0.2", 0),
            ep("255.255.255.255", 65535),
            ep("::", 0),
            ep("::ffff:10.0.0.1", 1),
            ep("2001:db8::1", 80),
            ep("2001:db8::1", 443),
            ep("fe80::1", 0),
            ep("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        ];
        for a in eps {
            for b in eps {
                assert_eq!(endpoint_le(a, b), a <= b, "{a:?} <= {b:?}");
            }
        }
    }

    #[test]
    fn fields_read_back_as_built() {
        let cases = [
            (
                Some(7),
                Some("10.0.0.5"),
                ep("10.0.1.10", 40000),
                ep("198.51.100.7", 443),
            ),
            (None, None, ep("2001:db8::2", 53), ep("2001:db8::1", 5353)),
            (
                Some(0),
                Some("fd00::1"),
                ep("::ffff:10.0.0.1", 1),
                ep("10.0.0.1", 1),
            ),
            (Some(u32::MAX >> 8), None, ep("0.0.0.0", 0), ep("::", 0)),
        ];
        for (vni, source, a, b) in cases {
            let source: Option<IpAddr> = source.map(|s| s.parse().unwrap());
            let (k, side) = FlowKey::new(vni, source, a, b, 17);
            assert_eq!(k.vni(), vni);
            assert_eq!(k.mirror_source(), source);
            assert_eq!(k.endpoints(side), (a, b));
            assert_eq!((k.lo(), k.hi()), if a <= b { (a, b) } else { (b, a) });
            assert_eq!(k.protocol, 17);
        }
        // An IPv4-mapped IPv6 address is not the IPv4 address, and VNI 0 is not "none".
        let v4 = FlowKey::new(None, None, ep("10.0.0.1", 1), ep("10.0.0.2", 2), 6).0;
        let mapped = FlowKey::new(None, None, ep("::ffff:10.0.0.1", 1), ep("10.0.0.2", 2), 6).0;
        assert_ne!(v4, mapped);
        let vni0 = FlowKey::new(Some(0), None, ep("10.0.0.1", 1), ep("10.0.0.2", 2), 6).0;
        assert_ne!(v4, vni0);
    }

    #[test]
    fn vni_separates_overlapping_addresses() {
        let (a, _) = FlowKey::new(Some(1), None, ep("10.0.0.1", 1), ep("10.0.0.2", 2), 6);
        let (b, _) = FlowKey::new(Some(2), None, ep("10.0.0.1", 1), ep("10.0.0.2", 2), 6);
        assert_ne!(a, b);
    }
}
