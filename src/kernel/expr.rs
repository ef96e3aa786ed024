//! Expression kernels for the command line: a numexpr-like language compiled to a small
//! register program that travels in the parameter block and is evaluated by the workers in
//! blocks of [`BLOCK`] elements (one tight loop per operation, so it vectorises).
//!
//! Variables `x` (the element, as f64) and `i` (its flat index); number literals; `+ - * / %
//! **`, unary `-`; comparisons `< <= > >= == !=` (1.0 or 0.0); functions `sqrt exp log log2
//! log10 sin cos tan asin acos atan atan2 sinh cosh tanh abs floor ceil round min max pow clamp
//! where`; constants `pi e`. IEEE semantics throughout: division by zero gives inf or nan, never
//! an error. `%` follows numpy (the result has the sign of the divisor), `round` rounds half to
//! even, `min`/`max` propagate NaN, like numpy.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};

/// Elements per block: each operation runs over this many elements at a time.
pub const BLOCK: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(f64),
    Ident(usize, usize),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            let v: f64 = text.parse().map_err(|_| syntax(src, start, format!("bad number '{text}'")))?;
            out.push((Tok::Num(v), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(start, i), start));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let op2 = ["**", "<=", ">=", "==", "!="].into_iter().find(|o| *o == two);
        if let Some(o) = op2 {
            out.push((Tok::Op(o), start));
            i += 2;
            continue;
        }
        let tok = match c {
            b'+' => Tok::Op("+"),
            b'-' => Tok::Op("-"),
            b'*' => Tok::Op("*"),
            b'/' => Tok::Op("/"),
            b'%' => Tok::Op("%"),
            b'<' => Tok::Op("<"),
            b'>' => Tok::Op(">"),
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b',' => Tok::Comma,
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(syntax(src, start, format!("unexpected character '{ch}'")));
            }
        };
        out.push((tok, start));
        i += 1;
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

fn syntax(src: &str, pos: usize, message: String) -> Error {
    Error::InvalidExpression { expr: src.to_string(), position: src[..pos.min(src.len())].chars().count() + 1, message }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    X,
    I,
    Const(f64),
    Call(u32, Vec<Node>),
}

// Operation codes (shared by the AST and the program).
const LOAD_X: u32 = 0;
const LOAD_I: u32 = 1;
const CONST: u32 = 2;
const NEG: u32 = 10;
const UNARY: [(&str, u32); 19] = [
    ("sqrt", 11),
    ("exp", 12),
    ("log", 13),
    ("log2", 14),
    ("log10", 15),
    ("sin", 16),
    ("cos", 17),
    ("tan", 18),
    ("asin", 19),
    ("acos", 20),
    ("atan", 21),
    ("sinh", 22),
    ("cosh", 23),
    ("tanh", 24),
    ("abs", 25),
    ("floor", 26),
    ("ceil", 27),
    ("round", 28),
    ("neg", NEG),
];
const ADD: u32 = 40;
const SUB: u32 = 41;
const MUL: u32 = 42;
const DIV: u32 = 43;
const MOD: u32 = 44;
const POW: u32 = 45;
const ATAN2: u32 = 46;
const MIN: u32 = 47;
const MAX: u32 = 48;
const LT: u32 = 50;
const LE: u32 = 51;
const GT: u32 = 52;
const GE: u32 = 53;
const EQ: u32 = 54;
const NE: u32 = 55;
const WHERE: u32 = 60;
const CLAMP: u32 = 61;
// Arithmetic with a constant operand (`a op imm`, or `imm op a` for the R forms): one register
// load fewer per element, which is most of the cost of short expressions like W1.
const ADDK: u32 = 70;
const SUBK: u32 = 71;
const MULK: u32 = 72;
const DIVK: u32 = 73;
const RSUBK: u32 = 74;
const RDIVK: u32 = 75;

fn with_const(op: u32, a: f64, k: f64) -> f64 {
    match op {
        ADDK => a + k,
        SUBK => a - k,
        MULK => a * k,
        DIVK => a / k,
        RSUBK => k - a,
        _ => k / a,
    }
}

fn arity(op: u32) -> usize {
    match op {
        NEG..=28 => 1,
        ADD..=NE => 2,
        _ => 3,
    }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

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
            Tok::Num(v) => format!("number {v}"),
            Tok::Ident(a, b) => format!("name '{}'", &self.src[a..b]),
            Tok::Op(o) => format!("'{o}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "end of expression".into(),
        }
    }

    fn expr(&mut self) -> Result<Node> {
        let mut lhs = self.additive()?;
        loop {
            let op = match self.peek() {
                Tok::Op("<") => LT,
                Tok::Op("<=") => LE,
                Tok::Op(">") => GT,
                Tok::Op(">=") => GE,
                Tok::Op("==") => EQ,
                Tok::Op("!=") => NE,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.additive()?;
            lhs = Node::Call(op, vec![lhs, rhs]);
        }
    }

    fn additive(&mut self) -> Result<Node> {
        let mut lhs = self.term()?;
        loop {
            let op = match self.peek() {
                Tok::Op("+") => ADD,
                Tok::Op("-") => SUB,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.term()?;
            lhs = Node::Call(op, vec![lhs, rhs]);
        }
    }

    fn term(&mut self) -> Result<Node> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Op("*") => MUL,
                Tok::Op("/") => DIV,
                Tok::Op("%") => MOD,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.unary()?;
            lhs = Node::Call(op, vec![lhs, rhs]);
        }
    }

    fn unary(&mut self) -> Result<Node> {
        match self.peek() {
            Tok::Op("-") => {
                self.bump();
                Ok(Node::Call(NEG, vec![self.unary()?]))
            }
            Tok::Op("+") => {
                self.bump();
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Node> {
        let base = self.atom()?;
        if self.peek() == Tok::Op("**") {
            self.bump();
            let exp = self.unary()?; // right-associative, binds tighter than a unary minus on its left
            return Ok(Node::Call(POW, vec![base, exp]));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Node> {
        let start = self.at();
        match self.bump() {
            Tok::Num(v) => Ok(Node::Const(v)),
            Tok::LParen => {
                let e = self.expr()?;
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
                    self.bump();
                    let mut args = Vec::new();
                    if self.peek() != Tok::RParen {
                        loop {
                            args.push(self.expr()?);
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
                    self.bump();
                    let op =
                        function(name).ok_or_else(|| syntax(self.src, start, format!("unknown function '{name}'")))?;
                    let want = arity(op);
                    if args.len() != want {
                        return Err(syntax(
                            self.src,
                            start,
                            format!(
                                "{name}() takes {want} argument{}, got {}",
                                if want == 1 { "" } else { "s" },
                                args.len()
                            ),
                        ));
                    }
                    return Ok(Node::Call(op, args));
                }
                match name {
                    "x" => Ok(Node::X),
                    "i" => Ok(Node::I),
                    "pi" => Ok(Node::Const(std::f64::consts::PI)),
                    "e" => Ok(Node::Const(std::f64::consts::E)),
                    _ if function(name).is_some() => {
                        Err(syntax(self.src, start, format!("function '{name}' needs arguments: {name}(...)")))
                    }
                    _ => Err(syntax(self.src, start, format!("unknown variable '{name}' (use x or i)"))),
                }
            }
            t => {
                self.pos = self.pos.saturating_sub(usize::from(t != Tok::End));
                let found = self.describe(t);
                self.err(format!("expected a number, a name or '(', found {found}"))
            }
        }
    }
}

fn function(name: &str) -> Option<u32> {
    if name == "neg" {
        return None;
    }
    UNARY.iter().find(|(n, _)| *n == name).map(|(_, op)| *op).or(match name {
        "atan2" => Some(ATAN2),
        "min" => Some(MIN),
        "max" => Some(MAX),
        "pow" => Some(POW),
        "where" => Some(WHERE),
        "clamp" => Some(CLAMP),
        _ => None,
    })
}

fn unary(op: u32, a: f64) -> f64 {
    match op {
        NEG => -a,
        11 => a.sqrt(),
        12 => a.exp(),
        13 => a.ln(),
        14 => a.log2(),
        15 => a.log10(),
        16 => a.sin(),
        17 => a.cos(),
        18 => a.tan(),
        19 => a.asin(),
        20 => a.acos(),
        21 => a.atan(),
        22 => a.sinh(),
        23 => a.cosh(),
        24 => a.tanh(),
        25 => a.abs(),
        26 => a.floor(),
        27 => a.ceil(),
        _ => a.round_ties_even(),
    }
}

fn np_mod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        m + b
    } else {
        m
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn b2f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn binary(op: u32, a: f64, b: f64) -> f64 {
    match op {
        ADD => a + b,
        SUB => a - b,
        MUL => a * b,
        DIV => a / b,
        MOD => np_mod(a, b),
        POW => a.powf(b),
        ATAN2 => a.atan2(b),
        MIN => nan_min(a, b),
        MAX => nan_max(a, b),
        LT => b2f(a < b),
        LE => b2f(a <= b),
        GT => b2f(a > b),
        GE => b2f(a >= b),
        EQ => b2f(a == b),
        _ => b2f(a != b),
    }
}

fn ternary(op: u32, a: f64, b: f64, c: f64) -> f64 {
    if op == WHERE {
        if a != 0.0 {
            b
        } else {
            c
        }
    } else {
        nan_min(nan_max(a, b), c)
    }
}

/// Folds operations whose arguments are all constants.
fn fold(n: Node) -> Node {
    match n {
        Node::Call(op, args) => {
            let args: Vec<Node> = args.into_iter().map(fold).collect();
            let consts: Option<Vec<f64>> =
                args.iter().map(|a| if let Node::Const(v) = a { Some(*v) } else { None }).collect();
            match consts.as_deref() {
                Some([a]) => Node::Const(unary(op, *a)),
                Some([a, b]) => Node::Const(binary(op, *a, *b)),
                Some([a, b, c]) => Node::Const(ternary(op, *a, *b, *c)),
                _ => Node::Call(op, args),
            }
        }
        other => other,
    }
}

/// One instruction: `dst = op(a, b, c)` over a block; `imm` for constants.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Instr {
    op: u32,
    dst: u32,
    a: u32,
    b: u32,
    c: u32,
    _pad: u32,
    imm: f64,
}

/// A compiled expression: a register program, serialisable as a parameter block.
#[derive(Debug, Clone)]
pub struct Program {
    instrs: Vec<Instr>,
}

const HEADER: usize = 16;

impl Program {
    /// Parses and compiles `src`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExpression`] with the 1-based column of the problem.
    pub fn compile(src: &str) -> Result<Program> {
        let toks = lex(src)?;
        let mut p = Parser { src, toks, pos: 0 };
        if p.peek() == Tok::End {
            return p.err("empty expression");
        }
        let ast = p.expr()?;
        if p.peek() != Tok::End {
            let found = p.describe(p.peek());
            return p.err(format!("unexpected {found}"));
        }
        let mut instrs = Vec::new();
        emit(&fold(ast), &mut instrs);
        Ok(Program { instrs })
    }

    /// The parameter block: a 16-byte header then the instructions.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + self.instrs.len() * std::mem::size_of::<Instr>());
        v.extend_from_slice(bytemuck::bytes_of(&[self.instrs.len() as u32, 0x4558_5052, 0, 0]));
        v.extend_from_slice(bytemuck::cast_slice(&self.instrs));
        v
    }

    /// Decodes and validates a parameter block (registers are SSA: every operand precedes its
    /// result, which is what lets the evaluator borrow them safely).
    fn from_bytes(b: &[u8]) -> Option<Program> {
        let head: [u32; 4] = bytemuck::pod_read_unaligned(b.get(..HEADER)?);
        let n = head[0] as usize;
        if head[1] != 0x4558_5052 || n == 0 {
            return None;
        }
        let body = b.get(HEADER..HEADER + n * std::mem::size_of::<Instr>())?;
        let instrs: Vec<Instr> =
            body.chunks_exact(std::mem::size_of::<Instr>()).map(bytemuck::pod_read_unaligned).collect();
        for (k, ins) in instrs.iter().enumerate() {
            let used = match ins.op {
                LOAD_X | LOAD_I | CONST => 0,
                op if (NEG..=28).contains(&op) => 1,
                op if (ADD..=NE).contains(&op) => 2,
                WHERE | CLAMP => 3,
                ADDK..=RDIVK => 1,
                _ => return None,
            };
            let srcs = [ins.a, ins.b, ins.c];
            if ins.dst as usize != k || srcs[..used].iter().any(|&s| s as usize >= k) {
                return None;
            }
        }
        Some(Program { instrs })
    }

    /// Evaluates the expression for one element (the sequential reference).
    pub fn eval_one(&self, x: f64, i: f64) -> f64 {
        let mut r = vec![0.0; self.instrs.len()];
        for (k, ins) in self.instrs.iter().enumerate() {
            let (a, b, c) = (ins.a as usize, ins.b as usize, ins.c as usize);
            r[k] = match ins.op {
                LOAD_X => x,
                LOAD_I => i,
                CONST => ins.imm,
                op if (NEG..=28).contains(&op) => unary(op, r[a]),
                op if (ADD..=NE).contains(&op) => binary(op, r[a], r[b]),
                op if (ADDK..=RDIVK).contains(&op) => with_const(op, r[a], ins.imm),
                op => ternary(op, r[a], r[b], r[c]),
            };
        }
        r[self.instrs.len() - 1]
    }
}

fn emit(n: &Node, out: &mut Vec<Instr>) -> u32 {
    let mut ins = Instr { op: 0, dst: 0, a: 0, b: 0, c: 0, _pad: 0, imm: 0.0 };
    match n {
        Node::X => ins.op = LOAD_X,
        Node::I => ins.op = LOAD_I,
        Node::Const(v) => {
            ins.op = CONST;
            ins.imm = *v;
        }
        Node::Call(op, args) if matches!(*op, ADD | SUB | MUL | DIV) && args.len() == 2 => {
            let kop = |o: u32, left_const: bool| match (o, left_const) {
                (ADD, _) => ADDK,
                (MUL, _) => MULK,
                (SUB, false) => SUBK,
                (DIV, false) => DIVK,
                (SUB, true) => RSUBK,
                _ => RDIVK,
            };
            match (&args[0], &args[1]) {
                (a, Node::Const(k)) => {
                    ins.a = emit(a, out);
                    ins.op = kop(*op, false);
                    ins.imm = *k;
                }
                (Node::Const(k), b) => {
                    ins.a = emit(b, out);
                    ins.op = kop(*op, true);
                    ins.imm = *k;
                }
                (a, b) => {
                    ins.a = emit(a, out);
                    ins.b = emit(b, out);
                    ins.op = *op;
                }
            }
        }
        Node::Call(op, args) => {
            let regs: Vec<u32> = args.iter().map(|a| emit(a, out)).collect();
            ins.op = *op;
            ins.a = regs.first().copied().unwrap_or(0);
            ins.b = regs.get(1).copied().unwrap_or(0);
            ins.c = regs.get(2).copied().unwrap_or(0);
        }
    }
    ins.dst = out.len() as u32;
    out.push(ins);
    ins.dst
}

/// Element types an expression reads and writes, converted through f64.
pub trait Num: Pod {
    /// To f64 (exact for every integer up to 2^53).
    fn to_f64(self) -> f64;
    /// From f64 (`as`: rounds for floats, truncates and saturates for integers, NaN to 0).
    fn from_f64(v: f64) -> Self;
}

macro_rules! num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline]
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
num!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);

/// The trampoline body: evaluates the program over one chunk, block by block.
///
/// For f64 data two passes are saved: operations read `x` straight from the input, and the
/// last operation writes straight into the output.
pub(crate) fn eval<In: Num, Out: Num>(params: &[u8], input: &[u8], output: &mut [u8], start: u64) {
    use std::any::TypeId;
    let prog = Program::from_bytes(params).expect("expression program is well formed");
    let xs: &[In] = bytemuck::cast_slice(input);
    let ys: &mut [Out] = bytemuck::cast_slice_mut(output);
    assert_eq!(xs.len(), ys.len(), "input and output chunk lengths differ");
    let n_regs = prog.instrs.len();
    let last = &prog.instrs[n_regs - 1];
    let computed_last = !matches!(last.op, LOAD_X | LOAD_I | CONST);
    let x_direct: Option<&[f64]> =
        if TypeId::of::<In>() == TypeId::of::<f64>() { bytemuck::try_cast_slice(xs).ok() } else { None };
    // Out is f64 here, so the cast is the identity and cannot fail.
    let (mut y_direct, mut y_conv): (Option<&mut [f64]>, Option<&mut [Out]>) =
        if TypeId::of::<Out>() == TypeId::of::<f64>() && computed_last {
            (Some(bytemuck::cast_slice_mut(ys)), None)
        } else {
            (None, Some(ys))
        };
    let is_x: Vec<bool> = prog.instrs.iter().map(|i| i.op == LOAD_X && x_direct.is_some()).collect();
    let mut regs = vec![[0f64; BLOCK]; n_regs];
    // Constants do not change between blocks: fill them once.
    for ins in prog.instrs.iter().filter(|i| i.op == CONST) {
        regs[ins.dst as usize] = [ins.imm; BLOCK];
    }
    let mut base = 0;
    while base < xs.len() {
        let n = BLOCK.min(xs.len() - base);
        for ins in prog.instrs.iter().filter(|i| i.op != CONST && !is_x[i.dst as usize]) {
            // Operands always precede the destination (validated in from_bytes).
            let (lo, hi) = regs.split_at_mut(ins.dst as usize);
            let src = |r: u32| -> &[f64] {
                match x_direct {
                    Some(x) if is_x[r as usize] => &x[base..base + n],
                    _ => &lo[r as usize][..n],
                }
            };
            let d: &mut [f64] = match y_direct.as_deref_mut() {
                Some(y) if ins.dst as usize == n_regs - 1 => &mut y[base..base + n],
                _ => &mut hi[0][..n],
            };
            match ins.op {
                LOAD_X => d.iter_mut().zip(&xs[base..base + n]).for_each(|(d, x)| *d = x.to_f64()),
                LOAD_I => {
                    let first = start + base as u64;
                    d.iter_mut().enumerate().for_each(|(k, d)| *d = (first + k as u64) as f64);
                }
                op if (NEG..=28).contains(&op) => {
                    let a = src(ins.a);
                    match op {
                        NEG => d.iter_mut().zip(a).for_each(|(d, a)| *d = -a),
                        11 => d.iter_mut().zip(a).for_each(|(d, a)| *d = a.sqrt()),
                        25 => d.iter_mut().zip(a).for_each(|(d, a)| *d = a.abs()),
                        _ => d.iter_mut().zip(a).for_each(|(d, a)| *d = unary(op, *a)),
                    }
                }
                op if (ADD..=NE).contains(&op) => {
                    let (a, b) = (src(ins.a), src(ins.b));
                    let it = d.iter_mut().zip(a.iter().zip(b));
                    match op {
                        ADD => it.for_each(|(d, (a, b))| *d = a + b),
                        SUB => it.for_each(|(d, (a, b))| *d = a - b),
                        MUL => it.for_each(|(d, (a, b))| *d = a * b),
                        DIV => it.for_each(|(d, (a, b))| *d = a / b),
                        _ => it.for_each(|(d, (a, b))| *d = binary(op, *a, *b)),
                    }
                }
                op if (ADDK..=RDIVK).contains(&op) => {
                    let (a, k) = (src(ins.a), ins.imm);
                    let it = d.iter_mut().zip(a);
                    match op {
                        ADDK => it.for_each(|(d, a)| *d = a + k),
                        SUBK => it.for_each(|(d, a)| *d = a - k),
                        MULK => it.for_each(|(d, a)| *d = a * k),
                        DIVK => it.for_each(|(d, a)| *d = a / k),
                        RSUBK => it.for_each(|(d, a)| *d = k - a),
                        _ => it.for_each(|(d, a)| *d = k / a),
                    }
                }
                op => {
                    let (a, b, c) = (src(ins.a), src(ins.b), src(ins.c));
                    for k in 0..n {
                        d[k] = ternary(op, a[k], b[k], c[k]);
                    }
                }
            }
        }
        if let Some(ys) = y_conv.as_deref_mut() {
            let v: &[f64] = match x_direct {
                Some(x) if is_x[n_regs - 1] => &x[base..base + n],
                _ => &regs[n_regs - 1][..n],
            };
            ys[base..base + n].iter_mut().zip(v).for_each(|(y, v)| *y = Out::from_f64(*v));
        }
        base += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str, x: f64) -> f64 {
        Program::compile(src).unwrap().eval_one(x, 3.0)
    }

    #[test]
    fn precedence_and_associativity_follow_python() {
        assert_eq!(ev("1 + 2 * 3", 0.0), 7.0);
        assert_eq!(ev("-x ** 2", 3.0), -9.0);
        assert_eq!(ev("2 ** 3 ** 2", 0.0), 512.0);
        assert_eq!(ev("(1 + 2) * 3", 0.0), 9.0);
        assert_eq!(ev("x - 1 - 1", 5.0), 3.0);
        assert_eq!(ev("i * 2", 0.0), 6.0);
        assert_eq!(ev("1 < 2 == 1", 0.0), 1.0);
    }

    #[test]
    fn numpy_semantics_for_mod_round_min_max_and_division() {
        assert_eq!(ev("-7 % 3", 0.0), 2.0);
        assert_eq!(ev("7 % -3", 0.0), -2.0);
        assert_eq!(ev("round(2.5)", 0.0), 2.0);
        assert_eq!(ev("round(x)", 3.5), 4.0);
        assert!(ev("min(x, 1)", f64::NAN).is_nan());
        assert_eq!(ev("1 / x", 0.0), f64::INFINITY);
        assert!(ev("x / x", 0.0).is_nan());
        assert_eq!(ev("where(x > 1, 10, 20)", 2.0), 10.0);
        assert_eq!(ev("clamp(x, 0, 1)", 5.0), 1.0);
        assert_eq!(ev("atan2(1, 1) * 4", 0.0), std::f64::consts::PI);
        assert_eq!(ev("pi", 0.0), std::f64::consts::PI);
    }

    #[test]
    fn errors_point_at_the_position_and_name_the_unknown() {
        let msg = |s: &str| Program::compile(s).unwrap_err().to_string();
        assert!(msg("sqrt(x) * ").contains("column 11"), "{}", msg("sqrt(x) * "));
        assert!(msg("foo(x)").contains("unknown function 'foo'"));
        assert!(msg("x + y").contains("unknown variable 'y'"));
        assert!(msg("x + y").contains("column 5"));
        assert!(msg("(x + 1").contains("expected ')'"));
        assert!(msg("x $ 2").contains("unexpected character '$'"));
        assert!(msg("atan2(x)").contains("takes 2 arguments"));
        assert!(msg("").contains("empty"));
    }

    #[test]
    fn block_evaluation_matches_the_scalar_reference() {
        let src = "where(x > 500, sqrt(x) * 1.5 + 0.25, sin(x) ** 2 - i % 7)";
        let prog = Program::compile(src).unwrap();
        let xs: Vec<f64> = (0..1000).map(|k| k as f64 + 0.5).collect();
        let mut ys = vec![0f64; xs.len()];
        eval::<f64, f64>(&prog.to_bytes(), bytemuck::cast_slice(&xs), bytemuck::cast_slice_mut(&mut ys), 100);
        for (k, (x, y)) in xs.iter().zip(&ys).enumerate() {
            assert_eq!(y.to_bits(), prog.eval_one(*x, (100 + k) as f64).to_bits());
        }
    }

    #[test]
    fn malformed_programs_are_refused() {
        let mut b = Program::compile("x + 1").unwrap().to_bytes();
        assert!(Program::from_bytes(&b).is_some());
        b[HEADER + 4] = 9; // destination of the first instruction: not its own index
        assert!(Program::from_bytes(&b).is_none());
        assert!(Program::from_bytes(&b[..10]).is_none());
    }
}
