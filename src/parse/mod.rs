//! Parse: the innermost packet as a small `PacketView` of the facts flow accounting needs.
//!
//! Receives etherparse lax slices from `decap` (so every layer that parsed is kept and
//! truncation is tolerated) and hands `dispatch` addresses, ports, protocol, the IP
//! length from the header (never the captured length: mirror sessions truncate), raw TCP
//! flags, fragment identity and where the transport payload sits in the frame. Nothing
//! is copied; the view holds offsets into the frame.

pub mod fast;
pub mod flow_key;

use std::net::IpAddr;
use std::num::NonZeroU64;

use etherparse::{LaxNetSlice, LinkSlice, TransportSlice};

use crate::decap::Decapsulated;
pub use flow_key::{FlowKey, Side};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Where a packet sits in IP fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram.
    No,
    /// Offset 0 with more to come: carries the transport header and so the ports.
    First { id: u32 },
    /// Offset > 0: no transport header; ports come from the first fragment if seen.
    Later { id: u32 },
}

/// An Ethernet address held as one word, so that telling a packet's direction is a
/// compare per address: kept as `Option<[u8; 6]>` in the view, each was assembled from a
/// 4- and a 2-byte load and masked, ~20 of the ~45 instructions `flow-direction` took
/// per mirrored packet. The six bytes sit in the low 48 bits (first byte lowest) and bit
/// 48 is set, so the word is never zero and `Option<Mac>` is 8 bytes too.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(NonZeroU64);

const MAC_PRESENT: NonZeroU64 = match NonZeroU64::new(1 << 48) {
    Some(bit) => bit,
    None => panic!("bit 48 is not zero"),
};

impl Mac {
    pub fn new(octets: [u8; 6]) -> Mac {
        let [a, b, c, d, e, f] = octets;
        Mac::from_prefix(&[a, b, c, d, e, f, 0, 0])
    }

    /// The address in the first six of `eight` bytes (the other two are ignored): a
    /// frame's destination and source are read with one load each.
    #[inline(always)]
    pub fn from_prefix(eight: &[u8; 8]) -> Mac {
        Mac(MAC_PRESENT | (u64::from_le_bytes(*eight) & 0xffff_ffff_ffff))
    }

    pub fn octets(self) -> [u8; 6] {
        let [a, b, c, d, e, f, _, _] = self.0.get().to_le_bytes();
        [a, b, c, d, e, f]
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.octets();
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The per-packet facts flow accounting needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketView {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// True when the ports were read (TCP/UDP header, or enough of it, present).
    pub ports_known: bool,
    /// Bytes per the IP header: IPv4 total length, IPv6 40 + payload length.
    pub ip_len: u32,
    /// Raw TCP flags byte (FIN 0x01 ... CWR 0x80), 0 for other protocols.
    pub tcp_flags: u8,
    /// TCP sequence number (0 for other protocols), for stream reassembly.
    pub tcp_seq: u32,
    /// ICMP/ICMPv6 type and code (Community ID needs them; AWS's ports stay 0).
    pub icmp: Option<(u8, u8)>,
    /// Fewer bytes captured than the IP header says were sent.
    pub truncated: bool,
    pub fragment: Fragment,
    /// Inner Ethernet addresses, when the packet came in an Ethernet frame.
    pub src_mac: Option<Mac>,
    pub dst_mac: Option<Mac>,
    /// Transport payload as (offset from the frame start, captured length).
    pub payload: (u32, u32),
}

/// An empty view (IPv4 `0.0.0.0` both ways, nothing known), for reusable slots.
impl Default for PacketView {
    fn default() -> PacketView {
        let none = IpAddr::from([0u8; 4]);
        PacketView::ip(none, none, 0, 0, false, Fragment::No, None, None)
    }
}

impl PacketView {
    /// The IP-layer facts; transport fields start empty (ports unknown, no payload).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn ip(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        ip_len: u32,
        truncated: bool,
        fragment: Fragment,
        src_mac: Option<Mac>,
        dst_mac: Option<Mac>,
    ) -> PacketView {
        PacketView {
            src,
            dst,
            protocol,
            src_port: 0,
            dst_port: 0,
            ports_known: false,
            ip_len,
            tcp_flags: 0,
            tcp_seq: 0,
            icmp: None,
            truncated,
            fragment,
            src_mac,
            dst_mac,
            payload: (0, 0),
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Why a decapsulated packet gave no view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Decap guarantees an IP layer; kept for views built from other sources.
    NoIp,
}

/// Decap + parse of one captured frame: the fast path for common shapes, else the
/// general `decap::decapsulate` + [`view`] (which agree; see `fast`).
#[inline(always)]
pub fn decode(
    frame: &[u8],
    link: crate::ingest::LinkType,
    ports: crate::decap::TunnelPorts,
) -> Result<(crate::decap::MirrorContext, PacketView), crate::decap::DecapError> {
    let mut out = Default::default();
    decode_into(frame, link, ports, &mut out)?;
    Ok(out)
}

/// [`decode`] into `out`, which the caller keeps from packet to packet (see
/// `fast::decode_frame_into` for why); after an error `out` holds anything.
#[inline(always)]
pub fn decode_into(
    frame: &[u8],
    link: crate::ingest::LinkType,
    ports: crate::decap::TunnelPorts,
    out: &mut (crate::decap::MirrorContext, PacketView),
) -> Result<(), crate::decap::DecapError> {
    if !fast::decode_frame_into(frame, link, ports, out) {
        *out = decode_general(frame, link, ports)?;
    }
    Ok(())
}

/// The general path of [`decode`], kept out of line: inlined into the caller's packet
/// loop, its etherparse slices and view made that loop's frame and register pressure
/// larger for every packet, though ~0.1 % of packets take it.
#[cold]
#[inline(never)]
fn decode_general(
    frame: &[u8],
    link: crate::ingest::LinkType,
    ports: crate::decap::TunnelPorts,
) -> Result<(crate::decap::MirrorContext, PacketView), crate::decap::DecapError> {
    let d = crate::decap::decapsulate(frame, link, ports)?;
    let v = view(frame, &d).map_err(|_| crate::decap::DecapError::IpHeader)?;
    Ok((d.ctx, v))
}

/// Decap + parse of a datagram received on tunnel port `dport` (`serve`).
#[inline]
pub fn decode_datagram(
    payload: &[u8],
    dport: u16,
    outer_src: IpAddr,
    ports: crate::decap::TunnelPorts,
) -> Result<(crate::decap::MirrorContext, PacketView), crate::decap::DecapError> {
    if let Some(hit) = fast::decode_datagram(payload, dport, outer_src, ports) {
        return Ok(hit);
    }
    let d = crate::decap::decapsulate_datagram(payload, dport, outer_src, ports)?;
    let v = view(payload, &d).map_err(|_| crate::decap::DecapError::IpHeader)?;
    Ok((d.ctx, v))
}

/// Builds the view of the innermost packet of `frame`.
pub fn view(frame: &[u8], d: &Decapsulated<'_>) -> Result<PacketView, ParseError> {
    let p = &d.packet;
    let (src, dst, ip_len, fragment, ip_payload) = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let header_len = h.slice().len();
            let total = usize::from(h.total_len());
            let payload = v4.payload();
            // A zero or impossible total length happens on captures taken before TSO
            // segmentation; then the captured length is the best we have.
            let ip_len = if total >= header_len {
                total
            } else {
                header_len + payload.payload.len()
            };
            let off = h.fragments_offset().value();
            let id = u32::from(h.identification());
            let fragment = if off > 0 {
                Fragment::Later { id }
            } else if h.more_fragments() {
                Fragment::First { id }
            } else {
                Fragment::No
            };
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                ip_len,
                fragment,
                payload,
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let payload = v6.payload();
            let declared = usize::from(h.payload_length());
            let ip_len = if declared > 0 {
                40 + declared
            } else {
                // Jumbograms and TSO captures say 0: count what was captured.
                40 + v6.extensions().slice().len() + payload.payload.len()
            };
            let exts = v6.extensions();
            let fragment = ipv6_fragment(exts.first_header().map(|n| n.0), exts.slice());
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                ip_len,
                fragment,
                payload,
            )
        }
        _ => return Err(ParseError::NoIp),
    };
    let protocol = ip_payload.ip_number.0;
    let (src_mac, dst_mac) = match &p.link {
        Some(LinkSlice::Ethernet2(e)) => {
            (Some(Mac::new(e.source())), Some(Mac::new(e.destination())))
        }
        _ => (None, None),
    };
    let mut v = PacketView::ip(
        src,
        dst,
        protocol,
        ip_len as u32,
        ip_payload.incomplete,
        fragment,
        src_mac,
        dst_mac,
    );
    let offset_of = |s: &[u8]| -> (u32, u32) {
        let off = (s.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
        if off <= frame.len() {
            (off as u32, s.len() as u32)
        } else {
            (0, 0)
        }
    };
    if let Fragment::Later { .. } = fragment {
        return Ok(v);
    }
    match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            v.src_port = tcp.source_port();
            v.dst_port = tcp.destination_port();
            v.ports_known = true;
            v.tcp_flags = tcp.slice().get(13).copied().unwrap_or(0);
            v.tcp_seq = tcp.sequence_number();
            v.payload = offset_of(tcp.payload());
        }
        Some(TransportSlice::Udp(udp)) => {
            v.src_port = udp.source_port();
            v.dst_port = udp.destination_port();
            v.ports_known = true;
            v.payload = offset_of(udp.payload());
        }
        // AWS writes 0 for both ports of ICMP, ICMPv6 and every other protocol.
        Some(TransportSlice::Icmpv4(i)) => v.icmp = Some((i.type_u8(), i.code_u8())),
        Some(TransportSlice::Icmpv6(i)) => v.icmp = Some((i.type_u8(), i.code_u8())),
        Some(_) => {}
        None => {
            // Transport header cut short (mirror truncation, snap length) or a first
            // fragment, which etherparse does not descend into: read the fixed fields
            // that are present. Ports are the first four bytes of TCP and UDP alike.
            let b = ip_payload.payload;
            if (protocol == PROTO_TCP || protocol == PROTO_UDP) && b.len() >= 4 {
                v.src_port = u16::from_be_bytes([b[0], b[1]]);
                v.dst_port = u16::from_be_bytes([b[2], b[3]]);
                v.ports_known = true;
                if protocol == PROTO_TCP {
                    v.tcp_flags = b.get(13).copied().unwrap_or(0);
                }
            }
            if fragment == Fragment::No && (protocol == PROTO_TCP || protocol == PROTO_UDP) {
                v.truncated = true;
            }
        }
    }
    Ok(v)
}

/// Finds the fragment header among IPv6 extension headers (RFC 8200 §4), walking the
/// raw bytes with checked reads. (etherparse's extension iterator trusts lengths it did
/// not check on lax slices; fuzzing found it reading past the end.)
fn ipv6_fragment(first: Option<u8>, mut b: &[u8]) -> Fragment {
    let mut next = first;
    for _ in 0..16 {
        let Some(n) = next else { return Fragment::No };
        let len = match n {
            44 => {
                let (Some(off), Some(id)) = (b.get(2..4), b.get(4..8)) else {
                    return Fragment::No;
                };
                let offset = u16::from_be_bytes([off[0], off[1]]) >> 3;
                let more = off[1] & 1 != 0;
                let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                return if offset > 0 {
                    Fragment::Later { id }
                } else if more {
                    Fragment::First { id }
                } else {
                    Fragment::No
                };
            }
            0 | 43 | 60 | 135 | 139 | 140 => (usize::from(*b.get(1).unwrap_or(&0)) + 1) * 8,
            51 => (usize::from(*b.get(1).unwrap_or(&0)) + 2) * 4,
            _ => return Fragment::No,
        };
        next = b.first().copied();
        b = b.get(len..).unwrap_or(&[]);
        if b.is_empty() {
            return Fragment::No;
        }
    }
    Fragment::No
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decap::{decapsulate, TunnelPorts};
    use crate::ingest::LinkType;

    /// A MAC read from a frame with the two bytes after it is the same MAC whatever
    /// those bytes are, the all-zero address is still `Some`, and the word keeps
    /// `Option<Mac>` at 8 bytes.
    #[test]
    fn mac_is_six_bytes_in_one_word() {
        let eni = [0x02, 0x85, 0x69, 0xc2, 0xab, 0x02];
        let mut frame = [0u8; 14];
        frame[6..12].copy_from_slice(&eni);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let from_frame = Mac::from_prefix(frame[6..14].try_into().unwrap());
        assert_eq!(from_frame, Mac::new(eni));
        assert_eq!(from_frame.octets(), eni);
        assert_ne!(
            Mac::from_prefix(frame[0..8].try_into().unwrap()),
            from_frame
        );
        assert_eq!(Mac::from_prefix(&[0; 8]).octets(), [0; 6]);
        assert_eq!(format!("{from_frame:?}"), "02:85:69:c2:ab:02");
        assert_eq!(std::mem::size_of::<Option<Mac>>(), 8);
    }

    /// An inner IPv4/TCP SYN as in `gen` captures: 10.0.1.10:40000 -> 198.51.100.7:443,
    /// total length 60 (20 IP + 40 TCP with options), MSS option.
    fn syn_frame() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 10], [2, 0, 0, 0, 0, 1])
            .ipv4([10, 0, 1, 10], [198, 51, 100, 7], 64)
            .tcp(40000, 443, 1000, 64240)
            .syn()
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn view_of(frame: &[u8]) -> Option<PacketView> {
        let d = decapsulate(frame, LinkType::Ethernet, TunnelPorts::default()).ok()?;
        view(frame, &d).ok()
    }

    #[test]
    fn tcp_syn_view() {
        let f = syn_frame();
        let v = view_of(&f).unwrap();
        assert_eq!(v.src, "10.0.1.10".parse::<IpAddr>().unwrap());
        assert_eq!(
            (v.src_port, v.dst_port, v.protocol),
            (40000, 443, PROTO_TCP)
        );
        assert_eq!(v.ip_len, 44);
        assert_eq!(v.tcp_flags, 0x02);
        assert!(!v.truncated);
        assert_eq!(v.src_mac, Some(Mac::new([2, 0, 0, 0, 1, 10])));
    }

    #[test]
    fn every_truncated_prefix_keeps_ip_length() {
        let f = syn_frame();
        for n in 0..f.len() {
            let Some(v) = view_of(&f[..n]) else {
                assert!(n < 14 + 20, "IP header complete at {n} but no view");
                continue;
            };
            assert_eq!(v.ip_len, 44, "bytes come from the IP header at prefix {n}");
            assert!(v.truncated, "prefix {n} must count as truncated");
            if n >= 14 + 20 + 4 {
                assert_eq!((v.src_port, v.dst_port), (40000, 443), "prefix {n}");
            }
            if n >= 14 + 20 + 14 {
                assert_eq!(v.tcp_flags, 0x02, "prefix {n}");
            }
        }
    }

    #[test]
    fn ipv4_fragments() {
        let mut f = syn_frame();
        // Later fragment: offset 185 (8-byte units), identification 0x1234.
        f[14 + 4] = 0x12;
        f[14 + 5] = 0x34;
        f[14 + 6] = 0x00;
        f[14 + 7] = 185;
        let v = view_of(&f).unwrap();
        assert_eq!(v.fragment, Fragment::Later { id: 0x1234 });
        assert!(!v.ports_known);
        // First fragment: MF set, offset 0, ports still read.
        f[14 + 6] = 0x20;
        f[14 + 7] = 0;
        let v = view_of(&f).unwrap();
        assert_eq!(v.fragment, Fragment::First { id: 0x1234 });
        assert_eq!((v.src_port, v.dst_port), (40000, 443));
    }

    #[test]
    fn icmp_has_zero_ports() {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfe; 16],
                64,
            )
            .icmpv6_echo_request(7, 1);
        let mut f = Vec::new();
        b.write(&mut f, &[0; 16]).unwrap();
        let v = view_of(&f).unwrap();
        assert_eq!((v.protocol, v.src_port, v.dst_port), (PROTO_ICMPV6, 0, 0));
        assert_eq!(v.ip_len, 40 + 8 + 16);
    }
}
