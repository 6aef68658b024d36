//! DNS with `simple-dns`: the first question, the response code and the A/AAAA/CNAME
//! answers, from a UDP payload or a TCP stream (2-byte length prefix, RFC 1035 §4.2.2).
//!
//! simple-dns parses a message whole; when a damaged record section makes it refuse, we
//! parse again with the record counts zeroed, so the question still comes through.

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag};

/// Answers kept per message.
pub const MAX_ANSWERS: usize = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub query: Option<String>,
    pub qtype: Option<u16>,
    pub rcode: u8,
    pub answers: Vec<String>,
}

/// Parses one DNS message.
pub fn parse(b: &[u8]) -> Option<Message> {
    if b.len() < 12 {
        return None;
    }
    if let Ok(p) = Packet::parse(b) {
        return Some(from_packet(&p, b, None));
    }
    // simple-dns refuses a whole message for one record it does not know (an RR type
    // it lacks, a damaged answer). Keep the question: zero the record counts, and give
    // the question a type it knows, remembering the real one.
    let mut copy = b.to_vec();
    copy[6..12].fill(0);
    let qtype_at = question_type_offset(&copy)?;
    let qtype = u16::from_be_bytes([*copy.get(qtype_at)?, *copy.get(qtype_at + 1)?]);
    copy.get_mut(qtype_at..qtype_at + 4)?
        .copy_from_slice(&[0, 1, 0, 1]);
    Packet::parse(&copy)
        .ok()
        .map(|p| from_packet(&p, b, Some(qtype)))
}

/// Offset of the first question's QTYPE: just past its name (RFC 1035 §4.1.2).
fn question_type_offset(b: &[u8]) -> Option<usize> {
    let mut at = 12;
    for _ in 0..128 {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
    None
}

fn from_packet(p: &Packet<'_>, raw: &[u8], qtype: Option<u16>) -> Message {
    let q = p.questions.first();
    let mut answers = Vec::new();
    for a in p.answers.iter().take(MAX_ANSWERS) {
        match &a.rdata {
            RData::A(a) => answers.push(std::net::Ipv4Addr::from(a.address).to_string()),
            RData::AAAA(a) => answers.push(std::net::Ipv6Addr::from(a.address).to_string()),
            RData::CNAME(c) => answers.push(c.0.to_string().trim_end_matches('.').to_string()),
            _ => {}
        }
    }
    Message {
        id: u16::from_be_bytes([raw[0], raw[1]]),
        response: p.has_flags(PacketFlag::RESPONSE),
        // An mDNS announcement has answers and no question: its first answer names it.
        query: q
            .map(|q| q.qname.to_string())
            .or_else(|| p.answers.first().map(|a| a.name.to_string()))
            .map(|n| n.trim_end_matches('.').to_string()),
        qtype: qtype.or(q.map(|q| u16::from(q.qtype))),
        // The header's 4-bit RCODE (extended codes need EDNS).
        rcode: raw[3] & 0x0f,
        answers,
    }
}

/// A DNS message from the start of a TCP stream.
pub fn parse_tcp(stream: &[u8]) -> Option<Message> {
    let len = usize::from(u16::from_be_bytes([*stream.first()?, *stream.get(1)?]));
    parse(stream.get(2..2 + len)?)
}

/// Plausible as DNS: header counts small, opcode standard-ish.
pub fn probe(b: &[u8]) -> bool {
    if b.len() < 12 {
        return false;
    }
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let opcode = (b[2] >> 3) & 0x0f;
    (1..=4).contains(&qd) && opcode <= 5
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for api.example.com A and its response with one answer, as `gen` writes.
    fn query(resp: bool) -> Vec<u8> {
        let mut m = vec![
            0x12,
            0x34,
            if resp { 0x81 } else { 0x01 },
            if resp { 0x80 } else { 0 },
            0,
            1,
            0,
            u8::from(resp),
            0,
            0,
            0,
            0,
        ];
        for l in ["api", "example", "com"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        if resp {
            m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 7]);
        }
        m
    }

    #[test]
    fn query_and_answer() {
        let q = parse(&query(false)).unwrap();
        assert_eq!(
            (q.query.as_deref(), q.qtype, q.response),
            (Some("api.example.com"), Some(1), false)
        );
        let r = parse(&query(true)).unwrap();
        assert_eq!(r.answers, vec!["192.0.2.7"]);
    }

    #[test]
    fn damaged_answer_keeps_the_question() {
        let mut r = query(true);
        let n = r.len();
        r.truncate(n - 3);
        let m = parse(&r).unwrap();
        assert_eq!(m.query.as_deref(), Some("api.example.com"));
    }

    #[test]
    fn unknown_query_type_keeps_the_question() {
        // zeek testing/btest/Traces/dns-spf.pcap asks for type SPF (99).
        let mut q = query(false);
        let n = q.len();
        q[n - 3] = 99;
        let m = parse(&q).unwrap();
        assert_eq!(
            (m.query.as_deref(), m.qtype),
            (Some("api.example.com"), Some(99))
        );
    }

    #[test]
    fn every_truncated_prefix_never_panics() {
        let r = query(true);
        for n in 0..r.len() {
            let _ = parse(&r[..n]);
            let _ = parse_tcp(&r[..n]);
        }
    }
}
