//! Query output: an aligned table for a terminal, CSV, or JSON lines.

use std::fmt::Write as _;

use super::eval::Table;
use super::value::Val;

fn cell(v: &Val, column: &str) -> String {
    // @timestamp reads better as a date; the value stays Unix seconds elsewhere.
    if column.eq_ignore_ascii_case("@timestamp") || column.eq_ignore_ascii_case("t") {
        if let Some(s) = v.as_num() {
            let s = s as u64;
            let (y, mo, d, h, mi) = crate::sink::files::civil_time(s);
            return format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{:02}", s % 60);
        }
    }
    match v {
        Val::Num(n) if n.fract() != 0.0 => format!("{n:.3}"),
        other => other.to_string(),
    }
}

pub fn table(t: &Table) -> String {
    let cells: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| r.iter().zip(&t.columns).map(|(v, c)| cell(v, c)).collect())
        .collect();
    let widths: Vec<usize> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, items: &[String]| {
        let row: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", row.join("  ").trim_end());
    };
    line(&mut out, &t.columns);
    line(
        &mut out,
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    );
    for r in &cells {
        line(&mut out, r);
    }
    let _ = writeln!(out, "({} rows)", t.rows.len());
    out
}

pub fn csv(t: &Table) -> String {
    let esc = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = t
        .columns
        .iter()
        .map(|c| esc(c))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in &t.rows {
        out.push_str(
            &r.iter()
                .map(|v| esc(&v.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

pub fn json(t: &Table) -> String {
    let mut out = String::new();
    for r in &t.rows {
        let mut m = serde_json::Map::new();
        for (c, v) in t.columns.iter().zip(r) {
            let j = match v {
                Val::Null => serde_json::Value::Null,
                Val::Num(n) => serde_json::Number::from_f64(*n)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null),
                Val::Str(s) => serde_json::Value::String(s.clone()),
            };
            m.insert(c.clone(), j);
        }
        out.push_str(&serde_json::Value::Object(m).to_string());
        out.push('\n');
    }
    out
}
