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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub vni: Option<u32>,
    pub mirror_source: Option<IpAddr>,
    pub lo: (IpAddr, u16),
    pub hi: (IpAddr, u16),
    pub protocol: u8,
}

/// An address as 128 bits (IPv4 as IPv4-mapped IPv6); `None` as 0.
#[inline]
fn bits(a: Option<IpAddr>) -> u128 {
    match a {
        Some(IpAddr::V4(v)) => 0xffff_0000_0000 | u128::from(u32::from(v)),
        Some(IpAddr::V6(v)) => u128::from(v),
        None => 0,
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

/// Hashes the key as a few fixed-size words rather than field by field (a derived Hash
/// writes every enum tag and tuple member separately): one flow-table lookup per
/// packet makes this the table's hottest code. Equal keys give equal words.
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let vni = self.vni.map_or(0, |v| u64::from(v) | 1 << 32);
        let ports = u64::from(self.lo.1) | u64::from(self.hi.1) << 16;
        state.write_u64(vni | u64::from(self.protocol) << 40 | ports << 48);
        state.write_u64(ports);
        state.write_u128(bits(Some(self.lo.0)));
        state.write_u128(bits(Some(self.hi.0)));
        state.write_u128(bits(self.mirror_source));
    }
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and the packet's side.
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
        (
            FlowKey {
                vni,
                mirror_source,
                lo,
                hi,
                protocol,
            },
            side,
        )
    }

    /// Source and destination endpoints of traffic travelling on `side`.
    pub fn endpoints(&self, side: Side) -> ((IpAddr, u16), (IpAddr, u16)) {
        match side {
            Side::LoToHi => (self.lo, self.hi),
            Side::HiToLo => (self.hi, self.lo),
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
    fn vni_separates_overlapping_addresses() {
        let (a, _) = FlowKey::new(Some(1), None, ep("10.0.0.1", 1), ep("10.0.0.2", 2), 6);
        let (b, _) = FlowKey::new(Some(2), None, ep("10.0.0.1", 1), ep("10.0.0.2", 2), 6);
        assert_ne!(a, b);
    }
}
