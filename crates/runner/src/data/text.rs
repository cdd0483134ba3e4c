//! Plain text: a file is one document; a directory is its `*.txt` files.

use std::path::{Path, PathBuf};

use super::{DataError, RawDoc};

/// Turn a `from_utf8` failure into a [`DataError::NotUtf8`]. `base` is the
/// file offset of `bytes[0]`, `base_line` the 1-based line of `bytes[0]`.
pub(crate) fn utf8_error(
    path: &Path,
    bytes: &[u8],
    err: std::str::Utf8Error,
    base: u64,
    base_line: usize,
) -> DataError {
    let at = err.valid_up_to();
    let line = base_line + bytes[..at].iter().filter(|&&b| b == b'\n').count();
    DataError::NotUtf8 {
        path: path.to_path_buf(),
        line,
        byte_offset: base + at as u64,
        byte: bytes[at],
    }
}

/// Read a whole file as one document, byte-exact.
pub(crate) fn read_text_file(path: &Path) -> Result<RawDoc, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let err = e.utf8_error();
            return Err(utf8_error(path, e.as_bytes(), err, 0, 1));
        }
    };
    Ok(RawDoc {
        source: path.display().to_string(),
        text,
    })
}

/// The `*.txt` files directly inside `dir` (non-recursive), sorted by file
/// name (byte order of the OS string).
pub(crate) fn list_txt_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let is_txt = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
        if is_txt && path.is_file() {
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}
