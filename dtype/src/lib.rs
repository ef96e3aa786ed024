//! The numeric element types shmpool reads from and writes to files and expressions, with
//! their numpy names and type strings.
//!
//! Its own crate because two crates need it and neither may depend on the other: the engine
//! (`shmpool`: `.npy` headers, `SharedVec` element checks) and the expression compiler
//! (`shmpool-expr`: numpy's typing rules). The engine built with `default-features = false`
//! must not compile the expression compiler, and the expression compiler must not depend on
//! the engine; one shared leaf crate keeps one `Dtype` (no duplicate enum, no conversions).
//! It depends on nothing but `half` (for `Dtype::of::<half::f16>()`) and `thiserror`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

use std::str::FromStr;

/// A dtype spelled in a way numpy does not accept, or a type shmpool does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype '{name}' (numpy's spellings: bool, int8..int64 or i1 i2 i4 i8, uint8..uint64 or u1 u2 u4 u8, float16 float32 float64 or f2 f4 f8, with an optional '<', '=' or '|' prefix)")]
pub struct UnknownDtype {
    /// What was given.
    pub name: String,
}

/// A numeric element type (little-endian, as numpy stores it on every platform shmpool runs on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `bool` (`|b1`): one byte, 0 or 1. What comparisons and `isnan` produce.
    Bool,
    /// `int8`
    I8,
    /// `int16`
    I16,
    /// `int32`
    I32,
    /// `int64`
    I64,
    /// `uint8`
    U8,
    /// `uint16`
    U16,
    /// `uint32`
    U32,
    /// `uint64`
    U64,
    /// `float16` (IEEE half precision, [`half::f16`]): what numpy's `sqrt` gives for `int8`.
    F16,
    /// `float32`
    F32,
    /// `float64`
    F64,
}

impl Dtype {
    /// Every supported type.
    pub const ALL: [Dtype; 12] = [
        Dtype::Bool,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::F16,
        Dtype::F32,
        Dtype::F64,
    ];

    /// The dtype of the Rust element type `T`, if `T` is one of numpy's numeric types
    /// (`i8`..`i64`, `u8`..`u64`, `half::f16`, `f32`, `f64`). `u8` is `uint8`, never `bool`
    /// (Rust's `bool` is not `Pod`; a `Bool` array is read as `u8`).
    pub fn of<T: 'static>() -> Option<Dtype> {
        use std::any::TypeId;
        let t = TypeId::of::<T>();
        let table: [(TypeId, Dtype); 11] = [
            (TypeId::of::<i8>(), Dtype::I8),
            (TypeId::of::<i16>(), Dtype::I16),
            (TypeId::of::<i32>(), Dtype::I32),
            (TypeId::of::<i64>(), Dtype::I64),
            (TypeId::of::<u8>(), Dtype::U8),
            (TypeId::of::<u16>(), Dtype::U16),
            (TypeId::of::<u32>(), Dtype::U32),
            (TypeId::of::<u64>(), Dtype::U64),
            (TypeId::of::<half::f16>(), Dtype::F16),
            (TypeId::of::<f32>(), Dtype::F32),
            (TypeId::of::<f64>(), Dtype::F64),
        ];
        table.iter().find(|(id, _)| *id == t).map(|&(_, d)| d)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Whether it is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::F32 | Dtype::F64)
    }

    /// Whether it is a signed or unsigned integer type (not `bool`).
    pub fn is_int(self) -> bool {
        !self.is_float() && self != Dtype::Bool
    }

    /// Whether it is a signed integer type.
    pub fn is_signed_int(self) -> bool {
        matches!(self, Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64)
    }

    /// The numpy name (`float64`, `int32`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// The numpy array-protocol type string as `np.save` writes it (`<f8`, `|i1`, `|b1`, ...).
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::Bool => "|b1",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::F16 => "<f2",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }

    /// The type code without byte order: `b1`, `i1` .. `i8`, `u1` .. `u8`, `f2`, `f4`, `f8`.
    fn code(self) -> &'static str {
        &self.descr()[1..]
    }

    /// The type a numpy type string (`<f8`, `|u1`, `=i4`, `i8`) names, if supported.
    /// Big-endian strings (`>f8`) are not: shmpool maps data in place and never swaps bytes.
    pub fn from_descr(descr: &str) -> Option<Dtype> {
        let code = match descr.as_bytes().first()? {
            b'<' | b'|' | b'=' => &descr[1..],
            b'>' => {
                // Single-byte types have no byte order: numpy accepts `>u1` too.
                let d = Dtype::ALL.into_iter().find(|d| d.code() == &descr[1..])?;
                return (d.size() == 1).then_some(d);
            }
            _ => descr,
        };
        Dtype::ALL.into_iter().find(|d| d.code() == code || (*d == Dtype::Bool && code == "?"))
    }
}

impl FromStr for Dtype {
    type Err = UnknownDtype;

    /// Parses a dtype as numpy spells it: type strings with or without a byte-order prefix
    /// (`f8`, `<f8`, `=i4`, `|u1`, `i8` = int64, `u8` = uint64, `?`, `b1`) and names (`float64`,
    /// `int8`, `uint64`, `bool`, ..., the Python names `float` = float64, `int` = int64, the C
    /// names `short`, `intc`, `long`, ... and the one-character codes `b h i l f d`, ...).
    ///
    /// # Errors
    ///
    /// [`UnknownDtype`] for anything else (including big-endian strings).
    fn from_str(s: &str) -> Result<Dtype, UnknownDtype> {
        let t = s.trim();
        let by_name = match t {
            "float" | "double" => Some(Dtype::F64),
            "int" | "int_" => Some(Dtype::I64),
            "half" => Some(Dtype::F16),
            "single" => Some(Dtype::F32),
            "bool_" => Some(Dtype::Bool),
            "byte" => Some(Dtype::I8),
            "ubyte" => Some(Dtype::U8),
            "short" => Some(Dtype::I16),
            "ushort" => Some(Dtype::U16),
            "intc" => Some(Dtype::I32),
            "uintc" => Some(Dtype::U32),
            "long" | "longlong" | "intp" => Some(Dtype::I64),
            "ulong" | "ulonglong" | "uintp" | "uint" => Some(Dtype::U64),
            _ => Dtype::ALL.into_iter().find(|d| d.name() == t).or_else(|| Dtype::from_char(t)),
        };
        by_name.or_else(|| Dtype::from_descr(t)).ok_or_else(|| UnknownDtype { name: s.to_string() })
    }
}

impl Dtype {
    /// numpy's one-character type codes (`?bBhHiIlLqQpPefd`, as on 64-bit Linux), with an
    /// optional little-endian or native byte-order prefix.
    fn from_char(t: &str) -> Option<Dtype> {
        let c = t.strip_prefix(['<', '=', '|']).unwrap_or(t);
        Some(match c {
            "?" => Dtype::Bool,
            "b" => Dtype::I8,
            "B" => Dtype::U8,
            "h" => Dtype::I16,
            "H" => Dtype::U16,
            "i" => Dtype::I32,
            "I" => Dtype::U32,
            "l" | "q" | "p" => Dtype::I64,
            "L" | "Q" | "P" => Dtype::U64,
            "e" => Dtype::F16,
            "f" => Dtype::F32,
            "d" => Dtype::F64,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_byte_count_spellings_mean_what_numpy_means() {
        let p = |s: &str| s.parse::<Dtype>().unwrap();
        assert_eq!(p("i8"), Dtype::I64, "numpy's i8 is 8 bytes");
        assert_eq!(p("<i8"), Dtype::I64);
        assert_eq!(p("u8"), Dtype::U64);
        assert_eq!(p("=u8"), Dtype::U64);
        assert_eq!(p("i1"), Dtype::I8);
        assert_eq!(p("|i1"), Dtype::I8);
        assert_eq!(p("|u1"), Dtype::U8);
        assert_eq!(p("u2"), Dtype::U16);
        assert_eq!(p("<i4"), Dtype::I32);
        assert_eq!(p("f4"), Dtype::F32);
        assert_eq!(p("<f8"), Dtype::F64);
        assert_eq!(p("f2"), Dtype::F16);
        assert_eq!(p("|b1"), Dtype::Bool);
        assert_eq!(p("?"), Dtype::Bool);
        for d in Dtype::ALL {
            assert_eq!(p(d.name()), d);
            assert_eq!(p(d.descr()), d);
            assert_eq!(Dtype::from_descr(d.descr()), Some(d));
        }
        assert_eq!(p("float"), Dtype::F64);
        assert_eq!(p("int"), Dtype::I64);
        let codes = [("?", Dtype::Bool), ("b", Dtype::I8), ("B", Dtype::U8), ("h", Dtype::I16), ("H", Dtype::U16)];
        let more = [("i", Dtype::I32), ("I", Dtype::U32), ("l", Dtype::I64), ("Q", Dtype::U64), ("e", Dtype::F16)];
        for (c, d) in
            codes.into_iter().chain(more).chain([("f", Dtype::F32), ("<d", Dtype::F64), ("short", Dtype::I16)])
        {
            assert_eq!(p(c), d, "numpy's dtype('{c}')");
        }
    }

    #[test]
    fn unknown_and_big_endian_spellings_are_refused() {
        for bad in ["complex", "f16", "i16", "u32", ">f8", ">i4", "c16", "", "g", ">f", "F"] {
            let e = bad.parse::<Dtype>().unwrap_err();
            assert!(e.to_string().contains("unknown dtype"), "{bad}: {e}");
        }
        assert_eq!(Dtype::from_descr(">u1"), Some(Dtype::U8));
    }

    #[test]
    fn of_maps_rust_types_and_never_u8_to_bool() {
        assert_eq!(Dtype::of::<u8>(), Some(Dtype::U8));
        assert_eq!(Dtype::of::<f64>(), Some(Dtype::F64));
        assert_eq!(Dtype::of::<half::f16>(), Some(Dtype::F16));
        assert_eq!(Dtype::of::<String>(), None);
    }
}
