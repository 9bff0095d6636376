//! Payload filters: which of an endpoint's matching events it really wants,
//! by the values of event fields and Kafka record headers, with the
//! operators Convoy users know (`$eq`, `$neq`, `$in`, `$nin`, `$gt`,
//! `$gte`, `$lt`, `$lte`, `$exists`, `$regex`, `$and`, `$or`).
//!
//! ```toml
//! filter = { body = { "data.status" = "accepted", "data.battery" = { "$lt" = 20 } },
//!            headers = { "source" = { "$in" = ["mender", "openmdm"] } } }
//! ```
//!
//! A filter is compiled once, when its endpoint is validated (paths split,
//! regexes built, numbers read), and evaluated on the simd-json tape of the
//! event without building a DOM. Pure: no I/O, no clock.
//!
//! Semantics: a body key is a dotted path (`data.items.0.id`: object keys,
//! array indexes); all keys of an object must hold (`$and` implied); a bare
//! value means `$eq`. Equality is JSON equality (numbers by value). `$gt`
//! and friends compare two numbers or two strings, else fail. A missing
//! field fails every operator except `$neq`, `$nin` and `$exists: false`.
//! Header values are text: compared as numbers when both sides are numbers.

use regex::Regex;
use serde_json::Value as Json;
use simd_json::prelude::{TypedScalarValue, ValueAsScalar, ValueIntoString};
use simd_json::tape::Value as TapeValue;

use super::endpoint::FieldError;
use crate::core::tape::{TapeParser, lookup};

/// Most clauses one filter may have (every operator counts).
pub const MAX_CLAUSES: usize = 64;
/// Deepest nesting of `$and`/`$or`.
pub const MAX_DEPTH: usize = 8;
/// Longest `$regex` pattern, in bytes.
pub const MAX_REGEX_LEN: usize = 512;
/// Largest compiled regex (bytes of its automaton).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

/// Where a clause reads its value.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A path into the event body.
    Body(Vec<String>),
    /// A Kafka record header.
    Header(String),
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Clause(Source, Op),
}

/// A literal to compare with.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Lit),
    Neq(Lit),
    In(Vec<Lit>),
    Nin(Vec<Lit>),
    Gt(Lit),
    Gte(Lit),
    Lt(Lit),
    Lte(Lit),
    Exists(bool),
    Regex(Box<Regex>),
}

/// A value read from the event: from the tape or a header.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    /// An object or array: equal to nothing, ordered with nothing.
    Composite,
}

impl Filter {
    /// Compiles the `filter` of an endpoint; errors name the key
    /// (`filter.body.data.battery.$lt`).
    pub fn compile(spec: &Json) -> Result<Self, FieldError> {
        let mut clauses = 0;
        let Json::Object(sections) = spec else {
            return Err(FieldError::new(
                "filter",
                "must be a table with `body` and/or `headers`",
            ));
        };
        let mut all = Vec::new();
        for (section, value) in sections {
            let header = match section.as_str() {
                "body" => false,
                "headers" => true,
                other => {
                    return Err(FieldError::new(
                        format!("filter.{other}"),
                        "unknown section: use `body` or `headers`",
                    ));
                }
            };
            let at = format!("filter.{section}");
            all.push(compile_object(value, header, &at, 0, &mut clauses)?);
        }
        Ok(Self {
            root: Node::All(all),
        })
    }

    /// Whether the event passes: `root` is its parsed body, `header` looks
    /// up a Kafka record header.
    pub fn matches<'h>(
        &self,
        root: TapeValue<'_, '_>,
        header: &dyn Fn(&str) -> Option<&'h [u8]>,
    ) -> bool {
        eval(&self.root, root, header)
    }

    /// Whether the filter reads the body (else headers only: no parse).
    pub fn reads_body(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::All(v) | Node::Any(v) => v.iter().any(walk),
                Node::Clause(Source::Body(_), _) => true,
                Node::Clause(Source::Header(_), _) => false,
            }
        }
        walk(&self.root)
    }
}

fn compile_object(
    value: &Json,
    header: bool,
    at: &str,
    depth: usize,
    clauses: &mut usize,
) -> Result<Node, FieldError> {
    if depth > MAX_DEPTH {
        return Err(FieldError::new(
            at,
            format!("nests `$and`/`$or` deeper than {MAX_DEPTH}"),
        ));
    }
    let Json::Object(map) = value else {
        return Err(FieldError::new(at, "must be a table of field = condition"));
    };
    let mut all = Vec::with_capacity(map.len());
    for (key, cond) in map {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "$and" | "$or" => {
                let Json::Array(items) = cond else {
                    return Err(FieldError::new(here, "must be an array of tables"));
                };
                if items.is_empty() {
                    return Err(FieldError::new(here, "must not be empty"));
                }
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        compile_object(item, header, &format!("{here}[{i}]"), depth + 1, clauses)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" {
                    Node::All(nodes)
                } else {
                    Node::Any(nodes)
                });
            }
            k if k.starts_with('$') => {
                return Err(FieldError::new(here, "unknown operator at field level"));
            }
            _ => {
                if key.is_empty() || key.split('.').any(str::is_empty) {
                    return Err(FieldError::new(here, "empty path segment"));
                }
                let source = if header {
                    Source::Header(key.clone())
                } else {
                    Source::Body(key.split('.').map(str::to_string).collect())
                };
                for op in compile_condition(cond, &here)? {
                    *clauses += 1;
                    if *clauses > MAX_CLAUSES {
                        return Err(FieldError::new(
                            "filter",
                            format!("has more than {MAX_CLAUSES} clauses"),
                        ));
                    }
                    all.push(Node::Clause(source.clone(), op));
                }
            }
        }
    }
    Ok(Node::All(all))
}

/// `{ "$op" = v, ... }` or a bare value (`$eq`).
fn compile_condition(cond: &Json, at: &str) -> Result<Vec<Op>, FieldError> {
    let Json::Object(ops) = cond else {
        return Ok(vec![Op::Eq(literal(cond, at)?)]);
    };
    if ops.is_empty() {
        return Err(FieldError::new(at, "an empty condition matches nothing"));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (op, v) in ops {
        let here = format!("{at}.{op}");
        let list = |v: &Json| -> Result<Vec<Lit>, FieldError> {
            match v {
                Json::Array(items) if items.len() <= MAX_CLAUSES => {
                    items.iter().map(|i| literal(i, &here)).collect()
                }
                Json::Array(_) => Err(FieldError::new(
                    here.clone(),
                    format!("has more than {MAX_CLAUSES} values"),
                )),
                _ => Err(FieldError::new(here.clone(), "must be an array")),
            }
        };
        let ordered = |v: &Json| -> Result<Lit, FieldError> {
            match literal(v, &here)? {
                l @ (Lit::Num(_) | Lit::Str(_)) => Ok(l),
                _ => Err(FieldError::new(
                    here.clone(),
                    "must be a number or a string",
                )),
            }
        };
        out.push(match op.as_str() {
            "$eq" => Op::Eq(literal(v, &here)?),
            "$neq" => Op::Neq(literal(v, &here)?),
            "$in" => Op::In(list(v)?),
            "$nin" => Op::Nin(list(v)?),
            "$gt" => Op::Gt(ordered(v)?),
            "$gte" => Op::Gte(ordered(v)?),
            "$lt" => Op::Lt(ordered(v)?),
            "$lte" => Op::Lte(ordered(v)?),
            "$exists" => match v {
                Json::Bool(b) => Op::Exists(*b),
                _ => return Err(FieldError::new(here, "must be true or false")),
            },
            "$regex" => {
                let Json::String(pattern) = v else {
                    return Err(FieldError::new(here, "must be a string"));
                };
                if pattern.len() > MAX_REGEX_LEN {
                    return Err(FieldError::new(
                        here,
                        format!("must be at most {MAX_REGEX_LEN} bytes"),
                    ));
                }
                let regex = regex::RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| FieldError::new(here.clone(), format!("invalid regex: {e}")))?;
                Op::Regex(Box::new(regex))
            }
            other => {
                return Err(FieldError::new(
                    here,
                    format!(
                        "unknown operator `{other}` (use $eq, $neq, $in, $nin, $gt, $gte, $lt, $lte, $exists, $regex)"
                    ),
                ));
            }
        });
    }
    Ok(out)
}

fn literal(v: &Json, at: &str) -> Result<Lit, FieldError> {
    Ok(match v {
        Json::Null => Lit::Null,
        Json::Bool(b) => Lit::Bool(*b),
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Lit::Num(f),
            _ => return Err(FieldError::new(at, "is not a finite number")),
        },
        Json::String(s) => Lit::Str(s.clone()),
        Json::Array(_) | Json::Object(_) => {
            return Err(FieldError::new(
                at,
                "must be a string, number, boolean or null",
            ));
        }
    })
}

fn eval<'h>(
    node: &Node,
    root: TapeValue<'_, '_>,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> bool {
    match node {
        Node::All(nodes) => nodes.iter().all(|n| eval(n, root, header)),
        Node::Any(nodes) => nodes.iter().any(|n| eval(n, root, header)),
        Node::Clause(Source::Body(path), op) => {
            let found = lookup(root, path).map(found_in_tape);
            apply(op, found)
        }
        Node::Clause(Source::Header(name), op) => {
            let found = header(name).map(|raw| match std::str::from_utf8(raw) {
                Ok(text) => Found::Str(text),
                Err(_) => Found::Composite,
            });
            apply(op, found)
        }
    }
}

fn found_in_tape<'a>(v: TapeValue<'a, '_>) -> Found<'a> {
    if v.is_null() {
        Found::Null
    } else if let Some(b) = v.as_bool() {
        Found::Bool(b)
    } else if let Some(s) = v.into_string() {
        Found::Str(s)
    } else if let Some(f) = v.cast_f64() {
        Found::Num(f)
    } else {
        Found::Composite
    }
}

fn apply(op: &Op, found: Option<Found<'_>>) -> bool {
    let Some(found) = found else {
        return matches!(op, Op::Neq(_) | Op::Nin(_) | Op::Exists(false));
    };
    match op {
        Op::Exists(want) => *want,
        Op::Eq(lit) => equal(found, lit),
        Op::Neq(lit) => !equal(found, lit),
        Op::In(lits) => lits.iter().any(|l| equal(found, l)),
        Op::Nin(lits) => !lits.iter().any(|l| equal(found, l)),
        Op::Gt(lit) => order(found, lit).is_some_and(|o| o.is_gt()),
        Op::Gte(lit) => order(found, lit).is_some_and(|o| o.is_ge()),
        Op::Lt(lit) => order(found, lit).is_some_and(|o| o.is_lt()),
        Op::Lte(lit) => order(found, lit).is_some_and(|o| o.is_le()),
        Op::Regex(re) => match found {
            Found::Str(s) => re.is_match(s),
            _ => false,
        },
    }
}

/// A header's text read as a number, when the literal is one.
fn as_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn equal(found: Found<'_>, lit: &Lit) -> bool {
    match (found, lit) {
        (Found::Null, Lit::Null) => true,
        (Found::Bool(a), Lit::Bool(b)) => a == *b,
        (Found::Num(a), Lit::Num(b)) => a == *b,
        (Found::Str(a), Lit::Str(b)) => a == b,
        _ => false,
    }
}

fn order(found: Found<'_>, lit: &Lit) -> Option<std::cmp::Ordering> {
    match (found, lit) {
        (Found::Num(a), Lit::Num(b)) => a.partial_cmp(b),
        (Found::Str(a), Lit::Num(b)) => as_number(a)?.partial_cmp(b),
        (Found::Str(a), Lit::Str(b)) => Some(a.cmp(b.as_str())),
        _ => None,
    }
}

/// Parses event bodies for filters, reusing its buffers from one event to
/// the next; the body itself is never modified.
#[derive(Debug, Default)]
pub struct FilterParser(TapeParser);

impl FilterParser {
    /// Parses `body` once and calls `keep` with its root (`None` when the
    /// body is not JSON: every body clause then fails).
    pub fn with_body<R>(
        &mut self,
        body: &[u8],
        keep: impl FnOnce(Option<TapeValue<'_, '_>>) -> R,
    ) -> R {
        self.0.parse(body, |root| keep(root.ok()))
    }
}

/// A body that is not JSON: `null` at the root, so body clauses see a
/// missing field.
pub fn empty_root<R>(keep: impl FnOnce(TapeValue<'_, '_>) -> R) -> R {
    let tape = simd_json::Tape::null();
    keep(tape.as_value())
}

#[cfg(test)]
mod tests;
