//! How a trampoline reports a typed failure: as a code that only the crate can raise.

#[cfg(feature = "expr")]
use super::expr;
use crate::error::Error;

/// What a trampoline of the crate unwinds with to report a typed failure (an expression's
/// run-time error) as a code rather than as text: the worker publishes it as
/// `Status::Failed` with the code, and the map caller turns the code back into the error
/// ([`Failure::error`]). The type is private to the crate, so a user's kernel cannot raise
/// it: whatever a user's kernel panics with stays [`Error::KernelPanicked`].
pub(crate) struct Failure(pub u32);

impl Failure {
    /// Leaves the running trampoline with `e`'s code, or with its text (a plain kernel panic)
    /// for an error that has no code. `resume_unwind` runs no panic hook: nothing is printed.
    #[cfg(feature = "expr")]
    pub(crate) fn raise(e: &expr::Error) -> ! {
        match e.runtime_code() {
            Some(code) => std::panic::resume_unwind(Box::new(Failure(code))),
            None => std::panic::resume_unwind(Box::new(e.to_string())),
        }
    }

    /// The error a worker reported with the code `message` (decimal); `None` when it is no
    /// code of this build.
    pub(crate) fn error(message: &str) -> Option<Error> {
        #[cfg(feature = "expr")]
        if let Some(e) = message.parse().ok().and_then(expr::Error::from_runtime_code) {
            return Some(Error::Expr(e));
        }
        let _ = message;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_code_is_an_error() {
        for message in ["", "0", "x", "-1", "4294967296", "integers to negative integer powers are not allowed"] {
            assert!(Failure::error(message).is_none(), "{message:?}");
        }
        #[cfg(feature = "expr")]
        assert!(matches!(Failure::error("1"), Some(Error::Expr(expr::Error::NegativeIntegerPower))));
    }
}
