//! Frame building for `gen`: inner frames via etherparse's PacketBuilder (checksums
//! right), the AWS-style VXLAN wrapping (aws-spec §1.2), and a classic pcap writer.

use std::io::{self, Write};

/// The mirror target's address (outer IPv4 destination).
pub const TARGET_IP: [u8; 4] = [10, 0, 9, 99];
/// Outer Ethernet addresses on the target's side.
const TARGET_MAC: [u8; 6] = [0x06, 0xe2, 0x43, 0x9c, 0xff, 0x5e];
const TARGET_ROUTER_MAC: [u8; 6] = [0x06, 0x1d, 0x3c, 0x34, 0xd0, 0x77];
/// Outer IPv4 source: the mirrored ENI's primary IPv4 (also for IPv6 inner flows).
pub const ENI_IPV4: [u8; 4] = [10, 0, 1, 10];

/// Wraps an inner Ethernet frame as AWS does: outer Ethernet / IPv4 (ID 0, TTL 255, DF
/// clear) / UDP (source port from a flow hash in 0xFF80-0xFFFF, checksum 0) / VXLAN.
/// `truncate` keeps that many bytes after the VXLAN header (PacketLength).
pub fn vxlan_wrap(inner: &[u8], vni: u32, flow_hash: u64, truncate: Option<usize>) -> Vec<u8> {
    let inner = &inner[..truncate.unwrap_or(usize::MAX).min(inner.len())];
    let udp_len = 8 + 8 + inner.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&TARGET_MAC);
    f.extend_from_slice(&TARGET_ROUTER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 255;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&ENI_IPV4);
    ip[16..20].copy_from_slice(&TARGET_IP);
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    let sport = 0xff80 | (flow_hash as u16 & 0x7f);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0]);
    f.extend_from_slice(&vni.to_be_bytes()[1..4]);
    f.push(0);
    f.extend_from_slice(inner);
    f
}

fn ipv4_checksum(h: &[u8; 20]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Classic pcap, little-endian, microseconds, Ethernet.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65535u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    pub fn write(&mut self, ts_us: u64, data: &[u8], orig_len: usize) -> io::Result<()> {
        self.out
            .write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(&(orig_len as u32).to_le_bytes())?;
        self.out.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}
