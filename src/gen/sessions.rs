//! The sessions `gen` writes and their ground truth.
//!
//! Each session is built packet by packet with simulated times; the truth of a flow is
//! accumulated from exactly the frames written, so it cannot drift from the capture.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use serde::Serialize;

use super::{GenOptions, GEN_EPOCH_S};
use crate::record::aws_tcp_flags;

const ENI_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x01, 0x0a];
const VPC_ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x00, 0x01];
const ENI_V4: [u8; 4] = [10, 0, 1, 10];
const ENI_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const RESOLVER_V4: [u8; 4] = [10, 0, 0, 2];
const RESOLVER_V6: [u8; 16] = [
    0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x53,
];
/// TCP maximum segment size used for bulk data (Ethernet MTU minus headers, timestamps).
const MSS: usize = 1448;
/// Size of the ephemeral range gen draws client ports from (32768..60999).
const EPHEMERAL_PORTS: usize = 60999 - 32768;
/// Seconds over which session starts are spread: two default aggregation windows.
const SPREAD_S: u64 = 1200;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SideTruth {
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub start_us: u64,
    pub end_us: u64,
    /// Relative to the mirrored interface.
    pub flow_direction: &'static str,
}

/// One flow of the truth file (`{"type":"flow", ...}`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowTruth {
    #[serde(rename = "type")]
    pub kind_tag: &'static str,
    pub kind: &'static str,
    pub protocol: u8,
    pub srcaddr: String,
    pub srcport: u16,
    pub dstaddr: String,
    pub dstport: u16,
    pub packets: u64,
    pub bytes: u64,
    /// Client (first sender) to server.
    pub fwd: SideTruth,
    /// Server to client.
    pub rev: SideTruth,
    pub conn_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_qtype: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_server: Option<String>,
    /// Facts that the capture's truncation (`--truncate`) cuts: the bytes a dissector
    /// needs for them end past the kept length of the frame that carries them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<&'static str>,
}

pub struct GenPacket {
    pub ts_us: u64,
    pub order: u64,
    pub frame: Vec<u8>,
    pub flow_hash: u64,
}

pub struct Traffic {
    pub flows: Vec<FlowTruth>,
    pub packets: Vec<GenPacket>,
}

/// splitmix64: tiny, deterministic, good enough for traffic shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const SITES: &[&str] = &[
    "api.example.com",
    "www.example.org",
    "s3.eu-central-1.amazonaws.com",
    "login.example.net",
    "cdn.example.com",
    "updates.example.org",
    "metrics.example.io",
    "shop.example.com",
];
const ALPNS: &[&str] = &["h2", "http/1.1"];
const USER_AGENTS: &[&str] = &[
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "aws-sdk-go/1.50.0",
    "python-requests/2.31.0",
];
const SSH_CLIENTS: &[&str] = &[
    "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13",
    "SSH-2.0-PuTTY_Release_0.80",
    "SSH-2.0-Go",
];
const SSH_SERVERS: &[&str] = &[
    "SSH-2.0-OpenSSH_8.7",
    "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13",
];

#[derive(Clone, Copy)]
struct Endpoints {
    client: IpAddr,
    server: IpAddr,
    cport: u16,
    sport: u16,
    /// The mirrored interface is the client (egress first) or the server.
    eni_is_client: bool,
}

/// Builds one flow's packets and truth.
struct FlowBuilder<'a> {
    ep: Endpoints,
    truth: FlowTruth,
    out: &'a mut Vec<GenPacket>,
    order: &'a mut u64,
    hash: u64,
    t_us: u64,
    cseq: u32,
    sseq: u32,
    /// Index in `out` of this flow's first packet.
    first_packet: usize,
    /// Per fact: where in its frame the bytes a dissector needs for it end.
    fact_ends: Vec<(&'static str, usize)>,
    /// The receiver acknowledges every second full segment (Linux delayed ACK)
    /// instead of once per burst.
    delayed_ack: bool,
}

impl<'a> FlowBuilder<'a> {
    fn new(
        kind: &'static str,
        ep: Endpoints,
        protocol: u8,
        start_us: u64,
        out: &'a mut Vec<GenPacket>,
        order: &'a mut u64,
        rng: &mut Rng,
    ) -> Self {
        let dir = |client_side: bool| {
            if client_side == ep.eni_is_client {
                "egress"
            } else {
                "ingress"
            }
        };
        FlowBuilder {
            ep,
            truth: FlowTruth {
                kind_tag: "flow",
                kind,
                protocol,
                srcaddr: ep.client.to_string(),
                srcport: ep.cport,
                dstaddr: ep.server.to_string(),
                dstport: ep.sport,
                packets: 0,
                bytes: 0,
                fwd: SideTruth {
                    flow_direction: dir(true),
                    ..Default::default()
                },
                rev: SideTruth {
                    flow_direction: dir(false),
                    ..Default::default()
                },
                conn_state: "S0",
                sni: None,
                alpn: None,
                http_host: None,
                http_user_agent: None,
                dns_query: None,
                dns_qtype: None,
                ssh_client: None,
                ssh_server: None,
                hidden: Vec::new(),
            },
            first_packet: out.len(),
            fact_ends: Vec::new(),
            delayed_ack: false,
            out,
            order,
            hash: rng.next(),
            t_us: start_us,
            cseq: rng.next() as u32,
            sseq: rng.next() as u32,
        }
    }

    fn wait(&mut self, us: u64) {
        self.t_us += us;
    }

    fn emit(&mut self, from_client: bool, frame: Vec<u8>, tcp_flags: u8) {
        let ip_len = (frame.len() - 14) as u64;
        let side = if from_client {
            &mut self.truth.fwd
        } else {
            &mut self.truth.rev
        };
        if side.packets == 0 {
            side.start_us = self.t_us;
        }
        side.packets += 1;
        side.bytes += ip_len;
        side.tcp_flags |= aws_tcp_flags(tcp_flags);
        side.end_us = self.t_us;
        self.truth.packets += 1;
        self.truth.bytes += ip_len;
        self.out.push(GenPacket {
            ts_us: self.t_us,
            order: *self.order,
            frame,
            flow_hash: self.hash,
        });
        *self.order += 1;
    }

    fn builder(&self, from_client: bool) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        let egress = from_client == self.ep.eni_is_client;
        let (smac, dmac) = if egress {
            (ENI_MAC, VPC_ROUTER_MAC)
        } else {
            (VPC_ROUTER_MAC, ENI_MAC)
        };
        let (src, dst) = if from_client {
            (self.ep.client, self.ep.server)
        } else {
            (self.ep.server, self.ep.client)
        };
        let eth = PacketBuilder::ethernet2(smac, dmac);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!("generated flows never mix address families"),
        }
    }

    /// One TCP segment. `flags` is the raw flags byte; SYN and FIN consume a sequence number.
    fn tcp(&mut self, from_client: bool, flags: u8, payload: &[u8]) {
        let (sp, dp) = if from_client {
            (self.ep.cport, self.ep.sport)
        } else {
            (self.ep.sport, self.ep.cport)
        };
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        let mut b = self.builder(from_client).tcp(sp, dp, seq, 64240);
        if flags & 0x02 != 0 {
            b = b.syn();
        }
        if flags & 0x01 != 0 {
            b = b.fin();
        }
        if flags & 0x04 != 0 {
            b = b.rst();
        }
        if flags & 0x08 != 0 {
            b = b.psh();
        }
        if flags & 0x10 != 0 {
            b = b.ack(ack);
        }
        let mut frame = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut frame, payload)
            .expect("writing to a Vec cannot fail");
        let adv = payload.len() as u32 + u32::from(flags & 0x03 != 0);
        if from_client {
            self.cseq = self.cseq.wrapping_add(adv);
        } else {
            self.sseq = self.sseq.wrapping_add(adv);
        }
        self.emit(from_client, frame, flags);
    }

    fn udp(&mut self, from_client: bool, payload: &[u8]) {
        let (sp, dp) = if from_client {
            (self.ep.cport, self.ep.sport)
        } else {
            (self.ep.sport, self.ep.cport)
        };
        let b = self.builder(from_client).udp(sp, dp);
        let mut frame = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut frame, payload)
            .expect("writing to a Vec cannot fail");
        self.emit(from_client, frame, 0);
    }

    fn icmp_echo(&mut self, from_client: bool, id: u16, seq: u16) {
        let b = self.builder(from_client);
        let payload = [0x42u8; 56];
        let mut frame = Vec::new();
        let v6 = self.ep.client.is_ipv6();
        let r = match (v6, from_client) {
            (false, true) => b.icmpv4_echo_request(id, seq).write(&mut frame, &payload),
            (false, false) => b.icmpv4_echo_reply(id, seq).write(&mut frame, &payload),
            (true, true) => b.icmpv6_echo_request(id, seq).write(&mut frame, &payload),
            (true, false) => b.icmpv6_echo_reply(id, seq).write(&mut frame, &payload),
        };
        r.expect("writing to a Vec cannot fail");
        self.emit(from_client, frame, 0);
    }

    fn handshake(&mut self, rtt: u64) {
        self.tcp(true, 0x02, &[]);
        self.wait(rtt / 2);
        self.tcp(false, 0x12, &[]);
        self.wait(rtt / 2);
        self.tcp(true, 0x10, &[]);
    }

    /// Sends `data` from one side in MSS segments, acknowledged by the other once the
    /// burst is in, and with `delayed_ack` also after every second full segment (what a
    /// Linux receiver does; it brings bulk traffic's mean frame size from ~1,500 bytes
    /// down to the ~1,000 of real captures).
    fn send(&mut self, from_client: bool, data: &[u8], rtt: u64) {
        let n = data.chunks(MSS).count();
        for (i, chunk) in data.chunks(MSS).enumerate() {
            self.wait(200);
            let flags = if i + 1 == n { 0x18 } else { 0x10 };
            self.tcp(from_client, flags, chunk);
            if self.delayed_ack && i % 2 == 1 && i + 1 < n {
                self.wait(40);
                self.tcp(!from_client, 0x10, &[]);
            }
        }
        self.wait(rtt / 2);
        self.tcp(!from_client, 0x10, &[]);
    }

    fn close(&mut self, rng: &mut Rng, rtt: u64) {
        self.wait(rng.range(1_000, 50_000));
        if rng.chance(0.05) {
            self.tcp(true, 0x14, &[]);
            self.truth.conn_state = "RSTO";
            return;
        }
        self.tcp(true, 0x11, &[]);
        self.wait(rtt / 2);
        self.tcp(false, 0x11, &[]);
        self.wait(rtt / 2);
        self.tcp(true, 0x10, &[]);
        self.truth.conn_state = "SF";
    }

    /// Records where the bytes behind `fact` end in the first frame of this flow that
    /// carries `needle` whole (a fact split across frames ends nowhere: always hidden
    /// under truncation).
    fn note(&mut self, fact: &'static str, needle: &[u8]) {
        let end = self.out[self.first_packet..]
            .iter()
            .find_map(|p| {
                p.frame
                    .windows(needle.len())
                    .position(|w| w == needle)
                    .map(|i| i + needle.len())
            })
            .unwrap_or(usize::MAX);
        self.fact_ends.push((fact, end));
    }

    fn finish(mut self, truncate: Option<usize>) -> FlowTruth {
        if let Some(n) = truncate {
            self.truth.hidden = self
                .fact_ends
                .iter()
                .filter(|(_, end)| *end > n)
                .map(|(f, _)| *f)
                .collect();
        }
        self.truth
    }
}

/// Generates all sessions, their packets in time order, and the truth.
pub fn generate(opts: &GenOptions) -> Traffic {
    let mut rng = Rng(opts.seed ^ 0x6d69_7272_6f72_666c);
    let mut packets = Vec::new();
    let mut flows = Vec::new();
    let mut order = 0u64;
    let n = opts.flows.max(1);
    let step_us = SPREAD_S * 1_000_000 / n as u64;
    let mut used_ports = std::collections::HashSet::new();
    let mut used_pairs = std::collections::HashSet::new();
    let mut icmp_peers = 0u32;
    for i in 0..n {
        let start_us =
            GEN_EPOCH_S * 1_000_000 + 500_000 + i as u64 * step_us + rng.below(step_us / 2 + 1);
        let v6 = rng.chance(opts.ipv6_share);
        let peer = |rng: &mut Rng| -> IpAddr {
            if v6 {
                let mut a = [0u8; 16];
                a[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff]);
                a[14] = rng.below(256) as u8;
                a[15] = rng.range(1, 254) as u8;
                IpAddr::from(a)
            } else if rng.chance(0.5) {
                IpAddr::from([198, 51, 100, rng.range(1, 254) as u8])
            } else {
                IpAddr::from([203, 0, 113, rng.range(1, 254) as u8])
            }
        };
        let eni: IpAddr = if v6 {
            IpAddr::from(ENI_V6)
        } else {
            IpAddr::from(ENI_V4)
        };
        let resolver: IpAddr = if v6 {
            IpAddr::from(RESOLVER_V6)
        } else {
            IpAddr::from(RESOLVER_V4)
        };
        // Ephemeral ports unique per run so every flow has its own five-tuple.
        // Ephemeral ports: unique per run while the range lasts, so small captures have
        // one port per flow; past that (more than 28,231 client flows), unique per
        // remote address, which still gives every flow its own five-tuple.
        let mut eph = |rng: &mut Rng, remote: IpAddr| loop {
            let p = rng.range(32768, 60999) as u16;
            if used_ports.len() < EPHEMERAL_PORTS {
                if used_ports.insert(p) {
                    used_pairs.insert((remote, p));
                    break p;
                }
            } else if used_pairs.insert((remote, p)) {
                break p;
            }
        };
        let rtt = rng.range(2_000, 80_000);
        let roll = rng.below(100);
        let kind = if i == n / 2 {
            "ssh-long"
        } else if i % 97 == 50 {
            "portscan"
        } else {
            match roll {
                0..=24 => "tls",
                25..=39 => "http",
                40..=59 => "dns",
                60..=64 => "ssh",
                65..=71 => "icmp",
                72..=83 => "tcp-bulk",
                84..=88 => "syn-unanswered",
                89..=93 => "http-inbound",
                _ => "ntp",
            }
        };
        match kind {
            "tls" | "http" | "tcp-bulk" | "ssh" | "ssh-long" | "syn-unanswered" => {
                let sport = match kind {
                    "tls" => 443,
                    "http" => 80,
                    "ssh" | "ssh-long" => 22,
                    "syn-unanswered" => *rng.pick(&[443u16, 8443, 25, 3389]),
                    _ => *rng.pick(&[5432u16, 3306, 6379, 9092, 27017]),
                };
                let server = peer(&mut rng);
                let ep = Endpoints {
                    client: eni,
                    server,
                    cport: eph(&mut rng, server),
                    sport,
                    eni_is_client: true,
                };
                let mut f =
                    FlowBuilder::new(kind, ep, 6, start_us, &mut packets, &mut order, &mut rng);
                f.delayed_ack = opts.delayed_ack;
                match kind {
                    "syn-unanswered" => {
                        f.tcp(true, 0x02, &[]);
                        f.wait(1_000_000);
                        f.tcp(true, 0x02, &[]);
                        f.wait(2_000_000);
                        f.tcp(true, 0x02, &[]);
                        f.truth.conn_state = "S0";
                    }
                    "tls" => {
                        let sni = rng.pick(SITES).to_string();
                        let alpn = rng.pick(ALPNS).to_string();
                        f.handshake(rtt);
                        let hello = client_hello(&sni, &alpn, &mut rng);
                        f.send(true, &hello, rtt);
                        // SNI and ALPN need the whole ClientHello.
                        f.note("sni", &hello);
                        f.note("alpn", &hello);
                        f.send(false, &server_flight(&mut rng), rtt);
                        let resp = rng.range(200, 60_000) as usize;
                        f.send(true, &vec![0x17; rng.range(100, 900) as usize], rtt);
                        f.send(false, &vec![0x17; resp], rtt);
                        f.close(&mut rng, rtt);
                        f.truth.sni = Some(sni);
                        f.truth.alpn = Some(alpn);
                    }
                    "http" => {
                        let host = rng.pick(SITES).to_string();
                        let ua = rng.pick(USER_AGENTS).to_string();
                        f.handshake(rtt);
                        let req = format!("GET /index.html?id={} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n", rng.below(10_000));
                        f.send(true, req.as_bytes(), rtt);
                        f.note("http_host", format!("Host: {host}\r\n").as_bytes());
                        f.note(
                            "http_user_agent",
                            format!("User-Agent: {ua}\r\n").as_bytes(),
                        );
                        let body = vec![b'x'; rng.range(100, 30_000) as usize];
                        let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                        resp.extend_from_slice(&body);
                        f.send(false, &resp, rtt);
                        f.close(&mut rng, rtt);
                        f.truth.http_host = Some(host);
                        f.truth.http_user_agent = Some(ua);
                    }
                    "ssh" | "ssh-long" => {
                        let c = rng.pick(SSH_CLIENTS).to_string();
                        let s = rng.pick(SSH_SERVERS).to_string();
                        f.handshake(rtt);
                        f.send(false, format!("{s}\r\n").as_bytes(), rtt);
                        f.send(true, format!("{c}\r\n").as_bytes(), rtt);
                        f.note("ssh_server", format!("{s}\r\n").as_bytes());
                        f.note("ssh_client", format!("{c}\r\n").as_bytes());
                        f.send(true, &vec![0x14; 1200], rtt);
                        f.send(false, &vec![0x14; 1100], rtt);
                        if kind == "ssh-long" {
                            // An interactive session: a keystroke every 20 s for 12 min,
                            // crossing at least one aggregation-window boundary.
                            for _ in 0..36 {
                                f.wait(20_000_000);
                                f.send(true, &[0x5e; 36], rtt);
                            }
                        }
                        f.close(&mut rng, rtt);
                        f.truth.ssh_client = Some(c);
                        f.truth.ssh_server = Some(s);
                    }
                    _ => {
                        f.handshake(rtt);
                        f.send(true, &vec![0x51; rng.range(50, 400) as usize], rtt);
                        f.send(false, &vec![0x44; rng.range(1_000, 200_000) as usize], rtt);
                        f.close(&mut rng, rtt);
                    }
                }
                flows.push(f.finish(opts.truncate));
            }
            "http-inbound" => {
                let client = peer(&mut rng);
                let ep = Endpoints {
                    client,
                    server: eni,
                    cport: eph(&mut rng, client),
                    sport: 8080,
                    eni_is_client: false,
                };
                let mut f =
                    FlowBuilder::new(kind, ep, 6, start_us, &mut packets, &mut order, &mut rng);
                f.delayed_ack = opts.delayed_ack;
                f.handshake(rtt);
                let req = "GET /health HTTP/1.1\r\nHost: app.internal.example\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\r\n";
                f.send(true, req.as_bytes(), rtt);
                f.note("http_host", b"Host: app.internal.example\r\n");
                f.note("http_user_agent", b"User-Agent: ELB-HealthChecker/2.0\r\n");
                f.send(
                    false,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    rtt,
                );
                f.close(&mut rng, rtt);
                f.truth.http_host = Some("app.internal.example".into());
                f.truth.http_user_agent = Some("ELB-HealthChecker/2.0".into());
                flows.push(f.finish(opts.truncate));
            }
            "dns" | "ntp" => {
                let (server, sport) = if kind == "dns" {
                    (resolver, 53)
                } else {
                    (peer(&mut rng), 123)
                };
                let ep = Endpoints {
                    client: eni,
                    server,
                    cport: eph(&mut rng, server),
                    sport,
                    eni_is_client: true,
                };
                let mut f =
                    FlowBuilder::new(kind, ep, 17, start_us, &mut packets, &mut order, &mut rng);
                if kind == "dns" {
                    let name = rng.pick(SITES).to_string();
                    let qtype = if v6 { 28 } else { 1 };
                    let id = rng.next() as u16;
                    let query = dns_message(id, &name, qtype, None);
                    f.udp(true, &query);
                    f.note("dns_query", &query);
                    f.wait(rng.range(300, 5_000));
                    f.udp(false, &dns_message(id, &name, qtype, Some(&mut rng)));
                    f.truth.dns_query = Some(name);
                    f.truth.dns_qtype = Some(qtype);
                } else {
                    let mut ntp = [0u8; 48];
                    ntp[0] = 0x23;
                    f.udp(true, &ntp);
                    f.wait(rtt);
                    ntp[0] = 0x24;
                    f.udp(false, &ntp);
                }
                f.truth.conn_state = "SF";
                flows.push(f.finish(opts.truncate));
            }
            "icmp" => {
                // ICMP flows have ports 0, so each echo flow gets a peer of its own
                // (RFC 2544 benchmarking range) to stay a flow of its own.
                icmp_peers += 1;
                let c = icmp_peers;
                let server = if v6 {
                    let mut a = [
                        0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0xee, 0, 0, 0, 0, 0, 0, 0, 0,
                    ];
                    a[12..16].copy_from_slice(&c.to_be_bytes());
                    IpAddr::from(a)
                } else {
                    IpAddr::from([198, 18 + ((c >> 16) & 1) as u8, (c >> 8) as u8, c as u8])
                };
                let ep = Endpoints {
                    client: eni,
                    server,
                    cport: 0,
                    sport: 0,
                    eni_is_client: true,
                };
                let proto = if v6 { 58 } else { 1 };
                let mut f = FlowBuilder::new(
                    kind,
                    ep,
                    proto,
                    start_us,
                    &mut packets,
                    &mut order,
                    &mut rng,
                );
                let id = rng.next() as u16;
                for seq in 1..=rng.range(1, 4) as u16 {
                    f.icmp_echo(true, id, seq);
                    f.wait(rtt);
                    f.icmp_echo(false, id, seq);
                    f.wait(1_000_000 - rtt.min(999_999));
                }
                f.truth.conn_state = "SF";
                flows.push(f.finish(opts.truncate));
            }
            _ => {
                // A port scan against the interface: one scanner, many ports, each probe
                // its own flow; closed ports answer RST-ACK (REJ), filtered ones nothing (S0).
                let scanner = peer(&mut rng);
                let sport = eph(&mut rng, scanner);
                let first = rng.range(1, 1000) as u16;
                for k in 0..24u16 {
                    let ep = Endpoints {
                        client: scanner,
                        server: eni,
                        cport: sport,
                        sport: first + k,
                        eni_is_client: false,
                    };
                    let mut f = FlowBuilder::new(
                        "portscan",
                        ep,
                        6,
                        start_us + u64::from(k) * 3_000,
                        &mut packets,
                        &mut order,
                        &mut rng,
                    );
                    f.tcp(true, 0x02, &[]);
                    if k % 3 != 0 {
                        f.wait(300);
                        f.tcp(false, 0x14, &[]);
                        f.truth.conn_state = "REJ";
                    } else {
                        f.truth.conn_state = "S0";
                    }
                    flows.push(f.finish(opts.truncate));
                }
            }
        }
    }
    packets.sort_by_key(|p| (p.ts_us, p.order));
    Traffic { flows, packets }
}

/// A TLS 1.2-record ClientHello offering TLS 1.3 with SNI and ALPN (RFC 8446 §4.1.2,
/// RFC 6066 §3, RFC 7301 §3.1), shaped like a modern browser's.
fn client_hello(sni: &str, alpn: &str, rng: &mut Rng) -> Vec<u8> {
    let mut exts = Vec::new();
    let mut ext = |ty: u16, body: &[u8]| {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(body.len() as u16).to_be_bytes());
        exts.extend_from_slice(body);
    };
    let mut sni_body = Vec::new();
    sni_body.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sni_body.push(0);
    sni_body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_body.extend_from_slice(sni.as_bytes());
    ext(0x0000, &sni_body);
    ext(0x000a, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]);
    ext(0x000b, &[1, 0]);
    ext(0x000d, &[0, 8, 4, 3, 8, 4, 4, 1, 5, 1]);
    let mut alpn_body = Vec::new();
    alpn_body.extend_from_slice(&((alpn.len() + 1) as u16).to_be_bytes());
    alpn_body.push(alpn.len() as u8);
    alpn_body.extend_from_slice(alpn.as_bytes());
    ext(0x0010, &alpn_body);
    ext(0x002b, &[4, 3, 4, 3, 3]);
    let mut ks = vec![0, 36, 0, 0x1d, 0, 32];
    ks.extend((0..32).map(|_| rng.next() as u8));
    ext(0x0033, &ks);
    let mut hello = vec![3, 3];
    hello.extend((0..32).map(|_| rng.next() as u8));
    hello.push(32);
    hello.extend((0..32).map(|_| rng.next() as u8));
    hello.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
    hello.extend_from_slice(&[1, 0]);
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// ServerHello (TLS 1.3 via supported_versions) followed by encrypted records.
fn server_flight(rng: &mut Rng) -> Vec<u8> {
    let mut hello = vec![3, 3];
    hello.extend((0..32).map(|_| rng.next() as u8));
    hello.push(0);
    hello.extend_from_slice(&[0x13, 0x01, 0]);
    let exts = [0x00, 0x2b, 0, 2, 3, 4];
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);
    let mut hs = vec![2];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 3, 3];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
    let app = rng.range(2_000, 5_000) as usize;
    rec.extend_from_slice(&[0x17, 3, 3]);
    rec.extend_from_slice(&(app as u16).to_be_bytes());
    rec.extend((0..app).map(|_| rng.next() as u8));
    rec
}

/// A DNS query, or with `answer` a response carrying one A/AAAA record (RFC 1035 §4.1).
fn dns_message(id: u16, name: &str, qtype: u16, answer: Option<&mut Rng>) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(if answer.is_some() {
        &[0x81, 0x80]
    } else {
        &[0x01, 0x00]
    });
    m.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if let Some(rng) = answer {
        m.extend_from_slice(&[0xc0, 0x0c]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
        let len = if qtype == 28 { 16 } else { 4 };
        m.extend_from_slice(&(len as u16).to_be_bytes());
        m.extend((0..len).map(|_| rng.next() as u8));
    }
    m
}
