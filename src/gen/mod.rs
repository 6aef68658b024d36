//! `gen`: deterministic AWS-mirror-like traffic with its ground truth.
//!
//! Produces a classic pcap of sessions between a mirrored interface (an ENI in a VPC,
//! 10.0.1.10 / 2001:db8:a::10) and peers on the internet and in the VPC: TCP handshakes
//! and closes, TLS ClientHellos with SNI and ALPN, HTTP/1.1, DNS, SSH banners, ICMP echo,
//! unanswered SYNs, a port scan, IPv6, and one long session that crosses an aggregation
//! window. With `--vxlan` every frame is wrapped as AWS Traffic Mirroring wraps it; with
//! `--truncate` the session's PacketLength is applied. Beside the capture goes
//! FILE.truth.jsonl: per flow the true per-direction packets, bytes (IP length),
//! AWS tcp-flags, first/last packet time and the payload facts, in the truth format of
//! `shared/bench/peers-check.py`, then a summary line.

mod chunked;
pub mod flood;
mod packets;
mod sessions;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chunked::ChunkWriter;
use packets::{vxlan_wrap, PcapWriter};
pub use sessions::{FlowTruth, SideTruth};

/// 2024-01-01T00:00:00Z: generated time starts on an aggregation-window boundary.
pub const GEN_EPOCH_S: u64 = 1_704_067_200;

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub flows: usize,
    pub seed: u64,
    /// VNI to wrap in VXLAN, or plain Ethernet.
    pub vxlan: Option<u32>,
    /// Bytes kept after the VXLAN header (or snap length when plain).
    pub truncate: Option<usize>,
    pub ipv6_share: f64,
    /// TCP receivers acknowledge every second full segment (see `--delayed-ack`).
    pub delayed_ack: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct GenSummary {
    pub flows: usize,
    pub packets: u64,
    pub ip_bytes: u64,
}

/// `FILE.truth.jsonl` beside `FILE`.
pub fn truth_path(capture: &Path) -> PathBuf {
    let mut s = capture.as_os_str().to_owned();
    s.push(".truth.jsonl");
    PathBuf::from(s)
}

/// Writes the capture and its truth file.
pub fn write_capture(path: &Path, opts: &GenOptions) -> io::Result<GenSummary> {
    let traffic = sessions::generate(opts);
    let mut pcap = PcapWriter::new(ChunkWriter::new(File::create(path)?))?;
    let mut summary = GenSummary {
        flows: traffic.flows.len(),
        ..Default::default()
    };
    for p in &traffic.packets {
        summary.packets += 1;
        summary.ip_bytes += (p.frame.len() - 14) as u64;
        match opts.vxlan {
            Some(vni) => {
                let outer = vxlan_wrap(&p.frame, vni, p.flow_hash, opts.truncate);
                pcap.write(p.ts_us, &outer, outer.len())?;
            }
            None => {
                let keep = opts.truncate.unwrap_or(usize::MAX).min(p.frame.len());
                pcap.write(p.ts_us, &p.frame[..keep], p.frame.len())?;
            }
        }
    }
    pcap.finish()?;
    let mut truth = BufWriter::new(File::create(truth_path(path))?);
    for f in &traffic.flows {
        serde_json::to_writer(&mut truth, f)?;
        truth.write_all(b"\n")?;
    }
    let mut summary_line = serde_json::json!({
        "type": "summary",
        "flows": summary.flows,
        "packets": summary.packets,
        "bytes": summary.ip_bytes,
        "seed": opts.seed,
        "vxlan_vni": opts.vxlan,
        "truncate": opts.truncate,
        "ipv6_share": opts.ipv6_share,
    });
    // Only when set, so truth files of captures made without it stay byte-identical.
    if opts.delayed_ack {
        summary_line["delayed_ack"] = true.into();
    }
    serde_json::to_writer(&mut truth, &summary_line)?;
    truth.write_all(b"\n")?;
    truth.flush()?;
    Ok(summary)
}
