//! The appliance end to end on loopback: a real `serve` process, traffic from a real
//! `send` process, health and metrics read with curl, signals as systemd sends them.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Appliance {
    child: Option<Child>,
    dir: PathBuf,
    vxlan_port: u16,
    control: String,
}

fn curl(url: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

impl Appliance {
    /// Starts `serve` with `extra` TOML appended to a loopback config. Ports are 0: the
    /// appliance binds free ones and prints them, so parallel tests never collide.
    fn start(name: &str, extra: &str) -> Appliance {
        let dir = scratch(name);
        let config = format!(
            "[capture]\nvxlan-port = 0\ngeneve-port = 0\n[serve]\nlisten = \"127.0.0.1\"\ncontrol = \"127.0.0.1:0\"\nrecv-buffer = 4194304\n{extra}"
        );
        std::fs::write(dir.join("mirrorflow.toml"), config).unwrap();
        let child = Command::new(bin())
            .args([
                "serve",
                "--config",
                dir.join("mirrorflow.toml").to_str().unwrap(),
            ])
            .stdout(Stdio::from(File::create(dir.join("stdout")).unwrap()))
            .stderr(Stdio::from(File::create(dir.join("stderr")).unwrap()))
            .spawn()
            .unwrap();
        let mut a = Appliance {
            child: Some(child),
            dir,
            vxlan_port: 0,
            control: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // "mirrorflow: receiving VXLAN on 127.0.0.1:P, GENEVE on ...; control on http://ADDR"
        loop {
            let err = a.stderr();
            if let Some(line) = err.lines().find(|l| l.contains("receiving VXLAN on")) {
                a.vxlan_port = line
                    .split("VXLAN on ")
                    .nth(1)
                    .and_then(|r| r.split([',', ' ']).next())
                    .and_then(|hp| hp.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap();
                a.control = line.rsplit("http://").next().unwrap().trim().to_string();
                break;
            }
            assert!(Instant::now() < deadline, "serve did not start: {err}");
            std::thread::sleep(Duration::from_millis(20));
        }
        while curl(&a.url("/healthz")).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "serve never became healthy: {}",
                a.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.control)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn send(&self, capture: &Path, extra: &[&str]) -> String {
        let to = format!("127.0.0.1:{}", self.vxlan_port);
        let mut args = vec!["send", capture.to_str().unwrap(), "--to", &to];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A metric's value; 0 when the series does not exist yet.
    fn metric(&self, line_prefix: &str) -> u64 {
        let (code, body) = curl(&self.url("/metrics"));
        assert_eq!(code, 200);
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    /// Waits (bounded, no timing assertion) until a metric reaches `n`; threads publish
    /// their counters about once a second.
    fn wait_metric(&self, line_prefix: &str, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.metric(line_prefix);
            if v >= n || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_datagrams(&self, n: u64) {
        self.wait_metric("mirrorflow_datagrams_received_total", n);
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM, wait; returns (exit code, stdout, stderr).
    fn stop(mut self) -> (Option<i32>, String, String) {
        self.signal("-TERM");
        let status = self.child.take().unwrap().wait().unwrap();
        (
            status.code(),
            std::fs::read_to_string(self.dir.join("stdout")).unwrap(),
            self.stderr(),
        )
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Per direction: packets, bytes, tcp-flags OR, conn-state of the latest record.
fn by_direction(recs: &[Value]) -> HashMap<String, (u64, u64, u64, String)> {
    let mut m: HashMap<String, (u64, u64, u64, String)> = HashMap::new();
    for r in recs.iter().filter(|r| r["log-status"] == "OK") {
        let k = format!(
            "{} {}:{} > {}:{}",
            r["protocol"], r["srcaddr"], r["srcport"], r["dstaddr"], r["dstport"]
        );
        let e = m.entry(k).or_insert((0, 0, 0, String::new()));
        e.0 += r["packets"].as_u64().unwrap();
        e.1 += r["bytes"].as_u64().unwrap();
        e.2 |= r["tcp-flags"].as_u64().unwrap();
        e.3 = r["conn-state"].as_str().unwrap().to_string();
    }
    m
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pcaps")
        .join(name)
}

const SESSION: &str = "allow-sources = [\"127.0.0.0/8\"]\nworkers = 2\n[sink]\nencoding = \"json\"\n[[session]]\nvni = 77\ninterface-id = \"eni-0123456789abcdef0\"\naccount-id = \"123456789012\"\neni-mac = \"02:00:0a:00:01:0a\"\n";

#[test]
fn served_records_equal_replayed_records() {
    let a = Appliance::start("serve-e2e", SESSION);
    let capture = sample("mirror-plain.pcap");
    a.send(&capture, &["--vni", "77", "--rate", "20000"]);
    // A VNI no session names is dropped and counted, not recorded.
    let other = a.dir.join("other.pcap");
    gen(&other, &["--flows", "3", "--seed", "2"]);
    a.send(&other, &["--vni", "99"]);
    let total_other = std::fs::read_to_string(format!("{}.truth.jsonl", other.display())).unwrap();
    let other_packets: u64 = total_other
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "summary")
        .map(|v| v["packets"].as_u64().unwrap())
        .sum();
    a.wait_for_datagrams(1591 + other_packets);
    assert_eq!(
        a.wait_metric("mirrorflow_datagrams_total{vni=\"77\"}", 1591),
        1591
    );
    assert_eq!(
        a.wait_metric(
            "mirrorflow_datagrams_rejected_total{reason=\"vni\"}",
            other_packets
        ),
        other_packets
    );
    let (code, served, stderr) = a.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let served = records(&served);
    let (rc, replayed, err) = replay_json(&[&capture], &[]);
    assert_eq!(rc, 0, "{err}");
    let (s, r) = (by_direction(&served), by_direction(&replayed));
    assert_eq!(s.len(), r.len(), "same directions");
    assert_eq!(
        s, r,
        "served and replayed records agree per direction (windows aside)"
    );
    for rec in &served {
        assert_eq!(rec["vni"], 77);
        assert_eq!(rec["interface-id"], "eni-0123456789abcdef0");
        assert_eq!(rec["mirror-source"], "127.0.0.1");
        assert!(
            rec["flow-direction"] == "egress" || rec["flow-direction"] == "ingress",
            "{rec}"
        );
    }
    println!(
        "served {} records, replayed {}, {} directions equal",
        served.len(),
        replayed.len(),
        s.len()
    );
}

#[test]
fn sender_outside_the_allowlist_makes_no_records() {
    let a = Appliance::start(
        "serve-allow",
        "allow-sources = [\"192.0.2.0/24\"]\n[sink]\nencoding = \"json\"\n",
    );
    let (code, body) = curl(&a.url("/healthz"));
    assert_eq!((code, body.trim()), (200, "ok"));
    assert_eq!(curl(&a.url("/nope")).0, 404);
    a.send(
        &sample("mirror-plain.pcap"),
        &["--vni", "77", "--rate", "20000"],
    );
    a.wait_for_datagrams(1591);
    assert_eq!(
        a.wait_metric(
            "mirrorflow_datagrams_rejected_total{reason=\"source\"}",
            1591
        ),
        1591
    );
    let (_, body) = curl(&a.url("/metrics"));
    for family in [
        "mirrorflow_queue_drops_total",
        "mirrorflow_active_flows",
        "mirrorflow_records_written_total",
        "mirrorflow_batch_processing_seconds",
        "mirrorflow_packet_to_record_delay_seconds",
        "mirrorflow_decap_errors_total",
        "mirrorflow_flow_evictions_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "metrics lack {family}"
        );
    }
    // SIGHUP reloads the allowlist: once loopback is allowed, the same traffic counts.
    let cfg_path = a.dir.join("mirrorflow.toml");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("192.0.2.0/24", "127.0.0.0/8");
    std::fs::write(&cfg_path, cfg).unwrap();
    a.signal("-HUP");
    let small = a.dir.join("small.pcap");
    gen(&small, &["--flows", "2", "--seed", "5"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.metric("mirrorflow_datagrams_total{vni=\"77\"}") == 0 && Instant::now() < deadline {
        a.send(&small, &["--vni", "77"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, out, stderr) = a.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SIGHUP: reloaded sessions"), "{stderr}");
    // The sample, plus any small sends that raced the reload, were refused.
    assert!(summary(&stderr, "datagrams rejected") >= 1591);
    let recs = records(&out);
    assert!(
        !recs.is_empty(),
        "after the reload the sender's traffic makes records"
    );
    assert!(recs
        .iter()
        .all(|r| r["vni"] == 77 && r["mirror-source"] == "127.0.0.1"));
}

#[test]
fn sigterm_under_traffic_accounts_for_every_packet() {
    let a = Appliance::start(
        "serve-sigterm",
        "allow-sources = [\"127.0.0.0/8\"]\nworkers = 1\n[sink]\nencoding = \"json\"\n",
    );
    let to = format!("127.0.0.1:{}", a.vxlan_port);
    let capture = sample("mirror-vxlan.pcap");
    let mut sender = Command::new(bin())
        .args([
            "send",
            capture.to_str().unwrap(),
            "--to",
            &to,
            "--loop",
            "200",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    a.wait_for_datagrams(5000);
    let (code, out, stderr) = a.stop();
    let _ = sender.kill();
    let _ = sender.wait();
    assert_eq!(code, Some(0), "{stderr}");
    let recs = records(&out);
    let in_records: u64 = recs
        .iter()
        .filter(|r| r["log-status"] == "OK")
        .map(|r| r["packets"].as_u64().unwrap())
        .sum();
    let accepted = summary(&stderr, "packets accepted");
    let dropped = summary(&stderr, "packets dropped");
    assert!(accepted >= 5000);
    assert_eq!(
        in_records,
        summary(&stderr, "packets in records"),
        "{stderr}"
    );
    assert_eq!(
        accepted,
        in_records + dropped,
        "accepted = in records + dropped: {stderr}"
    );
    if dropped > 0 {
        assert!(
            recs.iter().any(|r| r["log-status"] == "SKIPDATA"),
            "drops must show as SKIPDATA"
        );
    }
    println!("accepted {accepted}, in records {in_records}, dropped {dropped}");
}

#[test]
fn files_sink_rotates_on_sighup_and_completes_on_sigterm() {
    let dir = scratch("serve-files-out");
    let extra = format!(
        "allow-sources = [\"127.0.0.0/8\"]\n[sink]\nkind = \"files\"\ndirectory = \"{}\"\naccount-id = \"123456789012\"\nregion = \"eu-central-1\"\n",
        dir.display()
    );
    let a = Appliance::start("serve-files", &extra);
    a.send(
        &sample("mirror-plain.pcap"),
        &["--vni", "77", "--rate", "20000"],
    );
    a.wait_for_datagrams(1591);
    // Records are written when their flows end (5 s after a TCP close); a SIGHUP then
    // completes the file, and SIGTERM writes the rest into a second one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.metric("mirrorflow_records_written_total") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    a.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirrorflow_files(&dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mirrorflow_files(&dir).len(),
        1,
        "SIGHUP completes the current file"
    );
    a.send(
        &sample("mirror-plain.pcap"),
        &["--vni", "78", "--rate", "20000"],
    );
    a.wait_for_datagrams(2 * 1591);
    let (code, _, stderr) = a.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let files = mirrorflow_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let mut lines = 0;
    for f in &files {
        let name = f.to_string_lossy();
        assert!(
            name.contains("/AWSLogs/123456789012/vpcflowlogs/eu-central-1/"),
            "{name}"
        );
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(File::open(f).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert!(
            text.starts_with("version account-id interface-id srcaddr"),
            "header line first: {name}"
        );
        lines += text.lines().count() - 1;
    }
    assert_eq!(lines as u64, summary(&stderr, "records written"));
    let partial = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partial, 0, "no half-written file is left");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn mirrorflow_files(d: &Path) -> Vec<PathBuf> {
    walk(d)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log.gz"))
        .collect()
}

#[test]
fn flood_past_the_flow_cap_degrades_health_and_loses_nothing() {
    let a = Appliance::start(
        "serve-flood",
        "allow-sources = [\"127.0.0.0/8\"]\nworkers = 1\n[sink]\nencoding = \"json\"\n[limits]\nmax-flows = 1000\n",
    );
    let flood = a.dir.join("syn.pcap");
    gen(&flood, &["--flood", "syn", "--packets", "20000"]);
    a.send(&flood, &["--vni", "9", "--rate", "100000"]);
    a.wait_for_datagrams(20_000);
    a.wait_metric(
        "mirrorflow_flow_evictions_total{worker=\"0\",reason=\"capacity\"}",
        1,
    );
    let (code, body) = curl(&a.url("/healthz"));
    assert_eq!(code, 503, "evicting for lack of room is reported: {body}");
    assert!(body.contains("degraded"), "{body}");
    let evicted = a.metric("mirrorflow_flow_evictions_total{worker=\"0\",reason=\"capacity\"}");
    let (code, out, stderr) = a.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let in_records: u64 = records(&out)
        .iter()
        .filter(|r| r["log-status"] == "OK")
        .map(|r| r["packets"].as_u64().unwrap())
        .sum();
    let accepted = summary(&stderr, "packets accepted");
    let dropped = summary(&stderr, "packets dropped");
    assert_eq!(accepted, in_records + dropped, "{stderr}");
    println!("serve flood: {accepted} accepted = {in_records} in records + {dropped} dropped; {evicted} flows evicted; health said 503 degraded");
}
