//! Opening the CLI's input files, shared by `map`, `reduce` and the reductions inside `map`.

use std::path::Path;

use shmpool::NpyArray;

use super::Failure;

/// Memory-maps the input `.npy` file.
// The one unsafe operation of the command line, allowed here alone.
#[allow(unsafe_code)]
pub(super) fn open_input(path: &Path) -> Result<NpyArray, Failure> {
    // SAFETY: `shmpool map` reads the input while the user's other programs may still hold it;
    // the documented contract of the command (as of `np.load(mmap_mode='r')`) is that nobody
    // truncates or rewrites the input during the map. The mapping is read-only, and
    // `--in-place` writes a new file and links it over the input only after the map.
    Ok(unsafe { NpyArray::open(path) }?)
}
