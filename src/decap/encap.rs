//! Other encapsulations met on the way to the mirrored packet: PPPoE sessions, MPLS
//! label stacks, 802.1ah provider backbone bridging, IP-in-IP (4in4, 6in4, 4in6, 6in6),
//! GRE (RFC 2784/2890, PPTP's enhanced GRE, ERSPAN types II and III) and Teredo. AWS
//! mirroring adds none of these, but mirrored traffic itself may carry them, and a
//! record of the inner conversation says more than one of the tunnel.
//!
//! Each function takes the bytes after the outer header and returns the inner packet,
//! or `None` when they do not hold what the header announced (the outer packet is then
//! recorded as it is).

use etherparse::{EtherType, LaxSlicedPacket};

/// MPLS labels walked before giving up.
pub const MAX_MPLS_LABELS: usize = 8;

fn by_version(b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    match b.first()? >> 4 {
        4 | 6 => LaxSlicedPacket::from_ip(b).ok(),
        _ => None,
    }
}

/// Inner packet of an EtherType that is not IP itself.
pub fn ether(ether_type: u16, b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    match ether_type {
        // PPPoE session (RFC 2516): 6-byte header, then the PPP protocol field.
        0x8864 => ppp(b.get(6..)?),
        // MPLS unicast/multicast (RFC 3032): 4-byte labels until bottom of stack.
        0x8847 | 0x8848 => {
            let mut at = 0;
            for _ in 0..MAX_MPLS_LABELS {
                let bottom = b.get(at + 2)? & 0x01 != 0;
                at += 4;
                if bottom {
                    let rest = b.get(at..)?;
                    return by_version(rest).or_else(|| {
                        // Ethernet pseudowire with a control word (RFC 4448).
                        if rest.first()? >> 4 == 0 {
                            LaxSlicedPacket::from_ethernet(rest.get(4..)?).ok()
                        } else {
                            None
                        }
                    });
                }
            }
            None
        }
        // 802.1ah: a 4-byte I-TAG, then the customer's Ethernet frame.
        0x88e7 => LaxSlicedPacket::from_ethernet(b.get(4..)?).ok(),
        _ => None,
    }
}

/// PPP (RFC 1661), with or without address/control bytes.
pub fn ppp(b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    let b = if b.starts_with(&[0xff, 0x03]) {
        &b[2..]
    } else {
        b
    };
    let (proto, rest) = if b.first()? & 0x01 != 0 {
        (u16::from(b[0]), &b[1..]) // compressed protocol field
    } else {
        (u16::from_be_bytes([b[0], *b.get(1)?]), &b[2..])
    };
    match proto {
        0x0021 | 0x0057 => by_version(rest),
        _ => None,
    }
}

/// GRE payload, by the protocol type in its header.
pub fn gre(b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    let flags = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let proto = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    let version = flags & 0x0007;
    let mut at = 4;
    if version == 0 {
        at += 4 * usize::from(flags & 0x8000 != 0 || flags & 0x4000 != 0); // checksum (+ routing)
        at += 4 * usize::from(flags & 0x2000 != 0); // key
        at += 4 * usize::from(flags & 0x1000 != 0); // sequence
    } else if version == 1 {
        // PPTP enhanced GRE: key always, sequence and acknowledgement optional.
        at += 4;
        at += 4 * usize::from(flags & 0x1000 != 0);
        at += 4 * usize::from(flags & 0x0080 != 0);
    } else {
        return None;
    }
    let rest = b.get(at..)?;
    match proto {
        0x0800 | 0x86dd => LaxSlicedPacket::from_ip(rest).ok(),
        0x6558 => LaxSlicedPacket::from_ethernet(rest).ok(),
        0x880b => ppp(rest),
        // ERSPAN type II: 8-byte header; type III: 12 bytes, plus 8 with the O flag.
        0x88be => LaxSlicedPacket::from_ethernet(rest.get(8..)?).ok(),
        0x22eb => {
            let o = rest.get(11)? & 0x01 != 0;
            LaxSlicedPacket::from_ethernet(rest.get(12 + 8 * usize::from(o)..)?).ok()
        }
        p => match LaxSlicedPacket::from_ether_type(EtherType(p), rest) {
            pkt if pkt.net.is_some() => Some(pkt),
            _ => None,
        },
    }
}

/// Teredo (RFC 4380) on UDP 3544: IPv6 inside UDP, after optional authentication and
/// origin-indication headers.
pub fn teredo(b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    let mut rest = b;
    if rest.starts_with(&[0, 1]) {
        let id_len = usize::from(*rest.get(2)?);
        let auth_len = usize::from(*rest.get(3)?);
        rest = rest.get(4 + id_len + auth_len + 9..)?;
    }
    if rest.starts_with(&[0, 0]) {
        rest = rest.get(8..)?;
    }
    if rest.first()? >> 4 != 6 || rest.len() < 40 {
        return None;
    }
    LaxSlicedPacket::from_ip(rest)
        .ok()
        .filter(|p| p.net.is_some())
}

/// A UDP payload that is exactly one IPv6 packet (version 6, payload length matching,
/// a plausible next header): Teredo data seen away from port 3544.
pub fn teredo_strict(b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    if b.len() < 40 || b[0] >> 4 != 6 {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([b[4], b[5]]));
    if 40 + plen != b.len() || !matches!(b[6], 0 | 6 | 17 | 43 | 44 | 58 | 59 | 60) {
        return None;
    }
    LaxSlicedPacket::from_ip(b).ok().filter(|p| p.net.is_some())
}

/// GTP-U G-PDU (3GPP TS 29.281 §5): the user's IP packet after the GTP header and its
/// extension headers.
pub fn gtpu(b: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    let flags = *b.first()?;
    if flags >> 5 != 1 || *b.get(1)? != 0xff {
        return None; // not version 1, or not a G-PDU
    }
    let mut at = 8;
    if flags & 0x07 != 0 {
        let mut next = *b.get(11)?;
        at = 12;
        for _ in 0..8 {
            if next == 0 {
                break;
            }
            let len = usize::from(*b.get(at)?) * 4;
            if len == 0 {
                return None;
            }
            next = *b.get(at + len - 1)?;
            at += len;
        }
    }
    by_version(b.get(at..)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1000, 53);
        let mut v = Vec::new();
        b.write(&mut v, &[1, 2, 3, 4]).unwrap();
        v
    }

    #[test]
    fn pppoe_mpls_gre() {
        let ip = ipv4_udp();
        let mut pppoe = vec![0x11, 0, 0, 1, 0, 0, 0x00, 0x21];
        pppoe.extend_from_slice(&ip);
        assert!(ether(0x8864, &pppoe).is_some());
        let mut mpls = vec![0, 0x01, 0x10, 0x40, 0, 0x02, 0x11, 0x40];
        mpls.extend_from_slice(&ip);
        assert!(ether(0x8847, &mpls).is_some());
        let mut g = vec![0x20, 0, 0x08, 0, 0, 0, 0, 7];
        g.extend_from_slice(&ip);
        assert!(gre(&g).is_some());
        for n in 0..g.len() {
            let _ = gre(&g[..n]);
            let _ = ether(0x8864, &pppoe[..n.min(pppoe.len())]);
            let _ = ether(0x8847, &mpls[..n.min(mpls.len())]);
            let _ = teredo(&g[..n]);
        }
    }
}
