//! Flood captures for overload tests: a SYN flood from random sources (one packet per
//! flow), a flood of IPv4 fragments whose first fragment never comes, and a flood of
//! tiny VXLAN datagrams with broken headers. Deterministic per seed; one packet per
//! microsecond from the generator's epoch.

use std::io;
use std::path::Path;

use etherparse::PacketBuilder;

use super::chunked::ChunkWriter;
use super::packets::PcapWriter;
use super::GEN_EPOCH_S;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    Syn,
    Fragments,
    BadVxlan,
}

impl std::str::FromStr for Flood {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "syn" => Ok(Flood::Syn),
            "fragments" => Ok(Flood::Fragments),
            "bad-vxlan" => Ok(Flood::BadVxlan),
            other => Err(format!(
                "'{other}' is not a flood kind (syn, fragments, bad-vxlan)"
            )),
        }
    }
}

/// Writes `packets` flood packets to `path`.
pub fn write_flood(path: &Path, kind: Flood, packets: u64, seed: u64) -> io::Result<()> {
    let mut pcap = PcapWriter::new(ChunkWriter::new(std::fs::File::create(path)?))?;
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let eni = [10, 0, 1, 10];
    let mut frame = Vec::with_capacity(128);
    for i in 0..packets {
        frame.clear();
        let r = next();
        // Sources spread over 100.64.0.0/10 (shared address space).
        let src = [
            100,
            64 | ((r >> 8) & 0x3f) as u8,
            (r >> 16) as u8,
            (r >> 24) as u8,
        ];
        match kind {
            Flood::Syn => {
                let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0xa, 0, 1, 0xa])
                    .ipv4(src, eni, 64)
                    .tcp((r >> 32) as u16 | 1024, 443, r as u32, 1024)
                    .syn();
                b.write(&mut frame, &[]).map_err(io::Error::other)?;
            }
            Flood::Fragments => {
                // A later fragment (offset 1480 bytes) of a datagram never otherwise seen.
                let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0xa, 0, 1, 0xa])
                    .ipv4(src, eni, 64)
                    .udp(1, 2);
                b.write(&mut frame, &[0u8; 32]).map_err(io::Error::other)?;
                let ip = 14;
                frame[ip + 4..ip + 6].copy_from_slice(&((r >> 40) as u16).to_be_bytes());
                frame[ip + 6..ip + 8].copy_from_slice(&(185u16).to_be_bytes());
                // Header checksum is left stale: mirrors do not check it, nor do we.
            }
            Flood::BadVxlan => {
                let payload: &[u8] = if r & 1 == 0 {
                    &[0, 0, 0, 0, 0, 0, 7, 0]
                } else {
                    &[8, 0, 0]
                };
                let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0xa, 0, 1, 0xa])
                    .ipv4(src, [10, 0, 9, 99], 255)
                    .udp(0xff80, 4789);
                b.write(&mut frame, payload).map_err(io::Error::other)?;
            }
        }
        pcap.write(GEN_EPOCH_S * 1_000_000 + i, &frame, frame.len())?;
    }
    pcap.finish()
}
