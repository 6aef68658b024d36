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
    // Connected, so each send skips the route lookup and `sendmmsg` needs no address.
    socket
        .connect(opts.to)
        .map_err(|e| format!("{}: cannot send there: {e}", opts.to))?;
    let mut report = SendReport::default();
    let mut outbox = Outbox::default();
    let started = Instant::now();
    for _ in 0..opts.loops.max(1) {
        let frames = file.frames().map_err(|e| e.to_string())?;
        for frame in frames {
            let frame = frame.map_err(|e| e.to_string())?;
            // Pace against the schedule, not the previous packet, so rounding does not
            // drift. What is queued goes out before a wait, so it is not held back.
            let index = report.datagrams + outbox.ends.len() as u64;
            if let Some(offset_ns) = (index * 1_000_000_000).checked_div(opts.rate) {
                let due = started + Duration::from_nanos(offset_ns);
                if due > Instant::now() {
                    outbox.send(&socket, &mut report);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
            }
            let start = outbox.data.len();
            if !datagram_for(frame.data, frame.link, opts, &mut outbox.data, &mut report) {
                outbox.data.truncate(start);
                report.skipped += 1;
                continue;
            }
            outbox.ends.push(outbox.data.len());
            if outbox.ends.len() >= SEND_BATCH {
                outbox.send(&socket, &mut report);
            }
        }
    }
    outbox.send(&socket, &mut report);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Datagrams per `sendmmsg` call. On loopback each send delivers into the receiver's
/// socket and may wake it (an inter-processor interrupt in a VM); one `send_to` per
/// datagram held `send` near 100k datagrams/s, below what `serve` takes in.
const SEND_BATCH: usize = 64;

/// Datagrams queued for the next `sendmmsg`, back to back in `data`.
#[derive(Default)]
struct Outbox {
    data: Vec<u8>,
    /// Where each queued datagram ends in `data`.
    ends: Vec<usize>,
}

impl Outbox {
    /// The `i`-th queued datagram.
    fn datagram(&self, i: usize) -> &[u8] {
        let begin = if i == 0 { 0 } else { self.ends[i - 1] };
        self.data.get(begin..self.ends[i]).unwrap_or(&[])
    }

    /// Sends everything queued; a datagram the kernel refuses is counted as skipped.
    fn send(&mut self, socket: &UdpSocket, report: &mut SendReport) {
        let mut at = 0;
        while at < self.ends.len() {
            match send_some(socket, self, at) {
                Ok(0) => {
                    report.skipped += 1;
                    at += 1;
                }
                Ok(sent) => {
                    for i in at..(at + sent).min(self.ends.len()) {
                        report.datagrams += 1;
                        report.bytes += self.datagram(i).len() as u64;
                    }
                    at += sent;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // This datagram is lost (no listener yet: ICMP port unreachable comes
                // back as ECONNREFUSED on a connected socket); the rest still go.
                Err(_) => {
                    report.skipped += 1;
                    at += 1;
                }
            }
        }
        self.data.clear();
        self.ends.clear();
    }
}

/// Sends datagrams `from..` of the outbox with one `sendmmsg`; returns how many went.
#[cfg(target_os = "linux")]
fn send_some(socket: &UdpSocket, outbox: &Outbox, from: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let count = (outbox.ends.len() - from).min(SEND_BATCH);
    // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero lengths).
    let mut iovecs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for (k, i) in (from..from + count).enumerate() {
        let datagram = outbox.datagram(i);
        iovecs[k] = libc::iovec {
            iov_base: datagram.as_ptr() as *mut libc::c_void,
            iov_len: datagram.len(),
        };
        msgs[k].msg_hdr.msg_iov = &mut iovecs[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: each iovec points into the outbox's data with its length, and `msgs` and `iovecs`
    // outlive the call; the kernel only reads the datagrams.
    let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), count as u32, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Without `sendmmsg`: one datagram per call.
#[cfg(not(target_os = "linux"))]
fn send_some(socket: &UdpSocket, outbox: &Outbox, from: usize) -> std::io::Result<usize> {
    socket.send(outbox.datagram(from))?;
    Ok(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame of a bundled capture arrives as one datagram, in order and byte for
    /// byte what `datagram_for` builds, whether sent in batches at full speed or paced
    /// (where a wait sends what is queued first).
    #[test]
    fn datagrams_arrive_whole_and_in_order_batched_or_paced() {
        let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/mirror-plain.pcap");
        let file = CaptureFile::open(&capture).unwrap();
        for rate in [0u64, 40_000] {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let sock = socket2::SockRef::from(&rx);
            sock.set_recv_buffer_size(16 << 20).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let opts = SendOptions {
                to: rx.local_addr().unwrap(),
                vni: 77,
                rate,
                loops: 1,
                vxlan_port: 4789,
            };
            let mut want = Vec::new();
            let mut scratch = SendReport::default();
            for frame in file.frames().unwrap() {
                let frame = frame.unwrap();
                let mut d = Vec::new();
                if datagram_for(frame.data, frame.link, &opts, &mut d, &mut scratch) {
                    want.push(d);
                }
            }
            let receiver = std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65_536];
                while let Ok(n) = rx.recv(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
                got
            });
            let report = send(&capture, &opts).unwrap();
            let got = receiver.join().unwrap();
            assert_eq!(report.datagrams, want.len() as u64, "rate {rate}");
            let bytes: usize = want.iter().map(Vec::len).sum();
            assert_eq!(report.bytes, bytes as u64, "rate {rate}");
            assert_eq!(got.len(), want.len(), "rate {rate}: all received");
            assert!(got == want, "rate {rate}: datagrams differ from the frames");
        }
    }
}
