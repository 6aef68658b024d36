//! `mirrorflow bench`: the command runs end to end and reports every figure it
//! promises. No timing is asserted (timings belong to the report, not to tests); the
//! counts it reports must match the capture.

mod common;

use common::{run, sample};

#[test]
fn bench_reports_baselines_and_pipeline_rows() {
    let capture = sample("mirror-vxlan.pcap");
    let o = run(&[
        "bench",
        capture.to_str().unwrap(),
        "--workers",
        "1,2",
        "--runs",
        "1",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("{out}");
    assert!(out.contains(": 1591 packets"), "{out}");
    assert!(out.contains("baseline walk (touch headers)"));
    assert!(out.contains("decap + parse (one thread)"));
    for mode in ["flows", "full"] {
        for w in ["1", "2"] {
            let row = out
                .lines()
                .find(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.first() == Some(&mode) && f.get(1) == Some(&w)
                })
                .unwrap_or_else(|| panic!("no {mode} row for {w} workers in {out}"));
            // The flows column: every flow of the capture made it through.
            assert!(row.split_whitespace().any(|x| x == "83"), "{row}");
        }
    }
}

#[test]
fn bench_serve_accounts_for_what_was_sent() {
    let capture = sample("mirror-vxlan.pcap");
    let o = run(&["bench", capture.to_str().unwrap(), "--serve", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("{out}");
    // Both phases sent the capture twice; what each received is reported against it.
    assert!(out.contains("of 3182 datagrams"), "{out}");
    assert!(out.contains("serve / bare loop:"));
    // Received of sent, and how busy the receiving core was, for both phases.
    assert!(out.contains("received of sent: serve "), "{out}");
    assert!(
        out.contains("receiving core busy while send ran: serve "),
        "{out}"
    );
    assert!(out.contains(" us/datagram (all threads)"), "{out}");
}
