//! Report: one self-contained HTML page (inline CSS and SVG, no script, no network)
//! of tables and charts over flow records. Every section is a query in the Logs
//! Insights language, run by the same engine as `mirrorflow query`, and shows its
//! query text, so each number on the page can be reproduced on the command line.

use std::fmt::Write as _;

use crate::query::eval::{self, Table};
use crate::query::parse;
use crate::query::value::{Row, Val};

/// Rows per ranking.
pub const TOP: usize = 10;

/// The page's sections: title, query, and how to chart it.
pub const SECTIONS: &[(&str, &str, Chart)] = &[
    ("Traffic over time", "stats sum(bytes) as bytes, sum(packets) as packets by bin(5m) as t | sort t", Chart::Time),
    ("Top talkers by bytes", "stats sum(bytes) as bytes by srcAddr, dstAddr | sort bytes desc | limit 10", Chart::Bars),
    (
        "Top rejected or failed sources",
        "filter action = \"REJECT\" or `conn-state` in [\"S0\", \"REJ\", \"RSTOS0\", \"SH\"] | stats count(*) as records by srcAddr | sort records desc | limit 10",
        Chart::Bars,
    ),
    ("Top destination ports", "filter ispresent(dstPort) | stats sum(bytes) as bytes, count(*) as records by dstPort, protocol | sort bytes desc | limit 10", Chart::Bars),
    ("Protocols", "filter ispresent(protocol) | stats sum(bytes) as bytes, count(*) as records by protocol | sort bytes desc | limit 10", Chart::Bars),
    ("Application protocols", "filter ispresent(`app-protocol`) | stats sum(bytes) as bytes, count(*) as records by `app-protocol` | sort bytes desc | limit 10", Chart::Bars),
    ("Top TLS server names", "filter ispresent(`tls-sni`) | stats count(*) as records by `tls-sni` | sort records desc | limit 10", Chart::Bars),
    ("Top DNS names", "filter ispresent(`dns-query`) | stats count(*) as records by `dns-query` | sort records desc | limit 10", Chart::Bars),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chart {
    Time,
    Bars,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_num(v: &Val) -> String {
    match v.as_num() {
        Some(n) if n.fract() == 0.0 => {
            let s = format!("{}", n as i64);
            // Thousands separators read better in a report.
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 && c != '-' && !out.ends_with('-') {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Some(n) => format!("{n:.2}"),
        None => v.to_string(),
    }
}

fn table_html(t: &Table, out: &mut String) {
    out.push_str("<table><thead><tr>");
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for r in &t.rows {
        out.push_str("<tr>");
        for (c, v) in t.columns.iter().zip(r) {
            let text = if c == "t" {
                v.as_num()
                    .map(|s| {
                        let (y, mo, d, h, mi) = crate::sink::files::civil_time(s as u64);
                        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
                    })
                    .unwrap_or_default()
            } else if v.as_num().is_some() && !matches!(c.as_str(), "dstPort" | "protocol") {
                fmt_num(v)
            } else {
                v.to_string()
            };
            let _ = write!(
                out,
                "<td data-value=\"{}\">{}</td>",
                esc(&v.to_string()),
                esc(&text)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// Horizontal bars of the first numeric column after the keys.
fn bars_svg(t: &Table, out: &mut String) {
    let Some(vi) = t
        .columns
        .iter()
        .position(|c| matches!(c.as_str(), "bytes" | "records"))
    else {
        return;
    };
    let keys: Vec<usize> = (0..vi).collect();
    let max = t
        .rows
        .iter()
        .filter_map(|r| r[vi].as_num())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let h = 24 * t.rows.len() + 8;
    let _ = write!(out, "<svg class=\"chart\" width=\"760\" height=\"{h}\" viewBox=\"0 0 760 {h}\" role=\"img\" aria-label=\"{}\">", esc(&t.columns[vi]));
    for (i, r) in t.rows.iter().enumerate() {
        let label: Vec<String> = keys.iter().map(|k| r[*k].to_string()).collect();
        let v = r[vi].as_num().unwrap_or(0.0);
        let w = (v / max * 420.0).max(1.0);
        let y = 4 + i * 24;
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" class=\"lbl\">{}</text><rect x=\"250\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" class=\"bar\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{}\" class=\"val\">{}</text>",
            y + 14,
            esc(&truncate(&label.join(" → "), 38)),
            esc(&fmt_num(&r[vi])),
            256.0 + w,
            y + 14,
            esc(&fmt_num(&r[vi]))
        );
    }
    out.push_str("</svg>");
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Columns of bytes per time bin.
fn time_svg(t: &Table, out: &mut String) {
    let (Some(ti), Some(bi)) = (
        t.columns.iter().position(|c| c == "t"),
        t.columns.iter().position(|c| c == "bytes"),
    ) else {
        return;
    };
    let n = t.rows.len().max(1);
    let max = t
        .rows
        .iter()
        .filter_map(|r| r[bi].as_num())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (w, h) = (760.0, 220.0);
    let bw = ((w - 60.0) / n as f64).max(1.0);
    let _ = write!(out, "<svg class=\"chart\" width=\"760\" height=\"250\" viewBox=\"0 0 760 250\" role=\"img\" aria-label=\"bytes over time\">");
    let _ = write!(out, "<line x1=\"50\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" class=\"axis\"/><text x=\"0\" y=\"14\" class=\"lbl\">{}</text>", esc(&fmt_num(&Val::Num(max))));
    for (i, r) in t.rows.iter().enumerate() {
        let v = r[bi].as_num().unwrap_or(0.0);
        let bh = (v / max * (h - 20.0)).max(1.0);
        let x = 50.0 + i as f64 * bw;
        let when = r[ti]
            .as_num()
            .map(|s| {
                let (_, _, _, hh, mm) = crate::sink::files::civil_time(s as u64);
                format!("{hh:02}:{mm:02}")
            })
            .unwrap_or_default();
        let _ = write!(out, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" class=\"bar\"><title>{when}: {} bytes</title></rect>", h - bh, (bw - 2.0).max(1.0), esc(&fmt_num(&r[bi])));
        if n <= 24 || i % (n / 12).max(1) == 0 {
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" class=\"tick\">{when}</text>",
                h + 16.0
            );
        }
    }
    out.push_str("</svg>");
}

/// Findings by code: findings are lists, which the query language does not unnest, so
/// they are counted here, record by record.
pub fn findings_by_kind(rows: &[Row]) -> Table {
    let mut counts: std::collections::BTreeMap<String, f64> = Default::default();
    for r in rows {
        let text = r.get("findings").to_string();
        if text.is_empty() {
            continue;
        }
        if let Ok(serde_json::Value::Array(items)) =
            serde_json::from_str::<serde_json::Value>(&text)
        {
            for f in items {
                if let Some(code) = f["code"].as_str() {
                    *counts.entry(code.to_string()).or_default() += 1.0;
                }
            }
        } else {
            // Text records: `code=detail;code=detail`.
            for part in text.split(';') {
                let code = part.split('=').next().unwrap_or("").to_string();
                if !code.is_empty() {
                    *counts.entry(code).or_default() += 1.0;
                }
            }
        }
    }
    let mut rows: Vec<(String, f64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    Table {
        columns: vec!["finding".into(), "records".into()],
        rows: rows
            .into_iter()
            .map(|(c, n)| vec![Val::Str(c), Val::Num(n)])
            .collect(),
    }
}

/// Builds the page from the events of the inputs.
pub fn render(rows: Vec<Row>, inputs: &str) -> Result<String, String> {
    let mut out = String::with_capacity(64 * 1024);
    let total = rows.len();
    out.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mirrorflow report</title><style>");
    out.push_str("body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2733;background:#fff}h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #d5dbe3}");
    out.push_str("table{border-collapse:collapse;margin:8px 0}th,td{padding:3px 10px;border-bottom:1px solid #eef1f5;text-align:left}td[data-value]{font-variant-numeric:tabular-nums}");
    out.push_str("code{background:#f3f5f8;padding:2px 4px;font-size:12px}.chart{display:block;margin:8px 0}.bar{fill:#2f6fb0}.lbl,.val,.tick{font-size:11px;fill:#1d2733}.axis{stroke:#8b97a6}section{max-width:980px}");
    out.push_str("</style></head><body>");
    let _ = write!(out, "<h1>mirrorflow report</h1><p>{total} records from <code>{}</code>. Each section shows the query that computes it; <code>mirrorflow query '&lt;query&gt;' INPUT...</code> gives the same numbers.</p>", esc(inputs));
    for (title, q, chart) in SECTIONS {
        let commands = parse::parse(q)?;
        let t = eval::run(&commands, rows.clone())?;
        let _ = write!(
            out,
            "<section><h2>{}</h2><p><code>{}</code></p>",
            esc(title),
            esc(q)
        );
        if t.rows.is_empty() {
            out.push_str("<p>No records.</p></section>");
            continue;
        }
        match chart {
            Chart::Time => time_svg(&t, &mut out),
            Chart::Bars => bars_svg(&t, &mut out),
        }
        table_html(&t, &mut out);
        out.push_str("</section>");
    }
    let f = findings_by_kind(&rows);
    out.push_str("<section><h2>Findings by kind</h2><p>Counted per record from the <code>findings</code> field.</p>");
    if f.rows.is_empty() {
        out.push_str("<p>No findings.</p>");
    } else {
        let bars = Table {
            columns: f.columns.clone(),
            rows: f.rows.iter().take(TOP).cloned().collect(),
        };
        bars_svg(&bars, &mut out);
        table_html(&f, &mut out);
    }
    out.push_str("</section></body></html>\n");
    Ok(out)
}
