//! Fast path: decap + parse in one pass for the shapes that make up nearly all mirrored
//! traffic, without building etherparse's `LaxSlicedPacket` (a few hundred bytes that
//! the general path builds and moves per layer).
//!
//! Handled here: Ethernet (at most one 802.1Q tag) → IPv4 (no fragmentation) or IPv6
//! (no extension headers) → TCP (whole header captured), UDP or ICMP/ICMPv6, optionally
//! inside one AWS VXLAN layer whose outer packet is complete. Every other shape (GENEVE,
//! GRE, MPLS, PPPoE, fragments, IPv6 extension headers, truncated transport headers,
//! UDP that might hide another tunnel, ...) returns `None` and goes through the general
//! `decap` + `parse::view`, which stays the reference: a test feeds every corpus frame
//! and a set of mutated ones through both and requires equal results. Reads are
//! bounds-checked (`get`), so hostile input can only make this path decline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Fragment, Mac, PacketView, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::decap::vxlan::VXLAN_HEADER_LEN;
use crate::decap::{MirrorContext, Tunnel, TunnelPorts};
use crate::ingest::LinkType;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// UDP ports where the general path looks for another tunnel inside (GTP-U, GRE-in-UDP,
/// Teredo): such datagrams are left to it.
const TUNNEL_HINT_PORTS: [u16; 3] = [2152, 4754, 3544];

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// A frame as read from a capture (the tests' view of [`decode_frame_into`]).
#[cfg(test)]
pub fn decode_frame(
    frame: &[u8],
    link: LinkType,
    ports: TunnelPorts,
) -> Option<(MirrorContext, PacketView)> {
    let mut out = (MirrorContext::default(), PacketView::default());
    decode_frame_into(frame, link, ports, &mut out).then_some(out)
}

/// [`decode_frame`] into `out`, which holds the answer when this returns true (and
/// anything when false). Why in place: the context and view are ~120 bytes of enums
/// and options, and returned up through the layers and re-wrapped (`Option` to
/// `Result`), they were copied field by field twice, ~80 instructions per packet.
#[inline(always)]
pub fn decode_frame_into(
    frame: &[u8],
    link: LinkType,
    ports: TunnelPorts,
    out: &mut (MirrorContext, PacketView),
) -> bool {
    link == LinkType::Ethernet
        && ethernet::<true>(frame, 0, frame.len(), MirrorContext::default(), ports, out).is_some()
}

/// A datagram received on a tunnel port (`serve`): starts at the VXLAN header.
#[inline]
pub fn decode_datagram(
    payload: &[u8],
    dport: u16,
    outer_src: IpAddr,
    ports: TunnelPorts,
) -> Option<(MirrorContext, PacketView)> {
    if dport != ports.vxlan {
        return None;
    }
    let ctx = vxlan_context(payload, outer_src)?;
    let mut out = (MirrorContext::default(), PacketView::default());
    ethernet::<false>(
        payload,
        VXLAN_HEADER_LEN,
        payload.len(),
        ctx,
        ports,
        &mut out,
    )?;
    Some(out)
}

/// The mirror session a VXLAN header at the start of `vxlan` names, sent from
/// `outer_src`; `None` when the header is short or lacks the valid-VNI flag (the general
/// path then names the error).
#[inline]
fn vxlan_context(vxlan: &[u8], outer_src: IpAddr) -> Option<MirrorContext> {
    if vxlan.len() < VXLAN_HEADER_LEN || vxlan[0] & 0x08 == 0 {
        return None;
    }
    Some(MirrorContext {
        vni: Some(be32(vxlan, 4)? >> 8),
        mirror_source: Some(outer_src),
        tunnel: Tunnel::Vxlan,
    })
}

/// The Ethernet frame at `frame[at..end]`, into `out`; `may_tunnel`: a VXLAN layer may
/// follow.
#[inline(always)]
fn ethernet<const MAY_TUNNEL: bool>(
    frame: &[u8],
    at: usize,
    end: usize,
    ctx: MirrorContext,
    ports: TunnelPorts,
    out: &mut (MirrorContext, PacketView),
) -> Option<()> {
    let l = frame.get(at..end)?;
    let mut ether_type = be16(l, 12)?;
    let mut ip_at = at + 14;
    if ether_type == ETHERTYPE_VLAN {
        ether_type = be16(l, 16)?;
        ip_at += 4;
    }
    if MAY_TUNNEL && ether_type == ETHERTYPE_IPV4 {
        if let Some(ctx) = vxlan_in_ipv4(frame, ip_at, end, ports) {
            return ethernet::<false>(frame, ctx.1, ctx.2, ctx.0, ports, out);
        }
    }
    // `l` holds at least the 14-byte header (the EtherType was read).
    let dst_mac = Mac::from_prefix(l.get(0..8)?.try_into().ok()?);
    let src_mac = Mac::from_prefix(l.get(6..14)?.try_into().ok()?);
    let ip = frame.get(ip_at..end)?;
    let (src, dst, protocol, ip_len, header_len) = match ether_type {
        ETHERTYPE_IPV4 => ipv4(ip)?,
        ETHERTYPE_IPV6 => ipv6(ip)?,
        _ => return None,
    };
    // Bytes of the IP packet that were captured; Ethernet padding past the IP length is
    // not part of it.
    let declared_end = ip_at + ip_len;
    let cap_end = end.min(declared_end);
    let truncated = end < declared_end;
    let l4_at = ip_at + header_len;
    let l4 = frame.get(l4_at..cap_end)?;
    if MAY_TUNNEL && protocol == PROTO_UDP && !truncated && be16(l4, 2)? == ports.vxlan {
        // Straight to the inner frame, before a view of the outer packet is built only
        // to be dropped (decap + parse of a VXLAN capture: 2-17 ns less per packet in
        // three paired runs).
        let udp_len = usize::from(be16(l4, 4)?);
        if udp_len < 8 || l4_at + udp_len != declared_end {
            return None; // the general path decides which length to believe
        }
        let ctx = vxlan_context(l4.get(8..)?, src)?;
        return ethernet::<false>(
            frame,
            l4_at + 8 + VXLAN_HEADER_LEN,
            cap_end,
            ctx,
            ports,
            out,
        );
    }
    out.1 = PacketView::ip(
        src,
        dst,
        protocol,
        ip_len as u32,
        truncated,
        Fragment::No,
        Some(src_mac),
        Some(dst_mac),
    );
    let v = &mut out.1;
    match protocol {
        PROTO_TCP => {
            let data_offset = usize::from(*l4.get(12)? >> 4) * 4;
            if data_offset < 20 || l4.len() < data_offset {
                return None;
            }
            v.src_port = be16(l4, 0)?;
            v.dst_port = be16(l4, 2)?;
            v.tcp_seq = be32(l4, 4)?;
            v.tcp_flags = l4[13];
            v.ports_known = true;
            v.payload = (
                (l4_at + data_offset) as u32,
                (l4.len() - data_offset) as u32,
            );
        }
        PROTO_UDP => {
            // The UDP length must agree with the IP length: otherwise the general path
            // decides which one to believe.
            let udp_len = usize::from(be16(l4, 4)?);
            if udp_len < 8 || l4_at + udp_len != declared_end {
                return None;
            }
            let sport = be16(l4, 0)?;
            let dport = be16(l4, 2)?;
            // A header cut short by the capture (6 or 7 bytes kept of a longer
            // datagram) is the general path's to describe.
            let payload = l4.get(8..)?;
            if dport == ports.vxlan
                || dport == ports.geneve
                || TUNNEL_HINT_PORTS.contains(&dport)
                || TUNNEL_HINT_PORTS.contains(&sport)
                || payload.first().is_some_and(|b| b >> 4 == 6)
            {
                // Maybe another tunnel (or Teredo, which any port may carry).
                return None;
            }
            v.src_port = sport;
            v.dst_port = dport;
            v.ports_known = true;
            v.payload = ((l4_at + 8) as u32, payload.len() as u32);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            // etherparse's ICMP slices need the 8-byte header.
            if l4.len() < 8 || (protocol == PROTO_ICMP) != src.is_ipv4() {
                return None;
            }
            v.icmp = Some((l4[0], l4[1]));
        }
        _ => return None,
    }
    out.0 = ctx;
    Some(())
}

/// An AWS mirror datagram: IPv4 (not a fragment, all of it captured), UDP to the VXLAN
/// port with a length that agrees, and a VXLAN header with a valid VNI. Returns its
/// session and where its inner frame starts and ends; `None` for anything else, which
/// then takes the usual way through `ethernet` (the same checks, and the same answer,
/// as before this shortcut). Nearly every mirrored packet comes like this, and reading
/// only what the tunnel needs (no outer MACs, no outer destination, no outer view) cut
/// what a VXLAN frame costs beyond a plain one from ~74 to ~43 instructions.
#[inline(always)]
fn vxlan_in_ipv4(
    frame: &[u8],
    ip_at: usize,
    end: usize,
    ports: TunnelPorts,
) -> Option<(MirrorContext, usize, usize)> {
    // IPv4 with no options, UDP and VXLAN headers: 36 bytes read at fixed offsets.
    const HEADERS: usize = 20 + 8 + VXLAN_HEADER_LEN;
    let h: &[u8; HEADERS] = frame.get(ip_at..end)?.get(..HEADERS)?.try_into().ok()?;
    let be16 = |at: usize| usize::from(u16::from_be_bytes([h[at], h[at + 1]]));
    let total = be16(2);
    let declared_end = ip_at + total;
    if h[0] != 0x45
        || h[9] != PROTO_UDP
        || be16(6) & 0x3fff != 0
        || total < HEADERS
        || end < declared_end
        || be16(22) != usize::from(ports.vxlan)
        || be16(24) != total - 20
        || h[28] & 0x08 == 0
    {
        return None;
    }
    let ctx = MirrorContext {
        vni: Some(u32::from_be_bytes([h[32], h[33], h[34], h[35]]) >> 8),
        mirror_source: Some(IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]))),
        tunnel: Tunnel::Vxlan,
    };
    Some((ctx, ip_at + HEADERS, declared_end))
}

/// IPv4 header: (src, dst, protocol, total length, header length); `None` for
/// fragments and lengths the general path has rules for.
#[inline(always)]
fn ipv4(ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, usize, usize)> {
    let b0 = *ip.first()?;
    let header_len = usize::from(b0 & 0x0f) * 4;
    if b0 >> 4 != 4 || header_len < 20 || ip.len() < header_len {
        return None;
    }
    let total = usize::from(be16(ip, 2)?);
    let frag = be16(ip, 6)?;
    if total < header_len || frag & 0x3fff != 0 {
        return None; // impossible length, or a fragment (more-fragments or an offset)
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((src.into(), dst.into(), ip[9], total, header_len))
}

/// IPv6 header without extension headers: (src, dst, next header, 40 + payload
/// length, 40).
#[inline(always)]
fn ipv6(ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, usize, usize)> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(be16(ip, 4)?);
    let next = ip[6];
    if payload_len == 0 || !matches!(next, PROTO_TCP | PROTO_UDP | PROTO_ICMPV6) {
        return None;
    }
    let src: [u8; 16] = ip[8..24].try_into().ok()?;
    let dst: [u8; 16] = ip[24..40].try_into().ok()?;
    Some((
        Ipv6Addr::from(src).into(),
        Ipv6Addr::from(dst).into(),
        next,
        40 + payload_len,
        40,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::decap::{decapsulate, decapsulate_datagram};
    use crate::gen::{write_capture, GenOptions};
    use crate::ingest::CaptureFile;

    /// The general path's answer for a frame.
    fn general(frame: &[u8], link: LinkType) -> Option<(MirrorContext, PacketView)> {
        let d = decapsulate(frame, link, TunnelPorts::default()).ok()?;
        let v = crate::parse::view(frame, &d).ok()?;
        Some((d.ctx, v))
    }

    /// Every frame the fast path takes must give exactly the general path's result;
    /// returns (frames, taken by the fast path).
    fn check_frame(frame: &[u8], link: LinkType, origin: &str) -> bool {
        let Some(fast) = decode_frame(frame, link, TunnelPorts::default()) else {
            return false;
        };
        assert_eq!(
            Some(fast),
            general(frame, link),
            "{origin}: fast path disagrees with the general path on {frame:02x?}"
        );
        true
    }

    fn check_capture(path: &Path) -> (usize, usize) {
        let Ok(cap) = CaptureFile::open(path) else {
            return (0, 0);
        };
        let Ok(frames) = cap.frames() else {
            return (0, 0);
        };
        let (mut n, mut fast) = (0, 0);
        // The slot replay decodes every packet into, kept from one frame to the next.
        let mut reused = (MirrorContext::default(), PacketView::default());
        for f in frames.map_while(Result::ok) {
            n += 1;
            fast += usize::from(check_frame(f.data, f.link, &path.display().to_string()));
            let ports = TunnelPorts::default();
            let fresh = crate::parse::decode(f.data, f.link, ports);
            let into = crate::parse::decode_into(f.data, f.link, ports, &mut reused);
            assert_eq!(into.map(|()| reused), fresh, "{}", path.display());
        }
        (n, fast)
    }

    /// Generated captures (plain, VXLAN, mirror-truncated, IPv6): nearly every frame
    /// takes the fast path, and each agrees with the general path.
    #[test]
    fn fast_path_equals_general_path_on_generated_captures() {
        let dir = std::env::temp_dir().join(format!("mf-fast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, vxlan, truncate, v6) in [
            ("plain", None, None, 0.2),
            ("vxlan", Some(77), None, 0.2),
            ("trunc", Some(77), Some(128), 0.2),
            ("v6", Some(77), None, 1.0),
        ] {
            let path = dir.join(format!("{name}.pcap"));
            let opts = GenOptions {
                flows: 300,
                seed: 5,
                vxlan,
                truncate,
                ipv6_share: v6,
                delayed_ack: false,
            };
            write_capture(&path, &opts).unwrap();
            let (n, fast) = check_capture(&path);
            println!("{name}: {fast} of {n} frames on the fast path");
            assert!(n > 1000);
            if truncate.is_none() {
                // What is left over: fragments and ICMP errors the general path owns.
                assert!(fast * 100 >= n * 95, "{name}: only {fast} of {n} fast");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Real captures of every kind (tunnels, fragments, IPv6 extensions, damage): the
    /// fast path either declines or agrees.
    #[test]
    fn fast_path_equals_general_path_on_corpus() {
        let Some(files) = crate::ingest::capture_file::corpus_captures() else {
            return;
        };
        let (mut n, mut fast) = (0, 0);
        for f in &files {
            let (a, b) = check_capture(f);
            n += a;
            fast += b;
        }
        println!(
            "corpus: {} files, {fast} of {n} frames on the fast path",
            files.len()
        );
        assert!(files.len() > 100 && fast > 0);
    }

    /// Frames cut short inside a plain UDP or TCP header, or just after it, with the IP
    /// header saying more was sent: declined or decoded, never a panic, always as the
    /// general path decodes them.
    #[test]
    fn transport_headers_cut_short_are_never_read_past_the_capture() {
        let mut frame = [0u8; 14 + 20 + 40];
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = &mut frame[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&200u16.to_be_bytes()); // 200 bytes sent
        ip[8] = 64;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        for protocol in [PROTO_UDP, PROTO_TCP] {
            frame[14 + 9] = protocol;
            let l4 = &mut frame[34..];
            l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
            l4[2..4].copy_from_slice(&53u16.to_be_bytes());
            l4[4..6].copy_from_slice(&180u16.to_be_bytes()); // UDP length agrees with IP
            l4[12] = 0x50; // TCP data offset 20
            for captured in 34..frame.len() {
                let f = &frame[..captured];
                let fast = decode_frame(f, LinkType::Ethernet, TunnelPorts::default());
                if fast.is_some() {
                    assert_eq!(fast, general(f, LinkType::Ethernet), "{captured} bytes");
                }
            }
        }
    }

    /// Mutated VXLAN frames (bit flips, overwrites, cuts): never a panic, never a
    /// disagreement.
    #[test]
    fn fast_path_equals_general_path_on_mutations() {
        let base = crate::decap::tests_support::aws_frame();
        let mut taken = 0;
        for f in
            crate::decap::tests_support::mutations(&base, 100_000, 0x9e37_79b9_7f4a_7c15, 3, (3, 4))
        {
            let f = &f[..];
            taken += usize::from(check_frame(f, LinkType::Ethernet, "mutation"));
            // The datagram entry (serve) agrees with its general path too.
            if let Some(udp) = f.get(42..) {
                let src = IpAddr::from([172, 31, 0, 238]);
                let fast = decode_datagram(udp, 4789, src, TunnelPorts::default());
                if fast.is_some() {
                    let d = decapsulate_datagram(udp, 4789, src, TunnelPorts::default())
                        .ok()
                        .and_then(|d| crate::parse::view(udp, &d).ok().map(|v| (d.ctx, v)));
                    assert_eq!(fast, d, "datagram {udp:02x?}");
                }
            }
        }
        println!("mutations: {taken} of 100000 on the fast path");
        assert!(taken > 1000);
    }
}
