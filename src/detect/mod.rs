//! Detect: heuristics over the record stream, where one record alone says too little.
//! Runs in the writer, which sees every record of every worker, per aggregation window,
//! when the output prints `findings` (`RecordFormat::prints_findings`):
//!
//! - `port-scan`: one source left many (destination, port) pairs unanswered or refused
//!   (conn-state S0, REJ, RSTOS0, SH) in a window;
//! - `syn-flood`: one destination port got many unanswered attempts from many sources;
//! - `large-outbound-transfer`: an interface sent a lot to one public address.
//!
//! A finding is attached to the record that crosses the threshold and to every later
//! record of the same source (or destination) in that window; the records before the
//! crossing were already written. Thresholds are named constants, configurable as
//! `[detect]`.

/// Keys come from traffic (possibly spoofed): per-process random hash keys.
type Map<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
type Set<K> = std::collections::HashSet<K, ahash::RandomState>;
use std::net::IpAddr;

use serde::Deserialize;

use crate::record::{FlowDirection, FlowRecord, LogStatus};

/// A finding of these detectors, kept as the count and addresses it is made of and put
/// into words (`Display`) only when an output prints it. In a SYN flood nearly every
/// record gets one, and formatting each as it was found took a seventh of the writer's
/// time even for the default text format, which does not print findings at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Detection {
    PortScan {
        targets: usize,
        source: IpAddr,
    },
    SynFlood {
        sources: usize,
        target: IpAddr,
        port: u16,
    },
    LargeTransfer {
        bytes: u64,
        src: IpAddr,
        dst: IpAddr,
    },
}

impl Detection {
    /// The finding's code, as outputs print it.
    pub fn code(&self) -> &'static str {
        match self {
            Detection::PortScan { .. } => "port-scan",
            Detection::SynFlood { .. } => "syn-flood",
            Detection::LargeTransfer { .. } => "large-outbound-transfer",
        }
    }
}

/// The finding's detail.
impl std::fmt::Display for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detection::PortScan { targets, source } => write!(
                f,
                "{targets} destination ports/hosts failed from {source} in this window"
            ),
            Detection::SynFlood {
                sources,
                target,
                port,
            } => write!(
                f,
                "{sources} sources left connections to {target}:{port} unanswered"
            ),
            Detection::LargeTransfer { bytes, src, dst } => {
                write!(f, "{bytes} bytes from {src} to {dst} in this window")
            }
        }
    }
}

/// Distinct (destination, port) pairs a source must fail to reach in a window.
pub const PORT_SCAN_TARGETS: usize = 20;
/// Unanswered attempts from distinct sources to one destination port in a window.
pub const SYN_FLOOD_SOURCES: usize = 100;
/// Bytes one interface sends to one public address in a window.
pub const LARGE_TRANSFER_BYTES: u64 = 1 << 30;
/// Windows kept behind the newest one seen: workers hand records over in their own
/// order, so a window's records keep arriving after later windows have begun.
const WINDOWS_KEPT: u64 = 3;
/// Entries per map per window: a flood of sources cannot grow the detector further.
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DetectConfig {
    pub port_scan_targets: usize,
    pub syn_flood_sources: usize,
    pub large_transfer_bytes: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            port_scan_targets: PORT_SCAN_TARGETS,
            syn_flood_sources: SYN_FLOOD_SOURCES,
            large_transfer_bytes: LARGE_TRANSFER_BYTES,
        }
    }
}

struct Window {
    scan_targets: Map<IpAddr, Set<(IpAddr, u16)>>,
    flood_sources: Map<(IpAddr, u16), Set<IpAddr>>,
    /// Bytes per (interface address, public address). IPv4 pairs are keyed as one u64:
    /// 16-byte entries where an `IpAddr` pair made 48, so a window's table (tens of
    /// thousands of pairs, looked up at random) spans a third of the pages and lines.
    outbound_v4: Map<u64, u64>,
    outbound_v6: Map<(u128, u128), u64>,
}

impl Window {
    /// A window whose maps are sized like `like`'s (the newest window so far): windows
    /// of a steady stream are alike, and growing the maps a doubling at a time from
    /// empty rehashed every entry about twice.
    fn sized_like(like: Option<&Window>) -> Window {
        fn map<K, V>(n: usize) -> Map<K, V> {
            Map::with_capacity_and_hasher(n.min(MAX_TRACKED), Default::default())
        }
        let (scan, flood, v4, v6) = like.map_or((0, 0, 0, 0), |w| {
            (
                w.scan_targets.len(),
                w.flood_sources.len(),
                w.outbound_v4.len(),
                w.outbound_v6.len(),
            )
        });
        Window {
            scan_targets: map(scan),
            flood_sources: map(flood),
            outbound_v4: map(v4),
            outbound_v6: map(v6),
        }
    }

    fn outbound_pairs(&self) -> usize {
        self.outbound_v4.len() + self.outbound_v6.len()
    }

    /// The running total of bytes from `src` to `dst`.
    fn outbound_total(&mut self, src: IpAddr, dst: IpAddr) -> &mut u64 {
        fn bits(a: IpAddr) -> u128 {
            match a {
                IpAddr::V4(v) => v.to_ipv6_mapped().to_bits(),
                IpAddr::V6(v) => v.to_bits(),
            }
        }
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let key = u64::from(s.to_bits()) << 32 | u64::from(d.to_bits());
                self.outbound_v4.entry(key).or_default()
            }
            (s, d) => self.outbound_v6.entry((bits(s), bits(d))).or_default(),
        }
    }
}

pub struct Detector {
    cfg: DetectConfig,
    windows: std::collections::BTreeMap<u64, Window>,
    interval: u64,
}

/// Private, shared, loopback, link-local and documentation-free addresses count as
/// internal; everything else as public.
/// Adds `item` to `key`'s set and returns the set's size (0 when the key cannot be
/// tracked). Keys are bounded like the sets: a flood from spoofed sources would
/// otherwise make one set per source.
fn track<K, T>(map: &mut Map<K, Set<T>>, key: K, item: T) -> usize
where
    K: std::hash::Hash + Eq,
    T: std::hash::Hash + Eq,
{
    let set = if map.len() < MAX_TRACKED {
        Some(map.entry(key).or_default())
    } else {
        map.get_mut(&key)
    };
    match set {
        Some(s) => {
            if s.len() < MAX_TRACKED {
                s.insert(item);
            }
            s.len()
        }
        None => 0,
    }
}

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || s[0] & 0xfe00 == 0xfc00
                || s[0] & 0xffc0 == 0xfe80)
        }
    }
}

/// The state of the window `start` falls in; windows more than `WINDOWS_KEPT` behind
/// the newest are dropped when a window is first seen (records of the newest window
/// come in runs, so most calls find it and change nothing).
fn window(
    windows: &mut std::collections::BTreeMap<u64, Window>,
    interval: u64,
    start: u64,
) -> &mut Window {
    let w = start - start % interval;
    if !windows.contains_key(&w) {
        let newest = windows.keys().next_back().copied().unwrap_or(w).max(w);
        let oldest_kept = newest.saturating_sub(WINDOWS_KEPT * interval);
        windows.retain(|s, _| *s >= oldest_kept);
        let fresh = Window::sized_like(windows.values().next_back());
        windows.insert(w, fresh);
    }
    windows.entry(w).or_insert_with(|| Window::sized_like(None))
}

impl Detector {
    pub fn new(cfg: DetectConfig, interval: u64) -> Detector {
        Detector {
            cfg,
            windows: Default::default(),
            interval: interval.max(1),
        }
    }

    /// Observes records in write order and attaches findings.
    pub fn observe(&mut self, records: &mut [FlowRecord]) {
        let interval = self.interval;
        // A sealed window's records all share one aggregation window: its state is
        // looked up once, not per record.
        for run in records.chunk_by_mut(|a, b| a.start / interval == b.start / interval) {
            let w = window(&mut self.windows, interval, run[0].start);
            for r in run {
                observe_in(&self.cfg, w, r);
            }
        }
    }

    /// Observes the next record in write order and attaches its findings.
    pub fn observe_one(&mut self, r: &mut FlowRecord) {
        self.observe(std::slice::from_mut(r));
    }
}

/// Observes one record of window `w` and attaches its findings.
fn observe_in(cfg: &DetectConfig, w: &mut Window, r: &mut FlowRecord) {
    if r.log_status != LogStatus::Ok {
        return;
    }
    // Only the originator's record of a failed attempt counts (its srcport is the
    // scanner's, its dstport the probed one).
    if r.protocol == 6
        && r.tcp_flags & 0x02 != 0
        && r.tcp_flags & 0x10 == 0
        && matches!(r.conn_state, "S0" | "REJ" | "RSTOS0" | "SH")
    {
        let n = track(&mut w.scan_targets, r.srcaddr, (r.dstaddr, r.dstport));
        if n >= cfg.port_scan_targets {
            r.detections.push(Detection::PortScan {
                targets: n,
                source: r.srcaddr,
            });
        }
        if r.conn_state == "S0" {
            let n = track(&mut w.flood_sources, (r.dstaddr, r.dstport), r.srcaddr);
            if n >= cfg.syn_flood_sources {
                r.detections.push(Detection::SynFlood {
                    sources: n,
                    target: r.dstaddr,
                    port: r.dstport,
                });
            }
        }
    }
    let outbound = r.flow_direction == Some(FlowDirection::Egress)
        || r.flow_direction.is_none() && !is_public(r.srcaddr);
    if outbound && is_public(r.dstaddr) && w.outbound_pairs() < MAX_TRACKED {
        let total = w.outbound_total(r.srcaddr, r.dstaddr);
        *total += r.bytes;
        if *total >= cfg.large_transfer_bytes {
            r.detections.push(Detection::LargeTransfer {
                bytes: *total,
                src: r.srcaddr,
                dst: r.dstaddr,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(src: &str, dst: &str, port: u16, state: &'static str) -> FlowRecord {
        let mut r = FlowRecord::status_only(None, None, None, LogStatus::Ok, 600, 600);
        r.srcaddr = src.parse().unwrap();
        r.dstaddr = dst.parse().unwrap();
        r.srcport = 40000;
        r.dstport = port;
        r.protocol = 6;
        r.packets = 1;
        r.bytes = 44;
        r.tcp_flags = 2;
        r.conn_state = state;
        r
    }

    #[test]
    fn port_scan_found_at_threshold() {
        let mut d = Detector::new(DetectConfig::default(), 600);
        let mut recs: Vec<FlowRecord> = (0..25)
            .map(|p| {
                probe(
                    "203.0.113.66",
                    "10.0.1.10",
                    1000 + p,
                    if p % 2 == 0 { "S0" } else { "REJ" },
                )
            })
            .collect();
        d.observe(&mut recs);
        assert!(recs[..PORT_SCAN_TARGETS - 1]
            .iter()
            .all(|r| r.detections.is_empty()));
        assert!(recs[PORT_SCAN_TARGETS - 1..]
            .iter()
            .all(|r| r.detections[0].code() == "port-scan"));
        // Normal completed connections never count.
        let mut ok: Vec<FlowRecord> = (0..50)
            .map(|p| probe("203.0.113.67", "10.0.1.10", 1000 + p, "SF"))
            .collect();
        d.observe(&mut ok);
        assert!(ok.iter().all(|r| r.detections.is_empty()));
    }

    /// The words each detection is printed in (they were fixed strings before they
    /// were deferred to output time, and query filters may match on them).
    #[test]
    fn detections_print_their_code_and_detail() {
        let a: IpAddr = "203.0.113.66".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let cases = [
            (
                Detection::PortScan {
                    targets: 20,
                    source: a,
                },
                "port-scan",
                "20 destination ports/hosts failed from 203.0.113.66 in this window",
            ),
            (
                Detection::SynFlood {
                    sources: 100,
                    target: b,
                    port: 443,
                },
                "syn-flood",
                "100 sources left connections to 2001:db8::1:443 unanswered",
            ),
            (
                Detection::LargeTransfer {
                    bytes: 1 << 30,
                    src: a,
                    dst: b,
                },
                "large-outbound-transfer",
                "1073741824 bytes from 203.0.113.66 to 2001:db8::1 in this window",
            ),
        ];
        for (d, code, detail) in cases {
            assert_eq!((d.code(), d.to_string().as_str()), (code, detail));
        }
    }

    #[test]
    fn syn_flood_and_large_transfer() {
        let mut d = Detector::new(
            DetectConfig {
                syn_flood_sources: 5,
                large_transfer_bytes: 1000,
                ..Default::default()
            },
            600,
        );
        let mut recs: Vec<FlowRecord> = (0..6)
            .map(|i| probe(&format!("198.51.100.{i}"), "10.0.1.10", 443, "S0"))
            .collect();
        d.observe(&mut recs);
        assert_eq!(recs[4].detections.last().unwrap().code(), "syn-flood");
        let mut big = probe("10.0.1.10", "198.51.100.9", 443, "SF");
        big.bytes = 5000;
        big.flow_direction = Some(FlowDirection::Egress);
        let mut v = vec![big];
        d.observe(&mut v);
        assert_eq!(v[0].detections[0].code(), "large-outbound-transfer");
        // IPv6 pairs add up the same way: two records of 600 bytes cross 1000.
        let mut v6: Vec<FlowRecord> = (0..2)
            .map(|_| {
                let mut r = probe("2001:db8:1::10", "2a00:1450::5", 443, "SF");
                r.bytes = 600;
                r.flow_direction = Some(FlowDirection::Egress);
                r
            })
            .collect();
        d.observe(&mut v6);
        assert!(v6[0].detections.is_empty());
        assert_eq!(v6[1].detections[0].code(), "large-outbound-transfer");
    }
}
