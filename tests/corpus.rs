//! Every capture of `../shared/corpus` through `replay`: no panic, ever; and where peers
//! recorded facts (EXPECTED.jsonl), mirrorflow's records agree: Zeek conn.log rows (the
//! peer notion closest to a flow log: per-direction packets and IP bytes), the VNIs
//! TShark decoded, and separate flows per VNI in the VNI-overlap capture.
//! Skips, saying so, when `../shared` is absent.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(captures(&p));
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        ) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn expected(shared: &Path) -> Vec<Value> {
    std::fs::read_to_string(shared.join("corpus/EXPECTED.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Direction-free key: (protocol, lower endpoint, higher endpoint); ICMP ports are 0
/// (AWS's rule; Zeek puts type/code there).
type ConnKey = (u64, (String, u64), (String, u64));

fn conn_key(proto: u64, a: &str, ap: u64, b: &str, bp: u64) -> ConnKey {
    let (ap, bp) = if proto == 1 || proto == 58 {
        (0, 0)
    } else {
        (ap, bp)
    };
    let norm = |s: &str| {
        s.parse::<std::net::IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or(s.to_string())
    };
    let x = (norm(a), ap);
    let y = (norm(b), bp);
    if x <= y {
        (proto, x, y)
    } else {
        (proto, y, x)
    }
}

/// The direction-free key of one of our JSON records.
fn record_key(r: &Value) -> ConnKey {
    conn_key(
        r["protocol"].as_u64().unwrap(),
        r["srcaddr"].as_str().unwrap(),
        r["srcport"].as_u64().unwrap(),
        r["dstaddr"].as_str().unwrap(),
        r["dstport"].as_u64().unwrap(),
    )
}

fn proto_num(p: &str) -> Option<u64> {
    match p {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        _ => None,
    }
}

#[test]
fn corpus_replays_without_panic_and_agrees_with_peers() {
    let Some(shared) = shared_dir() else {
        println!(
            "SKIP corpus test: ../shared/corpus/EXPECTED.jsonl not found beside the repository"
        );
        return;
    };
    let expected = expected(&shared);
    let mut by_file: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in &expected {
        by_file
            .entry(e["file"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    let corpus = shared.join("corpus");
    let mut tally: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut exit_codes: BTreeMap<i32, u64> = BTreeMap::new();
    let mut misses = Vec::new();
    let files = captures(&corpus);
    for path in &files {
        let rel = path
            .strip_prefix(&corpus)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let (code, recs, stderr) = replay_json(&[path], &["--workers", "2"]);
        assert!(
            code == 0 || code == 3,
            "{rel}: exit {code} (a panic is 101): {stderr}"
        );
        if code == 3 {
            assert!(
                stderr.contains(&*path.to_string_lossy()) && stderr.contains("byte offset"),
                "{rel}: damage must name file and offset: {stderr}"
            );
        }
        *exit_codes.entry(code).or_default() += 1;
        let mut ours: HashMap<ConnKey, (u64, u64)> = HashMap::new();
        let mut vnis = BTreeSet::new();
        for r in &recs {
            let k = record_key(r);
            let e = ours.entry(k).or_default();
            e.0 += r["packets"].as_u64().unwrap();
            e.1 += r["bytes"].as_u64().unwrap();
            if let Some(v) = r.get("vni").and_then(|v| v.as_u64()) {
                vnis.insert(v);
            }
        }
        for e in by_file.get(&rel).map(|v| v.as_slice()).unwrap_or(&[]) {
            let facts = &e["facts"];
            match e["peer"].as_str().unwrap() {
                "Zeek" => {
                    let Some(rows) = facts["conn_log"].as_array() else {
                        continue;
                    };
                    // Zeek also decapsulates GRE, Teredo, IP-in-IP, ...: compare only
                    // captures whose tunnels we decapsulate too.
                    let tunnels: Vec<&str> = facts["tunnel_types"]
                        .as_array()
                        .map(|t| t.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    if tunnels
                        .iter()
                        .any(|t| !matches!(*t, "Tunnel::VXLAN" | "Tunnel::GENEVE"))
                    {
                        continue;
                    }
                    let mut theirs: HashMap<ConnKey, (u64, u64)> = HashMap::new();
                    for row in rows {
                        let service = row["service"].as_str().unwrap_or("");
                        if service.contains("vxlan") || service.contains("geneve") {
                            continue; // the outer tunnel transport, which we decapsulate
                        }
                        let Some(p) = row["proto"].as_str().and_then(proto_num) else {
                            continue;
                        };
                        let (a, b) = (
                            row["id.orig_h"].as_str().unwrap(),
                            row["id.resp_h"].as_str().unwrap(),
                        );
                        let p = if p == 1 && a.contains(':') { 58 } else { p };
                        let k = conn_key(
                            p,
                            a,
                            row["id.orig_p"].as_u64().unwrap_or(0),
                            b,
                            row["id.resp_p"].as_u64().unwrap_or(0),
                        );
                        let t = theirs.entry(k).or_default();
                        t.0 += row["orig_pkts"].as_u64().unwrap_or(0)
                            + row["resp_pkts"].as_u64().unwrap_or(0);
                        t.1 += row["orig_ip_bytes"].as_u64().unwrap_or(0)
                            + row["resp_ip_bytes"].as_u64().unwrap_or(0);
                    }
                    for (k, (pk, by)) in &theirs {
                        let t = tally.entry("zeek conn found").or_default();
                        t.1 += 1;
                        let Some((opk, oby)) = ours.get(k) else {
                            misses.push((
                                rel.clone(),
                                format!("zeek conn {k:?}"),
                                "no record".to_string(),
                            ));
                            continue;
                        };
                        t.0 += 1;
                        let t = tally.entry("zeek conn packets equal").or_default();
                        t.1 += 1;
                        t.0 += u64::from(opk == pk);
                        let t = tally.entry("zeek conn IP bytes equal").or_default();
                        t.1 += 1;
                        t.0 += u64::from(oby == by);
                        if opk != pk || oby != by {
                            misses.push((
                                rel.clone(),
                                format!("zeek counts {k:?}"),
                                format!("zeek {pk} pkts {by} B, ours {opk} pkts {oby} B"),
                            ));
                        }
                    }
                }
                "tshark 4.0" => {
                    for key in ["vxlan_vni", "geneve_vni"] {
                        let Some(list) = facts[key].as_array() else {
                            continue;
                        };
                        for v in list {
                            let want = v
                                .as_u64()
                                .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                            let Some(want) = want else { continue };
                            let t = tally.entry("tshark VNIs seen").or_default();
                            t.1 += 1;
                            if vnis.contains(&want) {
                                t.0 += 1;
                            } else {
                                misses.push((
                                    rel.clone(),
                                    format!("{key} {want}"),
                                    format!("not in our records ({vnis:?})"),
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if rel.contains("vxlan") && rel.contains("overlap") || rel.contains("connkey") {
            let mut per_tuple: HashMap<ConnKey, BTreeSet<u64>> = HashMap::new();
            for r in &recs {
                let k = record_key(r);
                per_tuple
                    .entry(k)
                    .or_default()
                    .insert(r["vni"].as_u64().unwrap_or(0));
            }
            let split = per_tuple.values().filter(|v| v.len() > 1).count();
            println!(
                "{rel}: {split} five-tuples seen under more than one VNI, kept as separate flows"
            );
            assert!(
                split > 0,
                "{rel}: overlapping flows must stay apart per VNI"
            );
            *tally.entry("VNI-overlap captures split").or_default() = (1, 1);
        }
    }
    println!(
        "corpus: {} captures replayed, exit codes {exit_codes:?}, 0 panics",
        files.len()
    );
    for (k, (ok, all)) in &tally {
        println!(
            "  {k:<28} {ok}/{all} ({:.1}%)",
            100.0 * *ok as f64 / (*all).max(1) as f64
        );
    }
    let known: Vec<(String, String)> = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus_known_differences.txt"),
    )
    .unwrap()
    .lines()
    .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    .map(|l| {
        let mut parts = l.split(" | ");
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap_or("").to_string(),
        )
    })
    .collect();
    let mut unexplained = Vec::new();
    for (file, fact, detail) in &misses {
        let explained = known.iter().any(|(f, k)| f == file && k == fact);
        println!(
            "  {} {file}: {fact}: {detail}",
            if explained { "known" } else { "MISS " }
        );
        if !explained {
            unexplained.push(format!("{file} | {fact}"));
        }
    }
    let stale: Vec<_> = known
        .iter()
        .filter(|(f, k)| !misses.iter().any(|(mf, mk, _)| mf == f && mk == k))
        .collect();
    assert!(unexplained.is_empty(), "differences from peers not explained in tests/corpus_known_differences.txt: {unexplained:#?}");
    assert!(
        stale.is_empty(),
        "tests/corpus_known_differences.txt lists differences that no longer occur: {stale:#?}"
    );
    let share = |k: &str| {
        tally
            .get(k)
            .map(|(a, b)| *a as f64 / (*b).max(1) as f64)
            .unwrap_or(1.0)
    };
    assert!(
        tally.contains_key("VNI-overlap captures split"),
        "the VNI-overlap capture was not found"
    );
    assert!(
        share("tshark VNIs seen") >= 0.75,
        "VNIs TShark decodes must reach the records"
    );
    // Zeek connections without a record are all explained above (unexplained is empty).
    assert!(
        share("zeek conn found") >= 0.90,
        "Zeek connections without a record"
    );
    assert!(
        share("zeek conn packets equal") >= 0.90,
        "packet counts disagree with Zeek"
    );
    assert!(
        share("zeek conn IP bytes equal") >= 0.90,
        "IP byte counts disagree with Zeek"
    );
}
