//! The expression compiler's error type: what can go wrong compiling an expression or
//! evaluating a program, independent of the engine that runs it.
#![forbid(unsafe_code)]

use shmpool_dtype::Dtype;

/// The result type of the expression compiler.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong compiling or evaluating an expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An expression did not parse or type-check; `position` is the 1-based column of the problem.
    #[error("invalid expression at column {position}: {message}\n  {expr}\n  {caret:>position$}", caret = "^")]
    InvalidExpression {
        /// The expression.
        expr: String,
        /// 1-based column (in characters).
        position: usize,
        /// What is wrong.
        message: String,
    },

    /// A name given for an input cannot name one.
    #[error("'{name}' cannot name an input: {why}")]
    InvalidInputName {
        /// The name.
        name: String,
        /// Why not.
        why: &'static str,
    },

    /// An input was given a name twice, or a given input is not used by the expression.
    #[error("input '{name}' {problem}")]
    InputNotUsed {
        /// The input's name.
        name: String,
        /// `is given twice` or `is not used by the expression`.
        problem: &'static str,
    },

    /// The number of inputs given to an evaluation is not the program's.
    #[error("the program reads {expected} inputs, {given} were given")]
    InputCount {
        /// Inputs the program reads.
        expected: usize,
        /// Inputs given.
        given: usize,
    },

    /// More inputs than one program reads ([`crate::MAX_INPUTS`]).
    #[error(
        "an expression reads at most {max} inputs (the named inputs, and one for each reduction inside a larger expression); this one reads {given}"
    )]
    TooManyInputs {
        /// The limit, [`crate::MAX_INPUTS`].
        max: usize,
        /// Inputs the expression reads.
        given: usize,
    },

    /// Input shapes that numpy cannot broadcast together (numpy's ValueError).
    #[error("operands could not be broadcast together with shapes {shapes}")]
    Broadcast {
        /// The shapes, as numpy prints them: `(1000,300) (299,)`.
        shapes: String,
    },

    /// A reduction without identity over no values (numpy's ValueError, in numpy's words:
    /// `attempt to get argmax of an empty sequence` for `argmin`/`argmax`).
    #[error("{}", empty_words(operation))]
    EmptyReduction {
        /// numpy's name of the operation (`minimum`, `maximum`, `argmin`, `argmax`).
        operation: &'static str,
    },

    /// An `axis=` beyond the array's dimensions (numpy's `AxisError`).
    #[error("axis {axis} is out of bounds for array of dimension {ndim}")]
    Axis {
        /// The axis given.
        axis: i64,
        /// The array's number of dimensions.
        ndim: usize,
    },

    /// numpy's `ValueError` for an integer raised to a negative integer power at run time.
    #[error("integers to negative integer powers are not allowed")]
    NegativeIntegerPower,

    /// The element types given to an evaluation are not the program's.
    #[error("type mismatch: the program maps {input} -> {output}, the data is {data}")]
    TypeMismatch {
        /// The program's input dtype.
        input: Dtype,
        /// The program's output dtype.
        output: Dtype,
        /// The element types given (`f64 -> f64`).
        data: String,
    },

    /// Input and output lengths of an evaluation differ.
    #[error("length mismatch: input has {input} elements, output has {output}")]
    LengthMismatch {
        /// Elements in the input.
        input: usize,
        /// Elements in the output.
        output: usize,
    },

    /// A serialised program (a parameter block) failed validation.
    #[error("invalid expression program: {reason}")]
    InvalidProgram {
        /// The first check that failed.
        reason: &'static str,
    },
}

/// numpy's names of the reductions that have no identity ([`Error::EmptyReduction`]), in
/// the order of their run-time codes.
const NO_IDENTITY: [&str; 4] = ["minimum", "maximum", "argmin", "argmax"];

impl Error {
    /// The number that stands for this error when an engine carries it out of a worker as a
    /// code rather than as text ([`Error::from_runtime_code`] turns it back): `Some` for the
    /// errors a program can meet at run time from its data ([`Error::NegativeIntegerPower`],
    /// [`Error::EmptyReduction`]), `None` for every other (they are found before a run).
    /// Codes are never 0.
    pub fn runtime_code(&self) -> Option<u32> {
        match self {
            Error::NegativeIntegerPower => Some(1),
            Error::EmptyReduction { operation } => {
                NO_IDENTITY.iter().position(|o| o == operation).map(|k| 2 + k as u32)
            }
            _ => None,
        }
    }

    /// The error [`Error::runtime_code`] gave `code` for; `None` for a number that is no code.
    pub fn from_runtime_code(code: u32) -> Option<Error> {
        match code {
            1 => Some(Error::NegativeIntegerPower),
            _ => {
                let k = usize::try_from(code.checked_sub(2)?).ok()?;
                NO_IDENTITY.get(k).map(|&operation| Error::EmptyReduction { operation })
            }
        }
    }
}

/// numpy's words for a reduction without identity over no values.
fn empty_words(operation: &str) -> String {
    if operation.starts_with("arg") {
        format!("attempt to get {operation} of an empty sequence")
    } else {
        format!("zero-size array to reduction operation {operation} which has no identity")
    }
}
