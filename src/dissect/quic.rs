//! QUIC Initial packets (RFC 9000 §17.2.2): the client's Initial packets are protected
//! with keys anyone can derive from the Destination Connection ID (RFC 9001 §5.2), so a
//! passive observer can remove header protection, decrypt them, and reassemble their
//! CRYPTO frames into the TLS ClientHello. Versions 1, 2 (RFC 9369) and draft-29.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes_gcm::aead::Aead;
use hkdf::Hkdf;
use sha2::Sha256;

const V1: u32 = 0x0000_0001;
const V2: u32 = 0x6b33_43cf;
const DRAFT29: u32 = 0xff00_001d;
/// Drafts 23 to 28 share one salt; Facebook's mvfst used it with its own version.
const DRAFT27: u32 = 0xff00_001b;
const DRAFT28: u32 = 0xff00_001c;
const MVFST27: u32 = 0xface_b002;

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];
const SALT_DRAFT23: [u8; 20] = [
    0xc3, 0xee, 0xf7, 0x12, 0xc7, 0x2e, 0xbb, 0x5a, 0x11, 0xa7, 0xd2, 0x43, 0x2b, 0xb4, 0x63, 0x65,
    0xbe, 0xf9, 0xf5, 0x02,
];
const SALT_DRAFT29: [u8; 20] = [
    0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0,
    0x43, 0x90, 0xa8, 0x99,
];

/// CRYPTO bytes kept per connection: enough for a ClientHello with large key shares.
pub const MAX_CRYPTO: usize = 16 * 1024;
/// CRYPTO frames remembered per connection (they may arrive out of order).
const MAX_CHUNKS: usize = 64;

/// A long-header packet of a version we can read.
pub fn probe(d: &[u8]) -> bool {
    d.len() >= 7
        && d[0] & 0xc0 == 0xc0
        && matches!(
            u32::from_be_bytes([d[1], d[2], d[3], d[4]]),
            V1 | V2 | DRAFT29
        )
}

/// The client's CRYPTO stream as it arrives.
#[derive(Debug, Default)]
pub struct CryptoStream {
    chunks: Vec<(u64, Vec<u8>)>,
    pub version: u32,
}

impl CryptoStream {
    /// Contiguous CRYPTO bytes from offset 0.
    pub fn assembled(&self) -> Vec<u8> {
        let mut chunks: Vec<&(u64, Vec<u8>)> = self.chunks.iter().collect();
        chunks.sort_by_key(|c| c.0);
        let mut out: Vec<u8> = Vec::new();
        for (off, data) in chunks {
            let off = *off as usize;
            if off > out.len() {
                break;
            }
            let skip = out.len() - off;
            if skip < data.len() {
                out.extend_from_slice(&data[skip..]);
            }
            if out.len() >= MAX_CRYPTO {
                out.truncate(MAX_CRYPTO);
                break;
            }
        }
        out
    }
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    Some((v, len))
}

fn expand_label(secret: &[u8], label: &str, len: usize) -> Option<Vec<u8>> {
    let hk = Hkdf::<Sha256>::from_prk(secret).ok()?;
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    let mut out = vec![0u8; len];
    hk.expand(&info, &mut out).ok()?;
    Some(out)
}

struct Keys {
    key: Vec<u8>,
    iv: Vec<u8>,
    hp: Vec<u8>,
}

/// Client Initial keys for a Destination Connection ID (RFC 9001 §5.2).
fn client_keys(version: u32, dcid: &[u8]) -> Option<Keys> {
    let (salt, prefix): (&[u8], &str) = match version {
        V1 => (&SALT_V1, "quic"),
        V2 => (&SALT_V2, "quicv2"),
        DRAFT29 => (&SALT_DRAFT29, "quic"),
        DRAFT27 | DRAFT28 | MVFST27 => (&SALT_DRAFT23, "quic"),
        _ => return None,
    };
    let (initial, _) = Hkdf::<Sha256>::extract(Some(salt), dcid);
    let client = expand_label(&initial, "client in", 32)?;
    Some(Keys {
        key: expand_label(&client, &format!("{prefix} key"), 16)?,
        iv: expand_label(&client, &format!("{prefix} iv"), 12)?,
        hp: expand_label(&client, &format!("{prefix} hp"), 16)?,
    })
}

/// Reads the client Initial packets of one UDP datagram into `stream`. Returns false
/// when the datagram holds no Initial we could decrypt.
pub fn client_datagram(d: &[u8], stream: &mut CryptoStream) -> bool {
    let mut rest = d;
    let mut any = false;
    while rest.len() >= 7 && rest[0] & 0x80 != 0 {
        let Some(len) = initial_packet(rest, stream) else {
            break;
        };
        any = true;
        rest = &rest[len..];
    }
    any
}

/// One Initial packet at the start of `p`; returns its length.
fn initial_packet(p: &[u8], stream: &mut CryptoStream) -> Option<usize> {
    let version = u32::from_be_bytes(p.get(1..5)?.try_into().ok()?);
    let ptype = (p[0] >> 4) & 0x03;
    let is_initial = match version {
        V2 => ptype == 1,
        V1 | DRAFT29 | DRAFT27 | DRAFT28 | MVFST27 => ptype == 0,
        _ => false,
    };
    let mut at = 5;
    let dcid_len = usize::from(*p.get(at)?);
    let dcid = p.get(at + 1..at + 1 + dcid_len)?;
    at += 1 + dcid_len;
    let scid_len = usize::from(*p.get(at)?);
    at += 1 + scid_len;
    if is_initial {
        let (token_len, n) = varint(p.get(at..)?)?;
        at += n + token_len as usize;
    }
    let (length, n) = varint(p.get(at..)?)?;
    at += n;
    let pn_offset = at;
    let end = pn_offset.checked_add(length as usize)?;
    if !is_initial {
        return p.get(..end).map(|x| x.len());
    }
    let packet = p.get(..end)?;
    let keys = client_keys(version, dcid)?;
    // Header protection (RFC 9001 §5.4): the sample starts 4 bytes after the packet
    // number's offset.
    let sample = packet.get(pn_offset + 4..pn_offset + 20)?;
    let hp = aes::Aes128::new_from_slice(&keys.hp).ok()?;
    let mut mask = aes::Block::try_from(sample).ok()?;
    hp.encrypt_block(&mut mask);
    let mut header = packet[..pn_offset].to_vec();
    header[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(header[0] & 0x03) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        let b = packet.get(pn_offset + i)? ^ mask[1 + i];
        header.push(b);
        pn = (pn << 8) | u64::from(b);
    }
    let mut nonce = keys.iv.clone();
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let aead = aes_gcm::Aes128Gcm::new_from_slice(&keys.key).ok()?;
    let nonce = aes_gcm::aead::Nonce::<aes_gcm::Aes128Gcm>::try_from(&nonce[..]).ok()?;
    let plain = aead
        .decrypt(
            &nonce,
            aes_gcm::aead::Payload {
                msg: packet.get(pn_offset + pn_len..)?,
                aad: &header,
            },
        )
        .ok()?;
    stream.version = version;
    frames(&plain, stream);
    Some(end)
}

/// Walks the frames of a decrypted Initial, keeping CRYPTO data.
fn frames(mut b: &[u8], stream: &mut CryptoStream) {
    while let Some((ty, n)) = varint(b) {
        b = &b[n..];
        match ty {
            0x00 | 0x01 => {} // PADDING, PING
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges, ECN counts.
                let mut fields = 4;
                let mut ranges = None;
                let mut i = 0;
                while i < fields {
                    let Some((v, n)) = varint(b) else { return };
                    b = &b[n..];
                    if i == 2 && ranges.is_none() {
                        ranges = Some(v);
                        fields += 2 * v.min(1024) as usize;
                    }
                    i += 1;
                }
                if ty == 0x03 {
                    for _ in 0..3 {
                        let Some((_, n)) = varint(b) else { return };
                        b = &b[n..];
                    }
                }
            }
            0x06 => {
                let Some((off, n1)) = varint(b) else { return };
                let Some((len, n2)) = varint(&b[n1..]) else {
                    return;
                };
                let start = n1 + n2;
                let Some(data) = b.get(start..start + len as usize) else {
                    return;
                };
                if stream.chunks.len() < MAX_CHUNKS && off < MAX_CRYPTO as u64 {
                    stream.chunks.push((off, data.to_vec()));
                }
                b = &b[start + len as usize..];
            }
            _ => return, // CONNECTION_CLOSE or a frame an Initial should not carry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9001 Appendix A.1: the keys for DCID 0x8394c8f03e515708.
    #[test]
    fn rfc9001_client_initial_keys() {
        let k = client_keys(V1, &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]).unwrap();
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&k.key), "1f369613dd76d5467730efcbe3b1a22d");
        assert_eq!(hex(&k.iv), "fa044b2f42a3fd3b46fb255c");
        assert_eq!(hex(&k.hp), "9f50449e04a0e810283a1e9933adedd2");
    }

    #[test]
    fn varints_rfc9000_appendix_a1() {
        assert_eq!(
            varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151_288_809_941_952_652, 8))
        );
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
        assert_eq!(varint(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(varint(&[0x25]), Some((37, 1)));
        assert_eq!(varint(&[0x7b]), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut s = CryptoStream::default();
        let mut d = vec![0xc0, 0, 0, 0, 1, 8];
        d.extend_from_slice(&[1; 40]);
        for n in 0..d.len() {
            let _ = client_datagram(&d[..n], &mut s);
        }
    }
}
