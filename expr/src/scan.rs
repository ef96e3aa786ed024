//! Scans of an expression's tokens that need no parse: the variables it names, whether a name
//! can name an input, and the reductions it calls (taken out so that they run first).

use crate::funcs::function;
use crate::lex::{lex, syntax, Tok};
use crate::{Error, Result};

/// Names that are never an input's: the flat index and the constants.
pub(crate) const RESERVED: [&str; 8] = ["i", "pi", "e", "inf", "nan", "True", "False", "size"];

/// Whether `name` can name an input: a Python identifier (ASCII) that is neither a function,
/// nor `i`, nor a constant.
///
/// # Errors
///
/// [`Error::InvalidInputName`] saying why not.
pub fn check_input_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let identifier = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    let why = if !identifier {
        Some("not an identifier")
    } else if RESERVED.contains(&name) {
        Some("reserved (i is the flat index; pi e inf nan True False are constants; size() is a function)")
    } else if function(name).is_some() || crate::Reduction::names().any(|r| r == name) {
        Some("the name of a function")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidInputName { name: name.to_string(), why }),
        None => Ok(()),
    }
}

/// The variables `src` names (identifiers not called, other than `i` and the constants), in
/// order of first use.
pub(crate) fn variables(src: &str) -> Result<Vec<String>> {
    let toks = lex(src)?;
    let mut out: Vec<String> = Vec::new();
    for w in toks.windows(2) {
        if let (Tok::Ident(a, b), next) = (w[0].0, w[1].0) {
            let name = &src[a..b];
            if next != Tok::LParen
                && next != Tok::Op("=")
                && !RESERVED.contains(&name)
                && !out.iter().any(|n| n == name)
            {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// Whether `src` reads the flat index `i` (false for a syntax error).
pub fn reads_index(src: &str) -> bool {
    let Ok(toks) = lex(src) else { return false };
    toks.windows(2).any(|w| matches!(w[0].0, Tok::Ident(a, b) if &src[a..b] == "i") && w[1].0 != Tok::LParen)
}

/// Prefix of the names [`extract_reductions`] gives the reductions it takes out.
pub const REDUCTION_PREFIX: &str = "__r";

/// One reduction call taken out of an expression by [`extract_reductions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReductionCall {
    /// The reduction.
    pub reduction: crate::Reduction,
    /// Its argument, an elementwise expression.
    pub inner: String,
    /// Its `axis=` (negative counts from the last axis), if given.
    pub axis: Option<i64>,
}

/// Takes every reduction call out of `src` (`x - mean(x)`, `x - mean(x, axis=0)`): returns the
/// text with each call replaced by a name (`x - __r0`) and, in order, each call.
///
/// # Errors
///
/// [`Error::InvalidExpression`] for a syntax error, a reduction with a second argument other
/// than `axis=INT` (`max(x, 0)`), or inside another one.
pub fn extract_reductions(src: &str) -> Result<(String, Vec<ReductionCall>)> {
    extract_spans(src).map(|(out, found, _)| (out, found))
}

/// An error of the program [`extract_reductions`] made from `src` (names `__rK` for the
/// reductions) as an error of `src` itself: the user's expression quoted, the column moved
/// back over the replaced calls (onto the call's name when it points inside one). Other
/// errors unchanged.
pub fn error_in_source(e: Error, src: &str) -> Error {
    match extract_spans(src) {
        Ok((out, _, spans)) => map_back(e, src, &out, &spans),
        Err(_) => e,
    }
}

/// An error of [`substitute_sizes`]`(src, sizes)`'s text as an error of `src` itself: the
/// user's expression quoted (`size(x)`, not its value), the column moved back as
/// [`error_in_source`] does. Other errors unchanged.
pub fn error_in_sized(e: Error, src: &str, sizes: &[(&str, u64)]) -> Error {
    match size_spans(src, sizes) {
        Ok((out, spans)) => map_back(e, src, &out, &spans),
        Err(_) => e,
    }
}

/// An error quoting `out`, made from `src` by the replacements `spans`, as an error of `src`.
fn map_back(e: Error, src: &str, out: &str, spans: &Spans) -> Error {
    let Error::InvalidExpression { expr, position, message } = e else { return e };
    if expr != out {
        return Error::InvalidExpression { expr, position, message };
    }
    // Byte offset of the column in the rewritten text, mapped back through the spans.
    let at = out.char_indices().nth(position.saturating_sub(1)).map_or(out.len(), |(b, _)| b);
    let mut byte = at;
    for &(new_start, new_end, old_start, old_end) in spans {
        if at >= new_end {
            byte = at - new_end + old_end;
        } else if at >= new_start {
            byte = old_start;
            break;
        }
    }
    let position = src[..byte.min(src.len())].chars().count() + 1;
    Error::InvalidExpression { expr: src.to_string(), position, message }
}

/// [`extract_reductions`], with each replacement's span: (start, end) in the output, then
/// (start, end) in `src`, bytes.
type Spans = Vec<(usize, usize, usize, usize)>;
fn extract_spans(src: &str) -> Result<(String, Vec<ReductionCall>, Spans)> {
    let mut spans = Vec::new();
    let toks = lex(src)?;
    let mut out = String::new();
    let mut found = Vec::new();
    let mut copied = 0; // bytes of `src` copied or replaced so far
    let mut k = 0;
    while k < toks.len() {
        let (tok, at) = toks[k];
        let reduction = match (tok, toks.get(k + 1)) {
            (Tok::Ident(a, b), Some((Tok::LParen, _))) => src[a..b].parse::<crate::Reduction>().ok(),
            _ => None,
        };
        let Some(r) = reduction else {
            k += 1;
            continue;
        };
        let (end, inner_end, axis) = call_extent(src, &toks, k, r)?;
        let open = toks[k + 1].1;
        out.push_str(&src[copied..at]);
        let start = out.len();
        out.push_str(&format!("{REDUCTION_PREFIX}{}", found.len()));
        found.push(ReductionCall { reduction: r, inner: src[open + 1..inner_end].to_string(), axis });
        copied = toks[end].1 + 1;
        spans.push((start, out.len(), at, copied));
        k = end + 1;
    }
    out.push_str(&src[copied..]);
    Ok((out, found, spans))
}

/// The call of reduction `r` whose name is token `k`: the token index of its closing
/// parenthesis, the byte where its first argument ends, and its `axis=`.
fn call_extent(src: &str, toks: &[(Tok, usize)], k: usize, r: crate::Reduction) -> Result<(usize, usize, Option<i64>)> {
    let mut depth = 0;
    for (j, &(t, pos)) in toks.iter().enumerate().skip(k + 1) {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok((j, pos, None));
                }
            }
            Tok::Comma if depth == 1 => {
                let positional = !matches!(r, crate::Reduction::Max | crate::Reduction::Min);
                let (axis, close) = axis_argument(src, &toks[j + 1..], positional).ok_or_else(|| {
                    let hint = match r {
                        crate::Reduction::Max => "; use maximum(a, b) for the elementwise maximum",
                        crate::Reduction::Min => "; use minimum(a, b) for the elementwise minimum",
                        _ => "",
                    };
                    let form = if positional { "axis=INT (or INT)" } else { "axis=INT" };
                    syntax(src, pos, format!("{}() takes one argument and {form}{hint}", r.name()))
                })?;
                return Ok((j + 1 + close, pos, Some(axis)));
            }
            Tok::Ident(a, b) if src[a..b].parse::<crate::Reduction>().is_ok() => {
                return Err(syntax(src, a, "a reduction inside a reduction is not supported".into()));
            }
            _ => {}
        }
    }
    Err(syntax(src, toks[k].1, "unclosed '('".into()))
}

/// `axis = [-]INT )` at the start of `toks` (or `[-]INT )` when `positional`, numpy's
/// `np.sum(x, 1)`): the axis and the index of the `)`.
fn axis_argument(src: &str, toks: &[(Tok, usize)], positional: bool) -> Option<(i64, usize)> {
    let name = |t: Tok| matches!(t, Tok::Ident(a, b) if &src[a..b] == "axis");
    let t: Vec<Tok> = toks.iter().take(5).map(|&(t, _)| t).collect();
    match t.as_slice() {
        [Tok::Int(v), Tok::RParen, ..] if positional => Some((i64::try_from(*v).ok()?, 1)),
        [Tok::Op("-"), Tok::Int(v), Tok::RParen, ..] if positional => Some((-i64::try_from(*v).ok()?, 2)),
        [n, Tok::Op("="), Tok::Int(v), Tok::RParen, ..] if name(*n) => Some((i64::try_from(*v).ok()?, 3)),
        [n, Tok::Op("="), Tok::Op("-"), Tok::Int(v), Tok::RParen] if name(*n) => Some((-i64::try_from(*v).ok()?, 4)),
        _ => None,
    }
}

/// Replaces every `size(NAME)` in `src` by the number of elements of the input `NAME`
/// (`sizes[k] = (name, count)`), written as a Python int literal: numpy's `np.size` is a
/// Python int, a weak scalar (`sum(x) / size(x)` stays float32 for float32 `x`).
///
/// # Errors
///
/// [`Error::InvalidExpression`] for a syntax error, or a `size(...)` whose argument is not one
/// input's name.
pub fn substitute_sizes(src: &str, sizes: &[(&str, u64)]) -> Result<String> {
    size_spans(src, sizes).map(|(out, _)| out)
}

/// [`substitute_sizes`], with each replacement's span as [`extract_spans`]'s.
fn size_spans(src: &str, sizes: &[(&str, u64)]) -> Result<(String, Spans)> {
    let mut spans = Vec::new();
    let toks = lex(src)?;
    let mut out = String::new();
    let mut copied = 0;
    let mut k = 0;
    while k < toks.len() {
        let (tok, at) = toks[k];
        let is_size = matches!(tok, Tok::Ident(a, b) if &src[a..b] == "size")
            && matches!(toks.get(k + 1), Some((Tok::LParen, _)));
        if !is_size {
            k += 1;
            continue;
        }
        let n = match (toks.get(k + 2), toks.get(k + 3)) {
            (Some(&(Tok::Ident(a, b), _)), Some(&(Tok::RParen, close))) => {
                sizes.iter().find(|(name, _)| *name == &src[a..b]).map(|&(_, n)| (n, close))
            }
            _ => None,
        };
        let Some((n, close)) = n else {
            return Err(syntax(src, at, "size() takes the name of an input: size(x)".into()));
        };
        out.push_str(&src[copied..at]);
        let start = out.len();
        out.push_str(&n.to_string());
        copied = close + 1;
        spans.push((start, out.len(), at, copied));
        k += 4;
    }
    out.push_str(&src[copied..]);
    Ok((out, spans))
}
