//! TLS client and server fingerprints: JA3 and JA3S (Salesforce; MD5 of decimal field
//! lists) and JA4 (FoxIO's BSD-licensed TLS client fingerprint; only that one of the
//! JA4+ family, whose other members carry a different licence).

use md5::{Digest, Md5};
use sha2::Sha256;

use super::tls::{ClientHello, ServerHello};

/// GREASE values (RFC 8701) are ignored by every fingerprint.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes` (a table lookup: this runs for every fingerprinted flow).
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0x0f)] as char);
    }
    s
}

/// `values` as four-digit lower-case hex, comma-separated (JA4's list form).
fn hex16_list(values: &[u16]) -> String {
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        for shift in [12, 8, 4, 0] {
            s.push(HEX[usize::from((v >> shift) & 0x0f)] as char);
        }
    }
    s
}

/// `v` in decimal, `-`-separated (JA3's list form). Digits by `itoa`: `write!` per
/// number was most of the fingerprint's cost (a hello lists 30 to 60 numbers).
fn dec_list<'a, T: Into<u64> + Copy + 'a>(v: impl Iterator<Item = &'a T>) -> String {
    let mut s = String::with_capacity(128);
    let mut digits = itoa::Buffer::new();
    for (i, x) in v.enumerate() {
        if i > 0 {
            s.push('-');
        }
        s.push_str(digits.format((*x).into()));
    }
    s
}

/// JA3: `version,ciphers,extensions,groups,point_formats` and its MD5.
pub fn ja3(ch: &ClientHello) -> (String, String) {
    let s = format!(
        "{},{},{},{},{}",
        ch.legacy_version,
        dec_list(ch.ciphers.iter().filter(|c| !is_grease(**c))),
        dec_list(ch.extensions.iter().filter(|c| !is_grease(**c))),
        dec_list(ch.groups.iter().filter(|c| !is_grease(**c))),
        dec_list(ch.point_formats.iter()),
    );
    let h = hex(&Md5::digest(s.as_bytes()));
    (s, h)
}

/// JA3S: `version,cipher,extensions` and its MD5.
pub fn ja3s(sh: &ServerHello) -> (String, String) {
    let s = format!(
        "{},{},{}",
        sh.legacy_version,
        sh.cipher,
        dec_list(sh.extensions.iter().filter(|c| !is_grease(**c)))
    );
    let h = hex(&Md5::digest(s.as_bytes()));
    (s, h)
}

fn sha12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    hex(&Sha256::digest(s.as_bytes())[..6])
}

/// JA4 (TLS client): `{t|q}{version}{d|i}{ciphers:02}{extensions:02}{alpn}_{b}_{c}`.
pub fn ja4(ch: &ClientHello, quic: bool) -> String {
    let version = ch
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(ch.legacy_version);
    let v = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    let sni = if ch.extensions.contains(&0) { 'd' } else { 'i' };
    let ciphers: Vec<u16> = ch
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = ch
        .extensions
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let alpn = match ch.alpn.first().map(|a| a.as_bytes()) {
        Some([]) | None => "00".to_string(),
        Some(a) => {
            let (f, l) = (a[0], a[a.len() - 1]);
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                format!("{}{}", f as char, l as char)
            } else {
                // Non-alphanumeric ends: first and last hex digit of the value.
                let h = hex(a);
                format!("{}{}", &h[..1], &h[h.len() - 1..])
            }
        }
    };
    let a = format!(
        "{}{v}{sni}{:02}{:02}{alpn}",
        if quic { 'q' } else { 't' },
        ciphers.len().min(99),
        exts.len().min(99)
    );
    let mut sorted = ciphers.clone();
    sorted.sort_unstable();
    let b = sha12(&hex16_list(&sorted));
    let mut ext_sorted: Vec<u16> = exts
        .iter()
        .copied()
        .filter(|e| *e != 0x0000 && *e != 0x0010)
        .collect();
    ext_sorted.sort_unstable();
    let mut c_in = hex16_list(&ext_sorted);
    if !ch.signature_algorithms.is_empty() {
        c_in.push('_');
        c_in.push_str(&hex16_list(&ch.signature_algorithms));
    }
    let c = if ext_sorted.is_empty() {
        "000000000000".to_string()
    } else {
        sha12(&c_in)
    };
    format!("{a}_{b}_{c}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JA4 README's example ClientHello fields (FoxIO ja4 technical details): the
    /// expected fingerprint t13d1516h2_8daaf6152771_e5627efa2ab1.
    #[test]
    fn ja4_reference_example() {
        let ch = ClientHello {
            legacy_version: 0x0303,
            ciphers: vec![
                0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
                0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
                0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
            ],
            sni: Some("example".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            supported_versions: vec![0x0304, 0x0303],
            groups: vec![],
            point_formats: vec![],
            signature_algorithms: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
        };
        assert_eq!(ja4(&ch, false), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn grease_values() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa));
        assert!(!is_grease(0x0a0b) && !is_grease(0x1301));
    }

    #[test]
    fn ja3_string_shape() {
        let ch = ClientHello {
            legacy_version: 771,
            ciphers: vec![0x0a0a, 4865],
            extensions: vec![0, 10, 11],
            groups: vec![29, 23],
            point_formats: vec![0],
            ..Default::default()
        };
        let (s, h) = ja3(&ch);
        assert_eq!(s, "771,4865,0-10-11,29-23,0");
        assert_eq!(h.len(), 32);
    }
}
