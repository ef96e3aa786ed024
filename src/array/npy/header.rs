//! The `.npy` preamble and header, parsed and written by hand with bounds: the magic and
//! version, a header length checked against the file's size and capped as numpy caps it
//! (`max_header_size`, 10,000 bytes), and a linear scan of the header's Python dict literal
//! (no recursion, no backtracking: a hostile header costs at most one pass over 10 KB).

use crate::dtype::Dtype;

/// numpy's default `max_header_size` for `np.load`.
pub(super) const MAX_HEADER: usize = 10_000;
/// numpy's `NPY_MAXDIMS`.
const MAX_DIMS: usize = 64;
const MAGIC: &[u8] = b"\x93NUMPY";

/// What a `.npy` header says.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Header {
    pub dtype: Dtype,
    pub fortran: bool,
    pub shape: Vec<u64>,
    /// Offset of the first data byte.
    pub data_off: usize,
}

/// Parses the preamble and header from the first bytes of a file of `file_len` bytes
/// (`head` holds at least `min(file_len, 12 + MAX_HEADER)` bytes).
pub(super) fn parse(head: &[u8], file_len: u64) -> Result<Header, String> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Err("this is a .npz archive (a zip of .npy files, from np.savez), not a .npy file: \
                    extract one array first (np.save('x.npy', np.load(path)['name']) or unzip)"
            .into());
    }
    if !head.starts_with(MAGIC) {
        return Err("not a valid .npy file (no \\x93NUMPY magic)".into());
    }
    let (major, minor) = match head.get(6..8) {
        Some(&[a, b]) => (a, b),
        _ => return Err("not a valid .npy file (truncated preamble)".into()),
    };
    let (len_bytes, start) = match (major, minor) {
        (1, 0) => (2, 10),
        (2, 0) | (3, 0) => (4, 12),
        _ => return Err(format!("not a valid .npy file (unsupported format version {major}.{minor})")),
    };
    let len_field = head.get(8..8 + len_bytes).ok_or("not a valid .npy file (truncated preamble)")?;
    let hlen = len_field.iter().rev().fold(0usize, |a, &b| (a << 8) | b as usize);
    if hlen > MAX_HEADER {
        return Err(format!("not a valid .npy file (header of {hlen} bytes exceeds numpy's limit of {MAX_HEADER})"));
    }
    let data_off = start + hlen;
    if data_off as u64 > file_len {
        return Err(format!(
            "not a valid .npy file (truncated header: {hlen} bytes declared, {} in the file)",
            file_len.saturating_sub(start as u64)
        ));
    }
    let text = head.get(start..data_off).ok_or("not a valid .npy file (truncated header)")?;
    let text = std::str::from_utf8(text).map_err(|_| "not a valid .npy file (header is not text)".to_string())?;
    let mut h = parse_dict(text)?;
    h.data_off = data_off;
    Ok(h)
}

struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("not a valid .npy file (malformed header: expected '{}' at byte {})", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<&str, String> {
        let q = self.peek().filter(|&c| c == b'\'' || c == b'"').ok_or_else(|| self.malformed())?;
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != q {
            self.i += 1;
        }
        let end = self.i;
        self.expect(q)?;
        std::str::from_utf8(&self.s[start..end]).map_err(|_| self.malformed())
    }
    fn word(&mut self) -> &[u8] {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn malformed(&self) -> String {
        format!("not a valid .npy file (malformed header at byte {})", self.i)
    }
}

fn parse_dict(text: &str) -> Result<Header, String> {
    let mut sc = Scan { s: text.as_bytes(), i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    sc.expect(b'{')?;
    while !sc.eat(b'}') {
        let key = sc.string()?.to_string();
        sc.expect(b':')?;
        match key.as_str() {
            "descr" => {
                if matches!(sc.peek(), Some(b'[') | Some(b'{')) {
                    return Err("unsupported dtype: structured (record) arrays".into());
                }
                descr = Some(sc.string()?.to_string());
            }
            "fortran_order" => {
                fortran = Some(match sc.word() {
                    b"True" => true,
                    b"False" => false,
                    _ => return Err(sc.malformed()),
                });
            }
            "shape" => {
                sc.expect(b'(')?;
                let mut dims = Vec::new();
                while !sc.eat(b')') {
                    let w = sc.word();
                    let w = w.strip_suffix(b"L").unwrap_or(w); // Python 2 longs
                    let d: u64 = std::str::from_utf8(w).ok().and_then(|t| t.parse().ok()).ok_or_else(|| {
                        "not a valid .npy file (shape must be a tuple of non-negative integers)".to_string()
                    })?;
                    dims.push(d);
                    if dims.len() > MAX_DIMS {
                        return Err(format!("not a valid .npy file (more than {MAX_DIMS} dimensions)"));
                    }
                    if !sc.eat(b',') {
                        sc.expect(b')')?;
                        break;
                    }
                }
                shape = Some(dims);
            }
            other => return Err(format!("not a valid .npy file (unexpected header key '{other}')")),
        }
        if !sc.eat(b',') {
            sc.expect(b'}')?;
            break;
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err("not a valid .npy file (header lacks descr, fortran_order or shape)".into());
    };
    let dtype = Dtype::from_descr(&descr).ok_or_else(|| {
        let why = if descr.starts_with('>') {
            "big-endian data is not supported (convert with x.astype('<f8') or similar)"
        } else {
            "supported: bool, int8..int64, uint8..uint64, float16, float32, float64"
        };
        format!("unsupported dtype '{descr}' ({why})")
    })?;
    Ok(Header { dtype, fortran, shape, data_off: 0 })
}

/// A version 1.0 (or 2.0 when it does not fit) header for `dtype` and `shape`, padded with
/// spaces so the data starts at a multiple of 64 bytes, as `np.save` writes it.
pub(super) fn write(dtype: Dtype, shape: &[u64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", dtype.descr());
    let v1 = dict.len() + 1 + 10 <= u16::MAX as usize;
    let pre = if v1 { 10 } else { 12 };
    let total = (pre + dict.len() + 1).next_multiple_of(64);
    let hlen = total - pre;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_headers_parse_back() {
        for shape in [vec![], vec![0], vec![5], vec![3, 4, 5]] {
            let h = write(Dtype::F32, &shape);
            assert_eq!(h.len() % 64, 0);
            let p = parse(&h, h.len() as u64).unwrap();
            assert_eq!((p.dtype, p.fortran, p.shape, p.data_off), (Dtype::F32, false, shape, h.len()));
        }
    }

    #[test]
    fn hostile_headers_are_refused_quickly() {
        let mut nested = b"\x93NUMPY\x01\x00".to_vec();
        let dict =
            format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {}1{}, }}", "(".repeat(50), ")".repeat(50));
        nested.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        nested.extend_from_slice(dict.as_bytes());
        let t = std::time::Instant::now();
        assert!(parse(&nested, nested.len() as u64).is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend_from_slice(&(1u32 << 31).to_le_bytes());
        let e = parse(&huge, 1 << 40).unwrap_err();
        assert!(e.contains("exceeds numpy's limit of 10000"), "{e}");
        let e = parse(b"PK\x03\x04rest", 100).unwrap_err();
        assert!(e.contains(".npz archive"), "{e}");
    }
}
