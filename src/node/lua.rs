//! Lua source as Kong's LuaJIT reads it: syntax checks with file:line, and the literal
//! values of rockspecs, `rock_manifest` and `schema.lua` without running any of them.
//!
//! Syntax is checked by LuaJIT itself ([`check_syntax`]: the chunk is compiled, never
//! run, in a state with no libraries), so the verdict and the message are the ones Kong
//! would print. Literal values come from `full_moon`'s AST in LuaJIT mode ([`eval`]):
//! top-level `local`/global assignments, strings, numbers, booleans, tables, `..` and
//! indexing of known tables; anything else (calls, functions) is [`Value::Unknown`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Result;
use full_moon::ast::{self, Expression, Field, LastStmt, Stmt};
use full_moon::tokenizer::{Symbol, TokenReference, TokenType};
use full_moon::LuaVersion;

use crate::error::Kind;

/// LuaJIT's `LJ_MAX_XLEVEL`: deeper nesting is "chunk has too many syntax levels".
const MAX_LEVELS: usize = 200;
/// Lua files larger than this are not parsed (no plugin source comes near it).
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// One LuaJIT state (no libraries) that compiles chunks and never runs them.
pub struct SyntaxChecker(mlua::Lua);

impl SyntaxChecker {
    pub fn new() -> Result<SyntaxChecker, String> {
        mlua::Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::default())
            .map(SyntaxChecker)
            .map_err(|e| format!("cannot start LuaJIT: {e}"))
    }

    /// Compile `src`. The error is LuaJIT's own message, which starts with
    /// `<chunk>:<line>:` (`chunk` names the file in it).
    pub fn check(&self, src: &[u8], chunk: &str) -> Result<(), String> {
        match self
            .0
            .load(src)
            .set_name(format!("={chunk}"))
            .into_function()
        {
            Ok(_) => Ok(()),
            Err(mlua::Error::SyntaxError { message, .. }) => Err(message),
            Err(e) => Err(format!("{chunk}: {e}")),
        }
    }
}

/// [`SyntaxChecker::check`] in a fresh state.
pub fn check_syntax(src: &[u8], chunk: &str) -> Result<(), String> {
    SyntaxChecker::new()?.check(src, chunk)
}

/// Read a file for [`check_syntax`], bounded.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        .take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_SOURCE_BYTES {
        crate::bail_kind!(
            Kind::Unsafe,
            "{}: over {MAX_SOURCE_BYTES} bytes, too large for a Lua source file",
            path.display()
        );
    }
    Ok(buf)
}

/// Refuse nesting deeper than LuaJIT accepts, before the recursive parser sees it.
fn check_depth(src: &str) -> Result<(), SyntaxError> {
    let tokens = match full_moon::tokenizer::Lexer::new(src, LuaVersion::luajit()).collect() {
        full_moon::tokenizer::LexerResult::Ok(t) => t,
        _ => return Ok(()), // the parser reports tokenizer errors with their position
    };
    // Block and bracket depth, plus the chain of right-recursive operators at each level.
    let (mut depth, mut chains) = (0usize, vec![0usize]);
    for t in tokens {
        let TokenType::Symbol { symbol } = t.token_type() else {
            continue;
        };
        match symbol {
            Symbol::LeftParen
            | Symbol::LeftBrace
            | Symbol::LeftBracket
            | Symbol::Function
            | Symbol::If
            | Symbol::Do
            | Symbol::Repeat => {
                depth += 1;
                chains.push(0);
            }
            Symbol::RightParen
            | Symbol::RightBrace
            | Symbol::RightBracket
            | Symbol::End
            | Symbol::Until => {
                depth = depth.saturating_sub(1);
                if chains.len() > 1 {
                    chains.pop();
                }
            }
            Symbol::TwoDots | Symbol::Caret | Symbol::Not | Symbol::Minus | Symbol::Hash => {
                *chains.last_mut().expect("never empty") += 1;
            }
            Symbol::Comma
            | Symbol::Semicolon
            | Symbol::Equal
            | Symbol::Then
            | Symbol::Else
            | Symbol::ElseIf
            | Symbol::Local
            | Symbol::Return => {
                *chains.last_mut().expect("never empty") = 0;
            }
            _ => {}
        }
        if depth + chains.iter().sum::<usize>() > MAX_LEVELS {
            let p = t.start_position();
            return Err(SyntaxError {
                line: p.line(),
                column: p.character(),
                message: format!(
                    "chunk has too many syntax levels (over {MAX_LEVELS}, LuaJIT's limit)"
                ),
            });
        }
    }
    Ok(())
}

/// Parse `src` as LuaJIT would, or say where and why it would not load.
pub fn parse(src: &str) -> Result<ast::Ast, SyntaxError> {
    check_depth(src)?;
    let owned = src.to_string();
    // The parser recurses per nesting level: give it room whatever the caller's stack.
    let run = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || full_moon::parse_fallible(&owned, LuaVersion::luajit()));
    let result = match run.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        _ => {
            return Err(SyntaxError {
                line: 1,
                column: 1,
                message: "the Lua parser failed on this file".into(),
            })
        }
    };
    if let Some(e) = result.errors().first() {
        let (start, _) = e.range();
        return Err(SyntaxError {
            line: start.line(),
            column: start.character(),
            message: e.error_message().into_owned(),
        });
    }
    Ok(result.into_ast())
}

/// Read a Lua file (bounded) as text; invalid UTF-8 only ever sits in strings and
/// comments, where a replacement character changes no syntax.
pub fn read_source(path: &Path) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_bytes(path)?).into_owned())
}

/// A literal Lua value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Num(f64),
    Str(String),
    Table(Table),
    /// Not a literal (a call, a function, an unknown name).
    Unknown,
}

/// A table constructor's entries in order; array items get keys 1, 2, ….
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub entries: Vec<(Value, Value)>,
}

impl Table {
    /// The value under the string key `k` (the last one, as Lua keeps).
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.entries
            .iter()
            .rev()
            .find(|(key, _)| matches!(key, Value::Str(s) if s == k))
            .map(|(_, v)| v)
    }

    /// Entries with string keys.
    pub fn string_keys(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().filter_map(|(k, v)| match k {
            Value::Str(s) => Some((s.as_str(), v)),
            _ => None,
        })
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_table(&self) -> Option<&Table> {
        match self {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }
    /// `self[k]` for a table and a string key.
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.as_table()?.get(k)
    }
}

/// The globals a chunk sets and the value it returns, evaluated literally.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    pub globals: BTreeMap<String, Value>,
    pub returned: Option<Value>,
}

/// Bytes of strings and table entries one evaluation may build. Copies and
/// concatenations can double a value per line, so without it 40 lines of a 700-byte
/// file would ask for terabytes; real rockspecs and manifests use a few KiB.
const BUDGET: u64 = 16 << 20;

struct Scope {
    locals: BTreeMap<String, Value>,
    globals: BTreeMap<String, Value>,
    /// What is left of [`BUDGET`]; once spent, values built are `Unknown`.
    budget: std::cell::Cell<u64>,
}

/// Evaluate the top level of `src` literally (see the module doc).
pub fn eval(src: &str) -> Result<Chunk, SyntaxError> {
    let ast = parse(src)?;
    let mut s = Scope {
        locals: BTreeMap::new(),
        globals: BTreeMap::new(),
        budget: std::cell::Cell::new(BUDGET),
    };
    for stmt in ast.nodes().stmts() {
        match stmt {
            Stmt::LocalAssignment(a) => {
                let values: Vec<Value> = a.expressions().iter().map(|e| s.eval(e)).collect();
                for (i, name) in a.names().iter().enumerate() {
                    let v = values.get(i).cloned().unwrap_or(Value::Nil);
                    s.locals.insert(ident(name), v);
                }
            }
            Stmt::Assignment(a) => {
                let values: Vec<Value> = a.expressions().iter().map(|e| s.eval(e)).collect();
                for (i, var) in a.variables().iter().enumerate() {
                    if let ast::Var::Name(n) = var {
                        let v = values.get(i).cloned().unwrap_or(Value::Nil);
                        let n = ident(n);
                        match s.locals.get_mut(&n) {
                            Some(slot) => *slot = v,
                            None => {
                                s.globals.insert(n, v);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let returned = match ast.nodes().last_stmt() {
        Some(LastStmt::Return(r)) => r.returns().iter().next().map(|e| s.eval(e)),
        _ => None,
    };
    Ok(Chunk {
        globals: s.globals,
        returned,
    })
}

fn ident(t: &TokenReference) -> String {
    t.token().to_string()
}

/// What building a copy of `v` costs against the budget.
fn weight(v: &Value) -> u64 {
    match v {
        Value::Str(s) => s.len() as u64 + 1,
        Value::Table(t) => {
            t.entries
                .iter()
                .map(|(k, v)| weight(k) + weight(v))
                .sum::<u64>()
                + 1
        }
        _ => 1,
    }
}

impl Scope {
    /// Take `n` from the budget; false (and the budget spent) when it does not hold `n`.
    fn spend(&self, n: u64) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(n));
        left >= n
    }

    /// A copy of `v`, if the budget allows it.
    fn copy(&self, v: &Value) -> Value {
        match self.spend(weight(v)) {
            true => v.clone(),
            false => Value::Unknown,
        }
    }

    fn lookup(&self, name: &str) -> Value {
        self.locals
            .get(name)
            .or_else(|| self.globals.get(name))
            .map_or(Value::Unknown, |v| self.copy(v))
    }

    fn eval(&self, e: &Expression) -> Value {
        match e {
            Expression::String(t) => match t.token_type() {
                TokenType::StringLiteral {
                    literal,
                    multi_line_depth,
                    ..
                } => Value::Str(
                    if *multi_line_depth > 0 || t.to_string().trim_start().starts_with('[') {
                        literal.to_string()
                    } else {
                        unescape(literal)
                    },
                ),
                _ => Value::Unknown,
            },
            Expression::Number(t) => {
                number(&t.token().to_string()).map_or(Value::Unknown, Value::Num)
            }
            Expression::Symbol(t) => match t.token_type() {
                TokenType::Symbol {
                    symbol: Symbol::True,
                } => Value::Bool(true),
                TokenType::Symbol {
                    symbol: Symbol::False,
                } => Value::Bool(false),
                TokenType::Symbol {
                    symbol: Symbol::Nil,
                } => Value::Nil,
                _ => Value::Unknown,
            },
            Expression::Parentheses { expression, .. } => self.eval(expression),
            Expression::BinaryOperator {
                lhs,
                binop: ast::BinOp::TwoDots(_),
                rhs,
            } => match (concat_part(&self.eval(lhs)), concat_part(&self.eval(rhs))) {
                (Some(a), Some(b)) if self.spend((a.len() + b.len()) as u64) => Value::Str(a + &b),
                _ => Value::Unknown,
            },
            Expression::TableConstructor(t) => Value::Table(self.table(t)),
            Expression::Var(ast::Var::Name(n)) => self.lookup(&ident(n)),
            Expression::Var(ast::Var::Expression(v)) => self.index(v),
            _ => Value::Unknown,
        }
    }

    fn table(&self, t: &ast::TableConstructor) -> Table {
        let mut out = Table::default();
        let mut next = 1.0;
        for f in t.fields().iter() {
            let (k, v) = match f {
                Field::NameKey { key, value, .. } => (Value::Str(ident(key)), self.eval(value)),
                Field::ExpressionKey { key, value, .. } => (self.eval(key), self.eval(value)),
                Field::NoKey(value) => {
                    let k = Value::Num(next);
                    next += 1.0;
                    (k, self.eval(value))
                }
                _ => continue,
            };
            out.entries.push((k, v));
        }
        out
    }

    /// `a.b["c"]` over known tables.
    fn index(&self, v: &ast::VarExpression) -> Value {
        let mut cur = match v.prefix() {
            ast::Prefix::Name(n) => self.lookup(&ident(n)),
            ast::Prefix::Expression(e) => self.eval(e),
            _ => return Value::Unknown,
        };
        for s in v.suffixes() {
            let key = match s {
                ast::Suffix::Index(ast::Index::Dot { name, .. }) => ident(name),
                ast::Suffix::Index(ast::Index::Brackets { expression, .. }) => {
                    match self.eval(expression) {
                        Value::Str(s) => s,
                        _ => return Value::Unknown,
                    }
                }
                _ => return Value::Unknown,
            };
            cur = cur.get(&key).map_or(Value::Unknown, |v| self.copy(v));
        }
        cur
    }
}

fn concat_part(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => Some(format!("{}", *n as i64)),
        Value::Num(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(|n| n as f64);
    }
    t.parse().ok()
}

/// Resolve the escapes of a quoted Lua string (`\n`, `\ddd`, `\xXX`, `\u{…}`, `\z`, …).
pub fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = b[i];
        i += 1;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => out.push(b'\n'),
            b'x' if i + 2 <= b.len() => {
                if let Ok(v) = u8::from_str_radix(&s[i..i + 2], 16) {
                    out.push(v);
                }
                i += 2;
            }
            b'z' => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
            }
            b'u' if b.get(i) == Some(&b'{') => {
                let end = s[i..].find('}').map_or(b.len(), |e| i + e);
                if let Some(ch) = u32::from_str_radix(&s[i + 1..end], 16)
                    .ok()
                    .and_then(char::from_u32)
                {
                    out.extend_from_slice(ch.to_string().as_bytes());
                }
                i = end + 1;
            }
            d if d.is_ascii_digit() => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    match b.get(i) {
                        Some(d) if d.is_ascii_digit() => {
                            v = v * 10 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `name = "…"` of a `schema.lua` (`return { name = … }`, or a returned local), if
/// it is a literal.
pub fn schema_name(src: &str) -> Result<Option<String>, SyntaxError> {
    let chunk = eval(src)?;
    Ok(chunk
        .returned
        .as_ref()
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_have_positions() {
        parse("local x = 1\nfor i = 1, 3 do\n  if i == 2 then goto continue end\n  ::continue::\nend\nlocal n = 1ULL\nreturn x\n").unwrap();
        let e = parse("local t = {\n  a = 1,\n}\nfunction f(\n  return 1\nend\n").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        let e = parse("local s = \"unterminated\nreturn s\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        // Lua 5.3 syntax is not LuaJIT's.
        assert!(parse("return 1 // 2\n").is_err());
        let deep = format!("return {}1{}\n", "(".repeat(300), ")".repeat(300));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("too many syntax levels"), "{e}");
        let long = format!("return {}\"x\"\n", "\"a\" .. ".repeat(100_000));
        assert!(parse(&long).unwrap_err().message.contains("syntax levels"));
        parse(&format!("return {{{}}}\n", "1,".repeat(50_000))).unwrap();
    }

    #[test]
    fn luajit_verdicts() {
        check_syntax(b"local x = 1\nfor i = 1, 3 do goto continue ::continue:: end\nlocal n = 1ULL\nreturn x\n", "ok.lua").unwrap();
        let e = check_syntax(
            b"local M = {}\nfunction M.run()\n  return 1 +\nend\nreturn M\n",
            "a.lua",
        )
        .unwrap_err();
        assert_eq!(e, "a.lua:4: unexpected symbol near 'end'");
        let e = check_syntax(b"return 1 // 2\n", "b.lua").unwrap_err();
        assert!(e.starts_with("b.lua:1:"), "{e}");
        let deep = format!("return {}1{}\n", "(".repeat(300), ")".repeat(300));
        assert!(check_syntax(deep.as_bytes(), "d.lua")
            .unwrap_err()
            .contains("too many syntax levels"));
        // No library is there: compiling runs nothing, and nothing could run.
        check_syntax(b"os.exit(1)\n", "x.lua").unwrap();
    }

    #[test]
    fn evaluation_is_bounded() {
        // Doubling a string or a table 40 times would need terabytes: past the budget
        // the values are simply not literal.
        let mut src = String::from("local a = \"xxxxxxxx\"\nlocal t = {1}\n");
        for _ in 0..40 {
            src.push_str("a = a .. a\nt = {t, t}\n");
        }
        src.push_str("package = a\nx = t\nversion = \"1.0-1\"\n");
        let c = eval(&src).unwrap();
        assert_eq!(c.globals.get("package"), Some(&Value::Unknown));
        assert_eq!(
            c.globals.get("version").and_then(Value::as_str),
            Some("1.0-1")
        );
    }

    #[test]
    fn literal_evaluation() {
        let c = eval(
            "local plugin_name = \"my-plugin\"\nlocal package_version = \"0.3.1\"\nlocal rev = 2\n\
             package = \"kong-plugin-\" .. plugin_name\nversion = package_version .. \"-\" .. rev\n\
             build = { type = \"builtin\", modules = {\n\
               [\"kong.plugins.\" .. plugin_name .. \".handler\"] = \"src/handler.lua\",\n\
               ['kong.plugins.my-plugin.schema'] = [[src/schema.lua]],\n\
               other = os.getenv(\"X\") } }\n\
             description = { summary = \"a\\tb\\65\\x42\\u{263A}\" }\n",
        )
        .unwrap();
        let g = &c.globals;
        assert_eq!(g["package"].as_str(), Some("kong-plugin-my-plugin"));
        assert_eq!(g["version"].as_str(), Some("0.3.1-2"));
        let m = g["build"].get("modules").unwrap().as_table().unwrap();
        let keys: Vec<(&str, Option<&str>)> =
            m.string_keys().map(|(k, v)| (k, v.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("kong.plugins.my-plugin.handler", Some("src/handler.lua")),
                ("kong.plugins.my-plugin.schema", Some("src/schema.lua")),
                ("other", None)
            ]
        );
        assert_eq!(
            g["description"].get("summary").unwrap().as_str(),
            Some("a\tbAB\u{263A}")
        );
        assert_eq!(
            schema_name("local N = \"x-y\"\nlocal s = { name = N, fields = {} }\nreturn s\n")
                .unwrap(),
            Some("x-y".into())
        );
        assert_eq!(schema_name("return require('a')\n").unwrap(), None);
    }
}
