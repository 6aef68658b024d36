//! TLS: the ClientHello and ServerHello of a connection, read with `tls-parser`.
//!
//! Handshake messages are gathered from the record layer (a ClientHello may span
//! several records and segments), then parsed. Extension *order and ids* come from a
//! walk over the raw extension block, since fingerprints need them exactly as sent;
//! their *contents* (SNI, ALPN, versions, groups, point formats, signature algorithms)
//! come from tls-parser's typed extensions.

use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

/// Record content types (RFC 8446 §5.1).
const CT_HANDSHAKE: u8 = 22;
const CT_CCS: u8 = 20;
const CT_ALERT: u8 = 21;
const CT_APPDATA: u8 = 23;

/// Handshake message types.
pub const HS_CLIENT_HELLO: u8 = 1;
pub const HS_SERVER_HELLO: u8 = 2;

/// Largest handshake message we assemble (a ClientHello with post-quantum key shares is
/// under 2 KiB; certificate chains are not needed).
pub const MAX_HANDSHAKE: usize = 16 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    pub extensions: Vec<u16>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub supported_versions: Vec<u16>,
    pub groups: Vec<u16>,
    pub point_formats: Vec<u8>,
    pub signature_algorithms: Vec<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHello {
    pub legacy_version: u16,
    pub cipher: u16,
    pub extensions: Vec<u16>,
    /// From supported_versions (TLS 1.3), else the legacy version.
    pub version: u16,
}

/// What the record layer of one direction holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Records {
    /// Not a TLS record stream.
    NotTls,
    /// Handshake bytes so far (concatenated record fragments), and whether more may come.
    Handshake { bytes: Vec<u8>, more: bool },
}

/// Quick test on the first bytes: a handshake record of SSL 3.0 to TLS 1.3.
pub fn probe(stream: &[u8]) -> bool {
    stream.len() >= 3 && stream[0] == CT_HANDSHAKE && stream[1] == 3 && stream[2] <= 4
}

/// Collects handshake-record payloads from the start of a record stream.
pub fn handshake_records(stream: &[u8]) -> Records {
    let mut out = Vec::new();
    let mut rest = stream;
    while rest.len() >= 5 {
        let (ct, major) = (rest[0], rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if major != 3 || len > (1 << 14) + 2048 {
            return if out.is_empty() {
                Records::NotTls
            } else {
                Records::Handshake {
                    bytes: out,
                    more: false,
                }
            };
        }
        match ct {
            CT_HANDSHAKE => {}
            CT_CCS | CT_ALERT | CT_APPDATA => {
                return Records::Handshake {
                    bytes: out,
                    more: false,
                }
            }
            _ => {
                return if out.is_empty() {
                    Records::NotTls
                } else {
                    Records::Handshake {
                        bytes: out,
                        more: false,
                    }
                }
            }
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            // A record still arriving: take what is there, more may come.
            out.extend_from_slice(&rest[5..]);
            return Records::Handshake {
                bytes: out,
                more: true,
            };
        };
        out.extend_from_slice(fragment);
        if out.len() > MAX_HANDSHAKE {
            return Records::Handshake {
                bytes: out,
                more: false,
            };
        }
        rest = &rest[5 + len..];
    }
    Records::Handshake {
        bytes: out,
        more: true,
    }
}

/// The first complete handshake message of type `want` in `hs`, header included.
pub fn find_message(hs: &[u8], want: u8) -> Option<&[u8]> {
    let mut rest = hs;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
        let msg = rest.get(..4 + len)?;
        if rest[0] == want {
            return Some(msg);
        }
        rest = &rest[4 + len..];
    }
    None
}

/// Extension ids in order, from the raw extension block.
fn extension_ids(mut ext: &[u8]) -> Vec<u16> {
    let mut ids = Vec::new();
    while ext.len() >= 4 {
        ids.push(u16::from_be_bytes([ext[0], ext[1]]));
        let len = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        if ext.len() < 4 + len {
            break;
        }
        ext = &ext[4 + len..];
    }
    ids
}

/// Parses a ClientHello handshake message (4-byte header included).
pub fn parse_client_hello(msg: &[u8]) -> Option<ClientHello> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return None;
    };
    let mut out = ClientHello {
        legacy_version: ch.version.0,
        ciphers: ch.ciphers.iter().map(|c| c.0).collect(),
        ..Default::default()
    };
    if let Some(ext) = ch.ext {
        out.extensions = extension_ids(ext);
        // Parsed extension by extension, so one malformed extension loses only itself.
        let mut rest = ext;
        while rest.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let Some(one) = rest.get(..4 + len) else {
                break;
            };
            if let Ok((_, list)) = tls_parser::parse_tls_client_hello_extensions(one) {
                for e in list {
                    match e {
                        TlsExtension::SNI(names) => {
                            out.sni = names
                                .iter()
                                .find(|(t, _)| t.0 == 0)
                                .map(|(_, n)| String::from_utf8_lossy(n).into_owned());
                        }
                        TlsExtension::ALPN(protos) => {
                            out.alpn = protos
                                .iter()
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect();
                        }
                        TlsExtension::SupportedVersions(v) => {
                            out.supported_versions = v.iter().map(|v| v.0).collect()
                        }
                        TlsExtension::EllipticCurves(g) => {
                            out.groups = g.iter().map(|g| g.0).collect()
                        }
                        TlsExtension::EcPointFormats(f) => out.point_formats = f.to_vec(),
                        TlsExtension::SignatureAlgorithms(s) => {
                            out.signature_algorithms = s.clone()
                        }
                        _ => {}
                    }
                }
            }
            rest = &rest[4 + len..];
        }
    }
    Some(out)
}

/// Parses a ServerHello handshake message (4-byte header included).
pub fn parse_server_hello(msg: &[u8]) -> Option<ServerHello> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return None;
    };
    let mut out = ServerHello {
        legacy_version: sh.version.0,
        cipher: sh.cipher.0,
        version: sh.version.0,
        ..Default::default()
    };
    if let Some(ext) = sh.ext {
        out.extensions = extension_ids(ext);
        if let Ok((_, list)) = tls_parser::parse_tls_server_hello_extensions(ext) {
            for e in list {
                if let TlsExtension::SupportedVersions(v) = e {
                    if let Some(v) = v.first() {
                        out.version = v.0;
                    }
                }
            }
        }
    }
    Some(out)
}

/// Handshake type of the server's certificate chain.
pub const HS_CERTIFICATE: u8 = 11;

/// Subject, issuer and DNS subject-alternative names of the server's certificate, as
/// sent in the clear up to TLS 1.2 (x509-parser).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerCertificate {
    pub subject: String,
    pub issuer: String,
    pub san: Vec<String>,
}

/// Names per certificate kept.
pub const MAX_SAN: usize = 16;

/// Parses a Certificate handshake message (header included): the leaf certificate.
pub fn parse_certificate(msg: &[u8]) -> Option<ServerCertificate> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::Certificate(c)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return None;
    };
    let leaf = c.cert_chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.data).ok()?;
    let mut san = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                if san.len() < MAX_SAN {
                    san.push(d.to_string());
                }
            }
        }
    }
    Some(ServerCertificate {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        san,
    })
}

/// "TLSv1.3", "TLSv1.2", ..., "SSLv3".
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        0xfeff => "DTLSv1.0".into(),
        0xfefd => "DTLSv1.2".into(),
        0xfefc => "DTLSv1.3".into(),
        v => format!("0x{v:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record built like `mirrorflow gen` writes (SNI api.example.com,
    /// ALPN h2, TLS 1.3 via supported_versions).
    fn hello() -> Vec<u8> {
        let mut exts = Vec::new();
        let sni = b"api.example.com";
        exts.extend_from_slice(&[
            0,
            0,
            0,
            (sni.len() + 5) as u8,
            0,
            (sni.len() + 3) as u8,
            0,
            0,
            sni.len() as u8,
        ]);
        exts.extend_from_slice(sni);
        exts.extend_from_slice(&[0, 0x10, 0, 5, 0, 3, 2, b'h', b'2']);
        exts.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x0a, 0x0a]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1, 0, 0, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1, 0, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn client_hello_fields() {
        let rec = hello();
        assert!(probe(&rec));
        let Records::Handshake { bytes, .. } = handshake_records(&rec) else {
            panic!()
        };
        let ch = parse_client_hello(find_message(&bytes, HS_CLIENT_HELLO).unwrap()).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("api.example.com"));
        assert_eq!(ch.alpn, vec!["h2"]);
        assert_eq!(ch.supported_versions, vec![0x0304]);
        assert_eq!(ch.extensions, vec![0, 0x10, 0x2b]);
        assert_eq!(ch.ciphers, vec![0x1301, 0x0a0a]);
    }

    /// The ClientHello record of arkime `tests/pcap/curl-enabled-tls13.pcap` (bytes copied
    /// from the capture's first client data segment); Arkime and TShark recorded SNI
    /// enabled.tls13.com, JA3 eeadfd2f446a45ded96f804720a0c75b and (Arkime) JA4
    /// t13d0413h2_16476d049b0b_ffceb19bae65 for it.
    const CURL_TLS13: &[u8] = include_bytes!("vectors/arkime__curl-enabled-tls13.clienthello.bin");

    #[test]
    fn arkime_curl_tls13_client_hello() {
        let Records::Handshake { bytes, .. } = handshake_records(CURL_TLS13) else {
            panic!()
        };
        let ch = parse_client_hello(find_message(&bytes, HS_CLIENT_HELLO).unwrap()).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("enabled.tls13.com"));
        assert_eq!(
            super::super::fingerprint::ja3(&ch).1,
            "eeadfd2f446a45ded96f804720a0c75b"
        );
        assert_eq!(
            super::super::fingerprint::ja4(&ch, false),
            "t13d0413h2_16476d049b0b_ffceb19bae65"
        );
        for n in 0..CURL_TLS13.len() {
            if let Records::Handshake { bytes, .. } = handshake_records(&CURL_TLS13[..n]) {
                assert!(
                    find_message(&bytes, HS_CLIENT_HELLO).is_none(),
                    "prefix {n} is incomplete"
                );
            }
        }
    }

    #[test]
    fn every_truncated_prefix_is_incomplete_never_a_panic() {
        let rec = hello();
        for n in 0..rec.len() {
            if let Records::Handshake { bytes, .. } = handshake_records(&rec[..n]) {
                if let Some(m) = find_message(&bytes, HS_CLIENT_HELLO) {
                    assert!(n == rec.len() || parse_client_hello(m).is_some());
                }
            }
        }
    }

    #[test]
    fn record_split_across_two_records() {
        let rec = hello();
        let hs = &rec[5..];
        let (a, b) = hs.split_at(20);
        let mut two = vec![22, 3, 1, 0, a.len() as u8];
        two.extend_from_slice(a);
        two.extend_from_slice(&[22, 3, 1, 0, b.len() as u8]);
        two.extend_from_slice(b);
        let Records::Handshake { bytes, .. } = handshake_records(&two) else {
            panic!()
        };
        assert!(parse_client_hello(find_message(&bytes, HS_CLIENT_HELLO).unwrap()).is_some());
    }
}
