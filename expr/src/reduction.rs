//! The reductions by name (`sum`, `mean`, ... as numpy spells them), their result types, and
//! how a reduction call is split off an expression's source.

use std::str::FromStr;

use crate::{Dtype, Error, Result};

/// A reduction of a whole array to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// `np.sum`
    Sum,
    /// `np.prod`
    Prod,
    /// `np.mean`
    Mean,
    /// `np.min`
    Min,
    /// `np.max`
    Max,
    /// `np.std` (ddof 0)
    Std,
    /// `np.var` (ddof 0)
    Var,
    /// `np.count_nonzero`
    CountNonzero,
    /// `np.any`
    Any,
    /// `np.all`
    All,
    /// `np.argmin` (flat index of the first minimum; of the first NaN if there is one)
    ArgMin,
    /// `np.argmax` (flat index of the first maximum; of the first NaN if there is one)
    ArgMax,
    /// `np.nansum` (NaN counts as zero)
    NanSum,
    /// `np.nanmean` (NaN left out)
    NanMean,
    /// `np.nanmin` (NaN left out)
    NanMin,
    /// `np.nanmax` (NaN left out)
    NanMax,
}

pub(crate) const NAMES: [(&str, Reduction); 16] = [
    ("sum", Reduction::Sum),
    ("prod", Reduction::Prod),
    ("mean", Reduction::Mean),
    ("min", Reduction::Min),
    ("max", Reduction::Max),
    ("std", Reduction::Std),
    ("var", Reduction::Var),
    ("count_nonzero", Reduction::CountNonzero),
    ("any", Reduction::Any),
    ("all", Reduction::All),
    ("argmin", Reduction::ArgMin),
    ("argmax", Reduction::ArgMax),
    ("nansum", Reduction::NanSum),
    ("nanmean", Reduction::NanMean),
    ("nanmin", Reduction::NanMin),
    ("nanmax", Reduction::NanMax),
];

impl Reduction {
    /// numpy's name of the reduction.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, r)| *r == self).map(|(n, _)| *n).expect("every reduction is named")
    }

    /// Every reduction's name.
    pub fn names() -> impl Iterator<Item = &'static str> {
        NAMES.iter().map(|(n, _)| *n)
    }

    /// numpy's result dtype of the reduction over an array of `input`.
    pub fn result_dtype(self, input: Dtype) -> Dtype {
        use Reduction::*;
        match self {
            Sum | Prod | NanSum => match input {
                Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => Dtype::U64,
                d if d.is_float() => d,
                _ => Dtype::I64,
            },
            Mean | Std | Var | NanMean => {
                if input.is_float() {
                    input
                } else {
                    Dtype::F64
                }
            }
            Min | Max | NanMin | NanMax => input,
            CountNonzero | ArgMin | ArgMax => Dtype::I64,
            Any | All => Dtype::Bool,
        }
    }

    /// The whole expression `src` is one reduction call, `name(inner)`: the reduction and the
    /// inner, elementwise expression. `None` otherwise (`max(x, 0)` is the elementwise maximum).
    pub fn split(src: &str) -> Option<(Reduction, &str)> {
        let t = src.trim();
        let open = t.find('(')?;
        let r = Reduction::from_str(t[..open].trim()).ok()?;
        let inner = t[open + 1..].strip_suffix(')')?;
        // The parenthesis opened after the name must close at the very end, and the inner text
        // must be one argument (no top-level comma).
        let mut depth = 0i32;
        for c in inner.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => return None,
                _ => {}
            }
            if depth < 0 {
                return None;
            }
        }
        (depth == 0).then_some((r, inner))
    }
}

impl FromStr for Reduction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reduction> {
        NAMES.iter().find(|(n, _)| *n == s).map(|&(_, r)| r).ok_or_else(|| Error::InvalidExpression {
            expr: s.to_string(),
            position: 1,
            message: format!(
                "unknown reduction '{s}' ({})",
                NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
            ),
        })
    }
}
