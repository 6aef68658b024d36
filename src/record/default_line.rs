//! The line of AWS's default format for the commonest record, put together in one stack
//! buffer: status OK, no interface ids (a replayed capture, or a session without
//! configured ids), any addresses but IPv4-mapped IPv6. Field by field through
//! `RecordFormat::write`, each of its fourteen fields and thirteen spaces was an append
//! to the output `String` (a capacity check, and a `memcpy` call for a dozen of them, a
//! UTF-8 check per address): ~1,500 instructions per record, most of a flows-only
//! replay's writer thread. Here the digits are written in place and the line reaches
//! the `String` in one append. The text is the general path's to the byte:
//! `default_line_is_the_general_line` compares them over records of every digit count.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::FlowRecord;

/// Longest line: "2 - - ", two IPv6 addresses of 39, ports, protocol, four 20-digit
/// numbers, "ACCEPT OK" and the newline, with the separators: 196 bytes. The fixed-size
/// stores below write at most 3 bytes past a field's end.
const LINE_MAX: usize = 208;

/// Each octet's decimal digits (left-aligned, zero-padded to three) and how many.
const OCTET_DIGITS: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut o = 0;
    while o < 256 {
        let (h, d, u) = ((o / 100) as u8, (o / 10 % 10) as u8, (o % 10) as u8);
        t[o] = match o {
            0..=9 => ([b'0' + u, 0, 0], 1),
            10..=99 => ([b'0' + d, b'0' + u, 0], 2),
            _ => ([b'0' + h, b'0' + d, b'0' + u], 3),
        };
        o += 1;
    }
    t
};

/// "00" to "99".
const DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// 10^0 to 10^19.
const POWERS_OF_TEN: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// How many decimal digits `n` has: the bit length scaled by log10(2) (1233 / 4096)
/// is the digit count or one short of it, which one compare settles.
#[inline(always)]
fn decimal_len(n: u64) -> usize {
    let bits = 64 - (n | 1).leading_zeros() as usize;
    let t = (bits * 1233) >> 12;
    (t + usize::from(n >= POWERS_OF_TEN[t])).max(1)
}

/// The line being put together and where the next byte goes.
struct Line {
    b: [u8; LINE_MAX],
    at: usize,
}

impl Line {
    /// `n` in decimal, then `sep`: the digits are written from the right, four at a
    /// time while there are more than four (what `itoa` does, but in place: its digits
    /// sit in a buffer of its own, and copying them out was a `memcpy` call).
    #[inline(always)]
    fn number(&mut self, mut n: u64, sep: u8) {
        let len = decimal_len(n);
        let end = self.at + len;
        let mut i = end;
        while n >= 10_000 {
            let four = (n % 10_000) as usize;
            n /= 10_000;
            i -= 4;
            self.b[i..i + 2].copy_from_slice(&DIGIT_PAIRS[four / 100]);
            self.b[i + 2..i + 4].copy_from_slice(&DIGIT_PAIRS[four % 100]);
        }
        let mut n = n as usize;
        if n >= 100 {
            i -= 2;
            self.b[i..i + 2].copy_from_slice(&DIGIT_PAIRS[n % 100]);
            n /= 100;
        }
        if n >= 10 {
            self.b[i - 2..i].copy_from_slice(&DIGIT_PAIRS[n]);
        } else {
            self.b[i - 1] = b'0' + n as u8;
        }
        self.b[end] = sep;
        self.at = end + 1;
    }

    /// An address, then a space; false for an IPv4-mapped IPv6 address.
    #[inline(always)]
    fn address(&mut self, a: IpAddr) -> bool {
        let end = match a {
            IpAddr::V4(v) => ipv4_into(&mut self.b, self.at, v),
            IpAddr::V6(v) => match ipv6_into(&mut self.b, self.at, v) {
                Some(end) => end,
                None => return false,
            },
        };
        self.b[end] = b' ';
        self.at = end + 1;
        true
    }

    fn bytes(&mut self, s: &[u8]) {
        self.b[self.at..self.at + s.len()].copy_from_slice(s);
        self.at += s.len();
    }
}

/// A dotted quad into `b` from `at` (15 bytes at most; the fixed three-byte copies from
/// the octet table write up to 2 past its end); returns where it ends.
#[inline(always)]
pub(super) fn ipv4_into(b: &mut [u8], mut at: usize, v: Ipv4Addr) -> usize {
    for (i, o) in v.octets().into_iter().enumerate() {
        if i > 0 {
            b[at] = b'.';
            at += 1;
        }
        let (digits, len) = OCTET_DIGITS[usize::from(o)];
        b[at..at + 3].copy_from_slice(&digits);
        at += usize::from(len);
    }
    at
}

/// IPv6 as std's `Display` writes it (RFC 5952: lower-case hex without leading zeros,
/// the first longest run of two or more zero groups as `::`), into `b` from `at` (39
/// bytes at most); returns where it ends. `None` for an IPv4-mapped address
/// (`::ffff:a.b.c.d`), left to `Display`.
pub(super) fn ipv6_into(b: &mut [u8], at: usize, v: Ipv6Addr) -> Option<usize> {
    if v.to_ipv4_mapped().is_some() {
        return None;
    }
    let groups = v.segments();
    let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
    for (i, &g) in groups.iter().enumerate() {
        if g == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best, best_len) = (run, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let hex = |b: &mut [u8], mut at: usize, part: &[u16]| {
        for (i, &g) in part.iter().enumerate() {
            if i > 0 {
                b[at] = b':';
                at += 1;
            }
            // Lower-case hex without leading zeros.
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let digits = (4 - g.leading_zeros() as usize / 4).max(1);
            for k in 0..digits {
                b[at + k] = DIGITS[usize::from((g >> ((digits - 1 - k) * 4)) & 0xf)];
            }
            at += digits;
        }
        at
    };
    if best_len > 1 {
        let end = hex(b, at, &groups[..best]);
        b[end..end + 2].copy_from_slice(b"::");
        Some(hex(b, end + 2, &groups[best + best_len..]))
    } else {
        Some(hex(b, at, &groups))
    }
}

/// Appends the default-format line of `r` (version `version`) to `out`; false (nothing
/// written) when `r` is not of the shape this handles: an OK record with no interface
/// ids and no IPv4-mapped address.
#[inline]
pub(super) fn write(version: u8, r: &FlowRecord, out: &mut String) -> bool {
    if r.interface.is_some() || r.log_status != super::LogStatus::Ok {
        return false;
    }
    let mut line = Line {
        b: [0; LINE_MAX],
        at: 0,
    };
    line.number(u64::from(version), b' ');
    line.bytes(b"- - ");
    if !line.address(r.srcaddr) || !line.address(r.dstaddr) {
        return false;
    }
    line.number(u64::from(r.srcport), b' ');
    line.number(u64::from(r.dstport), b' ');
    line.number(u64::from(r.protocol), b' ');
    line.number(r.packets, b' ');
    line.number(r.bytes, b' ');
    line.number(r.start, b' ');
    line.number(r.end, b' ');
    line.bytes(r.action().as_bytes());
    line.bytes(b" ");
    line.bytes(r.log_status.as_str().as_bytes());
    line.bytes(b"\n");
    let bytes = &line.b[..line.at];
    // Every byte above came from this file's digit tables, the address writers' hex
    // digits, dots and colons, or the ASCII names of the action and log status.
    // Validating the line anyway (`str::from_utf8`) was ~105 instructions per record,
    // a seventh of the line's cost.
    debug_assert!(bytes.is_ascii());
    // SAFETY: ASCII bytes (see above) are valid UTF-8.
    out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_lengths() {
        let mut p = 1u64;
        for digits in 1..=20 {
            assert_eq!(decimal_len(p), digits, "{p}");
            if digits > 1 {
                assert_eq!(decimal_len(p - 1), digits - 1, "{}", p - 1);
            }
            p = p.saturating_mul(10);
        }
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(u64::MAX), 20);
    }

    #[test]
    fn numbers_are_what_display_writes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut cases = vec![0, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, u64::MAX];
        let mut p = 1u64;
        for _ in 0..20 {
            cases.extend([p - 1, p, p + 1]);
            p = p.saturating_mul(10);
        }
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (x % 64));
        }
        for n in cases {
            let mut line = Line {
                b: [0; LINE_MAX],
                at: 3,
            };
            line.number(n, b'|');
            assert_eq!(&line.b[3..line.at], format!("{n}|").as_bytes());
        }
    }
}
