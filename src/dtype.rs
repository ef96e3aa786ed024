//! The numeric element types shmpool reads from and writes to files and expressions, with
//! their numpy names. A leaf module: it depends on nothing in the crate.
#![deny(unsafe_code)]

/// A numeric element type (little-endian, as numpy stores it on every platform shmpool runs on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
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
    /// `float32`
    F32,
    /// `float64`
    F64,
}

impl Dtype {
    /// Every supported type.
    pub const ALL: [Dtype; 10] = [
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::F32,
        Dtype::F64,
    ];

    /// The dtype of the Rust element type `T`, if `T` is one of numpy's numeric types
    /// (`i8`..`i64`, `u8`..`u64`, `f32`, `f64`).
    pub fn of<T: 'static>() -> Option<Dtype> {
        use std::any::TypeId;
        let t = TypeId::of::<T>();
        let table: [(TypeId, Dtype); 10] = [
            (TypeId::of::<i8>(), Dtype::I8),
            (TypeId::of::<i16>(), Dtype::I16),
            (TypeId::of::<i32>(), Dtype::I32),
            (TypeId::of::<i64>(), Dtype::I64),
            (TypeId::of::<u8>(), Dtype::U8),
            (TypeId::of::<u16>(), Dtype::U16),
            (TypeId::of::<u32>(), Dtype::U32),
            (TypeId::of::<u64>(), Dtype::U64),
            (TypeId::of::<f32>(), Dtype::F32),
            (TypeId::of::<f64>(), Dtype::F64),
        ];
        table.iter().find(|(id, _)| *id == t).map(|&(_, d)| d)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Whether it is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// The numpy name (`float64`, `int32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// The numpy array-protocol type string (`<f8`, `|i1`, ...).
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }

    /// Parses a user-facing name: `f64`, `float64`, `f8`, `<f8`, `i32`, `uint8`, ...
    pub fn parse(s: &str) -> Option<Dtype> {
        let s = s.trim().trim_start_matches(['<', '|', '=']);
        Dtype::ALL.into_iter().find(|d| {
            let short = match d {
                Dtype::I8 => ["i8", "i1"],
                Dtype::I16 => ["i16", "i2"],
                Dtype::I32 => ["i32", "i4"],
                Dtype::I64 => ["i64", "i8"],
                Dtype::U8 => ["u8", "u1"],
                Dtype::U16 => ["u16", "u2"],
                Dtype::U32 => ["u32", "u4"],
                Dtype::U64 => ["u64", "u8"],
                Dtype::F32 => ["f32", "f4"],
                Dtype::F64 => ["f64", "f8"],
            };
            // "i8"/"u8" mean 8 bits here (Rust), as `--dtype` users type them; the numpy
            // byte-count spellings "i1".."i8" are matched only through `descr` (with `<`/`|`).
            s == d.name() || s == short[0] || (s == short[1] && short[1] != "i8" && short[1] != "u8")
        })
    }

    /// The type a numpy type string (`<f8`, `|u1`, ...) names, if supported.
    pub fn from_descr(descr: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.descr() == descr || (d.size() == 1 && descr == d.descr().replace('|', "<")))
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
