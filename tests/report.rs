//! `mirrorflow report`: every number in the page equals what `mirrorflow query` gives
//! for the query the section shows; findings by kind equal an independent count; and
//! the page renders in headless Chromium (installed by scripts/test and .ci/run) with
//! its charts and tables and no console errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// (title, query, rows of data-value cells) per section.
fn sections(html: &str) -> Vec<(String, String, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    for sec in html.split("<section>").skip(1) {
        let title = sec
            .split("<h2>")
            .nth(1)
            .and_then(|s| s.split("</h2>").next())
            .unwrap_or("")
            .to_string();
        let Some(q) = sec
            .split("<code>")
            .nth(1)
            .and_then(|s| s.split("</code>").next())
        else {
            continue;
        };
        let mut rows = Vec::new();
        for tr in sec.split("<tr>").skip(2) {
            let cells: Vec<String> = tr
                .split("data-value=\"")
                .skip(1)
                .map(|c| unescape(c.split('"').next().unwrap_or("")))
                .collect();
            if !cells.is_empty() {
                rows.push(cells);
            }
        }
        out.push((title, unescape(q), rows));
    }
    out
}

#[test]
fn report_numbers_equal_query_results_and_page_renders() {
    let dir = scratch("report");
    let cap = dir.join("r.pcap");
    gen(&cap, &["--flows", "300", "--seed", "6", "--vxlan"]);
    let json = dir.join("records.json");
    assert!(run(&[
        "replay",
        "-q",
        "--output",
        "json",
        "--out",
        json.to_str().unwrap(),
        cap.to_str().unwrap()
    ])
    .status
    .success());
    let html = dir.join("report.html");
    let o = run(&[
        "report",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("<script"),
        "self-contained, no network, no script"
    );

    let secs = sections(&page);
    let mut checked = 0;
    for (title, q, rows) in &secs {
        if title == "Findings by kind" {
            continue;
        }
        // CSV keeps the column order (values here hold no commas or quotes).
        let o = run(&["query", q, "--output", "csv", json.to_str().unwrap()]);
        assert!(o.status.success(), "{q}");
        let want: Vec<Vec<String>> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|c| c.to_string()).collect())
            .collect();
        assert_eq!(rows, &want, "section query {q}");
        checked += rows.len();
    }
    assert!(checked > 30, "{checked} numbers checked");

    // Findings by kind, counted independently from the records.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for l in std::fs::read_to_string(&json).unwrap().lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        for f in r["findings"].as_array().into_iter().flatten() {
            *kinds
                .entry(f["code"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let (_, _, frows) = secs
        .iter()
        .find(|(t, _, _)| t == "Findings by kind")
        .unwrap();
    let got: BTreeMap<String, usize> = frows
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(got, kinds, "findings by kind");
    assert!(kinds.contains_key("port-scan"));

    render_in_chromium(&html, &dir);
    println!(
        "report: {} sections, {checked} table values equal `mirrorflow query`, findings {kinds:?}",
        secs.len()
    );
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new("which")
                .arg(c)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
}

fn render_in_chromium(html: &Path, dir: &Path) {
    let Some(browser) = chromium() else {
        println!("SKIP chromium rendering: no chromium on this machine (scripts/test and .ci/run install Debian's chromium)");
        return;
    };
    let profile = dir.join("chromium-profile");
    let shot = dir.join("report.png");
    let url = format!("file://{}", html.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let user_dir = format!("--user-data-dir={}", profile.display());
    let o = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args(common)
        .arg(&user_dir)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,3000")
        .arg(&url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(shot.exists(), "chromium wrote no screenshot: {log}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
    // The rendered DOM has the charts and tables.
    let o = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args(common)
        .arg(&user_dir)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let svgs = dom.matches("<svg").count();
    let tables = dom.matches("<table").count();
    assert!(
        svgs >= 8 && tables >= 8,
        "rendered DOM: {svgs} svg, {tables} tables"
    );
    println!("chromium: screenshot {} bytes at {}, {svgs} charts and {tables} tables rendered, 0 console errors", png.len(), shot.display());
}
