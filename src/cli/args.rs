//! The arguments of a map over `.npy` files (feature `cli`), shared by the command lines that
//! take them: `shmpool map` and `shmpool-mpi map` parse the very same struct, so that their
//! options, names, defaults and help cannot drift apart. Parsing only: what the arguments mean
//! is each command's.
#![deny(unsafe_code)]

use std::path::PathBuf;

/// Arguments of a map over `.npy` files: `map INPUT... -o OUTPUT --expr EXPR [options]`.
///
/// Embed it in a clap command with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
// Its own group name: `shmpool map` flattens it into a struct of the same name.
#[group(id = "MapFileArgs")]
pub struct MapArgs {
    /// Input .npy files (memory-mapped, read in place): a bare path is `x`; `NAME=PATH` names
    /// an input (`a=a.npy b=b.npy --expr 'a * b'`), shapes broadcast as numpy's. Without any
    /// (`shmpool map` only): the built-in W1 dataset.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Output .npy file: written under a name nobody sees in its directory and given its name
    /// only on success (nothing is left on disk otherwise), with `np.save`'s permissions.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Expression over `x` (element) and `i` (flat index, int64) with numpy's semantics: types
    /// and promotion (NEP 50), integer arithmetic, comparisons giving bool. A value starting
    /// with '-' is an expression (`--expr '-x**2'`). Required with an INPUT file; without one
    /// (the built-in dataset) the default is the compiled W1 kernel. Functions: see below.
    #[arg(long, allow_hyphen_values = true)]
    pub expr: Option<String>,
    /// Output dtype as numpy spells it (float64, f8, <i8, uint8, u1, bool...). Default: numpy's
    /// result type for the expression; otherwise the result is cast as numpy's astype.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Worker processes (default: number of cores; under shmpool-mpi, per rank: the node's
    /// cores divided among its ranks). A map never starts more workers than it can use: one
    /// per 65,536 elements, at least one.
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Elements per chunk (default: adaptive).
    #[arg(long)]
    pub chunk_len: Option<usize>,
    /// Report progress even when stderr is not a terminal (logs, CI, `2>file`): plain lines
    /// with percent, elements/s and ETA about once a second; a terminal gets the bar.
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Allow the output to replace the input (written aside, linked over it on success; the
    /// input's mode is kept). With several inputs, name the one replaced: `--in-place=a`
    /// (its shape and dtype must be the output's).
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "x")]
    pub in_place: Option<String>,
}

/// Why the INPUT arguments of a map are refused: the messages of `shmpool map`, shared with
/// `shmpool-mpi map` so that both read a command line alike.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// `i=a.npy`, `sum=a.npy` (no such file): an identifier that cannot name an input.
    #[error(transparent)]
    Name(#[from] crate::kernel::expr::Error),
    /// More than one bare path.
    #[error("several inputs need names: NAME=PATH (a bare path is x)")]
    Unnamed,
    /// A name with the prefix of the reductions' internal names.
    #[error("input names starting with {} are reserved", crate::kernel::expr::parse::REDUCTION_PREFIX)]
    Reserved,
}

/// The INPUT arguments as `shmpool map` reads them: `NAME=PATH` or a bare `PATH` (the input
/// `x`). A prefix before `=` that can name an input names it; an identifier that cannot (`i`,
/// `sum`) is refused unless the whole argument is an existing file's name; anything else is a
/// path.
///
/// # Errors
///
/// [`InputsError::Name`] for an identifier that cannot name an input, [`InputsError::Unnamed`]
/// for several inputs of which more than one has no name.
pub fn parse_inputs(raw: &[String]) -> Result<Vec<(Option<String>, PathBuf)>, InputsError> {
    use crate::kernel::expr::parse::check_input_name;
    let mut out: Vec<(Option<String>, PathBuf)> = Vec::new();
    for r in raw {
        let named = r.split_once('=').filter(|(n, _)| check_input_name(n).is_ok());
        if let Some((n, _)) = r.split_once('=').filter(|(n, _)| named.is_none() && is_identifier(n)) {
            if !std::path::Path::new(r).exists() {
                check_input_name(n)?;
            }
        }
        out.push(match named {
            Some((n, p)) => (Some(n.to_string()), PathBuf::from(p)),
            None => (None, PathBuf::from(r)),
        });
    }
    if out.len() > 1 && out.iter().filter(|(n, _)| n.is_none()).count() > 1 {
        return Err(InputsError::Unnamed);
    }
    Ok(out)
}

/// [`InputsError::Reserved`] when an input's name starts with the prefix `shmpool map` keeps
/// for the reductions' internal names.
///
/// # Errors
///
/// As said.
pub fn check_not_reserved<'a>(mut names: impl Iterator<Item = &'a str>) -> Result<(), InputsError> {
    match names.any(|n| n.starts_with(crate::kernel::expr::parse::REDUCTION_PREFIX)) {
        true => Err(InputsError::Reserved),
        false => Ok(()),
    }
}

/// Whether `s` is an ASCII identifier (a name, though perhaps a reserved one).
fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|k| k.is_ascii_alphanumeric() || k == '_')
}

/// The text after `map --help`: every function an expression may call.
pub fn functions_help() -> String {
    let mut by_arity: [Vec<&str>; 4] = Default::default();
    for (name, arity) in crate::kernel::expr::parse::functions() {
        by_arity[arity.min(3)].push(name);
    }
    let mut s = String::from("Expression functions (numpy's and numexpr's names):\n");
    for (arity, label) in [(1, "one argument"), (2, "two arguments"), (3, "three arguments")] {
        s.push_str(&format!("  {label}: {}\n", by_arity[arity].join(" ")));
    }
    s.push_str("Constants: pi e inf nan True False. Operators: + - * / // % ** << >> & | ^ ~ < <= > >= == !=");
    s
}

/// Whether two paths name one file (or, for one that does not exist yet, one place).
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let canon = |p: &std::path::Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// An error and every `source()` below it, on one line: `cannot open x.npy: No such file or
/// directory (os error 2)`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    /// `shmpool map`'s own struct has the same name as the shared one it flattens: clap's
    /// argument groups are named after structs, so the shared one names its group itself.
    #[derive(Debug, clap::Parser)]
    struct MapArgs {
        #[command(flatten)]
        files: super::MapArgs,
        #[arg(long, default_value_t = 1)]
        len: usize,
    }

    #[test]
    fn inputs_are_named_only_by_names_that_can_name_an_input() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let got = super::parse_inputs(&s(&["a=a.npy", "b.npy", "a-b=c.npy"]));
        assert!(matches!(got, Err(super::InputsError::Unnamed)), "{got:?}");
        let got = super::parse_inputs(&s(&["a=a.npy", "a-b=c.npy"])).expect("a path with '='");
        assert_eq!(got[1], (None, "a-b=c.npy".into()));
        // `i` is the flat index: `i=v.npy` is refused, not taken for a path (no such file).
        assert!(matches!(super::parse_inputs(&s(&["i=/nonexistent/v.npy"])), Err(super::InputsError::Name(_))));
        assert!(super::check_not_reserved(["a", "__ra"].into_iter()).is_err());
        assert!(super::check_not_reserved(["a", "_r"].into_iter()).is_ok());
    }

    #[test]
    fn flattens_into_a_struct_of_the_same_name() {
        <MapArgs as clap::CommandFactory>::command().debug_assert();
        let a = <MapArgs as clap::Parser>::try_parse_from(["map", "a=a.npy", "-o", "o.npy", "--expr", "-a", "-j", "2"])
            .expect("valid arguments");
        assert_eq!(a.files.inputs, ["a=a.npy"]);
        assert_eq!(a.files.expr.as_deref(), Some("-a"));
        assert_eq!((a.files.jobs, a.len), (Some(2), 1));
    }
}
