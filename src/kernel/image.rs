//! The executable image that holds shmpool's own code: the ELF object (the program, or the
//! shared library shmpool was linked into, such as a Python extension module) whose code
//! contains the anchor. Kernels and function pointers travel to workers as offsets from the
//! anchor, which is only meaningful for code of that same object: a function of a `dlopen`ed
//! library, or code generated at run time, lies elsewhere, and its offset would make an exec'd
//! worker jump to an unrelated address. Such code is refused, before anything jumps.
//!
//! The object's executable span is found once with `dl_iterate_phdr` and kept in atomics: in
//! the parent before any worker is forked (forked workers inherit it, and never call into the
//! dynamic loader, whose lock another thread may have held at the fork), and in an exec'd
//! worker while it is still single-threaded.

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Start and end of the executable segments of the image; `STATE`: 0 unknown, 1 being found,
/// 2 set.
static LO: AtomicUsize = AtomicUsize::new(0);
static HI: AtomicUsize = AtomicUsize::new(0);
static STATE: AtomicU8 = AtomicU8::new(0);

/// What `find` looks for and what it found.
struct Search {
    anchor: usize,
    span: Option<(usize, usize)>,
}

/// `dl_iterate_phdr` callback: if the object described by `info` has an executable segment
/// holding the anchor, records the span of all its executable segments and stops.
unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: `dl_iterate_phdr` passes a valid `dl_phdr_info` for the duration of the call, and
    // `data` is the `&mut Search` given to it by `find`, used by nothing else meanwhile.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: the loader guarantees `dlpi_phdr` points to `dlpi_phnum` program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let base = info.dlpi_addr as usize;
    let exec = phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0).map(|p| {
        let start = base.wrapping_add(p.p_vaddr as usize);
        (start, start.wrapping_add(p.p_memsz as usize))
    });
    let (mut lo, mut hi, mut holds) = (usize::MAX, 0usize, false);
    for (start, end) in exec {
        lo = lo.min(start);
        hi = hi.max(end);
        holds |= (start..end).contains(&search.anchor);
    }
    if holds {
        search.span = Some((lo, hi));
        return 1;
    }
    0
}

fn find(anchor: usize) -> (usize, usize) {
    let mut search = Search { anchor, span: None };
    // SAFETY: `visit` matches the callback type, only reads what the loader passes it and
    // writes `search` through the pointer given here, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    // Not found cannot happen for code that runs; if it did, every address is refused.
    search.span.unwrap_or((0, 0))
}

/// The executable span `[lo, hi)` of the image holding `anchor` (the same in every call).
pub(super) fn span(anchor: usize) -> (usize, usize) {
    loop {
        match STATE.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                let (lo, hi) = find(anchor);
                LO.store(lo, Ordering::Relaxed);
                HI.store(hi, Ordering::Relaxed);
                // PUBLISH: the span, for readers that observe 2 with Acquire.
                STATE.store(2, Ordering::Release);
            }
            // OBSERVE: state 2 publishes the span (Release above).
            Err(2) => return (LO.load(Ordering::Relaxed), HI.load(Ordering::Relaxed)),
            Err(_) => std::hint::spin_loop(),
        }
    }
}

/// Whether `addr` lies in the executable code of the image that holds `anchor`.
pub(super) fn contains(anchor: usize, addr: usize) -> bool {
    let (lo, hi) = span(anchor);
    (lo..hi).contains(&addr)
}

/// The file of the loaded object holding `addr`, for messages (dynamic loader: parent only).
fn object_of(addr: usize) -> String {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: `info` is a valid, writable `Dl_info`; dladdr only reads the loader's tables.
    let found = unsafe { libc::dladdr(addr as *const c_void, info.as_mut_ptr()) } != 0;
    // SAFETY: zero-initialised, and filled by dladdr when it returned non-zero.
    let info = unsafe { info.assume_init() };
    if !found || info.dli_fname.is_null() {
        return "no loaded object (code made at run time?)".to_string();
    }
    // SAFETY: dladdr returned a NUL-terminated name owned by the loader, alive while the
    // object is loaded; it is copied at once.
    let name = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    if name.is_empty() {
        "the main program".to_string()
    } else {
        name
    }
}

/// Refuses `addr` (a kernel or function pointer about to travel as an offset) unless it lies in
/// the image that holds `anchor`.
///
/// # Errors
///
/// [`Error::ForeignKernel`] naming the object the address belongs to.
pub(super) fn check(anchor: usize, addr: usize) -> Result<()> {
    if contains(anchor, addr) {
        return Ok(());
    }
    let image = std::fs::read_link("/proc/self/exe").ok();
    let anchor_object = object_of(anchor);
    let image = match (anchor_object.as_str(), image) {
        ("the main program", Some(exe)) => exe.display().to_string(),
        _ => anchor_object,
    };
    Err(Error::ForeignKernel { addr: addr as u64, object: object_of(addr), image })
}
