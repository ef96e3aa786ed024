//! The lexer: expression text to tokens with their byte offsets (Python's numbers, names,
//! operators), and the syntax error every pass reports. Used by the parser and by the scans
//! that need no parse (`scan`); depends on no other pass.

use crate::{Error, Result};

/// A syntax error at byte `pos` of `src`, reported at its 1-based column in characters.
pub(crate) fn syntax(src: &str, pos: usize, message: String) -> Error {
    Error::InvalidExpression { expr: src.to_string(), position: src[..pos.min(src.len())].chars().count() + 1, message }
}

/// A token; an identifier is its byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Tok {
    Int(i128),
    Float(f64),
    Ident(usize, usize),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

/// The tokens of `src`, each with its byte offset, ending with [`Tok::End`].
///
/// # Errors
///
/// [`crate::Error::InvalidExpression`] for a character or number Python would refuse.
pub(crate) fn lex(src: &str) -> Result<Vec<(Tok, usize)>> {
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
            let (tok, end) = number(src, start)?;
            out.push((tok, start));
            i = end;
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
        if let Some(o) = ["**", "//", "<<", ">>", "<=", ">=", "==", "!="].into_iter().find(|o| *o == two) {
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
            b'&' => Tok::Op("&"),
            b'|' => Tok::Op("|"),
            b'^' => Tok::Op("^"),
            b'~' => Tok::Op("~"),
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b',' => Tok::Comma,
            // Only `axis=` in a reduction's call uses it (see `scan`); the parser refuses it.
            b'=' => Tok::Op("="),
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

/// The number starting at byte `start` of `src` (a digit, or a '.' before one): its token and
/// the byte after it.
fn number(src: &str, start: usize) -> Result<(Tok, usize)> {
    let b = src.as_bytes();
    let c = b[start];
    let mut i = start;
    let radix = match (c, b.get(i + 1).map(u8::to_ascii_lowercase)) {
        (b'0', Some(b'x')) => 16,
        (b'0', Some(b'o')) => 8,
        (b'0', Some(b'b')) => 2,
        _ => 10,
    };
    if radix != 10 {
        i += 2;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let text = &src[start..i];
        let digits = text[2..].strip_prefix('_').unwrap_or(&text[2..]);
        let v = underscores(digits, u8::is_ascii_alphanumeric)
            .and_then(|d| i128::from_str_radix(&d, radix).ok())
            .ok_or_else(|| syntax(src, start, format!("bad number '{text}' (or beyond 2**127)")))?;
        return Ok((Tok::Int(v), i));
    }
    let mut float = false;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_') {
        float |= b[i] == b'.';
        i += 1;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            float = true;
            i = j;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
        }
    }
    let text = &src[start..i];
    let bad = || syntax(src, start, format!("bad number '{text}'"));
    let clean = underscores(text, u8::is_ascii_digit).ok_or_else(bad)?;
    let tok = if float {
        Tok::Float(clean.parse().map_err(|_| bad())?)
    } else if clean.len() > 1 && clean.starts_with('0') && clean.bytes().any(|d| d != b'0') {
        return Err(syntax(
            src,
            start,
            format!("leading zeros in '{text}' are not allowed (Python: use 0o for octal)"),
        ));
    } else {
        Tok::Int(clean.parse().map_err(|_| syntax(src, start, format!("integer literal {text} is too large")))?)
    };
    Ok((tok, i))
}

/// `text` without its digit-separating underscores; `None` unless each sits between two
/// digits (`digit`), as Python requires (`1_000`, not `1__0`, `1_`, `1_.5`, `1_e5`).
fn underscores(text: &str, digit: fn(&u8) -> bool) -> Option<String> {
    let b = text.as_bytes();
    let ok = (0..b.len()).all(|k| b[k] != b'_' || (k > 0 && k + 1 < b.len() && digit(&b[k - 1]) && digit(&b[k + 1])));
    ok.then(|| text.replace('_', ""))
}
