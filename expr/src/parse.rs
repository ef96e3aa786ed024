//! Lexer and parser: expression text to an arena of nodes in which every node's arguments come
//! before it (so later passes are plain forward loops, never recursion over the tree).
//!
//! Python's grammar and precedence, lowest first: comparisons (chained: `a < b < c` is
//! `(a < b) & (b < c)`), `|`, `^`, `&`, `<< >>`, `+ -`, `* / // %`, unary `- + ~`, `**` (right
//! associative, binds tighter than a unary minus on its left). The parser recurses only through
//! parentheses, calls, unary operators and powers, and refuses more than [`MAX_DEPTH`] levels with
//! an error in the user's words, so no input can overflow the stack.

pub use crate::funcs::functions;
pub(crate) use crate::funcs::{function, Fun};
pub(crate) use crate::lex::{lex, syntax, Tok};
use crate::Result;

/// Deepest nesting of parentheses, calls, unary operators and powers (Python's parser stops at
/// 200 nested parentheses, with "too many nested parentheses").
pub const MAX_DEPTH: usize = 200;

/// One node of the parsed expression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    /// The element of the input with this index (`x`, or a named input).
    Input(u32),
    /// The flat index (int64).
    I,
    /// A Python `int` literal (weak, as in NEP 50).
    Int(i128),
    /// A Python `bool` literal (`True`, `False`; weak).
    Bool(bool),
    /// A Python `float` literal or constant (`pi`, `e`, `inf`, `nan`; weak).
    Float(f64),
    /// An operation over `args[..arity]`.
    Op(Fun),
}

/// A parsed node: its kind, its argument node indices (all smaller than its own) and the byte
/// offset in the source it came from (for error messages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Node {
    pub kind: Kind,
    pub args: [u32; 3],
    pub arity: usize,
    pub pos: usize,
    /// Written as a function call (`negative(1)` is numpy's, `-1` is Python's).
    pub call: bool,
}

pub use crate::scan::{
    check_input_name, error_in_sized, error_in_source, extract_reductions, reads_index, substitute_sizes,
    ReductionCall, REDUCTION_PREFIX,
};

/// Parses `src` into nodes, `names[k]` denoting input `k`; the last node is the root.
pub(super) fn parse(src: &str, names: &[&str]) -> Result<Vec<Node>> {
    let toks = lex(src)?;
    if let Some(&(_, at)) = toks.iter().find(|(t, _)| *t == Tok::Op("=")) {
        return Err(syntax(src, at, "unexpected character '=' (comparison is '==')".into()));
    }
    let mut p = Parser { src, toks, pos: 0, nodes: Vec::new(), depth: 0, names };
    if p.peek() == Tok::End {
        return p.err("empty expression");
    }
    p.comparison()?;
    if p.peek() != Tok::End {
        let found = p.describe(p.peek());
        return p.err(format!("unexpected {found}"));
    }
    Ok(p.nodes)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    nodes: Vec<Node>,
    depth: usize,
    names: &'a [&'a str],
}

type Id = u32;

impl Parser<'_> {
    fn peek(&self) -> Tok {
        self.toks[self.pos].0
    }
    fn at(&self) -> usize {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek();
        if t != Tok::End {
            self.pos += 1;
        }
        t
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(syntax(self.src, self.at(), message.into()))
    }
    fn describe(&self, t: Tok) -> String {
        match t {
            Tok::Int(v) => format!("number {v}"),
            Tok::Float(v) => format!("number {v}"),
            Tok::Ident(a, b) => format!("name '{}'", &self.src[a..b]),
            Tok::Op(o) => format!("'{o}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "end of expression".into(),
        }
    }

    fn push(&mut self, kind: Kind, args: &[Id], pos: usize) -> Id {
        let mut a = [0; 3];
        a[..args.len()].copy_from_slice(args);
        self.nodes.push(Node { kind, args: a, arity: args.len(), pos, call: false });
        (self.nodes.len() - 1) as Id
    }

    fn comparison(&mut self) -> Result<Id> {
        let first = self.bit_or()?;
        let mut lhs = first;
        let mut chain: Option<Id> = None;
        loop {
            let pos = self.at();
            let f = match self.peek() {
                Tok::Op("<") => Fun::Lt,
                Tok::Op("<=") => Fun::Le,
                Tok::Op(">") => Fun::Gt,
                Tok::Op(">=") => Fun::Ge,
                Tok::Op("==") => Fun::Eq,
                Tok::Op("!=") => Fun::Ne,
                _ => return Ok(chain.unwrap_or(first)),
            };
            self.bump();
            let rhs = self.bit_or()?;
            let cmp = self.push(Kind::Op(f), &[lhs, rhs], pos);
            // Python: `a < b < c` is `a < b and b < c`, with b evaluated once.
            chain = Some(match chain {
                None => cmp,
                Some(prev) => self.push(Kind::Op(Fun::BitAnd), &[prev, cmp], pos),
            });
            lhs = rhs;
        }
    }

    fn left_assoc(&mut self, ops: &[(&'static str, Fun)], next: fn(&mut Self) -> Result<Id>) -> Result<Id> {
        let mut lhs = next(self)?;
        loop {
            let pos = self.at();
            let Some(&(_, f)) = ops.iter().find(|(o, _)| self.peek() == Tok::Op(o)) else {
                return Ok(lhs);
            };
            self.bump();
            let rhs = next(self)?;
            lhs = self.push(Kind::Op(f), &[lhs, rhs], pos);
        }
    }

    fn bit_or(&mut self) -> Result<Id> {
        self.left_assoc(&[("|", Fun::BitOr)], Self::bit_xor)
    }
    fn bit_xor(&mut self) -> Result<Id> {
        self.left_assoc(&[("^", Fun::BitXor)], Self::bit_and)
    }
    fn bit_and(&mut self) -> Result<Id> {
        self.left_assoc(&[("&", Fun::BitAnd)], Self::shift)
    }
    fn shift(&mut self) -> Result<Id> {
        self.left_assoc(&[("<<", Fun::Shl), (">>", Fun::Shr)], Self::arith)
    }
    fn arith(&mut self) -> Result<Id> {
        self.left_assoc(&[("+", Fun::Add), ("-", Fun::Sub)], Self::term)
    }
    fn term(&mut self) -> Result<Id> {
        self.left_assoc(&[("*", Fun::Mul), ("/", Fun::Div), ("//", Fun::FloorDiv), ("%", Fun::Mod)], Self::factor)
    }

    /// Every level of recursion passes through here, so this is where depth is bounded.
    fn factor(&mut self) -> Result<Id> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!(
                "too many nested parentheses (more than {MAX_DEPTH} levels of parentheses, calls, unary operators or powers)"
            ));
        }
        let pos = self.at();
        let r = match self.peek() {
            Tok::Op("-") => {
                self.bump();
                let a = self.factor()?;
                Ok(self.push(Kind::Op(Fun::Neg), &[a], pos))
            }
            Tok::Op("~") => {
                self.bump();
                let a = self.factor()?;
                Ok(self.push(Kind::Op(Fun::Invert), &[a], pos))
            }
            Tok::Op("+") => {
                self.bump();
                let a = self.factor()?;
                Ok(self.push(Kind::Op(Fun::Pos), &[a], pos))
            }
            _ => self.power(),
        };
        self.depth -= 1;
        r
    }

    fn power(&mut self) -> Result<Id> {
        let base = self.atom()?;
        let pos = self.at();
        if self.peek() == Tok::Op("**") {
            self.bump();
            let exp = self.factor()?; // right-associative; `-x ** 2` is `-(x ** 2)`
            return Ok(self.push(Kind::Op(Fun::PowOp), &[base, exp], pos));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Id> {
        let start = self.at();
        match self.bump() {
            Tok::Int(v) => Ok(self.push(Kind::Int(v), &[], start)),
            Tok::Float(v) => Ok(self.push(Kind::Float(v), &[], start)),
            Tok::LParen => {
                let e = self.comparison()?;
                if self.peek() != Tok::RParen {
                    let found = self.describe(self.peek());
                    return self.err(format!("expected ')', found {found}"));
                }
                self.bump();
                Ok(e)
            }
            Tok::Ident(a, b) => {
                let name = &self.src[a..b];
                if self.peek() == Tok::LParen {
                    return self.call(name, start);
                }
                if let Some(k) = self.names.iter().position(|n| *n == name) {
                    return Ok(self.push(Kind::Input(k as u32), &[], start));
                }
                let kind = match name {
                    "i" => Kind::I,
                    "pi" => Kind::Float(std::f64::consts::PI),
                    "e" => Kind::Float(std::f64::consts::E),
                    "inf" => Kind::Float(f64::INFINITY),
                    "nan" => Kind::Float(f64::NAN),
                    "True" => Kind::Bool(true),
                    "False" => Kind::Bool(false),
                    _ if function(name).is_some() => {
                        return Err(syntax(self.src, start, format!("function '{name}' needs arguments: {name}(...)")))
                    }
                    _ => {
                        let known = self.names.join(", ");
                        return Err(syntax(
                            self.src,
                            start,
                            format!("unknown variable '{name}' (inputs: {known}; i is the flat index)"),
                        ));
                    }
                };
                Ok(self.push(kind, &[], start))
            }
            t => {
                self.pos = self.pos.saturating_sub(usize::from(t != Tok::End));
                let found = self.describe(t);
                self.err(format!("expected a number, a name or '(', found {found}"))
            }
        }
    }

    fn call(&mut self, name: &str, start: usize) -> Result<Id> {
        if let Ok(r) = name.parse::<crate::Reduction>() {
            let hint = match r {
                crate::Reduction::Max => {
                    " (numpy reads max(x, 0) as np.max(x, axis=0)): use maximum(a, b) for the elementwise maximum,"
                }
                crate::Reduction::Min => {
                    " (numpy reads min(x, 0) as np.min(x, axis=0)): use minimum(a, b) for the elementwise minimum,"
                }
                _ => "",
            };
            return Err(syntax(
                self.src,
                start,
                format!(
                    "'{name}' is a reduction{hint} and reductions go alone in `shmpool reduce --expr '{name}(...)'` \
                     (not inside an elementwise expression, yet)"
                ),
            ));
        }
        let (f, want) = function(name).ok_or_else(|| syntax(self.src, start, format!("unknown function '{name}'")))?;
        self.bump(); // '('
        let mut args = Vec::new();
        if self.peek() != Tok::RParen {
            loop {
                args.push(self.comparison()?);
                match self.peek() {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RParen => break,
                    t => {
                        let found = self.describe(t);
                        return self.err(format!("expected ',' or ')', found {found}"));
                    }
                }
            }
        }
        self.bump(); // ')'
        if args.len() != want {
            let s = if want == 1 { "" } else { "s" };
            return Err(syntax(self.src, start, format!("{name}() takes {want} argument{s}, got {}", args.len())));
        }
        let id = self.push(Kind::Op(f), &args, start);
        self.nodes[id as usize].call = true;
        Ok(id)
    }
}
