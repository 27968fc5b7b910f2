//! Subscription rule filters: the SQL filter subset, correlation filters, true and false.

use std::fmt;

use crate::broker::Message;

/// A rule's filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    True,
    False,
    Sql { expression: String, parsed: Expr },
    Correlation(Correlation),
}

/// A correlation filter: every field that is set must equal the message's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Correlation {
    pub(crate) correlation_id: Option<String>,
    pub(crate) message_id: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) reply_to_session_id: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) properties: Vec<(String, String)>,
}

impl Filter {
    /// A SQL filter from its text, or the parse error.
    pub(crate) fn sql(expression: &str) -> Result<Filter, String> {
        let parsed = parse(expression)?;
        Ok(Filter::Sql {
            expression: expression.to_string(),
            parsed,
        })
    }

    pub(crate) fn matches(&self, m: &Message) -> bool {
        match self {
            Filter::True => true,
            Filter::False => false,
            Filter::Sql { parsed, .. } => eval(parsed, m).truthy(),
            Filter::Correlation(c) => {
                let eq = |want: &Option<String>, have: &Option<String>| {
                    want.as_ref()
                        .is_none_or(|w| have.as_deref() == Some(w.as_str()))
                };
                eq(&c.correlation_id, &m.correlation_id)
                    && eq(&c.message_id, &m.message_id)
                    && eq(&c.to, &m.to)
                    && eq(&c.reply_to, &m.reply_to)
                    && eq(&c.label, &m.label)
                    && eq(&c.session_id, &m.session_id)
                    && eq(&c.reply_to_session_id, &m.reply_to_session_id)
                    && eq(&c.content_type, &m.content_type)
                    && c.properties
                        .iter()
                        .all(|(k, v)| m.property(k).is_some_and(|have| have == v))
            }
        }
    }
}

/// A parsed SQL filter expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Literal(Value),
    Property { system: bool, name: String },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Op, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<Value>, bool),
    Like(Box<Expr>, String, bool),
    Exists(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Value {
    fn truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Num(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{}", if *b { "TRUE" } else { "FALSE" }),
        }
    }
}

fn eval(e: &Expr, m: &Message) -> Value {
    match e {
        Expr::Literal(v) => v.clone(),
        Expr::Property { system, name } => {
            let v = if *system {
                m.system_property(name)
            } else {
                m.property(name).map(str::to_string)
            };
            v.map(Value::Str).unwrap_or(Value::Null)
        }
        Expr::Not(x) => match eval(x, m) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        Expr::And(a, b) => match (eval(a, m), eval(b, m)) {
            (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
            (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
            _ => Value::Null,
        },
        Expr::Or(a, b) => match (eval(a, m), eval(b, m)) {
            (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
            (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
            _ => Value::Null,
        },
        Expr::Compare(a, op, b) => compare(&eval(a, m), *op, &eval(b, m)),
        Expr::IsNull(x, negated) => Value::Bool((eval(x, m) == Value::Null) != *negated),
        Expr::In(x, list, negated) => {
            let v = eval(x, m);
            if v == Value::Null {
                return Value::Null;
            }
            let found = list.iter().any(|item| compare(&v, Op::Eq, item).truthy());
            Value::Bool(found != *negated)
        }
        Expr::Like(x, pattern, negated) => match eval(x, m) {
            Value::Str(s) => Value::Bool(like(&s, pattern) != *negated),
            _ => Value::Null,
        },
        Expr::Exists(x) => Value::Bool(eval(x, m) != Value::Null),
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> Value {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Value::Null, _) | (_, Value::Null) => return Value::Null,
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Num(y)) => {
            x.trim().parse::<f64>().ok().and_then(|x| x.partial_cmp(y))
        }
        (Value::Num(x), Value::Str(y)) => {
            y.trim().parse::<f64>().ok().and_then(|y| x.partial_cmp(&y))
        }
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Bool(y)) | (Value::Bool(y), Value::Str(x)) => {
            return match x.to_ascii_lowercase().parse::<bool>() {
                Ok(x) if matches!(op, Op::Eq) => Value::Bool(x == *y),
                Ok(x) if matches!(op, Op::Ne) => Value::Bool(x != *y),
                _ => Value::Null,
            }
        }
        _ => None,
    };
    let Some(ord) = ord else { return Value::Null };
    Value::Bool(match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
    })
}

/// SQL LIKE with `%` and `_`.
fn like(s: &str, pattern: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| go(&s[i..], &p[1..])),
            Some('_') => !s.is_empty() && go(&s[1..], &p[1..]),
            Some(c) => s.first() == Some(c) && go(&s[1..], &p[1..]),
        }
    }
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    go(&s, &p)
}

// ---- parsing ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            '[' | '"' => {
                let close = if c == '[' { ']' } else { '"' };
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&x| x == close)
                    .ok_or("unterminated delimited identifier")?;
                out.push(Tok::Quoted(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '0'..='9' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                out.push(Tok::Num(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let sym = match two.as_str() {
                    "<>" => Some("<>"),
                    "!=" => Some("!="),
                    "<=" => Some("<="),
                    ">=" => Some(">="),
                    _ => None,
                };
                if let Some(sym) = sym {
                    out.push(Tok::Sym(sym));
                    i += 2;
                    continue;
                }
                let sym = match c {
                    '=' => "=",
                    '<' => "<",
                    '>' => ">",
                    '(' => "(",
                    ')' => ")",
                    ',' => ",",
                    '.' => ".",
                    '-' => "-",
                    _ => return Err(format!("unexpected character {c:?}")),
                };
                out.push(Tok::Sym(sym));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        at: 0,
    };
    let e = p.or()?;
    if p.at != p.toks.len() {
        return Err(format!(
            "unexpected {:?} after the expression",
            p.toks[p.at]
        ));
    }
    Ok(e)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn keyword(&mut self, k: &str) -> bool {
        if let Some(Tok::Ident(i)) = self.peek() {
            if i.eq_ignore_ascii_case(k) {
                self.at += 1;
                return true;
            }
        }
        false
    }
    fn sym(&mut self, s: &str) -> bool {
        if self.peek()
            == Some(&Tok::Sym(match s {
                "=" => "=",
                "(" => "(",
                ")" => ")",
                "," => ",",
                "." => ".",
                "-" => "-",
                _ => return false,
            }))
        {
            self.at += 1;
            return true;
        }
        false
    }
    fn expect(&mut self, s: &str) -> Result<(), String> {
        if self.sym(s) {
            Ok(())
        } else {
            Err(format!("expected `{s}`, found {:?}", self.peek()))
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.keyword("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.keyword("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.predicate()
    }
    fn predicate(&mut self) -> Result<Expr, String> {
        if self.keyword("EXISTS") {
            self.expect("(")?;
            let p = self.operand()?;
            self.expect(")")?;
            return Ok(Expr::Exists(Box::new(p)));
        }
        let left = if self.sym("(") {
            let e = self.or()?;
            self.expect(")")?;
            e
        } else {
            self.operand()?
        };
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err("expected NULL after IS".into());
            }
            return Ok(Expr::IsNull(Box::new(left), negated));
        }
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            self.expect("(")?;
            let mut list = vec![self.literal()?];
            while self.sym(",") {
                list.push(self.literal()?);
            }
            self.expect(")")?;
            return Ok(Expr::In(Box::new(left), list, negated));
        }
        if self.keyword("LIKE") {
            let Some(Tok::Str(p)) = self.peek().cloned() else {
                return Err("expected a string pattern after LIKE".into());
            };
            self.at += 1;
            return Ok(Expr::Like(Box::new(left), p, negated));
        }
        if negated {
            return Err("expected IN or LIKE after NOT".into());
        }
        let op = match self.peek() {
            Some(Tok::Sym("=")) => Some(Op::Eq),
            Some(Tok::Sym("<>")) | Some(Tok::Sym("!=")) => Some(Op::Ne),
            Some(Tok::Sym("<")) => Some(Op::Lt),
            Some(Tok::Sym("<=")) => Some(Op::Le),
            Some(Tok::Sym(">")) => Some(Op::Gt),
            Some(Tok::Sym(">=")) => Some(Op::Ge),
            _ => None,
        };
        match op {
            Some(op) => {
                self.at += 1;
                let right = self.operand()?;
                Ok(Expr::Compare(Box::new(left), op, Box::new(right)))
            }
            None => Ok(left),
        }
    }
    fn literal(&mut self) -> Result<Value, String> {
        match self.operand()? {
            Expr::Literal(v) => Ok(v),
            other => Err(format!("expected a literal, found {other:?}")),
        }
    }
    fn operand(&mut self) -> Result<Expr, String> {
        let negative = self.sym("-");
        let tok = self
            .peek()
            .cloned()
            .ok_or("unexpected end of the expression")?;
        self.at += 1;
        Ok(match tok {
            Tok::Str(s) => Expr::Literal(Value::Str(s)),
            Tok::Num(n) => Expr::Literal(Value::Num(if negative { -n } else { n })),
            Tok::Quoted(name) => Expr::Property {
                system: false,
                name,
            },
            Tok::Ident(i) if i.eq_ignore_ascii_case("TRUE") => Expr::Literal(Value::Bool(true)),
            Tok::Ident(i) if i.eq_ignore_ascii_case("FALSE") => Expr::Literal(Value::Bool(false)),
            Tok::Ident(i) if i.eq_ignore_ascii_case("NULL") => Expr::Literal(Value::Null),
            Tok::Ident(i) => {
                let scope = i.to_ascii_lowercase();
                if (scope == "sys" || scope == "user") && self.sym(".") {
                    let name = match self.peek().cloned() {
                        Some(Tok::Ident(n)) | Some(Tok::Quoted(n)) => n,
                        other => {
                            return Err(format!(
                                "expected a property name after {i}., found {other:?}"
                            ))
                        }
                    };
                    self.at += 1;
                    Expr::Property {
                        system: scope == "sys",
                        name,
                    }
                } else {
                    Expr::Property {
                        system: false,
                        name: i,
                    }
                }
            }
            Tok::Sym(s) => return Err(format!("unexpected `{s}`")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Message;

    fn msg(label: &str, to: Option<&str>, props: &[(&str, &str)]) -> Message {
        Message {
            label: Some(label.into()),
            to: to.map(Into::into),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn label_equality_in_lists_and_targeting() {
        let f =
            Filter::sql("(sys.Label IN ('a.x', 'a.y') AND sys.To IS NULL) OR sys.To = 'catalog'")
                .unwrap();
        assert!(f.matches(&msg("a.x", None, &[])));
        assert!(!f.matches(&msg("a.z", None, &[])));
        assert!(!f.matches(&msg("a.x", Some("billing"), &[])));
        assert!(f.matches(&msg("a.z", Some("catalog"), &[])));
        let f = Filter::sql("sys.Label = 'a.x'").unwrap();
        assert!(f.matches(&msg("a.x", None, &[])));
        assert!(!f.matches(&msg("a.xx", None, &[])));
    }

    #[test]
    fn user_properties_numbers_like_and_not() {
        let f =
            Filter::sql("priority > 2 AND [tenant-id] LIKE 'no%' AND NOT color = 'red'").unwrap();
        assert!(f.matches(&msg(
            "l",
            None,
            &[("priority", "3"), ("tenant-id", "north"), ("color", "blue")]
        )));
        assert!(!f.matches(&msg(
            "l",
            None,
            &[("priority", "1"), ("tenant-id", "north"), ("color", "blue")]
        )));
        assert!(!f.matches(&msg(
            "l",
            None,
            &[("priority", "3"), ("tenant-id", "north")]
        )));
        assert!(Filter::sql("1=1").unwrap().matches(&msg("l", None, &[])));
        assert!(Filter::sql("sys.Label = ").is_err());
        assert!(Filter::sql("sys.Label IN ('a'").is_err());
    }

    #[test]
    fn correlation_filters_match_every_set_field() {
        let f = Filter::Correlation(Correlation {
            label: Some("a.x".into()),
            properties: vec![("tenant".into(), "north".into())],
            ..Default::default()
        });
        assert!(f.matches(&msg("a.x", None, &[("tenant", "north")])));
        assert!(!f.matches(&msg("a.x", None, &[])));
        assert!(!f.matches(&msg("a.y", None, &[("tenant", "north")])));
    }
}
