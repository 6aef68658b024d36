//! Fuzzing entry points: one function per parser that takes arbitrary bytes and must
//! never panic, hang or allocate without bound. The cargo-fuzz targets in `fuzz/` call
//! them under libFuzzer (nightly); `tests/fuzz_smoke.rs` calls them on stable with
//! mutations of the real captures in ../shared/corpus, so CI exercises them on every run.

use bytes::Bytes;

use crate::decap::{decapsulate, TunnelPorts};
use crate::dissect::{cleartext, dns, http, quic, ssh, tls, Inspector};
use crate::ingest::{CaptureFile, LinkType};
use crate::parse::{self, FlowKey, Side};

/// A capture file's framing, then every frame through decap and parse.
pub fn capture_file(data: &[u8]) {
    let cf = CaptureFile::from_bytes(
        std::path::Path::new("fuzz.pcap"),
        Bytes::copy_from_slice(data),
    );
    if let Ok(frames) = cf.frames() {
        for f in frames.take(10_000).flatten() {
            decap_parse_link(f.data, f.link);
        }
    }
}

fn decap_parse_link(data: &[u8], link: LinkType) {
    let ports = TunnelPorts::default();
    if let Ok(d) = decapsulate(data, link, ports) {
        let _ = parse::view(data, &d);
    }
    // The fast path that replay and serve take first: it reads the same bytes its own
    // way (a cut UDP header once panicked there and nowhere else).
    let _ = parse::decode(data, link, ports);
    let _ = parse::decode_datagram(
        data,
        ports.vxlan,
        std::net::IpAddr::from([10, 0, 0, 1]),
        ports,
    );
}

/// One Ethernet frame (first byte picks another link type now and then).
pub fn decap_parse(data: &[u8]) {
    let link = match data.first().map(|b| b % 8) {
        Some(1) => LinkType::Raw,
        Some(2) => LinkType::LinuxSll,
        Some(3) => LinkType::LinuxSll2,
        Some(4) => LinkType::Null,
        Some(5) => LinkType::Ppp,
        _ => LinkType::Ethernet,
    };
    decap_parse_link(data, link);
}

pub fn tls(data: &[u8]) {
    if let tls::Records::Handshake { bytes, .. } = tls::handshake_records(data) {
        if let Some(m) = tls::find_message(&bytes, tls::HS_CLIENT_HELLO) {
            if let Some(ch) = tls::parse_client_hello(m) {
                let _ = crate::dissect::fingerprint::ja3(&ch);
                let _ = crate::dissect::fingerprint::ja4(&ch, false);
            }
        }
        if let Some(m) = tls::find_message(&bytes, tls::HS_SERVER_HELLO) {
            let _ = tls::parse_server_hello(m);
        }
    }
    let _ = tls::parse_client_hello(data);
}

pub fn quic(data: &[u8]) {
    let mut s = quic::CryptoStream::default();
    quic::client_datagram(data, &mut s);
    let _ = s.assembled();
}

pub fn http(data: &[u8]) {
    let _ = http::requests(data);
    let _ = http::response(data);
}

pub fn dns(data: &[u8]) {
    let _ = dns::parse(data);
    let _ = dns::parse_tcp(data);
}

pub fn ssh(data: &[u8]) {
    if let Some((_, at)) = ssh::banner(data) {
        if let Some(l) = ssh::kexinit(&data[at..]) {
            let _ = ssh::hassh(&l, false);
        }
    }
    let _ = ssh::kexinit(data);
}

pub fn cleartext(data: &[u8]) {
    let half = data.len() / 2;
    for p in ["ftp", "pop3", "imap", "smtp", "telnet"] {
        let _ = cleartext::client_login(p, &data[..half], &data[half..]);
    }
    let _ = cleartext::probe_server(data, 25);
}

/// The whole inspector on a byte stream cut into segments (reassembly included): the
/// first byte chooses TCP or UDP and the segment size.
pub fn inspector(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let proto = if ctl & 1 == 0 { 6 } else { 17 };
    let (key, _) = FlowKey::new(
        None,
        None,
        (
            "10.0.0.1"
                .parse()
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            40000,
        ),
        (
            "10.0.0.2"
                .parse()
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            443,
        ),
        proto,
    );
    let mut insp = Inspector::new(Side::LoToHi, [40000, 443], 4096);
    let seg = usize::from(ctl >> 1).max(1);
    let mut seq = 1000u32;
    for (i, chunk) in rest.chunks(seg).enumerate() {
        let side = if i % 3 == 2 {
            Side::HiToLo
        } else {
            Side::LoToHi
        };
        insp.packet(&key, side, 0x18, seq, &Bytes::copy_from_slice(chunk), false);
        seq = seq.wrapping_add(chunk.len() as u32);
    }
    insp.close();
}

/// A fuzz target: arbitrary bytes in, no panic.
pub type Target = fn(&[u8]);

/// Every target by name, for the stable harness and `fuzz/` alike.
pub const TARGETS: &[(&str, Target)] = &[
    ("capture_file", capture_file),
    ("decap_parse", decap_parse),
    ("tls", tls),
    ("quic", quic),
    ("http", http),
    ("dns", dns),
    ("ssh", ssh),
    ("cleartext", cleartext),
    ("inspector", inspector),
];
