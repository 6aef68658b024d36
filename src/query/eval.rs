//! Query execution: rows flow through the commands in order; `stats` groups and
//! aggregates, `sort`/`limit`/`dedup` shape the result, `fields`/`display` choose the
//! columns. Aggregates and functions follow Logs Insights (aws-spec §3.3).

use std::collections::{HashMap, HashSet};

use regex::Regex;

use super::parse::{Command, Expr};
use super::value::{canon, Row, Val};

/// A query result: column names and rows of values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Val>>,
}

struct Ctx {
    regexes: HashMap<String, Regex>,
}

impl Ctx {
    fn regex(&mut self, pattern: &str) -> Result<&Regex, String> {
        if !self.regexes.contains_key(pattern) {
            let re = Regex::new(pattern).map_err(|e| format!("bad regex /{pattern}/: {e}"))?;
            self.regexes.insert(pattern.to_string(), re);
        }
        Ok(&self.regexes[pattern])
    }
}

/// Seconds in a `bin()`/duration literal: `30s`, `5m`, `1h`, `1d`.
fn duration_s(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(
        n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604800.0,
            _ => return None,
        },
    )
}

fn in_subnet(ip: &Val, cidr: &Val, family: Option<u8>) -> bool {
    let (Ok(ip), Ok(net)) = (
        ip.to_string().parse::<std::net::IpAddr>(),
        cidr.to_string().parse::<ipnet::IpNet>(),
    ) else {
        return false;
    };
    match family {
        Some(4) if !ip.is_ipv4() => false,
        Some(6) if !ip.is_ipv6() => false,
        _ => net.contains(&ip),
    }
}

fn eval(e: &Expr, row: &Row, cx: &mut Ctx) -> Result<Val, String> {
    Ok(match e {
        Expr::Field(f) => row.get(f).clone(),
        Expr::Num(n) => Val::Num(*n),
        Expr::Str(s) => Val::Str(s.clone()),
        Expr::Regex(r) => Val::Str(r.clone()),
        Expr::List(_) => return Err("a [list] is only valid after 'in'".into()),
        Expr::Not(x) => Val::Num(f64::from(!eval(x, row, cx)?.truthy())),
        Expr::Neg(x) => eval(x, row, cx)?
            .as_num()
            .map(|n| Val::Num(-n))
            .unwrap_or(Val::Null),
        Expr::Bin(op, a, b) => {
            if *op == "and" {
                return Ok(Val::Num(f64::from(
                    eval(a, row, cx)?.truthy() && eval(b, row, cx)?.truthy(),
                )));
            }
            if *op == "or" {
                return Ok(Val::Num(f64::from(
                    eval(a, row, cx)?.truthy() || eval(b, row, cx)?.truthy(),
                )));
            }
            let (x, y) = (eval(a, row, cx)?, eval(b, row, cx)?);
            match *op {
                "=" | "!=" | "<" | "<=" | ">" | ">=" => {
                    if x.is_null() || y.is_null() {
                        return Ok(Val::Num(f64::from(
                            *op == "!=" && x.is_null() != y.is_null(),
                        )));
                    }
                    let o = x.cmp_val(&y);
                    use std::cmp::Ordering::*;
                    let r = match *op {
                        "=" => o == Equal,
                        "!=" => o != Equal,
                        "<" => o == Less,
                        "<=" => o != Greater,
                        ">" => o == Greater,
                        _ => o != Less,
                    };
                    Val::Num(f64::from(r))
                }
                _ => match (x.as_num(), y.as_num()) {
                    (Some(p), Some(q)) => Val::Num(match *op {
                        "+" => p + q,
                        "-" => p - q,
                        "*" => p * q,
                        "/" if q != 0.0 => p / q,
                        "%" if q != 0.0 => p % q,
                        "^" => p.powf(q),
                        _ => return Ok(Val::Null),
                    }),
                    _ => Val::Null,
                },
            }
        }
        Expr::Like {
            expr,
            pattern,
            negated,
        } => {
            let v = eval(expr, row, cx)?;
            let hit = if v.is_null() {
                false
            } else {
                let text = v.to_string();
                match pattern.as_ref() {
                    Expr::Regex(r) => cx.regex(r)?.is_match(&text),
                    p => text.contains(&eval(p, row, cx)?.to_string()),
                }
            };
            Val::Num(f64::from(hit != *negated))
        }
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, row, cx)?;
            let mut hit = false;
            for item in list {
                if !v.is_null() && v.cmp_val(&eval(item, row, cx)?) == std::cmp::Ordering::Equal {
                    hit = true;
                    break;
                }
            }
            Val::Num(f64::from(hit != *negated))
        }
        Expr::Call(f, args) => {
            let mut a = Vec::with_capacity(args.len());
            for x in args {
                a.push(eval(x, row, cx)?);
            }
            let arg = |i: usize| a.get(i).cloned().unwrap_or(Val::Null);
            match f.as_str() {
                "ispresent" => Val::Num(f64::from(!arg(0).is_null())),
                "isempty" => Val::Num(f64::from(arg(0).to_string().is_empty())),
                "isblank" => Val::Num(f64::from(arg(0).to_string().trim().is_empty())),
                "coalesce" => a
                    .iter()
                    .find(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(Val::Null),
                "isipinsubnet" => Val::Num(f64::from(in_subnet(&arg(0), &arg(1), None))),
                "isipv4insubnet" => Val::Num(f64::from(in_subnet(&arg(0), &arg(1), Some(4)))),
                "isipv6insubnet" => Val::Num(f64::from(in_subnet(&arg(0), &arg(1), Some(6)))),
                "isvalidip" => Val::Num(f64::from(
                    arg(0).to_string().parse::<std::net::IpAddr>().is_ok(),
                )),
                "isvalidipv4" => Val::Num(f64::from(
                    arg(0).to_string().parse::<std::net::Ipv4Addr>().is_ok(),
                )),
                "isvalidipv6" => Val::Num(f64::from(
                    arg(0).to_string().parse::<std::net::Ipv6Addr>().is_ok(),
                )),
                "concat" => Val::Str(a.iter().map(|v| v.to_string()).collect()),
                "tolower" => Val::Str(arg(0).to_string().to_lowercase()),
                "toupper" => Val::Str(arg(0).to_string().to_uppercase()),
                "strlen" => Val::Num(arg(0).to_string().chars().count() as f64),
                "trim" => Val::Str(arg(0).to_string().trim().to_string()),
                "ltrim" => Val::Str(arg(0).to_string().trim_start().to_string()),
                "rtrim" => Val::Str(arg(0).to_string().trim_end().to_string()),
                "strcontains" => {
                    Val::Num(f64::from(arg(0).to_string().contains(&arg(1).to_string())))
                }
                "replace" => Val::Str(
                    arg(0)
                        .to_string()
                        .replace(&arg(1).to_string(), &arg(2).to_string()),
                ),
                "substr" => {
                    let s: Vec<char> = arg(0).to_string().chars().collect();
                    let start = (arg(1).as_num().unwrap_or(0.0).max(0.0) as usize).min(s.len());
                    let len = arg(2)
                        .as_num()
                        .map(|n| n.max(0.0) as usize)
                        .unwrap_or(s.len());
                    Val::Str(s[start..(start + len).min(s.len())].iter().collect())
                }
                "abs" | "ceil" | "floor" | "sqrt" | "log" => match arg(0).as_num() {
                    Some(n) => Val::Num(match f.as_str() {
                        "abs" => n.abs(),
                        "ceil" => n.ceil(),
                        "floor" => n.floor(),
                        "sqrt" => n.sqrt(),
                        _ => n.ln(),
                    }),
                    None => Val::Null,
                },
                "greatest" | "least" => {
                    let nums = a.iter().filter_map(|v| v.as_num());
                    let r = if f == "greatest" {
                        nums.fold(f64::NEG_INFINITY, f64::max)
                    } else {
                        nums.fold(f64::INFINITY, f64::min)
                    };
                    if r.is_finite() {
                        Val::Num(r)
                    } else {
                        Val::Null
                    }
                }
                "bin" | "datefloor" => {
                    // bin(5m) floors @timestamp; datefloor(ts, 5m) floors ts.
                    let (ts, period) = if f == "bin" {
                        (row.get("@timestamp").clone(), args.first())
                    } else {
                        (arg(0), args.get(1))
                    };
                    let period = match period {
                        Some(Expr::Field(p)) | Some(Expr::Str(p)) => duration_s(p),
                        Some(Expr::Num(n)) => Some(*n),
                        _ => None,
                    }
                    .ok_or_else(|| format!("{f}() needs a period such as 5m"))?;
                    match ts.as_num() {
                        Some(t) => Val::Num((t / period).floor() * period),
                        None => Val::Null,
                    }
                }
                "frommillis" => arg(0)
                    .as_num()
                    .map(|n| Val::Num(n / 1000.0))
                    .unwrap_or(Val::Null),
                "tomillis" => arg(0)
                    .as_num()
                    .map(|n| Val::Num(n * 1000.0))
                    .unwrap_or(Val::Null),
                other => return Err(format!("unknown function {other}()")),
            }
        }
    })
}

fn is_aggregate(e: &Expr) -> bool {
    matches!(e, Expr::Call(f, _) if super::parse::AGGREGATES.contains(&f.as_str()))
}

#[derive(Default)]
struct Acc {
    count: u64,
    sum: f64,
    sumsq: f64,
    min: Option<Val>,
    max: Option<Val>,
    distinct: HashSet<String>,
    values: Vec<f64>,
    first: Option<(f64, Val)>,
    last: Option<(f64, Val)>,
}

fn aggregate(e: &Expr, rows: &[Row], cx: &mut Ctx) -> Result<Val, String> {
    let Expr::Call(f, args) = e else {
        return Err(format!("{} is not an aggregate", e.label()));
    };
    let mut acc = Acc::default();
    let star = match args.first() {
        None => true,
        Some(Expr::Field(x)) => x == "*",
        _ => false,
    };
    for r in rows {
        if f == "count" && star {
            acc.count += 1;
            continue;
        }
        let v = eval(
            args.first().ok_or_else(|| format!("{f}() needs a field"))?,
            r,
            cx,
        )?;
        if v.is_null() {
            continue;
        }
        acc.count += 1;
        if let Some(n) = v.as_num() {
            acc.sum += n;
            acc.sumsq += n * n;
            if f == "pct" {
                acc.values.push(n);
            }
        }
        if acc.min.as_ref().is_none_or(|m| v.cmp_val(m).is_lt()) {
            acc.min = Some(v.clone());
        }
        if acc.max.as_ref().is_none_or(|m| v.cmp_val(m).is_gt()) {
            acc.max = Some(v.clone());
        }
        if f == "count_distinct" {
            acc.distinct.insert(v.to_string());
        }
        let ts = r.get("@timestamp").as_num().unwrap_or(0.0);
        if acc.first.as_ref().is_none_or(|(t, _)| ts < *t) {
            acc.first = Some((ts, v.clone()));
        }
        if acc.last.as_ref().is_none_or(|(t, _)| ts >= *t) {
            acc.last = Some((ts, v.clone()));
        }
    }
    Ok(match f.as_str() {
        "count" => Val::Num(acc.count as f64),
        "sum" => Val::Num(acc.sum),
        "avg" if acc.count > 0 => Val::Num(acc.sum / acc.count as f64),
        "min" => acc.min.unwrap_or(Val::Null),
        "max" => acc.max.unwrap_or(Val::Null),
        "count_distinct" => Val::Num(acc.distinct.len() as f64),
        "stddev" if acc.count > 1 => {
            let n = acc.count as f64;
            Val::Num(
                ((acc.sumsq - acc.sum * acc.sum / n) / (n - 1.0))
                    .max(0.0)
                    .sqrt(),
            )
        }
        "pct" if !acc.values.is_empty() => {
            let p = match args.get(1) {
                Some(Expr::Num(p)) => *p,
                _ => 50.0,
            };
            acc.values
                .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let i = ((p / 100.0) * (acc.values.len() - 1) as f64).round() as usize;
            Val::Num(acc.values[i.min(acc.values.len() - 1)])
        }
        "earliest" => acc.first.map(|x| x.1).unwrap_or(Val::Null),
        "latest" => acc.last.map(|x| x.1).unwrap_or(Val::Null),
        _ => Val::Null,
    })
}

/// Matches a Logs Insights glob (`*` captures, everything else literal) against `text`.
fn glob_captures(pattern: &str, text: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text.strip_prefix(parts[0])?;
    let mut out = Vec::new();
    for (i, lit) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        if lit.is_empty() {
            if last {
                out.push(rest.to_string());
                rest = "";
            } else {
                out.push(String::new());
            }
            continue;
        }
        let at = rest.find(lit)?;
        out.push(rest[..at].to_string());
        rest = &rest[at + lit.len()..];
    }
    Some(out)
}

/// Runs `commands` over `rows`.
pub fn run(commands: &[Command], mut rows: Vec<Row>) -> Result<Table, String> {
    let mut cx = Ctx {
        regexes: HashMap::new(),
    };
    let mut columns: Option<Vec<String>> = None;
    let mut display: Option<Vec<String>> = None;
    for cmd in commands {
        match cmd {
            Command::Filter(e) => {
                let mut kept = Vec::with_capacity(rows.len());
                for r in rows {
                    if eval(e, &r, &mut cx)?.truthy() {
                        kept.push(r);
                    }
                }
                rows = kept;
            }
            Command::Fields(list) => {
                for r in rows.iter_mut() {
                    for (e, name) in list {
                        let v = eval(e, r, &mut cx)?;
                        r.set(name, v);
                    }
                }
                let cols = columns.get_or_insert_with(Vec::new);
                for (_, name) in list {
                    if !cols.iter().any(|c| canon(c) == canon(name)) {
                        cols.push(name.clone());
                    }
                }
            }
            Command::Display(names) => display = Some(names.clone()),
            Command::Parse {
                field,
                pattern,
                names,
            } => {
                for r in rows.iter_mut() {
                    let text = r.get(field).to_string();
                    match pattern {
                        Expr::Str(glob) => {
                            if let Some(caps) = glob_captures(glob, &text) {
                                for (n, c) in names.iter().zip(caps) {
                                    r.set(n, Val::from_token(&c));
                                }
                            }
                        }
                        Expr::Regex(re) => {
                            let re = cx.regex(re)?.clone();
                            if let Some(c) = re.captures(&text) {
                                for n in re.capture_names().flatten() {
                                    if let Some(m) = c.name(n) {
                                        r.set(n, Val::from_token(m.as_str()));
                                    }
                                }
                            }
                        }
                        other => {
                            return Err(format!(
                                "parse needs a \"glob\" or /regex/, not {}",
                                other.label()
                            ))
                        }
                    }
                }
            }
            Command::Stats { aggs, by } => {
                for (e, _) in aggs {
                    if !is_aggregate(e) {
                        return Err(format!(
                            "stats needs aggregate functions, not {}",
                            e.label()
                        ));
                    }
                }
                let mut groups: Vec<(Vec<Val>, Vec<Row>)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                'rows: for r in rows {
                    let mut key = Vec::with_capacity(by.len());
                    for (e, _) in by {
                        let v = eval(e, &r, &mut cx)?;
                        // Events without a grouping field are left out, as Logs Insights does.
                        if v.is_null() {
                            continue 'rows;
                        }
                        key.push(v);
                    }
                    let k = key
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join("\u{1f}");
                    match index.get(&k) {
                        Some(&i) => groups[i].1.push(r),
                        None => {
                            index.insert(k, groups.len());
                            groups.push((key, vec![r]));
                        }
                    }
                }
                let mut out = Vec::with_capacity(groups.len());
                for (key, members) in groups {
                    let mut row = Row::default();
                    for ((_, name), v) in by.iter().zip(key) {
                        row.set(name, v);
                    }
                    for (e, name) in aggs {
                        let v = aggregate(e, &members, &mut cx)?;
                        row.set(name, v);
                    }
                    out.push(row);
                }
                rows = out;
                columns = Some(
                    by.iter()
                        .map(|(_, n)| n.clone())
                        .chain(aggs.iter().map(|(_, n)| n.clone()))
                        .collect(),
                );
            }
            Command::Sort(keys) => {
                let mut keyed = Vec::with_capacity(rows.len());
                for r in rows {
                    let mut k = Vec::with_capacity(keys.len());
                    for (e, _) in keys {
                        k.push(eval(e, &r, &mut cx)?);
                    }
                    keyed.push((k, r));
                }
                keyed.sort_by(|(a, _), (b, _)| {
                    for ((x, y), (_, desc)) in a.iter().zip(b.iter()).zip(keys.iter()) {
                        let o = x.cmp_val(y);
                        if o != std::cmp::Ordering::Equal {
                            return if *desc { o.reverse() } else { o };
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                rows = keyed.into_iter().map(|(_, r)| r).collect();
            }
            Command::Limit(n) => rows.truncate(*n),
            Command::Dedup(names) => {
                let mut seen = HashSet::new();
                rows.retain(|r| {
                    let vals: Vec<&Val> = names.iter().map(|n| r.get(n)).collect();
                    if vals.iter().any(|v| v.is_null()) {
                        return true; // nulls are not duplicates
                    }
                    seen.insert(
                        vals.iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join("\u{1f}"),
                    )
                });
            }
        }
    }
    let columns = display.or(columns).unwrap_or_else(|| {
        // No fields/stats: every field seen, in first-seen order.
        let mut cols: Vec<String> = Vec::new();
        for r in &rows {
            for n in &r.order {
                if !cols.iter().any(|c| canon(c) == canon(n)) {
                    cols.push(n.clone());
                }
            }
        }
        cols
    });
    let table_rows = rows
        .iter()
        .map(|r| columns.iter().map(|c| r.get(c).clone()).collect())
        .collect();
    Ok(Table {
        columns,
        rows: table_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_capture_like_logs_insights() {
        assert_eq!(
            glob_captures("* * *", "a b c d"),
            Some(vec!["a".into(), "b".into(), "c d".into()])
        );
        assert_eq!(
            glob_captures("[*] *", "[INFO] hello"),
            Some(vec!["INFO".into(), "hello".into()])
        );
        assert_eq!(glob_captures("x=*", "y=1"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_s("5m"), Some(300.0));
        assert_eq!(duration_s("1h"), Some(3600.0));
        assert_eq!(duration_s("5x"), None);
    }
}
