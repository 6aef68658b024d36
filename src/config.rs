//! Typed TOML configuration: aggregation interval, tunnel ports, idle timeouts, output
//! format and the mirror sessions (VNI and mirror source → the interface's AWS identity).
//!
//! Every error names the file, the key and the offending value, so a wrong config is a
//! one-line fix. Command-line options override what the file says.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::record::InterfaceInfo;

/// Aggregation intervals AWS offers (MaxAggregationInterval, aws-spec §2.2).
pub const INTERVALS: [u64; 2] = [60, 600];

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CaptureConfig {
    /// Aggregation window in seconds: 60 or 600.
    pub interval: u64,
    pub vxlan_port: u16,
    pub geneve_port: u16,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interval: 600,
            vxlan_port: 4789,
            geneve_port: 6081,
        }
    }
}

/// Idle timeouts in seconds: a connection with no packet for this long ends, its records
/// are written and its table slot freed. Defaults follow Zeek (TCP 5 min of inactivity,
/// 5 s after close, UDP and ICMP 1 min), which keeps conn-state comparable with conn.log.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Timeouts {
    pub tcp: u64,
    pub tcp_closed: u64,
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 300,
            tcp_closed: 5,
            udp: 60,
            icmp: 60,
            other: 60,
        }
    }
}

/// Resource limits: what a flood can make the appliance hold.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsConfig {
    /// Flows held at once across all workers; past it the oldest idle flows are
    /// written out and evicted. About 300 bytes each without payload inspection.
    pub max_flows: usize,
}

/// Default flow capacity: 1 M flows, some 300-500 MB.
pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_flows: DEFAULT_MAX_FLOWS,
        }
    }
}

/// Payload inspection (dissectors).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct InspectConfig {
    pub enabled: bool,
    /// Bytes of each direction reassembled and offered to the dissectors.
    pub max_bytes: usize,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig {
            enabled: true,
            max_bytes: crate::dissect::DEFAULT_MAX_BYTES,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct OutputConfig {
    /// AWS custom format string, e.g. `${version} ${srcaddr} ...`.
    pub format: Option<String>,
}

/// One mirror session: which interface the datagrams with this VNI (and source) copy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SessionConfig {
    pub vni: u32,
    /// Outer source address (the mirrored ENI's primary IP); any source when absent.
    pub mirror_source: Option<IpAddr>,
    pub interface_id: Option<String>,
    pub account_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
    /// The ENI's MAC address, `02:85:69:c2:ab:02`; learned from traffic when absent.
    pub eni_mac: Option<String>,
}

/// The appliance (`serve`): sockets, threads, who may send, the control port.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServeConfig {
    /// Address the VXLAN and GENEVE sockets bind to.
    pub listen: IpAddr,
    /// Receiver threads per tunnel port, each with its own SO_REUSEPORT socket.
    pub receivers: usize,
    /// Worker threads (flow tables); 0 = number of cores.
    pub workers: usize,
    /// SO_RCVBUF asked for each socket, in bytes.
    pub recv_buffer: usize,
    /// Address of the HTTP control port (`/healthz`, `/metrics`).
    pub control: std::net::SocketAddr,
    /// Source networks allowed to send mirror traffic. Anyone who can reach the port
    /// could otherwise forge records, so there is no "allow all" default.
    pub allow_sources: Vec<ipnet::IpNet>,
    /// VNIs accepted; empty = the VNIs of the `[[session]]` entries (and any VNI when
    /// there are none).
    pub allow_vnis: Vec<u32>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: IpAddr::from([0, 0, 0, 0]),
            receivers: 1,
            workers: 0,
            recv_buffer: 32 << 20,
            control: std::net::SocketAddr::from(([127, 0, 0, 1], 9109)),
            allow_sources: Vec::new(),
            allow_vnis: Vec::new(),
        }
    }
}

/// Where `serve` writes records.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SinkConfig {
    /// `stdout`, or `files` (gzip files in AWS's S3 delivery layout).
    pub kind: String,
    /// `text` (AWS format with a header line) or `json` (JSON lines).
    pub encoding: String,
    /// Root of the `AWSLogs/...` tree for `files`.
    pub directory: PathBuf,
    /// Account and region in the key layout (AWS uses the flow log's own).
    pub account_id: String,
    pub region: String,
    /// Flow log id in file names, like AWS's `fl-...`.
    pub flow_log_id: String,
    /// A file is closed after this many seconds (AWS delivers 5-minute files)...
    pub rotate_seconds: u64,
    /// ...or this many uncompressed bytes (AWS caps files near 75 MB).
    pub rotate_bytes: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: "stdout".into(),
            encoding: "text".into(),
            directory: PathBuf::from("/var/lib/mirrorflow"),
            account_id: "000000000000".into(),
            region: "unknown".into(),
            flow_log_id: "fl-mirrorflow".into(),
            rotate_seconds: 300,
            rotate_bytes: 75_000_000,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    pub capture: CaptureConfig,
    pub timeouts: Timeouts,
    pub output: OutputConfig,
    pub serve: ServeConfig,
    pub sink: SinkConfig,
    pub inspect: InspectConfig,
    pub detect: crate::detect::DetectConfig,
    pub limits: LimitsConfig,
    #[serde(rename = "session")]
    pub sessions: Vec<SessionConfig>,
}

/// A configuration error: file, key, value, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            // toml's message names the key and shows the line; keep it on one line.
            err(e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "))
        })?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks values serde cannot: allowed intervals, non-zero timeouts, MAC syntax,
    /// duplicate sessions.
    pub fn validate(&self) -> Result<(), String> {
        if !INTERVALS.contains(&self.capture.interval) {
            return Err(format!(
                "key 'capture.interval' = {}: must be 60 or 600 (AWS MaxAggregationInterval)",
                self.capture.interval
            ));
        }
        for (key, v) in [
            ("timeouts.tcp", self.timeouts.tcp),
            ("timeouts.tcp-closed", self.timeouts.tcp_closed),
            ("timeouts.udp", self.timeouts.udp),
            ("timeouts.icmp", self.timeouts.icmp),
            ("timeouts.other", self.timeouts.other),
        ] {
            if v == 0 {
                return Err(format!(
                    "key '{key}' = 0: a timeout must be at least 1 second"
                ));
            }
        }
        // 0 lets `serve` bind any free port (it prints the one it got); tests use it.
        if self.capture.vxlan_port == self.capture.geneve_port && self.capture.vxlan_port != 0 {
            return Err(format!(
                "key 'capture.geneve-port' = {}: equals capture.vxlan-port",
                self.capture.geneve_port
            ));
        }
        if !matches!(self.sink.kind.as_str(), "stdout" | "files") {
            return Err(format!(
                "key 'sink.kind' = \"{}\": must be \"stdout\" or \"files\"",
                self.sink.kind
            ));
        }
        if !matches!(self.sink.encoding.as_str(), "text" | "json") {
            return Err(format!(
                "key 'sink.encoding' = \"{}\": must be \"text\" or \"json\"",
                self.sink.encoding
            ));
        }
        for (key, v) in [
            ("sink.account-id", &self.sink.account_id),
            ("sink.region", &self.sink.region),
            ("sink.flow-log-id", &self.sink.flow_log_id),
        ] {
            if v.is_empty() || v.contains(['/', '_', ' ']) {
                return Err(format!("key '{key}' = \"{v}\": must be non-empty without '/', '_' or spaces (it names S3-style paths)"));
            }
        }
        for (key, v) in [
            (
                "detect.port-scan-targets",
                self.detect.port_scan_targets as u64,
            ),
            (
                "detect.syn-flood-sources",
                self.detect.syn_flood_sources as u64,
            ),
            (
                "detect.large-transfer-bytes",
                self.detect.large_transfer_bytes,
            ),
        ] {
            if v == 0 {
                return Err(format!("key '{key}' = 0: a threshold must be at least 1"));
            }
        }
        if let Some(f) = &self.output.format {
            crate::record::RecordFormat::custom(crate::record::OutputKind::Text, f)
                .map_err(|e| format!("key 'output.format' = \"{f}\": {e}"))?;
        }
        if self.limits.max_flows < 64 {
            return Err(format!(
                "key 'limits.max-flows' = {}: must be at least 64",
                self.limits.max_flows
            ));
        }
        if self.inspect.max_bytes == 0 || self.inspect.max_bytes > 1 << 20 {
            return Err(format!(
                "key 'inspect.max-bytes' = {}: must be between 1 and 1048576",
                self.inspect.max_bytes
            ));
        }
        if self.sink.rotate_seconds == 0 || self.sink.rotate_bytes == 0 {
            return Err(
                "key 'sink.rotate-seconds' / 'sink.rotate-bytes' = 0: must be positive".into(),
            );
        }
        if self.serve.receivers == 0 || self.serve.receivers > 64 {
            return Err(format!(
                "key 'serve.receivers' = {}: must be between 1 and 64",
                self.serve.receivers
            ));
        }
        if self.serve.workers > 1024 {
            return Err(format!(
                "key 'serve.workers' = {}: at most 1024",
                self.serve.workers
            ));
        }
        for v in &self.serve.allow_vnis {
            if *v > 0x00ff_ffff {
                return Err(format!(
                    "key 'serve.allow-vnis' = {v}: a VNI has 24 bits (at most 16777215)"
                ));
            }
        }
        let mut seen = HashMap::new();
        for (i, s) in self.sessions.iter().enumerate() {
            if s.vni > 0x00ff_ffff {
                return Err(format!(
                    "key 'session[{i}].vni' = {}: a VNI has 24 bits (at most 16777215)",
                    s.vni
                ));
            }
            if let Some(mac) = &s.eni_mac {
                parse_mac(mac).ok_or_else(|| {
                    format!("key 'session[{i}].eni-mac' = \"{mac}\": not a MAC address like 02:85:69:c2:ab:02")
                })?;
            }
            if let Some(prev) = seen.insert((s.vni, s.mirror_source), i) {
                return Err(format!(
                    "key 'session[{i}].vni' = {}: same VNI and mirror-source as session[{prev}]",
                    s.vni
                ));
            }
        }
        Ok(())
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Session lookup for the data path: (VNI, mirror source) → interface identity and MAC.
#[derive(Clone, Debug, Default)]
pub struct SessionMap {
    exact: HashMap<(u32, IpAddr), Arc<SessionEntry>>,
    any_source: HashMap<u32, Arc<SessionEntry>>,
}

#[derive(Clone, Debug, Default)]
pub struct SessionEntry {
    pub info: Arc<InterfaceInfo>,
    pub eni_mac: Option<[u8; 6]>,
}

impl SessionMap {
    pub fn new(sessions: &[SessionConfig]) -> SessionMap {
        let mut m = SessionMap::default();
        for s in sessions {
            let e = Arc::new(SessionEntry {
                info: Arc::new(InterfaceInfo {
                    interface_id: s.interface_id.clone(),
                    account_id: s.account_id.clone(),
                    vpc_id: s.vpc_id.clone(),
                    subnet_id: s.subnet_id.clone(),
                    instance_id: s.instance_id.clone(),
                    region: s.region.clone(),
                    az_id: s.az_id.clone(),
                }),
                eni_mac: s.eni_mac.as_deref().and_then(parse_mac),
            });
            match s.mirror_source {
                Some(src) => {
                    m.exact.insert((s.vni, src), e);
                }
                None => {
                    m.any_source.insert(s.vni, e);
                }
            }
        }
        m
    }

    /// VNIs named by sessions.
    pub fn vnis(&self) -> impl Iterator<Item = u32> + '_ {
        self.exact
            .keys()
            .map(|(v, _)| *v)
            .chain(self.any_source.keys().copied())
    }

    pub fn lookup(&self, vni: Option<u32>, source: Option<IpAddr>) -> Option<&Arc<SessionEntry>> {
        let vni = vni?;
        source
            .and_then(|s| self.exact.get(&(vni, s)))
            .or_else(|| self.any_source.get(&vni))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("mf-config-{}-{}", std::process::id(), s.len()));
        std::fs::write(&dir, s).unwrap();
        let r = Config::load(&dir);
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn full_config_parses() {
        let c = load_str(
            r#"
[capture]
interval = 60
[timeouts]
udp = 30
[[session]]
vni = 5569041
mirror-source = "172.31.0.238"
interface-id = "eni-0a1b2c3d4e5f67890"
account-id = "123456789012"
eni-mac = "02:85:69:c2:ab:02"
"#,
        )
        .unwrap();
        assert_eq!(c.capture.interval, 60);
        assert_eq!(c.timeouts.udp, 30);
        assert_eq!(c.timeouts.tcp, 300);
        let m = SessionMap::new(&c.sessions);
        let e = m
            .lookup(Some(5569041), Some("172.31.0.238".parse().unwrap()))
            .unwrap();
        assert_eq!(
            e.info.interface_id.as_deref(),
            Some("eni-0a1b2c3d4e5f67890")
        );
        assert_eq!(e.eni_mac, Some([2, 0x85, 0x69, 0xc2, 0xab, 2]));
        assert!(m.lookup(Some(1), None).is_none());
    }

    #[test]
    fn example_config_in_systemd_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mirrorflow.toml");
        let c = Config::load(&p).unwrap();
        assert_eq!(c.sink.kind, "files");
        assert!(!c.serve.allow_sources.is_empty());
        assert_eq!(c.sessions.len(), 1);
    }

    #[test]
    fn serve_and_sink_sections() {
        let c = load_str(
            r#"
[serve]
listen = "127.0.0.1"
receivers = 2
control = "127.0.0.1:9999"
allow-sources = ["10.0.0.0/8", "::1/128"]
allow-vnis = [7]
[sink]
kind = "files"
directory = "/tmp/x"
account-id = "123456789012"
region = "eu-central-1"
"#,
        )
        .unwrap();
        assert_eq!(c.serve.receivers, 2);
        assert_eq!(c.serve.allow_sources.len(), 2);
        assert_eq!(c.sink.rotate_seconds, 300);
        let e = load_str("[serve]\nallow-sources = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            e.message.contains("allow-sources") || e.message.contains("10.0.0.0/33"),
            "{e}"
        );
        let e = load_str("[sink]\nkind = \"s3\"\n").unwrap_err();
        assert!(
            e.message.contains("sink.kind") && e.message.contains("s3"),
            "{e}"
        );
        let e = load_str("[serve]\nreceivers = 0\n").unwrap_err();
        assert!(e.message.contains("serve.receivers"), "{e}");
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = load_str("[capture]\ninterval = 300\n").unwrap_err();
        assert!(
            e.message.contains("capture.interval") && e.message.contains("300"),
            "{e}"
        );
        let e = load_str("[capture]\nintervall = 60\n").unwrap_err();
        assert!(e.message.contains("intervall"), "{e}");
        let e = load_str("[[session]]\nvni = 1\neni-mac = \"zz\"\n").unwrap_err();
        assert!(
            e.message.contains("eni-mac") && e.message.contains("zz"),
            "{e}"
        );
        let e = load_str("[timeouts]\ntcp = 0\n").unwrap_err();
        assert!(e.message.contains("timeouts.tcp"), "{e}");
        let e = load_str("[[session]]\nvni = 99999999\n").unwrap_err();
        assert!(e.message.contains("99999999"), "{e}");
    }
}
