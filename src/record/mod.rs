//! Records: `FlowRecord`, one AWS VPC Flow Log record (one direction of one flow on one
//! observing interface in one aggregation window), plus mirrorflow's enrichment.
//!
//! Built by the flow table when a window closes, handed to a sink through
//! [`format::RecordFormat`], which writes AWS text (default or custom `${field}` format)
//! or JSON lines with AWS field names as keys.

mod default_line;
pub mod fields;
pub mod format;
pub mod parquet;

use std::net::IpAddr;
use std::sync::Arc;

pub use fields::Field;
pub use format::{OutputKind, RecordFormat};

/// What the configuration knows about the interface a mirror session copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub interface_id: Option<String>,
    pub account_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
}

/// `log-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStatus {
    Ok,
    NoData,
    SkipData,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}

/// `flow-direction` relative to the observing interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowDirection {
    Ingress,
    Egress,
}

impl FlowDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowDirection::Ingress => "ingress",
            FlowDirection::Egress => "egress",
        }
    }
}

/// One flow-log record.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    pub interface: Option<Arc<InterfaceInfo>>,
    pub vni: Option<u32>,
    pub mirror_source: Option<IpAddr>,
    pub srcaddr: IpAddr,
    pub dstaddr: IpAddr,
    pub srcport: u16,
    pub dstport: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    /// Unix seconds of the first and last packet in the window.
    pub start: u64,
    pub end: u64,
    pub log_status: LogStatus,
    /// AWS tcp-flags value (FIN 1, SYN 2, RST 4, SYN-ACK 18, OR-ed over the window).
    pub tcp_flags: u8,
    pub flow_direction: Option<FlowDirection>,
    /// Zeek's conn_state vocabulary for the connection so far (S0, REJ, SF, ...).
    pub conn_state: &'static str,
    /// Packets captured shorter than their IP length (mirror truncation).
    pub truncated_packets: u64,
    /// Payload facts of the connection (both direction records share them).
    pub app: Option<Arc<crate::dissect::AppFacts>>,
    /// What Community ID v1 needs beyond the five-tuple; the ID itself (a SHA-1) is
    /// computed only when an output asks for it.
    pub community: Option<CommunityInput>,
    /// Findings of the record-stream detectors (scans, floods, transfers).
    pub detections: Vec<crate::detect::Detection>,
}

/// The orientation and ICMP type/code Community ID is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommunityInput {
    /// This record's source is the connection's originator.
    pub originator_is_src: bool,
    /// ICMP/ICMPv6 type and code of the connection's first packet.
    pub icmp: Option<(u8, u8)>,
}

impl FlowRecord {
    /// Community ID v1 of the record's connection (the same for both directions).
    pub fn community_id(&self) -> Option<String> {
        let c = self.community?;
        let (src, dst) = ((self.srcaddr, self.srcport), (self.dstaddr, self.dstport));
        let ((oa, op), (ra, rp)) = if c.originator_is_src {
            (src, dst)
        } else {
            (dst, src)
        };
        Some(match (self.protocol, c.icmp) {
            (1 | 58, Some((t, code))) => crate::dissect::community_id::community_id(
                0,
                oa,
                ra,
                self.protocol,
                u16::from(t),
                u16::from(code),
            ),
            _ => crate::dissect::community_id::community_id(0, oa, ra, self.protocol, op, rp),
        })
    }

    /// A NODATA or SKIPDATA record for an interface and window.
    pub fn status_only(
        interface: Option<Arc<InterfaceInfo>>,
        vni: Option<u32>,
        mirror_source: Option<IpAddr>,
        log_status: LogStatus,
        start: u64,
        end: u64,
    ) -> FlowRecord {
        let none = IpAddr::from([0, 0, 0, 0]);
        FlowRecord {
            interface,
            vni,
            mirror_source,
            srcaddr: none,
            dstaddr: none,
            srcport: 0,
            dstport: 0,
            protocol: 0,
            packets: 0,
            bytes: 0,
            start,
            end,
            log_status,
            tcp_flags: 0,
            flow_direction: None,
            conn_state: "-",
            truncated_packets: 0,
            app: None,
            community: None,
            detections: Vec::new(),
        }
    }

    /// `action`: every mirrored packet passed the security groups and network ACLs
    /// (AWS mirrors only accepted traffic, aws-spec §1.10), so mirrored flows are ACCEPT.
    pub fn action(&self) -> &'static str {
        "ACCEPT"
    }

    /// `type`.
    pub fn traffic_type(&self) -> &'static str {
        if self.srcaddr.is_ipv6() {
            "IPv6"
        } else {
            "IPv4"
        }
    }
}

/// The AWS tcp-flags contribution of one packet's raw TCP flags (aws-spec §2.5): only
/// FIN, SYN and RST are logged, and SYN with ACK is logged as SYN-ACK (18).
pub fn aws_tcp_flags(raw: u8) -> u8 {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    let mut f = raw & (FIN | SYN | RST);
    if raw & SYN != 0 && raw & ACK != 0 {
        f |= ACK;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_flags_follow_aws() {
        assert_eq!(aws_tcp_flags(0x02), 2); // SYN
        assert_eq!(aws_tcp_flags(0x12), 18); // SYN-ACK
        assert_eq!(aws_tcp_flags(0x11), 1); // FIN-ACK
        assert_eq!(aws_tcp_flags(0x14), 4); // RST-ACK
        assert_eq!(aws_tcp_flags(0x18), 0); // PSH-ACK
        assert_eq!(aws_tcp_flags(0x10), 0); // ACK
        assert_eq!(aws_tcp_flags(0x42), 2); // SYN+ECE
        assert_eq!(aws_tcp_flags(0x02) | aws_tcp_flags(0x11), 3);
        assert_eq!(aws_tcp_flags(0x12) | aws_tcp_flags(0x11), 19);
    }
}
