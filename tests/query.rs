//! `mirrorflow query` against answers computed independently here: on an AWS-format
//! flow log the test writes itself (header line, gzip, S3 directory layout, REJECT
//! records), with the queries the issue and AWS's documentation give verbatim; and on
//! mirrorflow's own records of a generated capture.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use common::*;
use serde_json::Value;

struct Rec {
    src: String,
    dst: String,
    sport: u64,
    dport: u64,
    proto: u64,
    packets: u64,
    bytes: u64,
    start: u64,
    action: &'static str,
    status: &'static str,
}

/// Deterministic AWS flow-log records.
fn records() -> Vec<Rec> {
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let srcs = [
        "10.0.1.10",
        "10.0.1.11",
        "192.0.2.7",
        "192.0.2.9",
        "203.0.113.5",
        "198.51.100.23",
    ];
    let dsts = ["10.0.2.20", "10.0.2.21", "10.0.1.10", "8.8.8.8"];
    (0..600)
        .map(|i| {
            let r = next();
            let skip = i % 97 == 0;
            Rec {
                src: srcs[(r % 6) as usize].into(),
                dst: dsts[((r >> 8) % 4) as usize].into(),
                sport: 1024 + (r >> 16) % 60000,
                dport: [22, 53, 443, 3389, 80][((r >> 32) % 5) as usize],
                proto: if (r >> 40) % 4 == 0 { 17 } else { 6 },
                packets: 1 + (r >> 44) % 50,
                bytes: 40 + (r >> 20) % 100_000,
                start: 1_700_000_000 + (i as u64) * 37,
                action: if (r >> 50) % 3 == 0 {
                    "REJECT"
                } else {
                    "ACCEPT"
                },
                status: if skip { "SKIPDATA" } else { "OK" },
            }
        })
        .collect()
}

fn aws_line(r: &Rec) -> String {
    if r.status == "SKIPDATA" {
        return format!(
            "2 123456789012 eni-0a1b2c3d4e5f67890 - - - - - - - {} {} - SKIPDATA",
            r.start,
            r.start + 59
        );
    }
    format!(
        "2 123456789012 eni-0a1b2c3d4e5f67890 {} {} {} {} {} {} {} {} {} {} OK",
        r.src,
        r.dst,
        r.sport,
        r.dport,
        r.proto,
        r.packets,
        r.bytes,
        r.start,
        r.start + 59,
        r.action
    )
}

/// Writes the records as AWS delivers them: S3 layout, gzip, header line; plus one
/// headerless plain file.
fn write_inputs(dir: &Path, recs: &[Rec]) {
    let d = dir.join("AWSLogs/123456789012/vpcflowlogs/eu-central-1/2023/11/14");
    std::fs::create_dir_all(&d).unwrap();
    let (a, b) = recs.split_at(recs.len() / 2);
    let f = std::fs::File::create(
        d.join("123456789012_vpcflowlogs_eu-central-1_fl-0abc_20231114T2210Z_1a2b3c4d.log.gz"),
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    writeln!(gz, "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status").unwrap();
    for r in a {
        writeln!(gz, "{}", aws_line(r)).unwrap();
    }
    gz.finish().unwrap();
    let mut plain = std::fs::File::create(d.join("plain.log")).unwrap();
    for r in b {
        writeln!(plain, "{}", aws_line(r)).unwrap();
    }
}

fn query(q: &str, inputs: &[&Path]) -> Vec<Value> {
    let mut args = vec!["query", q, "--output", "json"];
    let paths: Vec<String> = inputs
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    args.extend(paths.iter().map(|s| s.as_str()));
    let o = run(&args);
    assert!(
        o.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks a `sort desc | limit n` result against expected totals: the values are the n
/// largest, in order, and each key carries its true total (ties may order either way).
fn check_top(
    got: &[Value],
    expected: &HashMap<String, f64>,
    key: impl Fn(&Value) -> String,
    value: &str,
    n: usize,
) {
    let mut want: Vec<f64> = expected.values().copied().collect();
    want.sort_by(|a, b| b.partial_cmp(a).unwrap());
    want.truncate(n);
    let got_vals: Vec<f64> = got.iter().map(|r| r[value].as_f64().unwrap()).collect();
    assert_eq!(got_vals, want, "{value}");
    for r in got {
        assert_eq!(
            expected.get(&key(r)).copied(),
            r[value].as_f64(),
            "{}",
            key(r)
        );
    }
}

#[test]
fn issue_and_aws_sample_queries_give_independent_answers() {
    let dir = scratch("query-aws");
    let recs = records();
    write_inputs(&dir, &recs);
    let input = dir.join("AWSLogs");
    let ok = |r: &&Rec| r.status == "OK";

    // filter action="REJECT" | stats count(*) as numRejections by srcAddr | sort numRejections desc | limit 10
    let mut rejects: HashMap<String, f64> = HashMap::new();
    for r in recs.iter().filter(ok).filter(|r| r.action == "REJECT") {
        *rejects.entry(r.src.clone()).or_default() += 1.0;
    }
    let got = query("filter action=\"REJECT\" | stats count(*) as numRejections by srcAddr | sort numRejections desc | limit 10", &[&input]);
    check_top(
        &got,
        &rejects,
        |r| r["srcAddr"].as_str().unwrap().into(),
        "numRejections",
        10,
    );

    // stats sum(bytes) as totalBytes by srcAddr, dstAddr | sort totalBytes desc | limit 10
    let mut bytes: HashMap<String, f64> = HashMap::new();
    for r in recs.iter().filter(ok) {
        *bytes.entry(format!("{} {}", r.src, r.dst)).or_default() += r.bytes as f64;
    }
    let pair = |r: &Value| {
        format!(
            "{} {}",
            r["srcAddr"].as_str().unwrap(),
            r["dstAddr"].as_str().unwrap()
        )
    };
    let got = query(
        "stats sum(bytes) as totalBytes by srcAddr, dstAddr | sort totalBytes desc | limit 10",
        &[&input],
    );
    check_top(&got, &bytes, pair, "totalBytes", 10);

    // The same through parse @message, as AWS's Knowledge Center does for custom formats.
    let got = query("parse @message \"* * * * * * * * * * * * * *\" as version, accountId, interfaceId, srcAddr, dstAddr, srcPort, dstPort, protocol, packets, bytes, start, end, action, logStatus | stats sum(bytes) as totalBytes by srcAddr, dstAddr | sort totalBytes desc | limit 10", &[&input]);
    check_top(&got, &bytes, pair, "totalBytes", 10);

    // fields @timestamp, @message | filter action = "REJECT" | filter srcAddr = ... and dstAddr = ... | sort @timestamp desc | limit 20
    let mut want: Vec<u64> = recs
        .iter()
        .filter(ok)
        .filter(|r| r.action == "REJECT" && r.src == "10.0.1.10" && r.dst == "10.0.2.20")
        .map(|r| r.start)
        .collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    want.truncate(20);
    let got = query("fields @timestamp, @message | filter action = \"REJECT\" | filter srcAddr = \"10.0.1.10\" and dstAddr = \"10.0.2.20\" | sort @timestamp desc | limit 20", &[&input]);
    assert!(!want.is_empty());
    assert_eq!(
        got.iter()
            .map(|r| r["@timestamp"].as_f64().unwrap() as u64)
            .collect::<Vec<_>>(),
        want
    );
    assert!(got
        .iter()
        .all(|r| r["@message"].as_str().unwrap().contains("REJECT")));

    // stats avg(bytes), min(bytes), max(bytes) by srcAddr, dstAddr
    let got = query(
        "stats avg(bytes), min(bytes), max(bytes) by srcAddr, dstAddr",
        &[&input],
    );
    assert_eq!(got.len(), bytes.len());
    for g in &got {
        let sel: Vec<f64> = recs
            .iter()
            .filter(ok)
            .filter(|r| format!("{} {}", r.src, r.dst) == pair(g))
            .map(|r| r.bytes as f64)
            .collect();
        let avg = sel.iter().sum::<f64>() / sel.len() as f64;
        assert!((g["avg(bytes)"].as_f64().unwrap() - avg).abs() < 1e-6);
        assert_eq!(
            g["min(bytes)"].as_f64().unwrap(),
            sel.iter().cloned().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            g["max(bytes)"].as_f64().unwrap(),
            sel.iter().cloned().fold(0.0, f64::max)
        );
    }

    // filter protocol=17 | stats count(*) by srcAddr
    let mut udp: HashMap<String, f64> = HashMap::new();
    for r in recs.iter().filter(ok).filter(|r| r.proto == 17) {
        *udp.entry(r.src.clone()).or_default() += 1.0;
    }
    let got = query("filter protocol=17 | stats count(*) by srcAddr", &[&input]);
    assert_eq!(got.len(), udp.len());
    for g in &got {
        assert_eq!(
            udp[g["srcAddr"].as_str().unwrap()],
            g["count(*)"].as_f64().unwrap()
        );
    }

    // stats sum(packets) as packetsTransferred by srcAddr, dstAddr | sort packetsTransferred desc | limit 15
    let mut pk: HashMap<String, f64> = HashMap::new();
    for r in recs.iter().filter(ok) {
        *pk.entry(format!("{} {}", r.src, r.dst)).or_default() += r.packets as f64;
    }
    let got = query("stats sum(packets) as packetsTransferred by srcAddr, dstAddr\n    | sort packetsTransferred  desc\n    | limit 15", &[&input]);
    check_top(&got, &pk, pair, "packetsTransferred", 15);

    // filter isIpv4InSubnet(srcAddr, "192.0.2.0/24") | stats sum(bytes) as bytesTransferred by dstAddr | sort ... | limit 15
    let mut sub: HashMap<String, f64> = HashMap::new();
    for r in recs
        .iter()
        .filter(ok)
        .filter(|r| r.src.starts_with("192.0.2."))
    {
        *sub.entry(r.dst.clone()).or_default() += r.bytes as f64;
    }
    for f in ["isIpv4InSubnet", "isIpInSubnet"] {
        let got = query(&format!("filter {f}(srcAddr, \"192.0.2.0/24\")\n    | stats sum(bytes) as bytesTransferred by dstAddr\n    | sort bytesTransferred desc\n    | limit 15"), &[&input]);
        check_top(
            &got,
            &sub,
            |r| r["dstAddr"].as_str().unwrap().into(),
            "bytesTransferred",
            15,
        );
    }

    // filter logStatus="SKIPDATA" | stats count(*) by bin(1h) as t | sort t
    let mut skip: HashMap<u64, f64> = HashMap::new();
    for r in recs.iter().filter(|r| r.status == "SKIPDATA") {
        *skip.entry(r.start - r.start % 3600).or_default() += 1.0;
    }
    let got = query(
        "filter logStatus=\"SKIPDATA\"\n    | stats count(*) by bin(1h) as t\n    | sort t",
        &[&input],
    );
    let mut want: Vec<(u64, f64)> = skip.into_iter().collect();
    want.sort_unstable_by_key(|x| x.0);
    assert_eq!(
        got.iter()
            .map(|g| (
                g["t"].as_f64().unwrap() as u64,
                g["count(*)"].as_f64().unwrap()
            ))
            .collect::<Vec<_>>(),
        want
    );

    // NAT-gateway style: like on addresses, not like.
    let got = query("filter (dstAddr like '10.0.2.' and srcAddr not like '10.0.1.') | stats sum(bytes) as bytesTransferred by srcAddr, dstAddr | sort bytesTransferred desc | limit 10", &[&input]);
    let mut nat: HashMap<String, f64> = HashMap::new();
    for r in recs
        .iter()
        .filter(ok)
        .filter(|r| r.dst.contains("10.0.2.") && !r.src.contains("10.0.1."))
    {
        *nat.entry(format!("{} {}", r.src, r.dst)).or_default() += r.bytes as f64;
    }
    check_top(&got, &nat, pair, "bytesTransferred", 10);

    // Regex like, in, ispresent, dedup, count_distinct.
    let got = query("filter action=\"REJECT\" and srcAddr like /^10\\./ | stats count(*) as numRejections by srcAddr | sort numRejections desc", &[&input]);
    let tens: HashMap<String, f64> = rejects
        .iter()
        .filter(|(k, _)| k.starts_with("10."))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    check_top(
        &got,
        &tens,
        |r| r["srcAddr"].as_str().unwrap().into(),
        "numRejections",
        10,
    );
    let got = query(
        "filter dstPort in [22, 3389] | stats count(*) as n",
        &[&input],
    );
    assert_eq!(
        got[0]["n"].as_f64().unwrap(),
        recs.iter()
            .filter(ok)
            .filter(|r| r.dport == 22 || r.dport == 3389)
            .count() as f64
    );
    let got = query(
        "filter not ispresent(srcAddr) | stats count(*) as n",
        &[&input],
    );
    assert_eq!(
        got[0]["n"].as_f64().unwrap(),
        recs.iter().filter(|r| r.status != "OK").count() as f64
    );
    let got = query(
        "stats count_distinct(dstPort) as ports by srcAddr",
        &[&input],
    );
    for g in &got {
        let mut ports: Vec<u64> = recs
            .iter()
            .filter(ok)
            .filter(|r| r.src == g["srcAddr"].as_str().unwrap())
            .map(|r| r.dport)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(g["ports"].as_f64().unwrap(), ports.len() as f64);
    }
    let got = query("fields @timestamp, srcAddr | filter ispresent(srcAddr) | sort @timestamp desc | dedup srcAddr", &[&input]);
    assert_eq!(got.len(), 6, "one row per source");
    println!("query: 14 queries on {} AWS-format records (gzip + header, plain headerless, S3 layout) match independent answers", recs.len());
}

#[test]
fn queries_over_mirrorflow_records() {
    let dir = scratch("query-mf");
    let cap = dir.join("q.pcap");
    gen(&cap, &["--flows", "150", "--seed", "21", "--vxlan"]);
    let json = dir.join("records.json");
    let o = run(&[
        "replay",
        "-q",
        "--output",
        "json",
        "--out",
        json.to_str().unwrap(),
        cap.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let recs: Vec<Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_src: HashMap<String, f64> = HashMap::new();
    for r in &recs {
        *by_src
            .entry(r["srcaddr"].as_str().unwrap().into())
            .or_default() += r["bytes"].as_f64().unwrap();
    }
    let got = query(
        "stats sum(bytes) as totalBytes by srcAddr | sort totalBytes desc | limit 5",
        &[&json],
    );
    check_top(
        &got,
        &by_src,
        |r| r["srcAddr"].as_str().unwrap().into(),
        "totalBytes",
        5,
    );
    // Enrichment fields by their hyphenated names in backticks.
    let mut snis: HashMap<String, f64> = HashMap::new();
    for r in recs.iter().filter(|r| r.get("tls-sni").is_some()) {
        *snis
            .entry(r["tls-sni"].as_str().unwrap().into())
            .or_default() += 1.0;
    }
    let got = query(
        "filter ispresent(`tls-sni`) | stats count(*) as n by `tls-sni` | sort n desc | limit 20",
        &[&json],
    );
    check_top(
        &got,
        &snis,
        |r| r["tls-sni"].as_str().unwrap().into(),
        "n",
        20,
    );
    // Text records (AWS default format, no header) read back as well.
    let txt = dir.join("records.log");
    let o = run(&[
        "replay",
        "-q",
        "--out",
        txt.to_str().unwrap(),
        cap.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let got = query(
        "stats sum(bytes) as totalBytes by srcAddr | sort totalBytes desc | limit 5",
        &[&txt],
    );
    check_top(
        &got,
        &by_src,
        |r| r["srcAddr"].as_str().unwrap().into(),
        "totalBytes",
        5,
    );
}

#[test]
fn query_errors_are_one_line() {
    for (q, needle) in [
        ("filter bytes >", "end of the query"),
        ("frobnicate", "frobnicate"),
        ("stats bytes by srcAddr", "aggregate"),
    ] {
        let o = run(&["query", q, "/dev/null"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{q}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
}
