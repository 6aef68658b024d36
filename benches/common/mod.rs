//! Inputs shared by the criterion benches: a generated capture (the same generator the
//! end-to-end `bench` command and the truth tests use), its frames decoded once, and
//! the packets of one flow per application protocol.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use mirrorflow::decap::TunnelPorts;
use mirrorflow::gen::{write_capture, GenOptions};
use mirrorflow::ingest::CaptureFile;
use mirrorflow::parse::{self, FlowKey, Side};

/// A generated capture kept in memory.
pub struct Capture {
    pub file: CaptureFile,
    dir: PathBuf,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn capture(flows: usize, vxlan: bool) -> Capture {
    let dir = std::env::temp_dir().join(format!(
        "mirrorflow-criterion-{}-{flows}-{vxlan}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bench.pcap");
    let opts = GenOptions {
        flows,
        seed: 1,
        vxlan: vxlan.then_some(5_569_041),
        truncate: None,
        ipv6_share: 0.2,
        delayed_ack: false,
    };
    write_capture(&path, &opts).expect("generate capture");
    let file = CaptureFile::open(&path).expect("open capture");
    Capture { file, dir }
}

/// One packet of a flow: the fields the inspector takes, payload copied out.
#[derive(Clone)]
pub struct FlowPkt {
    pub key: FlowKey,
    pub side: Side,
    pub flags: u8,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// The packets of the first flow whose server port is `port` (and protocol `proto`).
pub fn flow_on_port(cap: &Capture, proto: u8, port: u16) -> Vec<FlowPkt> {
    let mut flows: HashMap<FlowKey, Vec<FlowPkt>> = HashMap::new();
    let mut first: Option<FlowKey> = None;
    for f in cap.file.frames().expect("frames").flatten() {
        let Ok((ctx, v)) = parse::decode(f.data, f.link, TunnelPorts::default()) else {
            continue;
        };
        if v.protocol != proto || (v.src_port != port && v.dst_port != port) {
            continue;
        }
        let (key, side) = FlowKey::new(
            ctx.vni,
            ctx.mirror_source,
            (v.src, v.src_port),
            (v.dst, v.dst_port),
            v.protocol,
        );
        if first.is_some_and(|k| k != key) {
            continue;
        }
        first = Some(key);
        let (at, len) = (v.payload.0 as usize, v.payload.1 as usize);
        flows.entry(key).or_default().push(FlowPkt {
            key,
            side,
            flags: v.tcp_flags,
            seq: v.tcp_seq,
            payload: f.data[at..at + len].to_vec(),
        });
    }
    first.and_then(|k| flows.remove(&k)).unwrap_or_default()
}
