//! `send`: replays a capture as AWS-style VXLAN datagrams to a running appliance.
//!
//! A frame that already is VXLAN (UDP to the VXLAN port) is sent as is: its UDP payload,
//! VXLAN header and all. Any other frame is wrapped: an 8-byte VXLAN header with the
//! given VNI, then the frame as Ethernet (raw-IP and cooked captures get a synthetic
//! Ethernet header). `--rate` paces packets per second; `--loop` repeats the capture.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use etherparse::{LaxSlicedPacket, TransportSlice};

use crate::ingest::{CaptureFile, LinkType};

pub struct SendOptions {
    pub to: SocketAddr,
    pub vni: u32,
    /// Packets per second; 0 = as fast as possible.
    pub rate: u64,
    pub loops: u64,
    pub vxlan_port: u16,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SendReport {
    pub datagrams: u64,
    pub bytes: u64,
    /// Frames forwarded as they were (already VXLAN).
    pub passed_through: u64,
    /// Frames wrapped in a new VXLAN header.
    pub wrapped: u64,
    /// Frames that could not be sent (not IP, or a send error).
    pub skipped: u64,
    pub elapsed: Duration,
}

pub fn send(capture: &Path, opts: &SendOptions) -> Result<SendReport, String> {
    let file = CaptureFile::open(capture).map_err(|e| e.to_string())?;
    let bind: SocketAddr = if opts.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal address");
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let mut report = SendReport::default();
    let mut buf = Vec::with_capacity(9216);
    let started = Instant::now();
    for _ in 0..opts.loops.max(1) {
        let frames = file.frames().map_err(|e| e.to_string())?;
        for frame in frames {
            let frame = frame.map_err(|e| e.to_string())?;
            buf.clear();
            if !datagram_for(frame.data, frame.link, opts, &mut buf, &mut report) {
                report.skipped += 1;
                continue;
            }
            // Pace against the schedule, not the previous packet, so rounding does not drift.
            if let Some(offset_ns) = (report.datagrams * 1_000_000_000).checked_div(opts.rate) {
                let due = started + Duration::from_nanos(offset_ns);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            match socket.send_to(&buf, opts.to) {
                Ok(n) => {
                    report.datagrams += 1;
                    report.bytes += n as u64;
                }
                Err(_) => report.skipped += 1,
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Builds the datagram payload for one frame into `out`; false if it cannot be sent.
fn datagram_for(
    data: &[u8],
    link: LinkType,
    opts: &SendOptions,
    out: &mut Vec<u8>,
    report: &mut SendReport,
) -> bool {
    if link == LinkType::Ethernet {
        if let Ok(p) = LaxSlicedPacket::from_ethernet(data) {
            if let Some(TransportSlice::Udp(u)) = &p.transport {
                if u.destination_port() == opts.vxlan_port && u.payload().len() >= 8 {
                    out.extend_from_slice(u.payload());
                    report.passed_through += 1;
                    return true;
                }
            }
        }
    }
    out.extend_from_slice(&[0x08, 0, 0, 0]);
    out.extend_from_slice(&opts.vni.to_be_bytes()[1..]);
    out.push(0);
    match link {
        LinkType::Ethernet => out.extend_from_slice(data),
        _ => {
            // Find the IP packet and give it an Ethernet header of locally administered MACs.
            let ip = match link {
                LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => data,
                LinkType::LinuxSll => data.get(16..).unwrap_or(&[]),
                LinkType::LinuxSll2 => data.get(20..).unwrap_or(&[]),
                LinkType::Null | LinkType::Loop => data.get(4..).unwrap_or(&[]),
                LinkType::Ppp => data.get(2..).unwrap_or(&[]),
                LinkType::Ethernet | LinkType::Other(_) => &[],
            };
            let ether_type: [u8; 2] = match ip.first().map(|b| b >> 4) {
                Some(4) => [0x08, 0x00],
                Some(6) => [0x86, 0xdd],
                _ => return false,
            };
            out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
            out.extend_from_slice(&ether_type);
            out.extend_from_slice(ip);
        }
    }
    report.wrapped += 1;
    true
}
