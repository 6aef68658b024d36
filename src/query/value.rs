//! Values and rows of the query engine. A row maps canonical field names (lower case,
//! without `-` and `_`, so `srcAddr`, `srcaddr` and `src_addr` are one field) to values;
//! numbers stay numbers so `bytes > 1000` and `sum(bytes)` work on text inputs too.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Num(f64),
    Str(String),
}

impl Val {
    /// A text token as it appears in a flow log: `-` is AWS's "no value".
    pub fn from_token(t: &str) -> Val {
        if t == "-" || t.is_empty() {
            return Val::Null;
        }
        match t.parse::<f64>() {
            Ok(n)
                if t.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-') =>
            {
                Val::Num(n)
            }
            _ => Val::Str(t.to_string()),
        }
    }

    pub fn as_num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.parse().ok(),
            Val::Null => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Num(n) => *n != 0.0,
            Val::Str(s) => !s.is_empty(),
        }
    }

    /// Numbers compare as numbers, otherwise as text; null sorts first.
    pub fn cmp_val(&self, other: &Val) -> Ordering {
        match (self, other) {
            (Val::Null, Val::Null) => Ordering::Equal,
            (Val::Null, _) => Ordering::Less,
            (_, Val::Null) => Ordering::Greater,
            _ => match (self.as_num(), other.as_num()) {
                (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                _ => self.to_string().cmp(&other.to_string()),
            },
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Null => Ok(()),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Val::Num(n) => write!(f, "{n}"),
            Val::Str(s) => f.write_str(s),
        }
    }
}

/// Canonical field name: Logs Insights discovers `srcAddr`, AWS writes `srcaddr`,
/// `parse ... as src_addr` users write either; `startTime`/`endTime` are `start`/`end`.
pub fn canon(name: &str) -> String {
    let c: String = name
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(|c| c.to_lowercase())
        .collect();
    match c.as_str() {
        "starttime" => "start".into(),
        "endtime" => "end".into(),
        _ => c,
    }
}

/// One event: its fields in canonical form, and the column order they came in.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub fields: HashMap<String, Val>,
    /// Display names in first-seen order.
    pub order: Vec<String>,
}

impl Row {
    pub fn get(&self, name: &str) -> &Val {
        static NULL: Val = Val::Null;
        self.fields.get(&canon(name)).unwrap_or(&NULL)
    }

    pub fn set(&mut self, name: &str, v: Val) {
        let k = canon(name);
        if !self.fields.contains_key(&k) {
            self.order.push(name.to_string());
        }
        self.fields.insert(k, v);
    }
}
