//! Payload facts against peers on `../shared/corpus`: for each fact kind (TLS SNI, HTTP
//! Host, DNS query name, SSH banner, JA3, JA4, QUIC SNI) the share of the facts Zeek,
//! nDPI, Arkime and TShark recorded that appear in mirrorflow's records of the same
//! capture. SNI, Host, DNS names and SSH banners must reach 98%. Misses that are a
//! peer's quirk are listed with a reason in `tests/corpus_fact_misses.txt`; the test
//! fails on a listed miss that no longer occurs. Skips, saying so, without ../shared.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use common::*;
use serde_json::Value;

/// A fact kind: its name, the (peer, facts key) pairs that give it, and our fields.
type Kind = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// Peer fact keys per kind: (peer, key in facts).
const KINDS: &[Kind] = &[
    (
        "sni",
        &[
            ("nDPI", "tls_sni"),
            ("Zeek", "ssl_server_names"),
            ("tshark 4.0", "tls_sni"),
        ],
        &["tls-sni"],
    ),
    (
        "http-host",
        &[
            ("nDPI", "http_hosts"),
            ("Zeek", "http_hosts"),
            ("tshark 4.0", "http_hosts"),
        ],
        &["http-host"],
    ),
    (
        "dns-name",
        &[
            ("nDPI", "dns_queries"),
            ("Zeek", "dns_queries"),
            ("tshark 4.0", "dns_query_names"),
            ("Arkime", "dns_query"),
        ],
        &["dns-query", "dns-queries"],
    ),
    (
        "ssh-banner",
        &[
            ("nDPI", "ssh_client_banners"),
            ("nDPI", "ssh_server_banners"),
            ("Zeek", "ssh_client_banners"),
            ("Zeek", "ssh_server_banners"),
            ("tshark 4.0", "ssh_banners"),
        ],
        &["ssh-client", "ssh-server"],
    ),
    (
        "ja3",
        &[("nDPI", "ja3c"), ("tshark 4.0", "ja3"), ("Arkime", "ja3")],
        &["tls-ja3"],
    ),
    ("ja4", &[("nDPI", "ja4"), ("Arkime", "ja4")], &["tls-ja4"]),
    (
        "quic-sni",
        &[
            ("nDPI", "quic_sni"),
            ("Zeek", "quic_server_names"),
            ("tshark 4.0", "quic_sni"),
        ],
        &["tls-sni"],
    ),
];

/// Kinds held to 98%.
const STRICT: &[&str] = &["sni", "http-host", "dns-name", "ssh-banner"];

fn norm(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Our values for a capture, per record field, normalised.
fn our_values(capture: &Path) -> HashMap<&'static str, HashSet<String>> {
    let (code, recs, err) = replay_json(&[capture], &[]);
    assert!(code == 0 || code == 3, "{}: {err}", capture.display());
    let mut out: HashMap<&'static str, HashSet<String>> = HashMap::new();
    for r in &recs {
        if let Some(list) = r.get("dns-queries").and_then(|v| v.as_array()) {
            let set = out.entry("dns-queries").or_default();
            set.extend(list.iter().filter_map(|v| v.as_str()).map(norm));
        }
        for field in [
            "tls-sni",
            "http-host",
            "dns-query",
            "ssh-client",
            "ssh-server",
            "tls-ja3",
            "tls-ja4",
        ] {
            if let Some(v) = r.get(field).and_then(|v| v.as_str()) {
                let set = out.entry(field).or_default();
                set.insert(norm(v));
                if field == "http-host" {
                    // Peers differ on whether Host keeps its port.
                    set.insert(norm(
                        v.rsplit_once(':')
                            .filter(|(_, p)| p.parse::<u16>().is_ok())
                            .map(|(h, _)| h)
                            .unwrap_or(v),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn payload_facts_agree_with_peers() {
    let Some(shared) = shared_dir() else {
        println!("SKIP corpus facts test: ../shared/corpus/EXPECTED.jsonl not found beside the repository");
        return;
    };
    let corpus = shared.join("corpus");
    let quirks_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus_fact_misses.txt");
    let quirks: Vec<(String, String, String)> = std::fs::read_to_string(&quirks_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut p = l.split(" | ");
            (
                p.next().unwrap_or("").into(),
                p.next().unwrap_or("").into(),
                p.next().unwrap_or("").into(),
            )
        })
        .collect();
    let mut by_file: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(corpus.join("EXPECTED.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        by_file
            .entry(v["file"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    // kind -> (found, expected, quirk)
    let mut tally: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut seen_quirks = HashSet::new();
    for (file, peers) in &by_file {
        let ours = our_values(&corpus.join(file));
        for (kind, sources, fields) in KINDS {
            let mut expected: HashSet<String> = HashSet::new();
            for (peer, key) in *sources {
                for p in peers.iter().filter(|p| p["peer"] == *peer) {
                    for v in p["facts"][*key].as_array().into_iter().flatten() {
                        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                            expected.insert(norm(s));
                        }
                    }
                }
            }
            for want in expected {
                let found = fields
                    .iter()
                    .any(|f| ours.get(f).is_some_and(|s| s.contains(&want)));
                let t = tally.entry(kind).or_default();
                t.1 += 1;
                if found {
                    t.0 += 1;
                } else if let Some(q) = quirks
                    .iter()
                    .position(|(f, k, v)| f == file && k == kind && *v == want)
                {
                    t.2 += 1;
                    seen_quirks.insert(q);
                } else {
                    misses.push(format!("{file} | {kind} | {want}"));
                }
            }
        }
    }
    for (kind, (found, expected, quirk)) in &tally {
        let judged = expected - quirk;
        println!(
            "{kind:<11} {found}/{judged} ({:.1}%), {quirk} peer quirks listed",
            100.0 * *found as f64 / judged.max(1) as f64
        );
    }
    for m in &misses {
        println!("  miss: {m}");
    }
    let stale: Vec<_> = quirks
        .iter()
        .enumerate()
        .filter(|(i, _)| !seen_quirks.contains(i))
        .map(|(_, q)| q)
        .collect();
    assert!(
        stale.is_empty(),
        "tests/corpus_fact_misses.txt lists misses that no longer occur: {stale:#?}"
    );
    for kind in STRICT {
        let (found, expected, quirk) = tally.get(kind).copied().unwrap_or_default();
        let share = found as f64 / (expected - quirk).max(1) as f64;
        assert!(
            share >= 0.98,
            "{kind}: {found} of {} peer facts found ({:.1}%), below 98%",
            expected - quirk,
            share * 100.0
        );
    }
}
