//! Dissect: what flow logs cannot see. Per connection, the first bytes of each direction
//! (bounded TCP reassembly, or the first UDP datagrams) are offered to dissectors chosen
//! by content, the port only breaking ties: TLS, QUIC, HTTP/1.x, DNS, SSH and the
//! cleartext login protocols. What they learn becomes [`AppFacts`] on both direction
//! records of the connection, with [`Finding`]s for what deserves a look. Once every
//! dissector has decided, the buffers are freed and the flow costs counter updates only.

pub mod cleartext;
pub mod community_id;
pub mod dns;
pub mod findings;
pub mod fingerprint;
pub mod http;
pub mod quic;
pub mod reassembly;
pub mod ssh;
pub mod tls;

use crate::parse::{FlowKey, Side, PROTO_TCP, PROTO_UDP};
pub use findings::Finding;
use reassembly::Stream;

/// Bytes inspected per direction by default (configurable as `inspect.max-bytes`).
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;
/// UDP datagrams inspected per connection.
pub const MAX_UDP_DATAGRAMS: u32 = 16;
/// Datagrams inspected on a DNS connection.
pub const MAX_DNS_DATAGRAMS: u32 = 256;
/// Bytes a direction may carry before a protocol that was not recognised is given up.
const UNKNOWN_GIVE_UP: usize = 64;

/// Everything the dissectors learned about one connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppFacts {
    pub app_protocol: Option<&'static str>,
    pub tls_sni: Option<String>,
    /// Negotiated version (ServerHello), else the highest offered.
    pub tls_version: Option<String>,
    /// ALPN values the client offered, in order.
    pub tls_alpn: Vec<String>,
    pub tls_cipher: Option<u16>,
    pub tls_ja3: Option<String>,
    pub tls_ja3_string: Option<String>,
    pub tls_ja3s: Option<String>,
    pub tls_ja4: Option<String>,
    /// The server certificate (visible up to TLS 1.2).
    pub tls_cert_subject: Option<String>,
    pub tls_cert_issuer: Option<String>,
    pub tls_cert_san: Vec<String>,
    pub http_method: Option<String>,
    pub http_host: Option<String>,
    pub http_uri: Option<String>,
    pub http_user_agent: Option<String>,
    pub http_status: Option<u16>,
    pub http_content_type: Option<String>,
    /// Requests after the first on the connection (within the inspected bytes).
    pub http_more_requests: usize,
    pub dns_query: Option<String>,
    /// Every distinct name asked on the connection (the first is `dns_query`); a
    /// resolver socket or mDNS often carries several.
    pub dns_queries: Vec<String>,
    pub dns_qtype: Option<u16>,
    pub dns_rcode: Option<u8>,
    pub dns_answers: Vec<String>,
    /// TXT queries seen on the connection (tunnels move data in TXT answers).
    pub dns_txt_queries: u32,
    pub ssh_client: Option<String>,
    pub ssh_server: Option<String>,
    pub ssh_hassh: Option<String>,
    pub ssh_hassh_server: Option<String>,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Unknown,
    Tls,
    Quic,
    Http,
    Dns,
    Ssh,
    Cleartext(&'static str),
    /// Decided: nothing we dissect.
    Other,
}

/// Why inspection of a connection stopped (counted in telemetry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InspectStats {
    pub gaps: u64,
}

/// Per-connection inspection state; dropped when done.
pub struct Inspector {
    proto: Proto,
    /// The side that opened the connection (the client), by key side.
    client: Side,
    streams: [Stream; 2],
    udp_datagrams: u32,
    quic: Option<Box<quic::CryptoStream>>,
    pub facts: AppFacts,
    done: bool,
    /// Facts changed since the record layer last took a copy.
    pub dirty: bool,
    /// The server's certificate was read, or cannot be (TLS 1.3, or its flight ended).
    cert_done: bool,
    /// A hole or truncation ended a stream early.
    pub gap: bool,
    /// Port of each key side (`[lo, hi]`).
    ports: [u16; 2],
    server_port: u16,
    /// Length of each stream (by index) when the protocol parsers last read it: a
    /// parser reads its direction again only when that direction grew. Without this,
    /// every packet of a 16 KiB HTTP response re-parsed (and re-allocated) the request.
    analyzed: [usize; 2],
}

impl Inspector {
    pub fn new(client: Side, ports: [u16; 2], max_bytes: usize) -> Inspector {
        let server_port = ports[client.other().index()];
        Inspector {
            proto: Proto::Unknown,
            client,
            streams: [Stream::new(max_bytes), Stream::new(max_bytes)],
            udp_datagrams: 0,
            quic: None,
            facts: AppFacts::default(),
            done: false,
            dirty: false,
            cert_done: false,
            gap: false,
            ports,
            server_port,
            analyzed: [0; 2],
        }
    }

    /// The content says the roles are the other way round (a capture that starts with
    /// the server's reply): swap client and server.
    fn swap_roles(&mut self) {
        self.client = self.client.other();
        self.server_port = self.ports[self.client.other().index()];
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Offers one packet. `side` is the packet's side of the flow key.
    pub fn packet(
        &mut self,
        key: &FlowKey,
        side: Side,
        tcp_flags: u8,
        tcp_seq: u32,
        payload: &[u8],
        truncated: bool,
    ) {
        if self.done {
            return;
        }
        match key.protocol {
            PROTO_TCP => {
                if self.streams[side.index()].segment(tcp_seq, tcp_flags, payload, truncated) {
                    self.analyze_tcp();
                }
                let [a, b] = &self.streams;
                if a.ended && b.ended
                    || (tcp_flags & 0x05 != 0
                        && self.proto == Proto::Unknown
                        && a.data().is_empty()
                        && b.data().is_empty())
                {
                    self.gap |= a.gap || b.gap;
                    self.finish();
                }
            }
            PROTO_UDP => {
                if payload.is_empty() {
                    return;
                }
                self.udp_datagrams += 1;
                self.analyze_udp(side == self.client, payload, truncated);
                // DNS sockets and mDNS carry many messages: follow them further.
                let limit = if self.proto == Proto::Dns {
                    MAX_DNS_DATAGRAMS
                } else {
                    MAX_UDP_DATAGRAMS
                };
                if self.udp_datagrams >= limit {
                    self.finish();
                }
            }
            _ => self.finish(),
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.gap |= self.streams.iter().any(|s| s.gap);
            for s in &mut self.streams {
                s.release();
            }
            self.quic = None;
            self.facts.findings = findings::connection_findings(
                &self.facts,
                self.server_port,
                self.facts.findings.clone(),
            );
            self.dirty = true;
        }
    }

    /// Called at end of flow: final findings, buffers freed.
    pub fn close(&mut self) {
        self.finish();
    }

    fn set_proto(&mut self, p: Proto) {
        self.proto = p;
        self.facts.app_protocol = match p {
            Proto::Tls => Some("tls"),
            Proto::Quic => Some("quic"),
            Proto::Http => Some("http"),
            Proto::Dns => Some("dns"),
            Proto::Ssh => Some("ssh"),
            Proto::Cleartext(name) => Some(name),
            Proto::Unknown | Proto::Other => None,
        };
        self.dirty = true;
    }

    fn analyze_tcp(&mut self) {
        let c = self.client.index();
        let s = self.client.other().index();
        if self.proto == Proto::Unknown {
            let (cd, sd) = (self.streams[c].data(), self.streams[s].data());
            let client_hello_at =
                |d: &[u8]| tls::probe(d) && d.get(5) == Some(&tls::HS_CLIENT_HELLO);
            if http::probe_request(sd)
                || client_hello_at(sd)
                || (http::probe_response(cd) && !http::probe_request(cd))
            {
                self.swap_roles();
                return self.analyze_tcp();
            }
            let p = if tls::probe(cd) {
                Proto::Tls
            } else if http::probe_request(cd) {
                Proto::Http
            } else if ssh::probe(cd) || ssh::probe(sd) {
                Proto::Ssh
            } else if http::probe_response(sd) {
                Proto::Http
            } else if let Some(name) = cleartext::probe_server(sd, self.server_port) {
                Proto::Cleartext(name)
            } else if matches!(self.server_port, 53 | 5353) {
                // DNS over TCP has no magic of its own: the port decides, the parser
                // confirms as the messages arrive.
                Proto::Dns
            } else if tls::probe(sd) {
                Proto::Tls
            } else if cd.len() >= UNKNOWN_GIVE_UP || sd.len() >= UNKNOWN_GIVE_UP {
                Proto::Other
            } else {
                Proto::Unknown
            };
            if p == Proto::Unknown {
                return;
            }
            self.set_proto(p);
            if p == Proto::Other {
                self.finish();
                return;
            }
        }
        let (cd, sd) = (self.streams[c].data(), self.streams[s].data());
        // Streams only grow (a reset happens before any data), so a new length is news.
        let (cg, sg) = (cd.len() != self.analyzed[c], sd.len() != self.analyzed[s]);
        self.analyzed[c] = cd.len();
        self.analyzed[s] = sd.len();
        let f = &mut self.facts;
        let mut changed = false;
        let mut server_done = false;
        match self.proto {
            Proto::Tls => {
                if f.tls_ja3.is_none() && cg {
                    if let tls::Records::Handshake { bytes, .. } = tls::handshake_records(cd) {
                        if let Some(ch) = tls::find_message(&bytes, tls::HS_CLIENT_HELLO)
                            .and_then(tls::parse_client_hello)
                        {
                            apply_client_hello(f, &ch, false);
                            changed = true;
                        }
                    }
                }
                if (f.tls_ja3s.is_none() || !self.cert_done) && sg {
                    if let tls::Records::Handshake { bytes, more } = tls::handshake_records(sd) {
                        if f.tls_ja3s.is_none() {
                            if let Some(sh) = tls::find_message(&bytes, tls::HS_SERVER_HELLO)
                                .and_then(tls::parse_server_hello)
                            {
                                f.tls_version = Some(tls::version_name(sh.version));
                                f.tls_cipher = Some(sh.cipher);
                                f.tls_ja3s = Some(fingerprint::ja3s(&sh).1);
                                // TLS 1.3 encrypts the certificate.
                                self.cert_done |= sh.version >= 0x0304;
                                changed = true;
                            }
                        }
                        if !self.cert_done {
                            if let Some(cert) = tls::find_message(&bytes, tls::HS_CERTIFICATE)
                                .and_then(tls::parse_certificate)
                            {
                                f.tls_cert_subject = Some(cert.subject);
                                f.tls_cert_issuer = Some(cert.issuer);
                                f.tls_cert_san = cert.san;
                                self.cert_done = true;
                                changed = true;
                            } else if !more {
                                self.cert_done = true;
                            }
                        }
                    }
                }
                if f.tls_ja3.is_some() && f.tls_ja3s.is_some() && self.cert_done {
                    self.dirty |= changed;
                    self.finish();
                    return;
                }
            }
            Proto::Http => {
                // A CONNECT tunnel (RFC 9110 §9.3.6) carries TLS after the proxy's answer.
                if f.tls_ja3.is_none() && cg && cd.starts_with(b"CONNECT ") {
                    if let Some(end) = cd.windows(4).position(|w| w == b"\r\n\r\n") {
                        let rest = &cd[end + 4..];
                        if let tls::Records::Handshake { bytes, .. } = tls::handshake_records(rest)
                        {
                            if let Some(ch) = tls::find_message(&bytes, tls::HS_CLIENT_HELLO)
                                .and_then(tls::parse_client_hello)
                            {
                                apply_client_hello(f, &ch, false);
                                changed = true;
                            }
                        }
                    }
                }
                if let Some(r) = cg.then(|| http::requests(cd)).flatten() {
                    if let Some(first) = r.first {
                        let before = (
                            f.http_method.clone(),
                            f.http_host.clone(),
                            f.http_more_requests,
                        );
                        f.http_method = Some(first.method);
                        f.http_uri = Some(first.uri);
                        f.http_host = first.host.or(f.http_host.take());
                        f.http_user_agent = first.user_agent.or(f.http_user_agent.take());
                        if let Some(user) = first.basic_user {
                            findings::add(
                                &mut f.findings,
                                "http-basic-auth",
                                format!("user={user}"),
                            );
                        }
                        f.http_more_requests = r.more;
                        changed |= before
                            != (
                                f.http_method.clone(),
                                f.http_host.clone(),
                                f.http_more_requests,
                            );
                    }
                }
                if f.http_status.is_none() && sg {
                    if let Some(resp) = http::response(sd) {
                        f.http_status = Some(resp.status);
                        f.http_content_type = resp.content_type;
                        changed = true;
                        // Only the first response's head is read: copying its body
                        // (up to the stream limit) was a tenth of a worker's time.
                        server_done = true;
                    }
                }
            }
            Proto::Ssh => {
                if f.ssh_client.is_none() && cg {
                    if let Some((b, _)) = ssh::banner(cd) {
                        f.ssh_client = Some(b);
                        changed = true;
                    }
                }
                if f.ssh_server.is_none() && sg {
                    if let Some((b, _)) = ssh::banner(sd) {
                        f.ssh_server = Some(b);
                        changed = true;
                    }
                }
                if f.ssh_hassh.is_none() && cg {
                    if let Some(l) = ssh::banner(cd).and_then(|(_, at)| ssh::kexinit(&cd[at..])) {
                        f.ssh_hassh = Some(ssh::hassh(&l, false));
                        changed = true;
                    }
                }
                if f.ssh_hassh_server.is_none() && sg {
                    if let Some(l) = ssh::banner(sd).and_then(|(_, at)| ssh::kexinit(&sd[at..])) {
                        f.ssh_hassh_server = Some(ssh::hassh(&l, true));
                        changed = true;
                    }
                }
                if f.ssh_hassh.is_some() && f.ssh_hassh_server.is_some() {
                    self.dirty |= changed;
                    self.finish();
                    return;
                }
            }
            Proto::Dns => {
                if let Some(m) = cg.then(|| dns::parse_tcp(cd)).flatten() {
                    changed |= apply_dns(f, &m);
                }
                if let Some(m) = sg.then(|| dns::parse_tcp(sd)).flatten() {
                    changed |= apply_dns(f, &m);
                }
            }
            Proto::Cleartext(name) => {
                // STARTTLS (RFC 3207, 2595, 4217): the TLS handshake follows the command.
                if f.tls_ja3.is_none() && cg {
                    if let Some(at) = tls_after_starttls(cd) {
                        if let tls::Records::Handshake { bytes, .. } =
                            tls::handshake_records(&cd[at..])
                        {
                            if let Some(ch) = tls::find_message(&bytes, tls::HS_CLIENT_HELLO)
                                .and_then(tls::parse_client_hello)
                            {
                                apply_client_hello(f, &ch, false);
                                changed = true;
                            }
                        }
                    }
                }
                if let Some(login) = cleartext::client_login(name, cd, sd) {
                    let detail = match &login.user {
                        Some(u) => format!("{} user={u}", login.mechanism),
                        None => login.mechanism.to_string(),
                    };
                    findings::add(&mut f.findings, login.code, detail);
                    changed = true;
                }
            }
            _ => {}
        }
        if server_done {
            self.streams[s].release();
        }
        self.dirty |= changed;
    }

    fn analyze_udp(&mut self, from_client: bool, d: &[u8], _truncated: bool) {
        if matches!(self.proto, Proto::Unknown | Proto::Quic) && from_client && quic::probe(d) {
            {
                let stream = self.quic.get_or_insert_with(Default::default);
                if quic::client_datagram(d, stream) {
                    let crypto = stream.assembled();
                    if self.proto != Proto::Quic {
                        self.set_proto(Proto::Quic);
                    }
                    if let Some(ch) = tls::find_message(&crypto, tls::HS_CLIENT_HELLO)
                        .and_then(tls::parse_client_hello)
                    {
                        apply_client_hello(&mut self.facts, &ch, true);
                        self.dirty = true;
                        self.finish();
                    }
                    return;
                }
            }
        }
        if matches!(self.proto, Proto::Unknown | Proto::Dns) {
            let dns_port = matches!(self.server_port, 53 | 5353 | 5355);
            if dns_port || self.proto == Proto::Dns || dns::probe(d) && self.udp_datagrams == 1 {
                if let Some(m) = dns::parse(d) {
                    if self.proto != Proto::Dns && (dns_port || m.query.is_some()) {
                        self.set_proto(Proto::Dns);
                    }
                    if self.proto == Proto::Dns {
                        let changed = apply_dns(&mut self.facts, &m);
                        self.dirty |= changed;
                    }
                    return;
                }
            }
            if self.proto == Proto::Unknown && self.udp_datagrams >= 2 {
                self.set_proto(Proto::Other);
                self.finish();
            }
        }
    }
}

/// Where a TLS handshake starts in a client stream after a STARTTLS-style command.
fn tls_after_starttls(cd: &[u8]) -> Option<usize> {
    let upper: Vec<u8> = cd
        .iter()
        .take(8192)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let cmd = [&b"STARTTLS"[..], b"STLS", b"AUTH TLS", b"AUTH SSL"]
        .iter()
        .filter_map(|c| upper.windows(c.len()).position(|w| w == *c))
        .min()?;
    let line_end = cmd + cd[cmd..].iter().position(|c| *c == b'\n')? + 1;
    let rel = cd[line_end..].windows(2).position(|w| w == [0x16, 0x03])?;
    Some(line_end + rel)
}

fn apply_client_hello(f: &mut AppFacts, ch: &tls::ClientHello, quic: bool) {
    f.tls_sni = ch.sni.clone();
    f.tls_alpn = ch.alpn.clone();
    let offered = ch
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !fingerprint::is_grease(*v))
        .max()
        .unwrap_or(ch.legacy_version);
    if f.tls_version.is_none() {
        f.tls_version = Some(tls::version_name(offered));
    }
    let (s, h) = fingerprint::ja3(ch);
    f.tls_ja3_string = Some(s);
    f.tls_ja3 = Some(h);
    f.tls_ja4 = Some(fingerprint::ja4(ch, quic));
}

/// Names remembered per connection.
pub const MAX_DNS_NAMES: usize = 16;

fn apply_dns(f: &mut AppFacts, m: &dns::Message) -> bool {
    let before = (
        f.dns_query.clone(),
        f.dns_rcode,
        f.dns_answers.len(),
        f.dns_queries.len(),
    );
    if f.dns_query.is_none() {
        f.dns_query = m.query.clone();
        f.dns_qtype = m.qtype;
    }
    if !m.response && m.qtype == Some(16) {
        f.dns_txt_queries += 1;
    }
    if let Some(q) = &m.query {
        if f.dns_queries.len() < MAX_DNS_NAMES && !f.dns_queries.contains(q) {
            f.dns_queries.push(q.clone());
        }
    }
    if m.response && f.dns_rcode.is_none() {
        f.dns_rcode = Some(m.rcode);
        f.dns_answers = m.answers.clone();
    }
    before
        != (
            f.dns_query.clone(),
            f.dns_rcode,
            f.dns_answers.len(),
            f.dns_queries.len(),
        )
}
