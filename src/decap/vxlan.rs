//! VXLAN header view (RFC 7348), as AWS Traffic Mirroring sends it: flags `0x08` (I bit),
//! a 24-bit VNI naming the mirror session, then the mirrored Ethernet frame.
//!
//! One checked constructor; accessors cannot panic afterwards.

/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;

/// Why a VXLAN header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VxlanError {
    /// Fewer than 8 bytes after the UDP header.
    Truncated { available: usize },
    /// The I flag (VNI valid) is clear: RFC 7348 §5 says such a packet is not VXLAN.
    NoVniFlag { flags: u8 },
}

/// A checked VXLAN header followed by its payload.
#[derive(Clone, Copy, Debug)]
pub struct VxlanView<'a> {
    header: &'a [u8; VXLAN_HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> VxlanView<'a> {
    pub fn new_checked(udp_payload: &'a [u8]) -> Result<VxlanView<'a>, VxlanError> {
        let Some((header, payload)) = udp_payload.split_first_chunk::<VXLAN_HEADER_LEN>() else {
            return Err(VxlanError::Truncated {
                available: udp_payload.len(),
            });
        };
        if header[0] & 0x08 == 0 {
            return Err(VxlanError::NoVniFlag { flags: header[0] });
        }
        Ok(VxlanView { header, payload })
    }

    /// The 24-bit VXLAN network identifier (the mirror session's VirtualNetworkId).
    pub fn vni(&self) -> u32 {
        u32::from_be_bytes([0, self.header[4], self.header[5], self.header[6]])
    }

    /// The encapsulated Ethernet frame (possibly truncated by the session's PacketLength).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes 42..64 of frame 1 of suricata-verify `tests/vxlan-decoder-03/vxlan.pcap`
    /// (the AWS Traffic Mirroring capture): VXLAN header, VNI 5569041, inner Ethernet.
    const AWS_FRAME1_VXLAN: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, 0x54, 0xfa, 0x11, 0x00, 0x02, 0x29, 0x23, 0x74, 0xc7, 0x7d, 0x02,
        0x85, 0x69, 0xc2, 0xab, 0x02, 0x08, 0x00,
    ];

    #[test]
    fn aws_mirror_vni() {
        let v = VxlanView::new_checked(&AWS_FRAME1_VXLAN).unwrap();
        assert_eq!(v.vni(), 5_569_041);
        assert_eq!(v.payload().len(), 14);
    }

    #[test]
    fn every_truncated_prefix() {
        for n in 0..VXLAN_HEADER_LEN {
            assert_eq!(
                VxlanView::new_checked(&AWS_FRAME1_VXLAN[..n]).unwrap_err(),
                VxlanError::Truncated { available: n }
            );
        }
        assert!(VxlanView::new_checked(&AWS_FRAME1_VXLAN[..8]).is_ok());
    }

    #[test]
    fn i_flag_required() {
        let mut b = AWS_FRAME1_VXLAN;
        b[0] = 0;
        assert_eq!(
            VxlanView::new_checked(&b).unwrap_err(),
            VxlanError::NoVniFlag { flags: 0 }
        );
    }
}
