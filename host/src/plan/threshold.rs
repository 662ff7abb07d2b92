//! Threshold expressions: GO/NO-GO conditions over the metrics `validate`
//! returns, such as `match_rate >= 0.95` or `duplicates == 0 and rows > 10`.
//!
//! Grammar (lowest precedence first):
//!
//! ```text
//! expr  := and ("or" and)*
//! and   := not ("and" not)*
//! not   := "not" not | cmp
//! cmp   := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
//! sum   := term (("+" | "-") term)*
//! term  := unary (("*" | "/") unary)*
//! unary := "-" unary | atom
//! atom  := number | name ("." name)* | "(" expr ")"
//! ```
//!
//! A threshold must be a condition (a comparison or a logical combination of
//! comparisons); a bare number or metric is rejected when the plan is read.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed threshold expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number literal.
    Number(f64),
    /// A metric, by name (`baseline.latency_p95` keeps its dots).
    Metric(String),
    /// `-x`.
    Neg(Box<Expr>),
    /// `not x`.
    Not(Box<Expr>),
    /// A binary operation.
    Binary(Op, Box<Expr>, Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `and`
    And,
    /// `or`
    Or,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::And => "and",
            Op::Or => "or",
        }
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Eq | Op::Ne)
    }

    fn is_logical(self) -> bool {
        matches!(self, Op::And | Op::Or)
    }
}

/// A syntax error, at a byte offset inside the expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Byte offset in the expression text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The expression names a metric `validate` did not report.
    #[error("metric `{name}` was not reported by validate (reported: {reported})")]
    UnknownMetric {
        /// The missing metric.
        name: String,
        /// The metrics that were reported, comma-separated.
        reported: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    Condition,
}

impl Expr {
    /// Parses a threshold; it must be a condition.
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let mut parser = Parser {
            tokens: tokenize(text)?,
            pos: 0,
            end: text.len(),
        };
        let expr = parser.or()?;
        if let Some(token) = parser.tokens.get(parser.pos) {
            return Err(ParseError {
                offset: token.offset,
                message: format!("unexpected `{}` after a complete expression", token.text),
            });
        }
        if expr.kind(0)? != Kind::Condition {
            return Err(ParseError {
                offset: 0,
                message: "a threshold must be a condition, such as `match_rate >= 0.95`".into(),
            });
        }
        Ok(expr)
    }

    /// Checks operand kinds: comparisons take numbers, `and`/`or`/`not` take
    /// conditions.
    fn kind(&self, offset: usize) -> Result<Kind, ParseError> {
        let want = |e: &Expr, k: Kind, what: &str| -> Result<(), ParseError> {
            if e.kind(offset)? == k {
                Ok(())
            } else {
                Err(ParseError {
                    offset,
                    message: format!("`{e}` is used as {what}"),
                })
            }
        };
        Ok(match self {
            Expr::Number(_) | Expr::Metric(_) => Kind::Number,
            Expr::Neg(e) => {
                want(e, Kind::Number, "a number but is a condition")?;
                Kind::Number
            }
            Expr::Not(e) => {
                want(e, Kind::Condition, "a condition but is a number")?;
                Kind::Condition
            }
            Expr::Binary(op, l, r) if op.is_logical() => {
                want(l, Kind::Condition, "a condition but is a number")?;
                want(r, Kind::Condition, "a condition but is a number")?;
                Kind::Condition
            }
            Expr::Binary(op, l, r) => {
                want(l, Kind::Number, "a number but is a condition")?;
                want(r, Kind::Number, "a number but is a condition")?;
                if op.is_comparison() {
                    Kind::Condition
                } else {
                    Kind::Number
                }
            }
        })
    }

    /// The metric names the expression reads.
    pub fn metrics(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Number(_) => {}
            Expr::Metric(m) => out.push(m),
            Expr::Neg(e) | Expr::Not(e) => e.collect(out),
            Expr::Binary(_, l, r) => {
                l.collect(out);
                r.collect(out);
            }
        }
    }

    /// Evaluates the condition against measured metrics.
    pub fn holds(&self, metrics: &BTreeMap<String, f64>) -> Result<bool, EvalError> {
        Ok(self.eval(metrics)? != 0.0)
    }

    /// Conditions evaluate to 1.0 (true) or 0.0 (false).
    fn eval(&self, metrics: &BTreeMap<String, f64>) -> Result<f64, EvalError> {
        let truth = |b: bool| if b { 1.0 } else { 0.0 };
        Ok(match self {
            Expr::Number(n) => *n,
            Expr::Metric(name) => *metrics.get(name).ok_or_else(|| EvalError::UnknownMetric {
                name: name.clone(),
                reported: if metrics.is_empty() {
                    "none".to_string()
                } else {
                    metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })?,
            Expr::Neg(e) => -e.eval(metrics)?,
            Expr::Not(e) => truth(e.eval(metrics)? == 0.0),
            Expr::Binary(op, l, r) => {
                let l = l.eval(metrics)?;
                // `and`/`or` evaluate both sides so a missing metric is always reported.
                let r = r.eval(metrics)?;
                match op {
                    Op::Add => l + r,
                    Op::Sub => l - r,
                    Op::Mul => l * r,
                    Op::Div => l / r,
                    Op::Lt => truth(l < r),
                    Op::Le => truth(l <= r),
                    Op::Gt => truth(l > r),
                    Op::Ge => truth(l >= r),
                    Op::Eq => truth(l == r),
                    Op::Ne => truth(l != r),
                    Op::And => truth(l != 0.0 && r != 0.0),
                    Op::Or => truth(l != 0.0 || r != 0.0),
                }
            }
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => write!(f, "{n}"),
            Expr::Metric(m) => f.write_str(m),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    offset: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            // exponent: 1e-3
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            // a trailing `%` means hundredths: `95%` is 0.95
            if i < bytes.len() && bytes[i] == b'%' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            i += if ["<=", ">=", "==", "!="].contains(&two) {
                2
            } else {
                1
            };
            let op = &text[start..i];
            if ![
                "<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "(", ")",
            ]
            .contains(&op)
            {
                return Err(ParseError {
                    offset: start,
                    message: if op == "=" {
                        "`=` is not a comparison; write `==`".into()
                    } else {
                        format!("unexpected character `{op}`")
                    },
                });
            }
        }
        tokens.push(Token {
            text: text[start..i].to_string(),
            offset: start,
        });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(|t| t.text.as_str())
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.offset)
    }

    fn eat(&mut self, text: &str) -> bool {
        if self.peek() == Some(text) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn binary(
        &mut self,
        ops: &[(&str, Op)],
        next: fn(&mut Self) -> Result<Expr, ParseError>,
        repeat: bool,
    ) -> Result<Expr, ParseError> {
        let mut left = next(self)?;
        loop {
            let Some(op) = ops
                .iter()
                .find(|(t, _)| self.peek() == Some(*t))
                .map(|(_, op)| *op)
            else {
                return Ok(left);
            };
            self.pos += 1;
            let right = next(self)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
            if !repeat {
                if let Some(token) = self.tokens.get(self.pos) {
                    if ops.iter().any(|(t, _)| *t == token.text) {
                        return Err(ParseError {
                            offset: token.offset,
                            message: "comparisons do not chain; combine them with `and`".into(),
                        });
                    }
                }
                return Ok(left);
            }
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.binary(&[("or", Op::Or)], Self::and, true)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        self.binary(&[("and", Op::And)], Self::not, true)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat("not") {
            Ok(Expr::Not(Box::new(self.not()?)))
        } else {
            self.cmp()
        }
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        self.binary(&ops, Self::sum, false)
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        self.binary(&[("+", Op::Add), ("-", Op::Sub)], Self::term, true)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        self.binary(&[("*", Op::Mul), ("/", Op::Div)], Self::unary, true)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("-") {
            Ok(Expr::Neg(Box::new(self.unary()?)))
        } else {
            self.atom()
        }
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        let offset = self.offset();
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return Err(ParseError {
                offset,
                message: "expression ends where a number or metric was expected".into(),
            });
        };
        self.pos += 1;
        let text = token.text.as_str();
        if text == "(" {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(ParseError {
                    offset: self.offset(),
                    message: "missing `)`".into(),
                });
            }
            return Ok(inner);
        }
        let first = text.as_bytes()[0];
        if first.is_ascii_digit() || first == b'.' {
            let (digits, scale) = match text.strip_suffix('%') {
                Some(d) => (d, 0.01),
                None => (text, 1.0),
            };
            return digits
                .replace('_', "")
                .parse::<f64>()
                .map(|n| Expr::Number(n * scale))
                .map_err(|_| ParseError {
                    offset,
                    message: format!("`{text}` is not a number"),
                });
        }
        if first.is_ascii_alphabetic() || first == b'_' {
            if ["and", "or", "not"].contains(&text) {
                return Err(ParseError {
                    offset,
                    message: format!("`{text}` where a number or metric was expected"),
                });
            }
            if text.ends_with('.') || text.contains("..") {
                return Err(ParseError {
                    offset,
                    message: format!("`{text}` is not a metric name"),
                });
            }
            return Ok(Expr::Metric(text.to_string()));
        }
        Err(ParseError {
            offset,
            message: format!("`{text}` where a number or metric was expected"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn evaluates_conditions() {
        let m = metrics(&[
            ("match_rate", 0.97),
            ("duplicates", 0.0),
            ("latency_p95", 30.0),
            ("baseline.latency_p95", 20.0),
        ]);
        let cases = [
            ("match_rate >= 0.95", true),
            ("match_rate >= 95%", true),
            ("match_rate > 0.99", false),
            ("duplicates == 0", true),
            ("duplicates != 0", false),
            ("duplicates == 0 and match_rate >= 0.95", true),
            ("duplicates > 0 or match_rate < 0.9", false),
            ("not duplicates > 0", true),
            ("latency_p95 <= 2 * baseline.latency_p95", true),
            ("latency_p95 <= 1.2 * baseline.latency_p95", false),
            (
                "(latency_p95 - baseline.latency_p95) / baseline.latency_p95 < 0.6",
                true,
            ),
            ("-duplicates <= 0", true),
        ];
        for (text, want) in cases {
            let expr = Expr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(expr.holds(&m).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_expressions_with_offsets() {
        let cases = [
            ("match_rate >=", 13),
            ("match_rate = 0.95", 11),
            ("match_rate >= 0.95 extra", 19),
            ("0.95", 0),
            ("match_rate", 0),
            ("1 < 2 < 3", 6),
            ("(a > 1", 6),
            ("a > 1 and 2", 0),
            ("a >= $", 5),
            ("", 0),
        ];
        for (text, offset) in cases {
            let err = Expr::parse(text).expect_err(text);
            assert_eq!(err.offset, offset, "{text}: {err}");
        }
    }

    #[test]
    fn reports_unknown_metrics() {
        let expr = Expr::parse("match_rate >= 0.95").unwrap();
        let err = expr.holds(&metrics(&[("duplicates", 0.0)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric `match_rate` was not reported by validate (reported: duplicates)"
        );
        assert_eq!(expr.metrics(), vec!["match_rate"]);
    }
}
