//! UDP ingest for `serve`: SO_REUSEPORT sockets read with `recvmmsg` into `bytes` slabs.
//!
//! Each receiver thread owns one socket bound to the shared tunnel port (the kernel
//! spreads datagrams over the sockets), asks for a large receive buffer and reports what
//! the kernel granted, and reads up to [`RECV_BATCH`] datagrams per system call into one
//! slab. The slab is frozen into a `Bytes`, so every datagram is a cheap slice that
//! later stages may keep; the next slab reuses the allocation once those are dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;

/// Largest datagram kept whole: AWS's PacketLength tops out at 8500 bytes after the
/// VXLAN header; with outer headers and a GENEVE wrapping this stays under 9216.
pub const MAX_DATAGRAM: usize = 9216;

/// How long a receive waits before the thread checks for shutdown.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(100);

/// A bound tunnel socket and what the kernel granted it.
pub struct TunnelSocket {
    socket: Socket,
    pub port: u16,
    /// SO_RCVBUF as the kernel reports it (Linux doubles the request, then caps it at
    /// net.core.rmem_max).
    pub granted_recv_buffer: usize,
}

impl TunnelSocket {
    pub fn bind(listen: IpAddr, port: u16, recv_buffer: usize) -> io::Result<TunnelSocket> {
        let addr = SocketAddr::new(listen, port);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        let _ = socket.set_recv_buffer_size(recv_buffer);
        socket.set_read_timeout(Some(RECV_TIMEOUT))?;
        socket.bind(&SockAddr::from(addr))?;
        let granted_recv_buffer = socket.recv_buffer_size().unwrap_or(0);
        // With port 0 the kernel picked one: record the real port.
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .unwrap_or(port);
        Ok(TunnelSocket {
            socket,
            port,
            granted_recv_buffer,
        })
    }

    /// The bound port (the kernel's choice when bound to port 0).
    pub fn local_port(&self) -> u16 {
        self.port
    }
}

/// One received datagram: its sender and where it sits in the batch slab.
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    pub source: IpAddr,
    pub offset: usize,
    pub len: usize,
    /// The datagram was longer than [`MAX_DATAGRAM`] and was cut.
    pub truncated: bool,
}

/// Bytes in one receive slab: a full-size slot per datagram of a batch.
const SLAB_LEN: usize = RECV_BATCH * MAX_DATAGRAM;

/// Slabs a receiver remembers for reuse; past this, the oldest is left to whoever still
/// holds it and freed when they are done.
const SLABS_KEPT: usize = 32;

/// Reads batches from one socket; owned by its receiver thread.
pub struct BatchReceiver {
    socket: TunnelSocket,
    /// Slabs handed out, oldest first. One whose packets every worker has finished with
    /// is reused as it is: no allocation and no re-zeroing of 590 KB per system call.
    slabs: std::collections::VecDeque<Bytes>,
    datagrams: Vec<Datagram>,
    /// The last receive found only a trickle (see [`TRICKLE_WAIT`]).
    trickle: bool,
}

/// A receive that returns at least one datagram but fewer than this is a trickle.
const TRICKLE: usize = RECV_BATCH / 4;

/// After a trickle, the next receive waits this long first, so datagrams arrive in
/// batches rather than one wakeup each (interrupt moderation, done in software). At
/// ~150k datagrams/s on loopback, a receiver woken per datagram spent ~4 µs of CPU on
/// each, most of it going to sleep and waking. The wait adds at most this much latency
/// to records aggregated over minutes, and with the receive buffers `serve` asks for
/// (32 MiB) the socket holds far more than this long of traffic at line rate.
const TRICKLE_WAIT: std::time::Duration = std::time::Duration::from_micros(200);

impl BatchReceiver {
    pub fn new(socket: TunnelSocket) -> BatchReceiver {
        BatchReceiver {
            socket,
            slabs: std::collections::VecDeque::with_capacity(SLABS_KEPT),
            datagrams: Vec::with_capacity(RECV_BATCH),
            trickle: false,
        }
    }

    pub fn port(&self) -> u16 {
        self.socket.port
    }

    /// Waits up to [`RECV_TIMEOUT`] for datagrams; returns the slab and the datagrams
    /// in it (none on timeout).
    pub fn recv(&mut self) -> io::Result<(Bytes, &[Datagram])> {
        self.datagrams.clear();
        if self.trickle {
            std::thread::sleep(TRICKLE_WAIT);
        }
        let mut slab = self.free_slab();
        let got = recvmmsg(&self.socket.socket, &mut slab, &mut self.datagrams);
        self.trickle = matches!(got, Ok(n) if (1..TRICKLE).contains(&n));
        got?;
        let slab = slab.freeze();
        self.slabs.push_back(slab.clone());
        if self.slabs.len() > SLABS_KEPT {
            self.slabs.pop_front();
        }
        Ok((slab, &self.datagrams))
    }

    /// The oldest slab nobody holds any more, or a new zeroed one.
    fn free_slab(&mut self) -> BytesMut {
        for _ in 0..self.slabs.len() {
            let Some(b) = self.slabs.pop_front() else {
                break;
            };
            match b.try_into_mut() {
                Ok(m) if m.len() == SLAB_LEN => return m,
                Ok(_) => {}
                Err(b) => self.slabs.push_back(b),
            }
        }
        BytesMut::zeroed(SLAB_LEN)
    }
}

#[cfg(target_os = "linux")]
fn recvmmsg(socket: &Socket, slab: &mut [u8], out: &mut Vec<Datagram>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut addrs: [libc::sockaddr_storage; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovecs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..RECV_BATCH {
        iovecs[i] = libc::iovec {
            iov_base: slab[i * MAX_DATAGRAM..].as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        };
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every pointer refers to the arrays above or to `slab`, which outlive the
    // call; lengths match the buffers.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            RECV_BATCH as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(0)
            }
            _ => Err(e),
        };
    }
    for (i, m) in msgs.iter().enumerate().take(n as usize) {
        let Some(source) = source_ip(&addrs[i]) else {
            continue;
        };
        out.push(Datagram {
            source,
            offset: i * MAX_DATAGRAM,
            len: (m.msg_len as usize).min(MAX_DATAGRAM),
            truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        });
    }
    Ok(n as usize)
}

#[cfg(target_os = "linux")]
fn source_ip(a: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4 sender on a dual-stack socket appears as ::ffff:a.b.c.d.
            Some(
                ip.to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(ip)),
            )
        }
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn recvmmsg(socket: &Socket, slab: &mut [u8], out: &mut Vec<Datagram>) -> io::Result<usize> {
    let buf = &mut slab[..MAX_DATAGRAM];
    // SAFETY: u8 and MaybeUninit<u8> share a layout; the buffer is initialised.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    match socket.recv_from(uninit) {
        Ok((len, addr)) => {
            if let Some(a) = addr.as_socket() {
                out.push(Datagram {
                    source: a.ip(),
                    offset: 0,
                    len,
                    truncated: false,
                });
            }
            Ok(out.len())
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// UDP receive-buffer errors since boot, from `/proc/net/snmp` (`Udp: ... RcvbufErrors`):
/// datagrams the kernel dropped because a socket buffer was full.
pub fn kernel_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_after_a_trickle_loses_and_reorders_nothing() {
        let s = TunnelSocket::bind("127.0.0.1".parse().unwrap(), 0, 1 << 20).unwrap();
        let port = s.local_port();
        let mut r = BatchReceiver::new(s);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0u8;
        let mut got = Vec::new();
        // One datagram (a trickle), then bursts that arrive while the receiver waits.
        for burst in [1u8, 40, 3, 100] {
            for _ in 0..burst {
                tx.send_to(&[sent; 60], ("127.0.0.1", port)).unwrap();
                sent = sent.wrapping_add(1);
            }
            let want = got.len() + usize::from(burst);
            while got.len() < want {
                let (slab, dgrams) = r.recv().unwrap();
                for d in dgrams {
                    got.push(slab[d.offset]);
                }
            }
        }
        let expected: Vec<u8> = (0..144u8).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn receives_a_batch_on_loopback() {
        let s = TunnelSocket::bind("127.0.0.1".parse().unwrap(), 0, 1 << 20).unwrap();
        let port = s.local_port();
        assert!(s.granted_recv_buffer > 0);
        let mut r = BatchReceiver::new(s);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 100], ("127.0.0.1", port)).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            let (slab, dgrams) = r.recv().unwrap();
            for d in dgrams {
                got.push(slab.slice(d.offset..d.offset + d.len));
            }
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], Bytes::from(vec![4u8; 100]));
    }

    #[test]
    fn snmp_counter_is_read() {
        if std::path::Path::new("/proc/net/snmp").exists() {
            assert!(kernel_rcvbuf_errors().is_some());
        }
    }
}
