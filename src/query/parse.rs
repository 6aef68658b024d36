//! The Logs Insights query language, as used on flow logs (aws-spec §3): tokens, then a
//! pipeline of commands (`fields`, `display`, `filter`, `stats`, `sort`, `limit`,
//! `parse`, `dedup`) over expressions with comparisons, `and`/`or`/`not`, `like`
//! (substring or `/regex/`), `=~`, `in [..]`, arithmetic and function calls.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Regex(String),
    Op(&'static str),
    Pipe,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Field(String),
    Num(f64),
    Str(String),
    Regex(String),
    List(Vec<Expr>),
    Call(String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
}

impl Expr {
    /// A readable name for an unnamed column (`count(*)`, `sum(bytes)`).
    pub fn label(&self) -> String {
        match self {
            Expr::Field(f) => f.clone(),
            Expr::Num(n) => n.to_string(),
            Expr::Str(s) => format!("\"{s}\""),
            Expr::Regex(r) => format!("/{r}/"),
            Expr::Call(f, a) => format!(
                "{f}({})",
                a.iter().map(|x| x.label()).collect::<Vec<_>>().join(", ")
            ),
            Expr::List(l) => format!(
                "[{}]",
                l.iter().map(|x| x.label()).collect::<Vec<_>>().join(", ")
            ),
            Expr::Not(e) => format!("not {}", e.label()),
            Expr::Neg(e) => format!("-{}", e.label()),
            Expr::Bin(op, a, b) => format!("{} {op} {}", a.label(), b.label()),
            Expr::Like {
                expr,
                pattern,
                negated,
            } => format!(
                "{} {}like {}",
                expr.label(),
                if *negated { "not " } else { "" },
                pattern.label()
            ),
            Expr::In {
                expr,
                list,
                negated,
            } => format!(
                "{} {}in [..{}]",
                expr.label(),
                if *negated { "not " } else { "" },
                list.len()
            ),
        }
    }
}

/// Aggregate functions `stats` accepts (aws-spec §3.3).
pub const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "count_distinct",
    "pct",
    "stddev",
    "earliest",
    "latest",
];

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Fields(Vec<(Expr, String)>),
    Display(Vec<String>),
    Filter(Expr),
    Stats {
        aggs: Vec<(Expr, String)>,
        by: Vec<(Expr, String)>,
    },
    Sort(Vec<(Expr, bool)>),
    Limit(usize),
    /// `parse FIELD "glob with * " as a, b` or `parse FIELD /regex with (?<name>..)/`.
    Parse {
        field: String,
        pattern: Expr,
        names: Vec<String>,
    },
    Dedup(Vec<String>),
}

fn lex(q: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let value_expected = |out: &Vec<Tok>| match out.last() {
        None | Some(Tok::Pipe) | Some(Tok::Op(_)) => true,
        Some(Tok::Ident(w)) => matches!(
            w.to_ascii_lowercase().as_str(),
            "like" | "and" | "or" | "not" | "filter" | "in"
        ),
        _ => false,
    };
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' && (i == 0 || b[i - 1] == '\n') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '|' {
            out.push(Tok::Pipe);
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                s.push(b[i]);
                i += 1;
            }
            if i >= b.len() {
                return Err(format!("unterminated string starting with {c}{s}"));
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '`' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i] != '`' {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i.min(b.len())].iter().collect()));
            i += 1;
        } else if c == '/' && value_expected(&out) {
            let mut s = String::new();
            i += 1;
            while i < b.len() && b[i] != '/' {
                if b[i] == '\\' && i + 1 < b.len() && b[i + 1] == '/' {
                    i += 1;
                }
                s.push(b[i]);
                i += 1;
            }
            if i >= b.len() {
                return Err(format!("unterminated regex /{s}"));
            }
            i += 1;
            out.push(Tok::Regex(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            let t: String = b[start..i].iter().collect();
            match t.parse::<f64>() {
                Ok(n) => out.push(Tok::Num(n)),
                Err(_) => out.push(Tok::Ident(t)), // durations like 5m
            }
        } else if c.is_alphabetic() || c == '@' || c == '_' {
            let start = i;
            while i < b.len()
                && (b[i].is_alphanumeric()
                    || matches!(b[i], '@' | '_' | '.' | '-')
                        && !(b[i] == '-' && i + 1 < b.len() && b[i + 1] == ' '))
            {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            let op = ["!=", "<=", ">=", "=~"].into_iter().find(|o| *o == two);
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
            } else {
                let op = match c {
                    '=' => "=",
                    '<' => "<",
                    '>' => ">",
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    '%' => "%",
                    '^' => "^",
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    ',' => ",",
                    other => return Err(format!("unexpected character '{other}'")),
                };
                out.push(Tok::Op(op));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn kw(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(w))
    }
    fn op(&self, o: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(x)) if *x == o)
    }
    fn eat_op(&mut self, o: &str) -> Result<(), String> {
        if self.op(o) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{o}' near {}", self.near()))
        }
    }
    fn near(&self) -> String {
        match self.peek() {
            None => "the end of the query".into(),
            Some(t) => format!("{t:?}"),
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.i += 1;
                Ok(s)
            }
            _ => Err(format!("expected a field name near {}", self.near())),
        }
    }
    fn at_end_of_command(&self) -> bool {
        matches!(self.peek(), None | Some(Tok::Pipe))
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.kw("or") {
            self.i += 1;
            e = Expr::Bin("or", Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.kw("and") {
            self.i += 1;
            e = Expr::Bin("and", Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> Result<Expr, String> {
        if self.kw("not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let left = self.add()?;
        let negated = self.kw("not");
        if negated {
            self.i += 1;
        }
        if self.kw("like") {
            self.i += 1;
            let pattern = self.primary()?;
            return Ok(Expr::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                negated,
            });
        }
        if self.kw("in") {
            self.i += 1;
            let Expr::List(list) = self.primary()? else {
                return Err("'in' needs a [list]".into());
            };
            return Ok(Expr::In {
                expr: Box::new(left),
                list,
                negated,
            });
        }
        if negated {
            return Err(format!(
                "expected 'like' or 'in' after 'not' near {}",
                self.near()
            ));
        }
        for op in ["=", "!=", "<", "<=", ">", ">=", "=~"] {
            if self.op(op) {
                self.i += 1;
                let right = self.add()?;
                if op == "=~" {
                    return Ok(Expr::Like {
                        expr: Box::new(left),
                        pattern: Box::new(right),
                        negated: false,
                    });
                }
                return Ok(Expr::Bin(op, Box::new(left), Box::new(right)));
            }
        }
        Ok(left)
    }
    fn add(&mut self) -> Result<Expr, String> {
        let mut e = self.mul()?;
        while self.op("+") || self.op("-") {
            let op = if self.op("+") { "+" } else { "-" };
            self.i += 1;
            e = Expr::Bin(op, Box::new(e), Box::new(self.mul()?));
        }
        Ok(e)
    }
    fn mul(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.op("*") || self.op("/") || self.op("%") || self.op("^") {
            let op = ["*", "/", "%", "^"]
                .into_iter()
                .find(|o| self.op(o))
                .unwrap_or("*");
            self.i += 1;
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.op("-") {
            self.i += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Regex(r)) => {
                self.i += 1;
                Ok(Expr::Regex(r))
            }
            Some(Tok::Op("(")) => {
                self.i += 1;
                let e = self.expr()?;
                self.eat_op(")")?;
                Ok(e)
            }
            Some(Tok::Op("[")) => {
                self.i += 1;
                let mut items = Vec::new();
                while !self.op("]") {
                    items.push(self.expr()?);
                    if !self.op("]") {
                        self.eat_op(",")?;
                    }
                }
                self.i += 1;
                Ok(Expr::List(items))
            }
            Some(Tok::Ident(name)) => {
                self.i += 1;
                if self.op("(") {
                    self.i += 1;
                    let mut args = Vec::new();
                    while !self.op(")") {
                        if self.op("*") {
                            self.i += 1;
                            args.push(Expr::Field("*".into()));
                        } else {
                            args.push(self.expr()?);
                        }
                        if !self.op(")") {
                            self.eat_op(",")?;
                        }
                    }
                    self.i += 1;
                    Ok(Expr::Call(name.to_ascii_lowercase(), args))
                } else {
                    Ok(Expr::Field(name))
                }
            }
            _ => Err(format!("expected a value near {}", self.near())),
        }
    }

    /// `expr [as name], ...` up to the end of the command.
    fn named_list(&mut self) -> Result<Vec<(Expr, String)>, String> {
        let mut out = Vec::new();
        loop {
            let e = self.expr()?;
            let name = if self.kw("as") {
                self.i += 1;
                self.ident()?
            } else {
                e.label()
            };
            out.push((e, name));
            if self.op(",") {
                self.i += 1;
                continue;
            }
            return Ok(out);
        }
    }

    fn command(&mut self) -> Result<Command, String> {
        let word = self.ident()?.to_ascii_lowercase();
        let cmd = match word.as_str() {
            "fields" => Command::Fields(self.named_list()?),
            "display" => {
                let mut names = vec![self.ident()?];
                while self.op(",") {
                    self.i += 1;
                    names.push(self.ident()?);
                }
                Command::Display(names)
            }
            "filter" => Command::Filter(self.expr()?),
            "stats" => {
                let mut aggs = Vec::new();
                let mut by = Vec::new();
                loop {
                    let e = self.expr()?;
                    let name = if self.kw("as") {
                        self.i += 1;
                        self.ident()?
                    } else {
                        e.label()
                    };
                    aggs.push((e, name));
                    if self.op(",") {
                        self.i += 1;
                        continue;
                    }
                    break;
                }
                for (e, _) in &aggs {
                    let ok = matches!(e, Expr::Call(f, _) if AGGREGATES.contains(&f.as_str()));
                    if !ok {
                        return Err(format!("stats needs aggregate functions ({}), not {}", AGGREGATES.join(", "), e.label()));
                    }
                }
                if self.kw("by") {
                    self.i += 1;
                    by = self.named_list()?;
                }
                Command::Stats { aggs, by }
            }
            "sort" => {
                let mut keys = Vec::new();
                loop {
                    let e = self.expr()?;
                    let desc = if self.kw("desc") {
                        self.i += 1;
                        true
                    } else {
                        if self.kw("asc") {
                            self.i += 1;
                        }
                        false
                    };
                    keys.push((e, desc));
                    if self.op(",") {
                        self.i += 1;
                        continue;
                    }
                    break;
                }
                Command::Sort(keys)
            }
            "limit" => match self.peek().cloned() {
                Some(Tok::Num(n)) if n >= 0.0 => {
                    self.i += 1;
                    Command::Limit(n as usize)
                }
                _ => return Err(format!("limit needs a number near {}", self.near())),
            },
            "parse" => {
                let field = self.ident()?;
                let pattern = self.primary()?;
                let mut names = Vec::new();
                if self.kw("as") {
                    self.i += 1;
                    names.push(self.ident()?);
                    while self.op(",") {
                        self.i += 1;
                        names.push(self.ident()?);
                    }
                }
                Command::Parse { field, pattern, names }
            }
            "dedup" => {
                let mut names = vec![self.ident()?];
                while self.op(",") {
                    self.i += 1;
                    names.push(self.ident()?);
                }
                Command::Dedup(names)
            }
            other => return Err(format!("unknown command '{other}' (fields, display, filter, stats, sort, limit, parse, dedup)")),
        };
        if !self.at_end_of_command() {
            return Err(format!(
                "unexpected {} after the {word} command",
                self.near()
            ));
        }
        Ok(cmd)
    }
}

/// Parses a query into its commands.
pub fn parse(q: &str) -> Result<Vec<Command>, String> {
    let mut p = P { t: lex(q)?, i: 0 };
    let mut cmds = Vec::new();
    while p.peek().is_some() {
        if matches!(p.peek(), Some(Tok::Pipe)) {
            p.i += 1;
            continue;
        }
        cmds.push(p.command()?);
    }
    if cmds.is_empty() {
        return Err("empty query".into());
    }
    Ok(cmds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_aws_sample_queries() {
        for q in [
            "filter action=\"REJECT\" | stats count(*) as numRejections by srcAddr | sort numRejections desc | limit 10",
            "stats sum(bytes) as totalBytes by srcAddr, dstAddr | sort totalBytes desc | limit 10",
            "fields @timestamp, @message | filter action = \"REJECT\" | filter srcAddr = \"10.0.1.10\" and dstAddr = \"10.0.2.20\" | sort @timestamp desc | limit 20",
            "parse @message \"* * * * * * * * * * * * * *\" as version, accountId, interfaceId, srcAddr, dstAddr, srcPort, dstPort, protocol, packets, bytes, start, end, action, logStatus | stats sum(bytes) as totalBytes by srcAddr, dstAddr | sort totalBytes desc | limit 10",
            "stats avg(bytes), min(bytes), max(bytes) by srcAddr, dstAddr",
            "filter protocol=17 | stats count(*) by srcAddr",
            "filter isIpv4InSubnet(srcAddr, \"192.0.2.0/24\")\n    | stats sum(bytes) as bytesTransferred by dstAddr\n    | sort bytesTransferred desc\n    | limit 15",
            "filter logStatus=\"SKIPDATA\"\n    | stats count(*) by bin(1h) as t\n    | sort t",
            "filter (dstAddr like 'x.x.x.x' and srcAddr not like 'y.y.') | stats sum(bytes) as bytesTransferred by srcAddr, dstAddr",
            "filter action=\"REJECT\" and srcAddr like /^10\\./ | stats count(*) as numRejections by srcAddr | sort numRejections desc",
            "fields @timestamp, server | sort @timestamp desc | dedup server",
            "filter dstPort in [22, 3389] and not ispresent(`tls-sni`)",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn errors_say_where() {
        assert!(parse("filter bytes >")
            .unwrap_err()
            .contains("end of the query"));
        assert!(parse("frobnicate x").unwrap_err().contains("frobnicate"));
        assert!(parse("limit ten").unwrap_err().contains("limit"));
    }
}
