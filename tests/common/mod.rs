//! Helpers shared by the end-to-end tests: run the real binary, read its JSON records.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mirrorflow")
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mirrorflow-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run mirrorflow")
}

pub fn gen(out: &Path, extra: &[&str]) {
    let mut args = vec!["gen", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(
        o.status.success(),
        "gen failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Replays `captures` as JSON lines; returns (exit code, records, stderr).
pub fn replay_json(captures: &[&Path], extra: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let mut args: Vec<String> = vec![
        "replay".into(),
        "--output".into(),
        "json".into(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(captures.iter().map(|p| p.to_str().unwrap().to_string()));
    let o = Command::new(bin())
        .args(&args)
        .output()
        .expect("run mirrorflow");
    let stdout = String::from_utf8(o.stdout).expect("records are UTF-8");
    let recs = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    (
        o.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `../shared` beside the repository, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    d.join("corpus/EXPECTED.jsonl").exists().then_some(d)
}

/// A number from a run summary on stderr (`  packets     1234 ...`), if present.
pub fn summary_value(stderr: &str, label: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.trim_start()[label.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A number from a run summary; panics, showing the summary, when it is missing.
pub fn summary(stderr: &str, label: &str) -> u64 {
    summary_value(stderr, label).unwrap_or_else(|| panic!("no '{label}' in summary: {stderr}"))
}

/// A bundled sample capture from `pcaps/`.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pcaps")
        .join(name)
}
