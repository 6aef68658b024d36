//! End to end against ground truth: `gen` writes captures with known per-direction
//! packets, bytes, tcp-flags and times; `replay` must reproduce them for every flow, in
//! plain, VXLAN and VXLAN-truncated-to-128-bytes form, whatever the worker count.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::*;
use serde_json::Value;

type DirKey = (u64, String, u64, String, u64);

#[derive(Default, Debug, PartialEq)]
struct Agg {
    packets: u64,
    bytes: u64,
    tcp_flags: u64,
    start: u64,
    end: u64,
    records: u64,
    last_start: u64,
    conn_state: String,
    direction: Option<String>,
    truncated: u64,
}

fn aggregate(recs: &[Value]) -> HashMap<DirKey, Agg> {
    let mut m: HashMap<DirKey, Agg> = HashMap::new();
    for r in recs {
        let k = (
            r["protocol"].as_u64().unwrap(),
            r["srcaddr"].as_str().unwrap().to_string(),
            r["srcport"].as_u64().unwrap(),
            r["dstaddr"].as_str().unwrap().to_string(),
            r["dstport"].as_u64().unwrap(),
        );
        let a = m.entry(k).or_insert_with(|| Agg {
            start: u64::MAX,
            ..Default::default()
        });
        a.packets += r["packets"].as_u64().unwrap();
        a.bytes += r["bytes"].as_u64().unwrap();
        a.tcp_flags |= r["tcp-flags"].as_u64().unwrap();
        let start = r["start"].as_u64().unwrap();
        a.start = a.start.min(start);
        a.end = a.end.max(r["end"].as_u64().unwrap());
        a.records += 1;
        a.truncated += r["truncated-packets"].as_u64().unwrap();
        if start >= a.last_start {
            a.last_start = start;
            a.conn_state = r["conn-state"].as_str().unwrap().to_string();
        }
        if let Some(d) = r.get("flow-direction").and_then(|d| d.as_str()) {
            a.direction = Some(d.to_string());
        }
    }
    m
}

fn load_truth(capture: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}.truth.jsonl", capture.display())).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "flow")
        .collect()
}

/// Checks every truth flow against the records; returns the number of flows checked.
fn check_against_truth(capture: &Path, recs: &[Value], tunnelled: bool) -> usize {
    let truth = load_truth(capture);
    let agg = aggregate(recs);
    let mut matched_dirs = 0;
    for t in &truth {
        let p = t["protocol"].as_u64().unwrap();
        let (a, ap, b, bp) = (
            t["srcaddr"].as_str().unwrap(),
            t["srcport"].as_u64().unwrap(),
            t["dstaddr"].as_str().unwrap(),
            t["dstport"].as_u64().unwrap(),
        );
        for (side, key) in [
            ("fwd", (p, a.to_string(), ap, b.to_string(), bp)),
            ("rev", (p, b.to_string(), bp, a.to_string(), ap)),
        ] {
            let want = &t[side];
            let want_packets = want["packets"].as_u64().unwrap();
            let got = agg.get(&key);
            if want_packets == 0 {
                assert!(
                    got.is_none(),
                    "{}: {side} of {key:?} has no packets in truth but a record",
                    capture.display()
                );
                continue;
            }
            let got = got
                .unwrap_or_else(|| panic!("{}: no record for {side} {key:?}", capture.display()));
            let ctx = format!("{}: {side} {key:?}", capture.display());
            assert_eq!(got.packets, want_packets, "packets {ctx}");
            assert_eq!(got.bytes, want["bytes"].as_u64().unwrap(), "bytes {ctx}");
            assert_eq!(
                got.tcp_flags,
                want["tcp_flags"].as_u64().unwrap(),
                "tcp-flags {ctx}"
            );
            assert_eq!(
                got.start,
                want["start_us"].as_u64().unwrap() / 1_000_000,
                "start {ctx}"
            );
            assert_eq!(
                got.end,
                want["end_us"].as_u64().unwrap() / 1_000_000,
                "end {ctx}"
            );
            assert_eq!(
                got.conn_state,
                t["conn_state"].as_str().unwrap(),
                "conn-state {ctx}"
            );
            if tunnelled {
                assert_eq!(
                    got.direction.as_deref(),
                    want["flow_direction"].as_str(),
                    "flow-direction {ctx}"
                );
            } else {
                assert_eq!(got.direction, None, "no interface, no direction: {ctx}");
            }
            matched_dirs += 1;
        }
    }
    let records_expected: usize = agg.len();
    assert_eq!(
        matched_dirs,
        records_expected,
        "{}: records for directions the truth does not have",
        capture.display()
    );
    truth.len()
}

/// Records with the tunnel-dependent fields removed, as sorted lines.
/// With `payload`, the payload facts go too (mirror truncation hides them).
fn without_tunnel_fields(recs: &[Value], payload: bool) -> Vec<String> {
    let mut v: Vec<String> = recs
        .iter()
        .map(|r| {
            let mut r = r.as_object().unwrap().clone();
            for k in [
                "vni",
                "mirror-source",
                "flow-direction",
                "truncated-packets",
            ] {
                r.remove(k);
            }
            if payload {
                r.retain(|k, _| {
                    !(k == "app-protocol"
                        || k == "findings"
                        || ["tls-", "http-", "dns-", "ssh-"]
                            .iter()
                            .any(|p| k.starts_with(p)))
                });
            }
            serde_json::to_string(&r).unwrap()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn generated_captures_match_truth_in_every_variant() {
    let dir = scratch("truth");
    let mut tally = BTreeMap::new();
    for seed in ["1", "7", "42"] {
        let plain = dir.join(format!("plain-{seed}.pcap"));
        let vxlan = dir.join(format!("vxlan-{seed}.pcap"));
        let trunc = dir.join(format!("vxlan128-{seed}.pcap"));
        gen(&plain, &["--flows", "250", "--seed", seed]);
        gen(
            &vxlan,
            &["--flows", "250", "--seed", seed, "--vxlan", "--vni", "4242"],
        );
        gen(
            &trunc,
            &[
                "--flows",
                "250",
                "--seed",
                seed,
                "--vxlan",
                "--vni",
                "4242",
                "--truncate",
                "128",
            ],
        );
        let (c1, r_plain, e1) = replay_json(&[&plain], &["--workers", "2"]);
        let (c2, r_vxlan, e2) = replay_json(&[&vxlan], &["--workers", "2"]);
        let (c3, r_trunc, e3) = replay_json(&[&trunc], &["--workers", "2"]);
        assert_eq!((c1, c2, c3), (0, 0, 0), "{e1}{e2}{e3}");
        let n = check_against_truth(&plain, &r_plain, false);
        check_against_truth(&vxlan, &r_vxlan, true);
        check_against_truth(&trunc, &r_trunc, true);
        assert!(r_vxlan
            .iter()
            .all(|r| r["vni"] == 4242 && r["mirror-source"] == "10.0.1.10"));
        assert!(r_plain.iter().all(|r| r.get("vni").is_none()));
        let truncated: u64 = r_trunc
            .iter()
            .map(|r| r["truncated-packets"].as_u64().unwrap())
            .sum();
        assert!(truncated > 0, "truncation to 128 bytes must be counted");
        assert!(r_vxlan.iter().all(|r| r["truncated-packets"] == 0));
        assert_eq!(
            without_tunnel_fields(&r_plain, false),
            without_tunnel_fields(&r_vxlan, false),
            "seed {seed}"
        );
        assert_eq!(
            without_tunnel_fields(&r_plain, true),
            without_tunnel_fields(&r_trunc, true),
            "seed {seed}"
        );
        // The long SSH session crosses a window: more records than flows.
        assert!(r_plain.len() > 2 * n - n / 2);
        tally.insert(seed, (n, r_plain.len(), truncated));
    }
    for (seed, (flows, records, truncated)) in &tally {
        println!("seed {seed}: {flows} truth flows, {records} records per variant, 100% exact; {truncated} truncated packets counted at 128 bytes");
    }
}

#[test]
fn worker_count_does_not_change_the_records() {
    let dir = scratch("workers");
    let cap = dir.join("w.pcap");
    gen(&cap, &["--flows", "300", "--seed", "3", "--vxlan"]);
    let (_, one, _) = replay_json(&[&cap], &["--workers", "1"]);
    let (_, one_again, _) = replay_json(&[&cap], &["--workers", "1"]);
    assert_eq!(one, one_again, "--workers 1 gives a deterministic order");
    let sorted = |v: &[Value]| {
        let mut s: Vec<String> = v.iter().map(|r| r.to_string()).collect();
        s.sort();
        s
    };
    for w in ["2", "3", "5"] {
        let (_, many, _) = replay_json(&[&cap], &["--workers", w]);
        assert_eq!(sorted(&one), sorted(&many), "--workers {w}");
    }
}

#[test]
fn interval_60_cuts_more_windows() {
    let dir = scratch("interval");
    let cap = dir.join("i.pcap");
    gen(&cap, &["--flows", "120", "--seed", "5"]);
    let (_, r600, _) = replay_json(&[&cap], &["--interval", "600"]);
    let (_, r60, _) = replay_json(&[&cap], &["--interval", "60"]);
    assert!(r60.len() > r600.len());
    let sum = |v: &[Value], k: &str| v.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum(&r60, "packets"), sum(&r600, "packets"));
    assert_eq!(sum(&r60, "bytes"), sum(&r600, "bytes"));
    for r in &r60 {
        let (s, e) = (r["start"].as_u64().unwrap(), r["end"].as_u64().unwrap());
        assert_eq!(s / 60, e / 60, "a record stays inside its 60 s window: {r}");
    }
}

#[test]
fn bundled_samples_match_their_truth_and_regenerate_byte_for_byte() {
    let pcaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps");
    let dir = scratch("bundled");
    for (name, args, tunnelled) in [
        (
            "mirror-plain.pcap",
            vec!["--flows", "60", "--seed", "11"],
            false,
        ),
        (
            "mirror-vxlan.pcap",
            vec!["--flows", "60", "--seed", "11", "--vxlan"],
            true,
        ),
        (
            "mirror-vxlan-trunc128.pcap",
            vec![
                "--flows",
                "60",
                "--seed",
                "11",
                "--vxlan",
                "--truncate",
                "128",
            ],
            true,
        ),
    ] {
        let bundled = pcaps.join(name);
        let (code, recs, err) = replay_json(&[&bundled], &[]);
        assert_eq!(code, 0, "{err}");
        let flows = check_against_truth(&bundled, &recs, tunnelled);
        let again = dir.join(name);
        gen(&again, &args);
        assert_eq!(
            std::fs::read(&bundled).unwrap(),
            std::fs::read(&again).unwrap(),
            "gen is deterministic: {name}"
        );
        println!("{name}: {flows} truth flows, {} records, exact", recs.len());
    }
}

#[test]
fn damaged_capture_keeps_records_names_offset_and_exits_3() {
    let dir = scratch("damaged");
    let cap = dir.join("whole.pcap");
    gen(&cap, &["--flows", "80", "--seed", "9"]);
    let bytes = std::fs::read(&cap).unwrap();
    let cut_at = bytes.len() * 2 / 3;
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..cut_at]).unwrap();
    let (code, recs, err) = replay_json(&[&cut], &[]);
    assert_eq!(code, 3, "damaged capture exit code: {err}");
    assert!(
        err.contains("cut.pcap") && err.contains("byte offset"),
        "{err}"
    );
    // The offset named is the record that was cut: every frame before it was counted.
    let offset: usize = err
        .split("byte offset ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        offset < cut_at && offset + 16 > cut_at - 1600,
        "offset {offset} near the cut {cut_at}"
    );
    let (_, whole, _) = replay_json(&[&cap], &[]);
    let pk = |v: &[Value]| {
        v.iter()
            .map(|r| r["packets"].as_u64().unwrap())
            .sum::<u64>()
    };
    // Count the frames before the damage independently, from the pcap framing.
    let mut pos = 24;
    let mut frames_before = 0u64;
    while pos + 16 <= cut_at {
        let incl = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 16 + incl > cut_at {
            break;
        }
        pos += 16 + incl;
        frames_before += 1;
    }
    assert_eq!(offset, pos, "the error names the first damaged record");
    assert_eq!(
        pk(&recs),
        frames_before,
        "every packet before the damage is in the records"
    );
    assert!(pk(&recs) < pk(&whole));
    // A corrupt length field in the middle: same promise.
    let mut corrupt = bytes.clone();
    corrupt[pos + 8..pos + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let bad = dir.join("corrupt.pcap");
    std::fs::write(&bad, &corrupt).unwrap();
    let (code, recs, err) = replay_json(&[&bad, &cap], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("byte offset {pos}")) && err.contains("incl_len"),
        "{err}"
    );
    assert_eq!(
        pk(&recs),
        frames_before + pk(&whole),
        "the next capture is still processed"
    );
}

#[test]
fn bad_arguments_get_one_line_errors_and_exit_2() {
    for (args, needle) in [
        (vec!["replay", "--interval", "300", "x.pcap"], "300"),
        (vec!["replay", "--workers", "0", "x.pcap"], "--workers"),
        (
            vec!["replay", "--format", "${srcaddr} ${nope}", "x.pcap"],
            "nope",
        ),
        (
            vec![
                "replay",
                "--config",
                "/nonexistent/mirrorflow.toml",
                "x.pcap",
            ],
            "/nonexistent/mirrorflow.toml",
        ),
        (
            vec!["gen", "--out", "/tmp/x.pcap", "--ipv6-share", "2"],
            "--ipv6-share",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let o = run(&["replay", "-q", "/nonexistent/capture.pcap"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/capture.pcap"));
}

#[test]
fn sigterm_mid_run_loses_no_packet_that_was_read() {
    let dir = scratch("sigterm");
    let cap = dir.join("s.pcap");
    gen(&cap, &["--flows", "3000", "--seed", "4", "--vxlan"]);
    let out = dir.join("records.jsonl");
    let caps: Vec<String> = (0..30).map(|_| cap.to_str().unwrap().to_string()).collect();
    let mut args = vec![
        "replay".to_string(),
        "--output".into(),
        "json".into(),
        "--workers".into(),
        "2".into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ];
    args.extend(caps);
    let child = std::process::Command::new(bin())
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it start reading, then ask it to stop the way systemd would.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code();
    // 130 when the signal came mid-run; 0 if the run had already finished.
    assert!(
        code == Some(130) || code == Some(0),
        "exit {code:?}: {stderr}"
    );
    let read = summary(&stderr, "packets");
    let in_records: u64 = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["packets"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(in_records, read, "every packet read is in a written record");
    println!("exit {code:?}: {read} packets read, {in_records} in records");
}
