//! [`Side`]: the element type of one side of a map's data (a Rust type or a file's dtype), which
//! the kernel's types are checked against at run time. Here, not in `array`, so that `array`
//! depends on `kernel` and never the other way round.

use bytemuck::Pod;

use super::ElemType;
use crate::dtype::Dtype;

/// The element type of one side of the data, to check against the kernel's at run time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// A Rust type.
    Typed(ElemType),
    /// A file's dtype.
    Dtype(Dtype),
}

impl Side {
    pub(crate) fn of<T: Pod>() -> Side {
        Side::Typed(ElemType::of::<T>())
    }
}
