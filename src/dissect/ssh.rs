//! SSH: the identification string of each side (RFC 4253 §4.2) and, from the first
//! KEXINIT, HASSH / HASSHServer (Salesforce: MD5 of `kex;ciphers;macs;compression`).

use md5::{Digest, Md5};

/// RFC 4253 allows 255 bytes for the identification line.
pub const MAX_BANNER: usize = 255;

pub fn probe(b: &[u8]) -> bool {
    b.starts_with(b"SSH-")
}

/// Bytes a line before the identification string may have (RFC 4253 §4.2 allows the
/// server to send other lines first).
const MAX_PRE_BANNER_LINE: usize = 8192;

/// The identification string and where the binary protocol starts. Lines before it are
/// skipped; the string ends at CR LF, LF or, as some servers send it, a NUL byte.
pub fn banner(stream: &[u8]) -> Option<(String, usize)> {
    let mut at = 0;
    // Bounded by the inspected bytes; a line per iteration.
    for _ in 0..stream.len().min(4096) {
        let rest = stream.get(at..)?;
        if rest.starts_with(b"SSH-") {
            let end = rest
                .iter()
                .take(MAX_BANNER + 2)
                .position(|c| *c == b'\n' || *c == 0)?;
            let text = String::from_utf8_lossy(&rest[..end]).trim_end().to_string();
            return Some((text, at + end + 1));
        }
        let end = rest
            .iter()
            .take(MAX_PRE_BANNER_LINE)
            .position(|c| *c == b'\n')?;
        at += end + 1;
    }
    None
}

/// The algorithm lists of a KEXINIT packet (RFC 4253 §7.1), read from the binary
/// packet that starts at `b`.
pub fn kexinit(b: &[u8]) -> Option<[String; 10]> {
    let packet_len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let padding = usize::from(*b.get(4)?);
    let payload = b.get(5..4 + packet_len)?;
    let payload = payload.get(..payload.len().checked_sub(padding)?)?;
    if payload.first() != Some(&20) {
        return None;
    }
    let mut rest = payload.get(17..)?; // type + 16-byte cookie
    let mut lists: [String; 10] = Default::default();
    for l in lists.iter_mut() {
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        *l = String::from_utf8_lossy(rest.get(4..4 + n)?).into_owned();
        rest = &rest[4 + n..];
    }
    Some(lists)
}

/// HASSH (client) or HASSHServer from KEXINIT lists.
pub fn hassh(lists: &[String; 10], server: bool) -> String {
    // kex, hostkey, enc c2s, enc s2c, mac c2s, mac s2c, comp c2s, comp s2c, lang c2s, lang s2c
    let (enc, mac, comp) = if server { (3, 5, 7) } else { (2, 4, 6) };
    let s = format!("{};{};{};{}", lists[0], lists[enc], lists[mac], lists[comp]);
    super::fingerprint::hex(&Md5::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_after_pre_banner_lines() {
        // zeek testing/btest/Traces/ssh/server-pre-banner-data.pcap sends text first.
        let s = b"Welcome\r\nSSH-2.0-OpenSSH_8.7\r\n\x00\x00";
        assert_eq!(banner(s), Some(("SSH-2.0-OpenSSH_8.7".into(), 30)));
        assert_eq!(banner(b"SSH-2.0-Go"), None, "incomplete line");
        // suricata-verify tests/bug-4903: a Cisco server ends its banner with NULs.
        assert_eq!(
            banner(b"SSH-1.99-Cisco_server-1.24 \0\0\0").map(|b| b.0),
            Some("SSH-1.99-Cisco_server-1.24".into())
        );
    }

    #[test]
    fn kexinit_and_hassh() {
        let names = [
            "curve25519-sha256",
            "ssh-ed25519",
            "aes128-ctr",
            "aes256-ctr",
            "hmac-sha2-256",
            "hmac-sha2-512",
            "none",
            "zlib",
            "",
            "",
        ];
        let mut payload = vec![20];
        payload.extend_from_slice(&[0; 16]);
        for n in names {
            payload.extend_from_slice(&(n.len() as u32).to_be_bytes());
            payload.extend_from_slice(n.as_bytes());
        }
        payload.extend_from_slice(&[0, 0, 0, 0, 0]);
        let padding = 4;
        let mut pkt = ((payload.len() + padding + 1) as u32)
            .to_be_bytes()
            .to_vec();
        pkt.push(padding as u8);
        pkt.extend_from_slice(&payload);
        pkt.extend_from_slice(&[0; 4]);
        let lists = kexinit(&pkt).unwrap();
        assert_eq!(lists[0], "curve25519-sha256");
        let expect: String = Md5::digest(b"curve25519-sha256;aes128-ctr;hmac-sha2-256;none")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hassh(&lists, false), expect);
        for n in 0..pkt.len() {
            let _ = kexinit(&pkt[..n]);
        }
    }
}
