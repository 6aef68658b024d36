//! Every invalid configuration key and command-line argument gets a one-line error that
//! names the key (or option) and the offending value, and a non-zero exit.

mod common;

use common::*;

/// Runs `args` and checks: exit code, one line on stderr, and that it names `needles`.
fn check(args: &[&str], code: i32, needles: &[&str]) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line, got: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: error should name {n:?}: {err}");
    }
}

#[test]
fn invalid_configuration_keys() {
    let dir = scratch("cli-config");
    let cases: &[(&str, &[&str])] = &[
        ("[capture]\ninterval = 300\n", &["capture.interval", "300"]),
        ("[capture]\nvxlan-port = 70000\n", &["vxlan-port", "70000"]),
        (
            "[capture]\nvxlan-port = 5000\ngeneve-port = 5000\n",
            &["capture.geneve-port", "5000"],
        ),
        ("[capture]\nintervall = 60\n", &["intervall"]),
        ("[timeouts]\ntcp = 0\n", &["timeouts.tcp", "0"]),
        ("[timeouts]\nudp = -5\n", &["udp", "-5"]),
        (
            "[[session]]\nvni = 99999999\n",
            &["session[0].vni", "99999999"],
        ),
        (
            "[[session]]\nvni = 1\neni-mac = \"zz:zz\"\n",
            &["eni-mac", "zz:zz"],
        ),
        (
            "[[session]]\nvni = 1\nmirror-source = \"not-an-ip\"\n",
            &["mirror-source", "not-an-ip"],
        ),
        (
            "[[session]]\nvni = 1\n[[session]]\nvni = 1\n",
            &["session[1].vni", "1"],
        ),
        ("[serve]\nreceivers = 0\n", &["serve.receivers", "0"]),
        ("[serve]\nworkers = 5000\n", &["serve.workers", "5000"]),
        (
            "[serve]\nallow-sources = [\"10.0.0.0/33\"]\n",
            &["allow-sources", "10.0.0.0/33"],
        ),
        ("[serve]\ncontrol = \"nowhere\"\n", &["control", "nowhere"]),
        (
            "[serve]\nallow-vnis = [16777216]\n",
            &["serve.allow-vnis", "16777216"],
        ),
        ("[sink]\nkind = \"s3\"\n", &["sink.kind", "s3"]),
        ("[sink]\nencoding = \"xml\"\n", &["sink.encoding", "xml"]),
        (
            "[sink]\naccount-id = \"a/b\"\n",
            &["sink.account-id", "a/b"],
        ),
        ("[sink]\nrotate-seconds = 0\n", &["sink.rotate-seconds"]),
        ("[inspect]\nmax-bytes = 0\n", &["inspect.max-bytes", "0"]),
        ("[limits]\nmax-flows = 3\n", &["limits.max-flows", "3"]),
        (
            "[detect]\nport-scan-targets = 0\n",
            &["detect.port-scan-targets", "0"],
        ),
        (
            "[output]\nformat = \"${srcaddr} ${bogus}\"\n",
            &["output.format", "bogus"],
        ),
        ("this is not toml", &["mirrorflow.toml"]),
    ];
    for (i, (toml, needles)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}")).join("mirrorflow.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, toml).unwrap();
        let mut with_file: Vec<&str> = needles.to_vec();
        let shown = path.to_str().unwrap().to_string();
        with_file.push(&shown);
        check(&["replay", "--config", &shown, "x.pcap"], 2, &with_file);
        check(&["serve", "--config", &shown], 2, &with_file);
    }
    println!("{} invalid configurations refused by replay and serve, each in one line naming file, key and value", cases.len());
}

#[test]
fn invalid_arguments() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["replay", "--interval", "300", "x.pcap"],
            &["--interval", "300"],
        ),
        (&["replay", "--workers", "0", "x.pcap"], &["--workers", "0"]),
        (
            &["replay", "--workers", "many", "x.pcap"],
            &["--workers", "many"],
        ),
        (
            &["replay", "--output", "xml", "x.pcap"],
            &["--output", "xml"],
        ),
        (
            &["replay", "--format", "${nope}", "x.pcap"],
            &["--format", "nope"],
        ),
        (
            &["replay", "--config", "/nonexistent/m.toml", "x.pcap"],
            &["/nonexistent/m.toml"],
        ),
        (&["replay"], &["CAPTURE"]),
        (
            &["gen", "--out", "/tmp/x.pcap", "--ipv6-share", "2"],
            &["--ipv6-share", "2"],
        ),
        (
            &["gen", "--out", "/tmp/x.pcap", "--vni", "16777216"],
            &["--vni", "16777216"],
        ),
        (
            &["gen", "--out", "/tmp/x.pcap", "--truncate", "0"],
            &["--truncate", "0"],
        ),
        (
            &["gen", "--out", "/tmp/x.pcap", "--flood", "bogus"],
            &["--flood", "bogus"],
        ),
        (&["send", "x.pcap", "--to", "nowhere"], &["--to", "nowhere"]),
        (
            &[
                "send",
                "x.pcap",
                "--to",
                "127.0.0.1:4789",
                "--vni",
                "16777216",
            ],
            &["--vni", "16777216"],
        ),
        (&["serve"], &["--config"]),
        (&["frobnicate"], &["frobnicate"]),
    ];
    for (args, needles) in cases {
        check(args, 2, needles);
    }
    println!("{} invalid argument lists refused with exit 2, each in one line naming the option and value", cases.len());
}

/// An output that fails (a full disk: `/dev/full`) ends the run with one line naming the
/// failure and a non-zero exit, with one worker and two: in JSON (~4 MB of records) the
/// first write fails part way and the rest of the records are drained, so the workers
/// are never left blocked on a writer that stopped writing; in the default text format
/// (whose lines are encoded as records arrive) the last flush fails.
#[test]
fn output_that_fails_part_way() {
    if !std::path::Path::new("/dev/full").exists() {
        println!("SKIP: /dev/full not present on this system");
        return;
    }
    let dir = scratch("cli-dev-full");
    let capture = dir.join("gen.pcap");
    gen(&capture, &["--flows", "3000"]);
    let capture = capture.to_str().unwrap();
    for workers in ["1", "2"] {
        for output in ["text", "json"] {
            check(
                &[
                    "replay",
                    capture,
                    "--out",
                    "/dev/full",
                    "--output",
                    output,
                    "--workers",
                    workers,
                    "-q",
                ],
                1,
                &["writing records", "No space left on device"],
            );
        }
    }
}
