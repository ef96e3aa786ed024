//! Several inputs read together: a tuple of [`Input`]s (`(&a, &b)`, up to four, any mix of
//! slices, `Vec`s, [`crate::SharedVec`]s, `.npy` files and ndarray views) is one input of
//! element type `Zip<(A, B)>`, mapped by a several-input kernel (`kernel::zip`). Each member
//! stays where it is: shared ones are read in place, plain ones are staged by the pool.

use super::io::sealed::InputSealed;
use super::io::{Input, Source};
use crate::error::{Error, Result};
use crate::kernel::Zip;

macro_rules! zip_input {
    ($n:literal; $($I:ident $i:tt),+) => {
        impl<$($I: Input),+> InputSealed for ($($I,)+) {
            const ZIP: bool = true;
            fn source(&self) -> Result<Source<'_>> {
                // Every verb reads a tuple through `sources`; this is for one-input callers.
                Err(Error::TypeMismatch { kernel: "one input".into(), data: format!("{} inputs", $n) })
            }
            fn sources(&self) -> Result<Vec<Source<'_>>> {
                Ok(vec![$(self.$i.source()?),+])
            }
        }
        impl<$($I: Input),+> Input for ($($I,)+) {
            type Elem = Zip<($($I::Elem,)+)>;
        }
    };
}

zip_input!(2; I0 0, I1 1);
zip_input!(3; I0 0, I1 1, I2 2);
zip_input!(4; I0 0, I1 1, I2 2, I3 3);
