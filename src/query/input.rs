//! Query inputs: mirrorflow's JSON lines and text records, and real AWS VPC Flow Logs as
//! delivered to S3 (text with a header line of field names, any custom field order,
//! plain or gzip), files or whole directories in the `AWSLogs/...` layout.
//!
//! Every event gets `@message` (the raw line) and `@timestamp` (the record's `start`,
//! as Logs Insights sets it for flow logs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::value::{Row, Val};
use crate::record::fields::DEFAULT_FORMAT;

/// Files found under `path` (itself, or recursively for a directory), sorted.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .flatten()
        {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue; // hidden files include mirrorflow's .partial outputs
            }
            if p.is_dir() {
                stack.push(p);
            } else if [".log", ".log.gz", ".gz", ".json", ".jsonl", ".txt"]
                .iter()
                .any(|x| name.ends_with(x))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = BufReader::new(f);
    let gz = r
        .fill_buf()
        .map(|b| b.starts_with(&[0x1f, 0x8b]))
        .unwrap_or(false);
    Ok(if gz {
        Box::new(BufReader::new(MultiGzDecoder::new(r)))
    } else {
        Box::new(r)
    })
}

fn is_field_name(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
        && t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

/// Reads every event of one file into `rows`. Errors name the file and line.
pub fn read_file(path: &Path, rows: &mut Vec<Row>) -> Result<(), String> {
    let mut magic = [0u8; 4];
    let is_parquet = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map(|_| &magic == b"PAR1")
        .unwrap_or(false);
    if is_parquet {
        for cols in crate::record::parquet::read_rows(path)? {
            let mut row = Row::default();
            let mut message = Vec::with_capacity(cols.len());
            for (name, v) in cols {
                message.push(if v.is_null() {
                    "-".to_string()
                } else {
                    v.to_string()
                });
                row.set(&name, v);
            }
            row.set("@message", Val::Str(message.join(" ")));
            let ts = row.get("start").clone();
            row.set("@timestamp", ts);
            row.set("@log", Val::Str(path.display().to_string()));
            rows.push(row);
        }
        return Ok(());
    }
    let mut reader = open(path)?;
    let mut header: Option<Vec<String>> = None;
    let mut text = String::new();
    let mut line_no = 0usize;
    loop {
        text.clear();
        let n = reader
            .read_line(&mut text)
            .map_err(|e| format!("{}: line {}: {e}", path.display(), line_no + 1))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let mut row = Row::default();
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{}: line {line_no}: not JSON: {e}", path.display()))?;
            let serde_json::Value::Object(map) = v else {
                continue;
            };
            for (k, v) in map {
                let val = match v {
                    serde_json::Value::Number(n) => Val::Num(n.as_f64().unwrap_or(0.0)),
                    serde_json::Value::String(s) => Val::Str(s),
                    serde_json::Value::Null => Val::Null,
                    other => Val::Str(other.to_string()),
                };
                row.set(&k, val);
            }
        } else {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if line_no == 1 && tokens.iter().all(|t| is_field_name(t)) {
                header = Some(tokens.iter().map(|t| t.to_string()).collect());
                continue;
            }
            let names: Vec<String> = match &header {
                Some(h) => h.clone(),
                None if tokens.len() == DEFAULT_FORMAT.len() => DEFAULT_FORMAT
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect(),
                None => (1..=tokens.len()).map(|i| format!("field{i}")).collect(),
            };
            for (name, t) in names.iter().zip(tokens.iter()) {
                row.set(name, Val::from_token(t));
            }
        }
        row.set("@message", Val::Str(line.to_string()));
        let ts = row.get("start").clone();
        row.set("@timestamp", ts);
        row.set("@log", Val::Str(path.display().to_string()));
        rows.push(row);
    }
    Ok(())
}

/// Reads all inputs.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for p in paths {
        for f in files(p)? {
            read_file(&f, &mut rows)?;
        }
    }
    Ok(rows)
}
