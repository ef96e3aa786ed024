//! A Python exception raised in a worker, as the failure message the engine carries back to the
//! parent (at most [`MESSAGE_ROOM`] bytes), from which the package's `_rebuild` raises it again.
//!
//! The message is `[PICKLED base85(pickle(exception)) "\n"] [Type ": " message] SEP frames`:
//! the exception pickled when it pickles small enough (the parent gets the same type and args,
//! as `multiprocessing` sends exceptions back), else its type and message as text; then the
//! innermost frames of its traceback that fit, one `file:line in function` line and its source
//! line each, outermost first. When the pool has a mailbox (see `mailbox`), the message is
//! instead `MAILBOX path "\n" Type ": " message SEP`, the whole exception being in that file.

use super::*;

/// The engine's room for a chunk's failure message (its slot's message area, `MESSAGE_CAP`):
/// longer messages arrive truncated.
const MESSAGE_ROOM: usize = 192;
/// First character of a message whose first line is the pickled exception.
const PICKLED: char = '\u{1}';
/// First character of a message whose first line is the path of its mailbox file.
const MAILBOX: char = '\u{3}';
/// Separates the exception from the traceback's frames.
const SEP: char = '\u{2}';

/// The failure message of the exception `e` (see the module doc).
pub(crate) fn format_exc(py: Python<'_>, e: PyErr) -> String {
    if let Some(path) = mailbox::report(py, &e) {
        // The whole exception is in the mailbox; the type and message follow (truncated) in
        // case the file cannot be read.
        let mut msg = format!("{MAILBOX}{path}\n{}{SEP}", type_and_message(py, &e));
        if msg.len() > MESSAGE_ROOM {
            let mut end = MESSAGE_ROOM;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg.truncate(end);
        }
        return msg;
    }
    let head = match pickled(py, &e) {
        Some(p) if p.len() + 2 <= MESSAGE_ROOM => format!("{PICKLED}{p}\n"),
        _ => type_and_message(py, &e),
    };
    let room = MESSAGE_ROOM.saturating_sub(head.len() + SEP.len_utf8());
    format!("{head}{SEP}{}", frames(py, &e, room).unwrap_or_default())
}

/// `Type: message` of `e` (the type qualified by its module unless built in).
fn type_and_message(py: Python<'_>, e: &PyErr) -> String {
    let ty = e.get_type(py);
    let name = ty.qualname().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    let module = ty.module().map(|m| m.to_string()).unwrap_or_default();
    let full = if module == "builtins" || module.is_empty() { name } else { format!("{module}.{name}") };
    let msg = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    format!("{full}: {msg}")
}

/// `e`'s exception pickled (protocol 2, optimized: the shortest) and base85-encoded, if it
/// pickles (a class the parent can import, args that pickle).
fn pickled(py: Python<'_>, e: &PyErr) -> Option<String> {
    let bytes = py.import("pickle").ok()?.call_method1("dumps", (e.value(py), 2)).ok()?;
    let bytes = py.import("pickletools").ok()?.call_method1("optimize", (bytes,)).ok()?;
    let text = py.import("base64").ok()?.call_method1("b85encode", (bytes,)).ok()?;
    String::from_utf8(text.extract::<Vec<u8>>().ok()?).ok()
}

/// The innermost frames of `e`'s traceback that fit in `room` bytes (at least one), outermost
/// first: `file.py:LINE in function` and the stripped source line.
fn frames(py: Python<'_>, e: &PyErr, room: usize) -> PyResult<String> {
    let Some(tb) = e.traceback(py) else { return Ok(String::new()) };
    let summary = py.import("traceback")?.call_method1("extract_tb", (tb,))?;
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for f in summary.try_iter()?.collect::<PyResult<Vec<_>>>()?.into_iter().rev() {
        let file: String = f.getattr("filename")?.extract()?;
        let base = file.rsplit('/').next().unwrap_or(&file).to_string();
        let lineno: Option<u64> = f.getattr("lineno")?.extract()?;
        let name: String = f.getattr("name")?.extract()?;
        let line: Option<String> = f.getattr("line")?.extract()?;
        let text = format!("{base}:{} in {name}\n  {}\n", lineno.unwrap_or(0), line.unwrap_or_default().trim());
        if used + text.len() > room && !lines.is_empty() {
            break;
        }
        used += text.len();
        lines.push(text);
    }
    lines.reverse();
    Ok(lines.concat())
}
