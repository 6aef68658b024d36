//! Floods through `replay`: a million one-packet SYN flows, a million orphan IPv4
//! fragments, a million broken VXLAN datagrams. With `limits.max-flows` set, the tables
//! never hold more, evict the oldest flows into records (nothing lost: packets in
//! records = packets in), count it all, and finish. Each prints its tally.

mod common;

use std::path::Path;

use common::*;

/// Replays `cap` with a flow cap; returns (packets in records, stderr).
fn replay_capped(dir: &Path, cap: &Path, max_flows: usize) -> (u64, String) {
    let config = dir.join("limits.toml");
    std::fs::write(&config, format!("[limits]\nmax-flows = {max_flows}\n")).unwrap();
    let out = dir.join("records.txt");
    let o = run(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "${packets}",
        "--out",
        out.to_str().unwrap(),
        cap.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let packets = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum();
    (packets, stderr)
}

#[test]
fn syn_flood_stays_within_the_flow_cap_and_loses_nothing() {
    let dir = scratch("flood-syn");
    let cap = dir.join("syn.pcap");
    gen(&cap, &["--flood", "syn", "--packets", "1000000"]);
    let (in_records, err) = replay_capped(&dir, &cap, 50_000);
    let packets = summary(&err, "packets");
    assert_eq!(packets, 1_000_000);
    assert_eq!(in_records, packets, "every packet is in a record");
    assert!(summary(&err, "flows held (peak)") <= 50_000, "{err}");
    let evicted = summary(&err, "flows evicted");
    assert!(evicted > 900_000, "{err}");
    println!(
        "syn flood: {packets} packets in, {in_records} in records, peak {} flows held (cap 50000), {evicted} evicted, peak memory {} MiB",
        summary(&err, "flows held (peak)"),
        summary(&err, "peak memory")
    );
}

#[test]
fn fragment_flood_is_bounded_and_counted() {
    let dir = scratch("flood-frag");
    let cap = dir.join("frag.pcap");
    gen(&cap, &["--flood", "fragments", "--packets", "300000"]);
    let (in_records, err) = replay_capped(&dir, &cap, 20_000);
    assert_eq!(summary(&err, "orphan fragments"), 300_000);
    assert_eq!(
        in_records, 300_000,
        "orphan fragments are counted to flows, not dropped"
    );
    assert!(summary(&err, "flows held (peak)") <= 20_000, "{err}");
    println!(
        "fragment flood: 300000 orphan fragments, all in records, peak {} flows",
        summary(&err, "flows held (peak)")
    );
}

#[test]
fn broken_vxlan_flood_is_counted_not_recorded() {
    let dir = scratch("flood-vxlan");
    let cap = dir.join("badvxlan.pcap");
    gen(&cap, &["--flood", "bad-vxlan", "--packets", "300000"]);
    let (in_records, err) = replay_capped(&dir, &cap, 20_000);
    assert_eq!(summary(&err, "decap errors"), 300_000, "{err}");
    assert!(
        err.contains("vxlan_flags") && err.contains("vxlan_truncated"),
        "{err}"
    );
    assert_eq!(in_records, 0);
    println!("bad VXLAN flood: 300000 datagrams, 300000 decap errors by kind, 0 records");
}
