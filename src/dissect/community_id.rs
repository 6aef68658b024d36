//! Community ID v1 (corelight/community-id-spec): a flow hash that Zeek, Suricata,
//! Arkime and others agree on, so records can be joined with their logs.
//! `1:` + base64(SHA1(seed(2) ‖ saddr ‖ daddr ‖ proto(1) ‖ pad(1) ‖ sport(2) ‖ dport(2))),
//! endpoints ordered so both directions give the same ID; ICMP uses type/code mapping.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

/// ICMPv4 and ICMPv6 request/response pairs (spec: "one-way" types keep their code).
fn icmp_counterpart(proto: u8, ty: u8) -> Option<u8> {
    match proto {
        1 => match ty {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            10 => Some(9),
            9 => Some(10),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        },
        58 => match ty {
            128 => Some(129),
            129 => Some(128),
            133 => Some(134),
            134 => Some(133),
            135 => Some(136),
            136 => Some(135),
            130 => Some(131),
            131 => Some(130),
            144 => Some(145),
            145 => Some(144),
            _ => None,
        },
        _ => None,
    }
}

/// Community ID (seed 0 unless given). For ICMP, `sport`/`dport` are type and code.
pub fn community_id(
    seed: u16,
    saddr: IpAddr,
    daddr: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
) -> String {
    let (mut a, mut b, mut ap, mut bp) = (saddr, daddr, sport, dport);
    let mut one_way = false;
    if proto == 1 || proto == 58 {
        // The type stands for the source port, its counterpart (or the code, for
        // one-way messages) for the destination port.
        match icmp_counterpart(proto, sport as u8) {
            Some(c) => bp = u16::from(c),
            None => one_way = true,
        }
    }
    let ordered = (a, ap) <= (b, bp);
    if !(one_way || ordered) {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut ap, &mut bp);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    for ip in [a, b] {
        match ip {
            IpAddr::V4(v) => h.update(v.octets()),
            IpAddr::V6(v) => h.update(v.octets()),
        }
    }
    h.update([proto, 0]);
    if matches!(proto, 1 | 6 | 17 | 58 | 132) {
        h.update(ap.to_be_bytes());
        h.update(bp.to_be_bytes());
    }
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Test vectors of the community-id spec's reference implementations (also used by
    /// Elasticsearch's community_id processor tests).
    #[test]
    fn spec_vectors() {
        assert_eq!(
            community_id(0, ip("128.232.110.120"), ip("66.35.250.204"), 6, 34855, 80),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        assert_eq!(
            community_id(0, ip("66.35.250.204"), ip("128.232.110.120"), 6, 80, 34855),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        assert_eq!(
            community_id(
                0,
                ip("2001:470:e5bf:dead:4957:2174:e82c:4887"),
                ip("2607:f8b0:400c:c03::1a"),
                6,
                63943,
                25
            ),
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="
        );
        assert_eq!(
            community_id(0, ip("192.168.170.8"), ip("192.168.170.56"), 132, 7, 7),
            "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="
        );
        assert_eq!(
            community_id(0, ip("192.168.1.52"), ip("8.8.8.8"), 17, 54585, 53),
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ="
        );
        assert_eq!(
            community_id(0, ip("192.168.0.89"), ip("192.168.0.1"), 1, 8, 0),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
        assert_eq!(
            community_id(0, ip("192.168.0.1"), ip("192.168.0.89"), 1, 0, 0),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
        assert_eq!(
            community_id(0, ip("fe80::260:97ff:fe07:69ea"), ip("ff02::1"), 58, 134, 0),
            "1:pkvHqCL88/tg1k4cPigmZXUtL00="
        );
    }
}
