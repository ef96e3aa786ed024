//! Element types: the shared storage of each numpy dtype and the dispatch over them.

use super::*;

/// The shared storage of each numpy dtype (`bool` is stored as `u8`).
pub(crate) enum Store {
    U8(SharedVec<u8>),
    I8(SharedVec<i8>),
    I16(SharedVec<i16>),
    I32(SharedVec<i32>),
    I64(SharedVec<i64>),
    U16(SharedVec<u16>),
    U32(SharedVec<u32>),
    U64(SharedVec<u64>),
    F16(SharedVec<half::f16>),
    F32(SharedVec<f32>),
    F64(SharedVec<f64>),
}

/// A storage element type: what numpy and the engine agree on, and where it sits in [`Store`].
pub(crate) trait Elem: Pod + Num + numpy::Element + Send + Sync {
    fn get(s: &Store) -> Option<&SharedVec<Self>>;
    fn get_mut(s: &mut Store) -> Option<&mut SharedVec<Self>>;
    fn wrap(v: SharedVec<Self>) -> Store;
}

macro_rules! elem {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl Elem for $t {
            fn get(s: &Store) -> Option<&SharedVec<Self>> {
                match s { Store::$v(v) => Some(v), _ => None }
            }
            fn get_mut(s: &mut Store) -> Option<&mut SharedVec<Self>> {
                match s { Store::$v(v) => Some(v), _ => None }
            }
            fn wrap(v: SharedVec<Self>) -> Store {
                Store::$v(v)
            }
        }
    )*};
}
elem!(u8 => U8, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u16 => U16, u32 => U32, u64 => U64,
      half::f16 => F16, f32 => F32, f64 => F64);

/// Runs `$body` with `$T` bound to the storage type of the dtype `$d`.
macro_rules! with_elem {
    ($d:expr, $T:ident => $body:expr) => {
        match $d {
            Dtype::Bool | Dtype::U8 => {
                type $T = u8;
                $body
            }
            Dtype::I8 => {
                type $T = i8;
                $body
            }
            Dtype::I16 => {
                type $T = i16;
                $body
            }
            Dtype::I32 => {
                type $T = i32;
                $body
            }
            Dtype::I64 => {
                type $T = i64;
                $body
            }
            Dtype::U16 => {
                type $T = u16;
                $body
            }
            Dtype::U32 => {
                type $T = u32;
                $body
            }
            Dtype::U64 => {
                type $T = u64;
                $body
            }
            Dtype::F16 => {
                type $T = half::f16;
                $body
            }
            Dtype::F32 => {
                type $T = f32;
                $body
            }
            Dtype::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}
