//! Library errors as Python exceptions. The library's messages already name the file, the
//! field and the rule; they are passed on whole.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    pedinorm,
    PedinormError,
    PyValueError,
    "An input pedinorm refuses or a step that failed; the message names the file (or argument), the field and the rule."
);

/// Any displayable error as a [`PedinormError`].
pub fn to_py(error: impl std::fmt::Display) -> PyErr {
    PedinormError::new_err(error.to_string())
}

/// A displayable error as a [`PedinormError`] prefixed by what it concerns (a file or an
/// argument).
pub fn about<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> PyErr + '_ {
    move |error| PedinormError::new_err(format!("{what}: {error}"))
}

/// Runs `f` on a rayon pool of `threads` workers (0 or `None`: all cores), as the command
/// line's `--threads` does; results are identical for any count.
pub fn on_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build().map_err(to_py)?;
    Ok(pool.install(f))
}
