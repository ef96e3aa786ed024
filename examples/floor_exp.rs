//! The floor under `shmpool map a=A b=B c=C -o OUT --expr 'a * b + c'`: the least any program
//! can do for that job here, measured beside shmpool and numexpr by `scripts/bench_expr.py`.
//!
//! It memory-maps the three float64 `.npy` inputs and a fresh output file, and `THREADS` threads
//! compute `a * b + c` over interleaved chunks of 1M elements (the engine's largest chunk for
//! file maps). Nothing else: no pool, no worker processes, no expression evaluator, no checks
//! beyond the headers, no temporary file (the output is written under its final name).
//! `perf` shows where its time goes: the page faults on the inputs' page cache and the kernel
//! zeroing the output's fresh page-cache folios, as in shmpool's own profile.
//!
//! ```text
//! cargo run --release --example floor_map -- THREADS OUT.npy A.npy B.npy C.npy
//! ```

use std::error::Error;
use std::fs::{File, OpenOptions};

/// Elements per chunk, as the engine's chunks of a three-input float64 map over files.
const CHUNK: usize = 1 << 20;

/// A mapped float64 `.npy` input: its header bytes and its mapping.
struct Input {
    header: Vec<u8>,
    map: memmap2::Mmap,
}

impl Input {
    fn open(path: &str) -> Result<Input, Box<dyn Error>> {
        let file = File::open(path)?;
        // SAFETY: the benchmark writes its inputs before it starts this program and nothing
        // modifies or truncates them while it runs, so the mapping's bytes stay valid and fixed.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let off = data_offset(&map).ok_or_else(|| format!("{path}: not a .npy file"))?;
        let header = map[..off].to_vec();
        let text = String::from_utf8_lossy(&header);
        if !text.contains("'descr': '<f8'") || !text.contains("'fortran_order': False") {
            return Err(format!("{path}: this floor program reads C-ordered float64 only").into());
        }
        Ok(Input { header, map })
    }

    fn values(&self) -> Result<&[f64], Box<dyn Error>> {
        bytemuck::try_cast_slice(&self.map[self.header.len()..]).map_err(|e| format!("{e:?}").into())
    }
}

/// Where a `.npy` file's data starts: magic, version, header length, header.
fn data_offset(b: &[u8]) -> Option<usize> {
    if b.get(..6)? != b"\x93NUMPY" {
        return None;
    }
    let off = match b.get(6)? {
        1 => 10 + usize::from(u16::from_le_bytes(b.get(8..10)?.try_into().ok()?)),
        2 | 3 => 12 + usize::try_from(u32::from_le_bytes(b.get(8..12)?.try_into().ok()?)).ok()?,
        _ => return None,
    };
    (off <= b.len()).then_some(off)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [threads, out, pa, pb, pc] = &args[..] else {
        return Err("usage: floor_map THREADS OUT.npy A.npy B.npy C.npy".into());
    };
    let threads: usize = threads.parse()?;
    let (a, b, c) = (Input::open(pa)?, Input::open(pb)?, Input::open(pc)?);
    let paths = [pa.clone(), pb.clone(), pc.clone()];
    if a.header != b.header || a.header != c.header {
        return Err("this floor program needs three inputs of one shape (identical headers)".into());
    }
    let (a, b, c, header) = (a.values()?, b.values()?, c.values()?, &c.header);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(out)?;
    file.set_len((header.len() + a.len() * 8) as u64)?;
    // SAFETY: this process created and sized the file just now and is its only user; the
    // mapping is dropped before the program ends, and no other mapping of it exists.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    map[..header.len()].copy_from_slice(header);
    let y: &mut [f64] = bytemuck::try_cast_slice_mut(&mut map[header.len()..]).map_err(|e| format!("output: {e:?}"))?;
    let mut shares: Vec<Vec<(usize, &mut [f64])>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    let t = shares.len();
    for (k, chunk) in y.chunks_mut(CHUNK).enumerate() {
        shares[k % t].push((k * CHUNK, chunk));
    }
    std::thread::scope(|s| {
        for share in shares {
            let paths = paths.clone();
            s.spawn(move || {
                for (at, chunk) in share {
                    let n = chunk.len();
                    let per = std::env::var_os("PER_CHUNK").is_some();
                    let ins: Vec<Input> =
                        if per { paths.iter().map(|p| Input::open(p).unwrap()).collect() } else { Vec::new() };
                    let (a, b, c) = if per {
                        (ins[0].values().unwrap(), ins[1].values().unwrap(), ins[2].values().unwrap())
                    } else {
                        (a, b, c)
                    };
                    let (a, b, c) = (&a[at..at + n], &b[at..at + n], &c[at..at + n]);
                    for (((y, a), b), c) in chunk.iter_mut().zip(a).zip(b).zip(c) {
                        *y = a * b + c;
                    }
                    if std::env::var_os("REL_IN").is_some() {
                        for v in [a, b, c] {
                            let p = v.as_ptr() as usize;
                            let lo = p / 4096 * 4096;
                            let hi = (p + n * 8).next_multiple_of(4096);
                            unsafe { libc::madvise(lo as *mut _, hi - lo, libc::MADV_DONTNEED) };
                        }
                    }
                    if std::env::var_os("REL_OUT").is_some() {
                        let p = chunk.as_ptr() as usize;
                        let lo = p / 4096 * 4096;
                        let hi = (p + n * 8).next_multiple_of(4096);
                        unsafe { libc::madvise(lo as *mut _, hi - lo, libc::MADV_DONTNEED) };
                    }
                }
            });
        }
    });
    Ok(())
}
