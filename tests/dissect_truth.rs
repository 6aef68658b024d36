//! Payload facts against ground truth: on generated captures every TLS SNI and ALPN,
//! HTTP Host and User-Agent, DNS query name and SSH banner the truth has is in the
//! records, exactly; with the mirror truncating to 128 bytes, the facts the truth marks
//! hidden are absent (never a partial or wrong value), the rest still exact; and no
//! record carries a fact its flow does not have.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use serde_json::Value;

/// (truth key, record field, record value as a string)
const FACTS: [(&str, &str); 7] = [
    ("sni", "tls-sni"),
    ("alpn", "tls-alpn"),
    ("http_host", "http-host"),
    ("http_user_agent", "http-user-agent"),
    ("dns_query", "dns-query"),
    ("ssh_client", "ssh-client"),
    ("ssh_server", "ssh-server"),
];

fn key(proto: u64, a: &str, ap: u64, b: &str, bp: u64) -> String {
    let (x, y) = ((a.to_string(), ap), (b.to_string(), bp));
    let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
    format!("{proto} {}:{} {}:{}", lo.0, lo.1, hi.0, hi.1)
}

fn field_text(v: &Value) -> String {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks one capture; returns (facts expected and found, facts hidden and absent).
fn check(capture: &Path) -> (usize, usize) {
    let (code, recs, err) = replay_json(&[capture], &[]);
    assert_eq!(code, 0, "{err}");
    let mut facts: HashMap<String, HashMap<&str, String>> = HashMap::new();
    for r in &recs {
        let k = key(
            r["protocol"].as_u64().unwrap(),
            r["srcaddr"].as_str().unwrap(),
            r["srcport"].as_u64().unwrap(),
            r["dstaddr"].as_str().unwrap(),
            r["dstport"].as_u64().unwrap(),
        );
        let e = facts.entry(k).or_default();
        for (_, field) in FACTS {
            if let Some(v) = r.get(field) {
                let text = field_text(v);
                if let Some(prev) = e.get(field) {
                    assert_eq!(
                        prev,
                        &text,
                        "{}: both direction records carry the same {field}",
                        capture.display()
                    );
                }
                e.insert(field, text);
            }
        }
    }
    let truth = std::fs::read_to_string(format!("{}.truth.jsonl", capture.display())).unwrap();
    let (mut found, mut hidden_ok) = (0, 0);
    for t in truth
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|t| t["type"] == "flow")
    {
        let k = key(
            t["protocol"].as_u64().unwrap(),
            t["srcaddr"].as_str().unwrap(),
            t["srcport"].as_u64().unwrap(),
            t["dstaddr"].as_str().unwrap(),
            t["dstport"].as_u64().unwrap(),
        );
        let got = facts.get(&k).cloned().unwrap_or_default();
        let hidden: Vec<&str> = t["hidden"]
            .as_array()
            .map(|h| h.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        for (tkey, field) in FACTS {
            let ctx = format!("{} flow {k} {field}", capture.display());
            match (t.get(tkey).and_then(|v| v.as_str()), got.get(field)) {
                (Some(_), None) if hidden.contains(&tkey) => hidden_ok += 1,
                (Some(_), Some(v)) if hidden.contains(&tkey) => {
                    panic!("{ctx}: hidden by truncation, yet reported as {v:?}")
                }
                (Some(want), Some(v)) => {
                    assert_eq!(v, want, "{ctx}");
                    found += 1;
                }
                (Some(want), None) => panic!("{ctx}: truth has {want:?}, the records nothing"),
                (None, Some(v)) => panic!("{ctx}: a fact the flow does not have: {v:?}"),
                (None, None) => {}
            }
        }
    }
    (found, hidden_ok)
}

#[test]
fn generated_payload_facts_are_exact() {
    let dir = scratch("dissect-truth");
    for seed in ["2", "8"] {
        for (name, extra) in [
            ("plain", vec![]),
            ("vxlan", vec!["--vxlan"]),
            ("vxlan128", vec!["--vxlan", "--truncate", "128"]),
        ] {
            let cap = dir.join(format!("{name}-{seed}.pcap"));
            let mut args = vec!["--flows", "200", "--seed", seed];
            args.extend_from_slice(&extra);
            gen(&cap, &args);
            let (found, hidden) = check(&cap);
            // Truncation hides every TLS fact, so fewer remain to check there.
            assert!(
                found > if name == "vxlan128" { 50 } else { 200 },
                "{name}: {found} facts checked"
            );
            if name == "vxlan128" {
                assert!(hidden > 0, "truncation to 128 bytes hides TLS facts");
            } else {
                assert_eq!(hidden, 0);
            }
            println!(
                "seed {seed} {name}: {found} facts exact, {hidden} hidden by truncation and absent"
            );
        }
    }
}

#[test]
fn bundled_truncated_sample_reports_no_hidden_fact() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/mirror-vxlan-trunc128.pcap");
    let (found, hidden) = check(&cap);
    println!("pcaps/mirror-vxlan-trunc128.pcap: {found} facts exact, {hidden} hidden and absent");
}

#[test]
fn findings_reach_the_records() {
    let dir = scratch("findings");
    let cap = dir.join("scan.pcap");
    // 200 flows include a 24-port scan of the interface (gen's "portscan" kind).
    gen(&cap, &["--flows", "200", "--seed", "3"]);
    let truth = std::fs::read_to_string(format!("{}.truth.jsonl", cap.display())).unwrap();
    let scanners: std::collections::HashSet<String> = truth
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|t| t["kind"] == "portscan")
        .map(|t| t["srcaddr"].as_str().unwrap().to_string())
        .collect();
    assert!(!scanners.is_empty());
    let (code, recs, err) = replay_json(&[&cap], &[]);
    assert_eq!(code, 0, "{err}");
    let flagged: std::collections::HashSet<String> = recs
        .iter()
        .filter(|r| {
            r["findings"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x["code"] == "port-scan"))
        })
        .map(|r| r["srcaddr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        flagged, scanners,
        "every scanner, and only scanners, is flagged"
    );
    // Text output carries the same finding through ${findings}.
    let o = run(&[
        "replay",
        "-q",
        "--format",
        "${srcaddr} ${findings}",
        cap.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines().any(|l| l.contains("port-scan=")),
        "text findings"
    );
}
