//! GENEVE header view (RFC 8926), as a Gateway Load Balancer sends it on UDP 6081.
//!
//! The variable-length options are walked and bounded: every TLV must fit inside the
//! declared option length, and at most [`MAX_GENEVE_OPTIONS`] are read, so a hostile
//! header cannot make us loop or read past the datagram.

/// Fixed part of the GENEVE header.
pub const GENEVE_BASE_LEN: usize = 8;

/// Options walked per header. The 6-bit length field allows 252 option bytes, at least
/// 4 bytes an option, so 63 is the true ceiling; we stop earlier and count it.
pub const MAX_GENEVE_OPTIONS: usize = 32;

/// Protocol type carried (an EtherType; 0x6558 is Transparent Ethernet Bridging).
pub const PROTO_ETHERNET: u16 = 0x6558;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneveError {
    /// Fewer bytes than the fixed header plus the declared options.
    Truncated { needed: usize, available: usize },
    /// Version other than 0 (RFC 8926 §3.4: must not be processed).
    Version { version: u8 },
    /// An option's length runs past the option area, or too many options.
    BadOptions { offset: usize },
}

/// A checked GENEVE header, its options and payload.
#[derive(Clone, Copy, Debug)]
pub struct GeneveView<'a> {
    base: &'a [u8; GENEVE_BASE_LEN],
    options: &'a [u8],
    payload: &'a [u8],
    option_count: usize,
}

impl<'a> GeneveView<'a> {
    pub fn new_checked(udp_payload: &'a [u8]) -> Result<GeneveView<'a>, GeneveError> {
        let Some((base, rest)) = udp_payload.split_first_chunk::<GENEVE_BASE_LEN>() else {
            return Err(GeneveError::Truncated {
                needed: GENEVE_BASE_LEN,
                available: udp_payload.len(),
            });
        };
        let version = base[0] >> 6;
        if version != 0 {
            return Err(GeneveError::Version { version });
        }
        let opt_len = usize::from(base[0] & 0x3f) * 4;
        if rest.len() < opt_len {
            return Err(GeneveError::Truncated {
                needed: GENEVE_BASE_LEN + opt_len,
                available: udp_payload.len(),
            });
        }
        let (options, payload) = rest.split_at(opt_len);
        let option_count = walk_options(options)?;
        Ok(GeneveView {
            base,
            options,
            payload,
            option_count,
        })
    }

    pub fn vni(&self) -> u32 {
        u32::from_be_bytes([0, self.base[4], self.base[5], self.base[6]])
    }

    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes([self.base[2], self.base[3]])
    }

    /// OAM flag: control traffic of the tunnel itself, not mirrored data.
    pub fn is_oam(&self) -> bool {
        self.base[1] & 0x80 != 0
    }

    pub fn options(&self) -> &'a [u8] {
        self.options
    }

    pub fn option_count(&self) -> usize {
        self.option_count
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Checks the option TLVs: class (2), type (1), reserved+length (1, length in 4-byte words).
fn walk_options(mut options: &[u8]) -> Result<usize, GeneveError> {
    let total = options.len();
    let mut count = 0;
    while !options.is_empty() {
        let offset = GENEVE_BASE_LEN + total - options.len();
        if count == MAX_GENEVE_OPTIONS || options.len() < 4 {
            return Err(GeneveError::BadOptions { offset });
        }
        let len = 4 + usize::from(options[3] & 0x1f) * 4;
        if len > options.len() {
            return Err(GeneveError::BadOptions { offset });
        }
        options = &options[len..];
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GENEVE header as an AWS Gateway Load Balancer writes it: one 8-byte option of
    /// class 0x0108 (AWS) carrying the GWLBe/attachment id, VNI 0, protocol IPv4.
    const GWLB_HEADER: [u8; 20] = [
        0x02, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // ver 0, opt len 2 words, IPv4
        0x01, 0x08, 0x01, 0x01, 0x12, 0x34, 0x56, 0x78, // AWS option, 4 data bytes
        0x45, 0x00, 0x00, 0x14, // start of the inner packet
    ];

    #[test]
    fn gwlb_header_with_option() {
        let g = GeneveView::new_checked(&GWLB_HEADER).unwrap();
        assert_eq!(g.protocol(), 0x0800);
        assert_eq!(g.option_count(), 1);
        assert_eq!(g.payload(), &GWLB_HEADER[16..]);
        assert_eq!(g.vni(), 0);
    }

    #[test]
    fn every_truncated_prefix() {
        for n in 0..16 {
            let e = GeneveView::new_checked(&GWLB_HEADER[..n]).unwrap_err();
            assert!(
                matches!(e, GeneveError::Truncated { available, .. } if available == n),
                "{n}"
            );
        }
    }

    #[test]
    fn option_running_past_area_is_refused() {
        let mut h = GWLB_HEADER;
        h[11] = 0x05; // 20 data bytes declared, 4 present
        assert_eq!(
            GeneveView::new_checked(&h).unwrap_err(),
            GeneveError::BadOptions { offset: 8 }
        );
    }

    #[test]
    fn version_must_be_zero() {
        let mut h = GWLB_HEADER;
        h[0] |= 0x40;
        assert_eq!(
            GeneveView::new_checked(&h).unwrap_err(),
            GeneveError::Version { version: 1 }
        );
    }
}
