//! Decap: from a captured frame to the innermost mirrored packet and its mirror context.
//!
//! Receives a frame and its link type from `ingest`; strips the link layer (Ethernet with
//! 802.1Q/QinQ tags, Linux cooked v1/v2, BSD/OpenBSD loopback, raw IP), then peels
//! tunnels while the packet is UDP to the VXLAN or GENEVE port, up to
//! [`MAX_TUNNEL_DEPTH`] (a Gateway Load Balancer endpoint sends GENEVE carrying the
//! mirror's VXLAN). Hands `parse` the innermost packet as etherparse lax slices plus a
//! [`MirrorContext`]: the VNI and the outer source address of the innermost tunnel, which
//! AWS sets to the mirrored interface's primary IP.

pub mod encap;
pub mod geneve;
pub mod vxlan;

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};

use crate::ingest::LinkType;
use geneve::{GeneveError, GeneveView, PROTO_ETHERNET};
use vxlan::{VxlanError, VxlanView};

/// Tunnels peeled per packet. AWS nests at most two (GENEVE from a GWLB endpoint around
/// the mirror's VXLAN); four leaves room for a VLAN-tagged lab setup and bounds the work
/// a crafted tunnel-in-tunnel packet can cause.
pub const MAX_TUNNEL_DEPTH: usize = 4;

/// UDP ports that mark tunnels.
#[derive(Clone, Copy, Debug)]
pub struct TunnelPorts {
    pub vxlan: u16,
    pub geneve: u16,
}

impl Default for TunnelPorts {
    fn default() -> Self {
        TunnelPorts {
            vxlan: 4789,
            geneve: 6081,
        }
    }
}

/// Which tunnel delivered the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Tunnel {
    #[default]
    None,
    Vxlan,
    Geneve,
}

/// What the wrapping tells about the mirror session that delivered a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MirrorContext {
    /// VNI of the innermost tunnel (the mirror session), if tunnelled.
    pub vni: Option<u32>,
    /// Outer IP source of the innermost tunnel: the mirrored interface's primary IP.
    pub mirror_source: Option<IpAddr>,
    pub tunnel: Tunnel,
}

/// Why a frame yielded no packet. Small and `Copy`: counted on the hot path, described
/// only when logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapError {
    /// The link-layer header is cut short.
    LinkTruncated {
        link: LinkType,
        available: usize,
    },
    /// A link type we do not decode.
    UnsupportedLink {
        linktype: i32,
    },
    /// Loopback address family we do not know.
    LoopbackFamily {
        family: u32,
    },
    /// Not IPv4/IPv6 (ARP, LLDP, ...): not an error for the capture, but nothing to record.
    NotIp {
        ether_type: u16,
    },
    /// The IP header itself is unreadable.
    IpHeader,
    Vxlan(VxlanError),
    Geneve(GeneveError),
    /// GENEVE carrying a protocol other than Ethernet, IPv4 or IPv6.
    GeneveProtocol {
        protocol: u16,
    },
    /// More nested tunnels than [`MAX_TUNNEL_DEPTH`].
    TooDeep,
}

impl DecapError {
    /// Stable label for counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecapError::LinkTruncated { .. } => "link_truncated",
            DecapError::UnsupportedLink { .. } => "unsupported_link",
            DecapError::LoopbackFamily { .. } => "loopback_family",
            DecapError::NotIp { .. } => "not_ip",
            DecapError::IpHeader => "ip_header",
            DecapError::Vxlan(VxlanError::Truncated { .. }) => "vxlan_truncated",
            DecapError::Vxlan(VxlanError::NoVniFlag { .. }) => "vxlan_flags",
            DecapError::Geneve(GeneveError::Truncated { .. }) => "geneve_truncated",
            DecapError::Geneve(GeneveError::Version { .. }) => "geneve_version",
            DecapError::Geneve(GeneveError::BadOptions { .. }) => "geneve_options",
            DecapError::GeneveProtocol { .. } => "geneve_protocol",
            DecapError::TooDeep => "tunnel_too_deep",
        }
    }

    /// Every kind, for zero-initialised counters.
    pub const KINDS: [&'static str; 12] = [
        "link_truncated",
        "unsupported_link",
        "loopback_family",
        "not_ip",
        "ip_header",
        "vxlan_truncated",
        "vxlan_flags",
        "geneve_truncated",
        "geneve_version",
        "geneve_options",
        "geneve_protocol",
        "tunnel_too_deep",
    ];

    pub fn index(&self) -> usize {
        let k = self.kind();
        Self::KINDS.iter().position(|x| *x == k).unwrap_or(0)
    }
}

/// The innermost packet and how it arrived.
pub struct Decapsulated<'a> {
    pub ctx: MirrorContext,
    pub packet: LaxSlicedPacket<'a>,
}

/// Strips link layer and tunnels from `frame`.
pub fn decapsulate<'a>(
    frame: &'a [u8],
    link: LinkType,
    ports: TunnelPorts,
) -> Result<Decapsulated<'a>, DecapError> {
    let packet = link_layer(frame, link)?;
    peel_tunnels(
        MirrorContext::default(),
        packet,
        ports,
        MAX_TUNNEL_DEPTH + 1,
    )
}

/// Decapsulates a UDP datagram's payload as received on a tunnel socket (`serve`): the
/// kernel has already stripped Ethernet/IP/UDP, so we start at the VXLAN or GENEVE
/// header, knowing the port it arrived on and the sender's address.
pub fn decapsulate_datagram(
    payload: &[u8],
    dport: u16,
    outer_src: IpAddr,
    ports: TunnelPorts,
) -> Result<Decapsulated<'_>, DecapError> {
    let (ctx, packet) = peel_one(payload, dport, outer_src, ports)?
        .ok_or(DecapError::UnsupportedLink { linktype: -1 })?;
    peel_tunnels(ctx, packet, ports, MAX_TUNNEL_DEPTH)
}

/// Peels tunnels while the packet is UDP to a tunnel port, at most `depth` of them.
fn peel_tunnels<'a>(
    mut ctx: MirrorContext,
    mut packet: LaxSlicedPacket<'a>,
    ports: TunnelPorts,
    depth: usize,
) -> Result<Decapsulated<'a>, DecapError> {
    for _ in 0..depth {
        // Not IP at the link layer: PPPoE, MPLS or PBB may hold it.
        if packet.net.is_none() {
            match packet
                .ether_payload()
                .and_then(|e| encap::ether(e.ether_type.0, e.payload))
            {
                Some(inner) => {
                    packet = inner;
                    continue;
                }
                None => return finish(ctx, packet),
            }
        }
        let outer_src = match &packet.net {
            Some(LaxNetSlice::Ipv4(v4)) => IpAddr::V4(v4.header().source_addr()),
            Some(LaxNetSlice::Ipv6(v6)) => IpAddr::V6(v6.header().source_addr()),
            _ => return finish(ctx, packet),
        };
        let inner = match &packet.transport {
            Some(TransportSlice::Udp(udp)) => {
                match peel_one(udp.payload(), udp.destination_port(), outer_src, ports)? {
                    Some((c, p)) => {
                        ctx = c;
                        Some(p)
                    }
                    None => {
                        let (sp, dp) = (udp.source_port(), udp.destination_port());
                        if sp == GTPU_PORT && dp == GTPU_PORT {
                            encap::gtpu(udp.payload())
                        } else if dp == GRE_UDP_PORT {
                            encap::gre(udp.payload())
                        } else if sp == TEREDO_PORT || dp == TEREDO_PORT {
                            encap::teredo(udp.payload())
                        } else {
                            // Teredo data between relays and clients uses any ports; only
                            // an exact IPv6 header makes it count.
                            encap::teredo_strict(udp.payload())
                        }
                    }
                }
            }
            Some(_) => None,
            // IP-in-IP and GRE carry no ports; etherparse leaves transport empty.
            None => match packet.ip_payload() {
                Some(p) if !p.fragmented => match p.ip_number.0 {
                    4 | 41 => LaxSlicedPacket::from_ip(p.payload).ok(),
                    47 => encap::gre(p.payload),
                    _ => None,
                },
                _ => None,
            },
        };
        match inner {
            Some(p) => packet = p,
            None => return finish(ctx, packet),
        }
    }
    match &packet.transport {
        Some(TransportSlice::Udp(u))
            if u.destination_port() == ports.vxlan || u.destination_port() == ports.geneve =>
        {
            Err(DecapError::TooDeep)
        }
        _ => finish(ctx, packet),
    }
}

/// Teredo's UDP port (RFC 4380).
const TEREDO_PORT: u16 = 3544;
/// GTP-U (3GPP TS 29.281).
const GTPU_PORT: u16 = 2152;
/// GRE-in-UDP (RFC 8086).
const GRE_UDP_PORT: u16 = 4754;

/// One tunnel header: `None` when `dport` is not a tunnel port.
fn peel_one(
    payload: &[u8],
    dport: u16,
    outer_src: IpAddr,
    ports: TunnelPorts,
) -> Result<Option<(MirrorContext, LaxSlicedPacket<'_>)>, DecapError> {
    if dport == ports.vxlan {
        let v = VxlanView::new_checked(payload).map_err(DecapError::Vxlan)?;
        let ctx = MirrorContext {
            vni: Some(v.vni()),
            mirror_source: Some(outer_src),
            tunnel: Tunnel::Vxlan,
        };
        Ok(Some((ctx, ethernet(v.payload())?)))
    } else if dport == ports.geneve {
        let g = GeneveView::new_checked(payload).map_err(DecapError::Geneve)?;
        let ctx = MirrorContext {
            vni: Some(g.vni()),
            mirror_source: Some(outer_src),
            tunnel: Tunnel::Geneve,
        };
        let packet = match g.protocol() {
            PROTO_ETHERNET => ethernet(g.payload())?,
            p @ (0x0800 | 0x86dd) => LaxSlicedPacket::from_ether_type(EtherType(p), g.payload()),
            protocol => return Err(DecapError::GeneveProtocol { protocol }),
        };
        Ok(Some((ctx, packet)))
    } else {
        Ok(None)
    }
}

fn finish<'a>(
    ctx: MirrorContext,
    packet: LaxSlicedPacket<'a>,
) -> Result<Decapsulated<'a>, DecapError> {
    match &packet.net {
        Some(LaxNetSlice::Ipv4(_)) | Some(LaxNetSlice::Ipv6(_)) => Ok(Decapsulated { ctx, packet }),
        _ => Err(not_ip(&packet)),
    }
}

fn not_ip(packet: &LaxSlicedPacket<'_>) -> DecapError {
    // An IP ether type whose header failed to parse is an IP error, anything else is not IP.
    let ether_type = packet
        .ether_payload()
        .map(|p| p.ether_type.0)
        .or_else(|| match &packet.link {
            Some(LinkSlice::Ethernet2(e)) => Some(e.ether_type().0),
            _ => None,
        })
        .unwrap_or(0);
    if ether_type == 0x0800 || ether_type == 0x86dd || packet.stop_err.is_some() && ether_type == 0
    {
        DecapError::IpHeader
    } else {
        DecapError::NotIp { ether_type }
    }
}

fn ethernet(frame: &[u8]) -> Result<LaxSlicedPacket<'_>, DecapError> {
    LaxSlicedPacket::from_ethernet(frame).map_err(|_| DecapError::LinkTruncated {
        link: LinkType::Ethernet,
        available: frame.len(),
    })
}

fn from_ip(data: &[u8]) -> Result<LaxSlicedPacket<'_>, DecapError> {
    LaxSlicedPacket::from_ip(data).map_err(|_| DecapError::IpHeader)
}

fn link_layer(frame: &[u8], link: LinkType) -> Result<LaxSlicedPacket<'_>, DecapError> {
    let truncated = |need: usize| {
        if frame.len() < need {
            Err(DecapError::LinkTruncated {
                link,
                available: frame.len(),
            })
        } else {
            Ok(())
        }
    };
    match link {
        LinkType::Ethernet => ethernet(frame),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => from_ip(frame),
        LinkType::LinuxSll => {
            // 16-byte header; protocol type (an EtherType for IP) at offset 14.
            truncated(16)?;
            let et = u16::from_be_bytes([frame[14], frame[15]]);
            Ok(LaxSlicedPacket::from_ether_type(
                EtherType(et),
                &frame[16..],
            ))
        }
        LinkType::LinuxSll2 => {
            // 20-byte header; protocol type first.
            truncated(20)?;
            let et = u16::from_be_bytes([frame[0], frame[1]]);
            Ok(LaxSlicedPacket::from_ether_type(
                EtherType(et),
                &frame[20..],
            ))
        }
        LinkType::Null | LinkType::Loop => {
            truncated(4)?;
            let raw = [frame[0], frame[1], frame[2], frame[3]];
            // NULL stores the family in the capturing host's byte order, LOOP in network
            // order; the values are small, so whichever order gives one we know wins.
            let family = match link {
                LinkType::Loop => u32::from_be_bytes(raw),
                _ => {
                    let le = u32::from_le_bytes(raw);
                    if le < 256 {
                        le
                    } else {
                        u32::from_be_bytes(raw)
                    }
                }
            };
            match family {
                // AF_INET everywhere; AF_INET6 on BSDs (24), FreeBSD (28), macOS (30), Linux (10).
                2 | 24 | 28 | 30 | 10 => from_ip(&frame[4..]),
                family => Err(DecapError::LoopbackFamily { family }),
            }
        }
        LinkType::Ppp => encap::ppp(frame).ok_or(DecapError::NotIp { ether_type: 0 }),
        LinkType::Other(linktype) => Err(DecapError::UnsupportedLink { linktype }),
    }
}

/// Test vectors shared with other modules' tests.
#[cfg(test)]
pub mod tests_support {
    /// Frame 1 of the AWS Traffic Mirroring capture (see `tests::AWS_MIRROR_FRAME1`).
    pub fn aws_frame() -> Vec<u8> {
        super::tests::AWS_MIRROR_FRAME1.to_vec()
    }

    /// `n` deterministic mutations of `base` (xorshift from `seed`): 1 to `max_edits`
    /// bit flips or byte overwrites, then a cut that keeps at least `keep.0 / keep.1`
    /// of the frame.
    pub fn mutations(
        base: &[u8],
        n: usize,
        seed: u64,
        max_edits: u64,
        keep: (usize, usize),
    ) -> Vec<Vec<u8>> {
        let mut state = seed;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                let mut f = base.to_vec();
                for _ in 0..(next() % max_edits + 1) {
                    let i = (next() % f.len() as u64) as usize;
                    if next() % 2 == 0 {
                        f[i] ^= 1 << (next() % 8);
                    } else {
                        f[i] = next() as u8;
                    }
                }
                let cut = (next() % (f.len() as u64 + 1)) as usize;
                f.truncate(cut.max(f.len() * keep.0 / keep.1));
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame 1 of suricata-verify `tests/vxlan-decoder-03/vxlan.pcap` (AWS Traffic
    /// Mirroring, eu-central-1): outer 172.31.0.238 -> 172.31.17.188 UDP 65445 -> 4789,
    /// VNI 5569041, inner NTP client packet 172.31.0.238:60631 -> 78.46.93.39:123.
    pub const AWS_MIRROR_FRAME1: [u8; 140] = [
        0x06, 0xe2, 0x43, 0x9c, 0xff, 0x5e, 0x06, 0x1d, 0x3c, 0x34, 0xd0, 0x77, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x7e, 0x00, 0x00, 0x00, 0x00, 0xff, 0x11, 0x50, 0x86, 0xac, 0x1f, 0x00, 0xee,
        0xac, 0x1f, 0x11, 0xbc, 0xff, 0xa5, 0x12, 0xb5, 0x00, 0x6a, 0x00, 0x00, 0x08, 0x00, 0x00,
        0x00, 0x54, 0xfa, 0x11, 0x00, 0x02, 0x29, 0x23, 0x74, 0xc7, 0x7d, 0x02, 0x85, 0x69, 0xc2,
        0xab, 0x02, 0x08, 0x00, 0x45, 0x00, 0x00, 0x4c, 0x09, 0x51, 0x40, 0x00, 0xff, 0x11, 0x19,
        0xed, 0xac, 0x1f, 0x00, 0xee, 0x4e, 0x2e, 0x5d, 0x27, 0xec, 0xd7, 0x00, 0x7b, 0x00, 0x38,
        0x00, 0x00, 0x23, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn aws_mirror_frame_decapsulates() {
        let d = decapsulate(
            &AWS_MIRROR_FRAME1,
            LinkType::Ethernet,
            TunnelPorts::default(),
        )
        .unwrap();
        assert_eq!(d.ctx.vni, Some(5_569_041));
        assert_eq!(d.ctx.mirror_source, Some("172.31.0.238".parse().unwrap()));
        assert_eq!(d.ctx.tunnel, Tunnel::Vxlan);
        match d.packet.transport {
            Some(TransportSlice::Udp(u)) => {
                assert_eq!(u.source_port(), 60631);
                assert_eq!(u.destination_port(), 123);
            }
            other => panic!("expected UDP, got {other:?}"),
        }
    }

    #[test]
    fn every_truncated_prefix_never_panics_and_fails_cleanly() {
        for n in 0..AWS_MIRROR_FRAME1.len() {
            let r = decapsulate(
                &AWS_MIRROR_FRAME1[..n],
                LinkType::Ethernet,
                TunnelPorts::default(),
            );
            if n < 14 {
                assert!(
                    matches!(r, Err(DecapError::LinkTruncated { .. })),
                    "prefix {n}"
                );
            } else if n < 50 + 14 {
                // Outer headers or VXLAN cut: either not decodable or an outer error.
                assert!(
                    r.is_err() || r.as_ref().map(|d| d.ctx.vni.is_none()).unwrap_or(false),
                    "prefix {n}"
                );
            }
        }
    }

    #[test]
    fn other_port_is_plain_udp() {
        let ports = TunnelPorts {
            vxlan: 8472,
            geneve: 6081,
        };
        let d = decapsulate(&AWS_MIRROR_FRAME1, LinkType::Ethernet, ports).unwrap();
        assert_eq!(d.ctx, MirrorContext::default());
    }

    #[test]
    fn linux_cooked_and_loopback_headers() {
        let ip = &AWS_MIRROR_FRAME1[64..];
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        assert!(decapsulate(&sll, LinkType::LinuxSll, TunnelPorts::default()).is_ok());
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&[0x08, 0x00]);
        sll2.extend_from_slice(ip);
        assert!(decapsulate(&sll2, LinkType::LinuxSll2, TunnelPorts::default()).is_ok());
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        assert!(decapsulate(&null, LinkType::Null, TunnelPorts::default()).is_ok());
        for n in 0..4 {
            assert!(matches!(
                decapsulate(&null[..n], LinkType::Null, TunnelPorts::default()),
                Err(DecapError::LinkTruncated { .. })
            ));
        }
        assert!(matches!(
            decapsulate(&[0, 0, 0, 99, 0x45], LinkType::Loop, TunnelPorts::default()),
            Err(DecapError::LoopbackFamily { family: 99 })
        ));
    }

    #[test]
    fn arp_is_not_ip() {
        let mut f = [0u8; 42];
        f[12] = 0x08;
        f[13] = 0x06;
        let r = decapsulate(&f, LinkType::Ethernet, TunnelPorts::default());
        assert!(
            matches!(r, Err(DecapError::NotIp { .. }) | Err(DecapError::IpHeader)),
            "{:?}",
            r.err()
        );
    }

    /// Hostile input: 50,000 deterministic mutations (bit flips, byte overwrites, cuts)
    /// of the AWS frame, through decap and parse, must never panic.
    #[test]
    fn mutated_frames_never_panic() {
        let mut decoded = 0;
        for f in
            tests_support::mutations(&AWS_MIRROR_FRAME1, 50_000, 0x1234_5678_9abc_def0, 4, (1, 2))
        {
            let f = &f[..];
            let ok = decapsulate(f, LinkType::Ethernet, TunnelPorts::default())
                .map(|d| crate::parse::view(f, &d).is_ok())
                .unwrap_or(false);
            decoded += usize::from(ok);
        }
        assert!(decoded > 0);
    }

    #[test]
    fn datagram_entry_matches_frame_entry() {
        let payload = &AWS_MIRROR_FRAME1[42..];
        let src: IpAddr = "172.31.0.238".parse().unwrap();
        let d = decapsulate_datagram(payload, 4789, src, TunnelPorts::default()).unwrap();
        let f = decapsulate(
            &AWS_MIRROR_FRAME1,
            LinkType::Ethernet,
            TunnelPorts::default(),
        )
        .unwrap();
        assert_eq!(d.ctx, f.ctx);
        assert_eq!(d.packet.net, f.packet.net);
        assert!(decapsulate_datagram(payload, 9999, src, TunnelPorts::default()).is_err());
    }
}
